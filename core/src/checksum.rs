//! The rolling database checksum.
//!
//! A database's checksum is the XOR, over every page `1..=commit`, of
//! `xxh3_64(page bytes, seed = page number)`. XOR makes it incremental: when
//! a page changes, `new = old ^ h(pgno, old page) ^ h(pgno, new page)`; when a
//! page appears or disappears (the file grows or shrinks), its hash is XORed
//! in or out. An empty database (zero pages) has checksum 0.
//!
//! The page number is the hash's seed so that two identical pages at
//! different positions do not cancel each other out.

use std::io::{self, Read};
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ids::{Checksum, PageNo};

/// The hash of one page at one position: the term it contributes to the
/// database checksum.
pub fn page_hash(pgno: PageNo, page: &[u8]) -> u64 {
    xxh3_64_with_seed(page, u64::from(pgno.0))
}

impl Checksum {
    /// The checksum of a database with no pages.
    pub const EMPTY: Checksum = Checksum(0);

    /// Adds a page that was not in the database (or removes one that was:
    /// XOR is its own inverse).
    #[must_use]
    pub fn toggle_page(self, pgno: PageNo, page: &[u8]) -> Checksum {
        Checksum(self.0 ^ page_hash(pgno, page))
    }

    /// Replaces `old_page` by `new_page` at `pgno`.
    #[must_use]
    pub fn replace_page(self, pgno: PageNo, old_page: &[u8], new_page: &[u8]) -> Checksum {
        Checksum(self.0 ^ page_hash(pgno, old_page) ^ page_hash(pgno, new_page))
    }

    /// Same as [`Checksum::replace_page`] from page hashes already known (for
    /// example from a per-page hash map), without the old page's bytes.
    #[must_use]
    pub fn replace_hash(self, old_hash: u64, new_hash: u64) -> Checksum {
        Checksum(self.0 ^ old_hash ^ new_hash)
    }
}

/// Computes the checksum of a database image read from `reader`, made of
/// whole pages of `page_size` bytes. A trailing partial page is an error: it
/// means the image is torn.
pub fn database_checksum<R: Read>(mut reader: R, page_size: usize) -> io::Result<(Checksum, u32)> {
    let mut page = vec![0u8; page_size];
    let mut checksum = Checksum::EMPTY;
    let mut pgno: u32 = 0;
    loop {
        let filled = read_full(&mut reader, &mut page)?;
        if filled == 0 {
            return Ok((checksum, pgno));
        }
        if filled < page_size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("database image ends with a partial page of {filled} bytes after page {pgno}"),
            ));
        }
        pgno = pgno
            .checked_add(1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "database has more than 2^32-1 pages"))?;
        checksum = checksum.toggle_page(PageNo(pgno), &page);
    }
}

/// Computes the checksum of a SQLite database file on disk, taking the page
/// size from its header. This reads the main file only: for a database in WAL
/// mode, checkpoint it first (or read pages through SQLite) to include frames
/// still in the WAL.
pub fn database_file_checksum(path: &Path) -> io::Result<(Checksum, u32)> {
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; 100];
    let filled = read_full(&mut file, &mut header)?;
    if filled == 0 {
        return Ok((Checksum::EMPTY, 0));
    }
    let page_size = sqlite_page_size(&header[..filled]).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a SQLite database (bad header)", path.display()))
    })?;
    let file = std::fs::File::open(path)?;
    database_checksum(io::BufReader::with_capacity(1 << 20, file), page_size as usize)
}

/// The page size recorded in a SQLite database header (bytes 16..18, where
/// the value 1 means 65536), or `None` if `header` is not a SQLite header.
pub fn sqlite_page_size(header: &[u8]) -> Option<u32> {
    if header.len() < 100 || &header[..16] != b"SQLite format 3\0" {
        return None;
    }
    let raw = u32::from(u16::from_be_bytes([header[16], header[17]]));
    let size = if raw == 1 { 65_536 } else { raw };
    (size.is_power_of_two() && (512..=65_536).contains(&size)).then_some(size)
}

fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full(pages: &[Vec<u8>]) -> Checksum {
        pages.iter().enumerate().fold(Checksum::EMPTY, |c, (i, p)| c.toggle_page(PageNo(i as u32 + 1), p))
    }

    #[test]
    fn identical_pages_at_different_positions_do_not_cancel() {
        let page = vec![7u8; 512];
        assert_ne!(full(&[page.clone(), page]), Checksum::EMPTY);
    }

    #[test]
    fn database_checksum_matches_page_fold_and_rejects_torn_images() {
        let pages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 512]).collect();
        let image: Vec<u8> = pages.concat();
        assert_eq!(database_checksum(&image[..], 512).unwrap(), (full(&pages), 5));
        assert!(database_checksum(&image[..700], 512).is_err());
    }

    proptest! {
        /// Incremental updates (page rewrites, growth, truncation) always equal
        /// a full recomputation of the resulting image.
        #[test]
        fn incremental_equals_full(
            initial in prop::collection::vec(prop::collection::vec(any::<u8>(), 64), 0..20),
            edits in prop::collection::vec((0usize..30, any::<u8>()), 0..40),
        ) {
            let mut pages = initial;
            let mut rolling = full(&pages);
            for (index, fill) in edits {
                let new_page = vec![fill; 64];
                if index < pages.len() {
                    let pgno = PageNo(index as u32 + 1);
                    rolling = rolling.replace_page(pgno, &pages[index], &new_page);
                    pages[index] = new_page;
                } else if index % 3 == 0 && !pages.is_empty() {
                    // Truncate by one page.
                    let last = pages.pop().unwrap();
                    rolling = rolling.toggle_page(PageNo(pages.len() as u32 + 1), &last);
                } else {
                    pages.push(new_page);
                    rolling = rolling.toggle_page(PageNo(pages.len() as u32), pages.last().unwrap());
                }
                prop_assert_eq!(rolling, full(&pages));
            }
        }
    }
}
