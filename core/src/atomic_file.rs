//! Writing a file so that readers see the old contents or the new, never a
//! part: write a temp file beside the target, fsync it, rename it over the
//! target, fsync the folder (so the rename survives a power cut).
//!
//! [`write_atomic`] does all four for contents in memory. Writers that
//! stream (the replicator's pending segments) or publish differently (the
//! file store's create-if-absent links the temp file instead of renaming it)
//! use [`TempFile`] and [`fsync_dir`] directly.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces `target` with `bytes`, atomically and durably.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let (temp, mut file) = TempFile::beside(target)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    temp.rename_over(target)?;
    fsync_dir(parent(target))
}

/// Fsyncs a folder, so that names created, renamed or removed in it are
/// durable. Directories can be opened and fsynced on Unix; elsewhere this is
/// a best effort the platform does not offer.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}

/// The folder holding `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A temp file beside its target, removed on drop unless published.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    published: bool,
}

impl TempFile {
    /// Creates (or truncates) `.NAME.tmp` beside `target`, for writers that
    /// hold the target's lock: a temp file a killed writer left is reused by
    /// the next one rather than piling up.
    pub fn beside(target: &Path) -> io::Result<(TempFile, File)> {
        let path = parent(target).join(format!(".{}.tmp", file_name(target)?));
        let file = File::create(&path)?;
        Ok((TempFile { path, published: false }, file))
    }

    /// Creates `.NAME.tmp-RANDOM` beside `target`, for writers that may
    /// race for the same target (the file store's puts): each has its own.
    pub fn unique_beside(target: &Path) -> io::Result<(TempFile, File)> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
        let name = format!(".{}.tmp-{:016x}", file_name(target)?, u64::from_be_bytes(suffix));
        let path = parent(target).join(name);
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok((TempFile { path, published: false }, file))
    }

    /// Where the temp file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temp file over `target`. Neither the file nor the folder
    /// is fsynced here: durable writers fsync the file before and the folder
    /// after ([`write_atomic`]).
    pub fn rename_over(mut self, target: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.published = true;
        Ok(())
    }

    /// Publishes the temp file as `target` only if `target` does not exist
    /// (`AlreadyExists` otherwise), by a hard link, and removes the temp
    /// name. The folder is not fsynced here.
    pub fn link_as(self, target: &Path) -> io::Result<()> {
        std::fs::hard_link(&self.path, target)?;
        // The temp name goes (on drop); the target keeps the inode.
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn file_name(target: &Path) -> io::Result<String> {
    target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", target.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_target_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        write_atomic(&target, b"old").unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn an_unpublished_temp_file_is_removed_and_the_target_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("seg");
        std::fs::write(&target, b"old").unwrap();
        for make in [TempFile::beside, TempFile::unique_beside] {
            let (temp, mut file) = make(&target).unwrap();
            file.write_all(b"half").unwrap();
            assert!(temp.path().starts_with(dir.path()));
            drop(temp);
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["seg"]);
    }

    #[test]
    fn a_link_publishes_only_a_new_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("obj");
        let (first, mut file) = TempFile::unique_beside(&target).unwrap();
        let (second, _) = TempFile::unique_beside(&target).unwrap();
        assert_ne!(first.path(), second.path(), "racing writers get their own temp files");
        file.write_all(b"first").unwrap();
        first.link_as(&target).unwrap();
        assert_eq!(second.link_as(&target).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["obj"]);
    }
}
