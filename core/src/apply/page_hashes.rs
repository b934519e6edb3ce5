//! A sink of page hashes only, for `distributary verify --deep`.

use super::verify::default_lock_byte_page;
use super::{ApplyError, PageSink, Verified};
use crate::format::Header;
use crate::ids::PageNo;

/// A [`PageSink`] that keeps only the hash of each page, not its bytes:
/// replaying a chain through it with an [`ObjectApplier`] recomputes every
/// object's post-apply checksum from its pages in 8 bytes of memory per page
/// (`distributary verify --deep`). Nothing is written anywhere.
#[derive(Debug, Clone)]
pub struct PageHashes {
    page_size: u32,
    /// `hashes[p - 1]` is page `p`'s [`page_hash`](crate::checksum::page_hash) in the state kept so far.
    hashes: Vec<u64>,
}

impl PageHashes {
    /// An empty database of `page_size`-byte pages (the base of a snapshot).
    pub fn new(page_size: u32) -> PageHashes {
        PageHashes { page_size, hashes: Vec::new() }
    }
}

impl PageSink for PageHashes {
    fn page_hash(&mut self, pgno: PageNo) -> Result<u64, ApplyError> {
        // The applier asks only for pages within the current size.
        (pgno.0 as usize).checked_sub(1).and_then(|i| self.hashes.get(i)).copied().ok_or_else(|| ApplyError::Task {
            op: "hash pages",
            reason: format!("page {pgno} is past the database's {} pages", self.hashes.len()),
        })
    }

    fn begin_object(&mut self, _: &str, _: &Header) -> Result<(), ApplyError> {
        Ok(())
    }

    fn write_page(&mut self, _: PageNo, _: &[u8]) -> Result<(), ApplyError> {
        // The hashes arrive with `finish_object`: until then the state the
        // object builds on is unchanged, which is what `page_hash` must see.
        Ok(())
    }

    fn finish_object(&mut self, object: Verified) -> Result<(), ApplyError> {
        // Pages past the old size are all in `written` (the applier checked).
        self.hashes.resize(object.commit as usize, 0);
        for (pgno, hash) in object.written {
            if let Some(slot) = (pgno as usize).checked_sub(1).and_then(|i| self.hashes.get_mut(i)) {
                *slot = hash;
            }
        }
        Ok(())
    }

    fn rollback_object(&mut self) -> Result<(), ApplyError> {
        Ok(())
    }

    fn lock_byte_page(&self) -> u32 {
        default_lock_byte_page(self.page_size)
    }
}
