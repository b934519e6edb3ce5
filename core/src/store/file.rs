//! A local folder as an object store (`file:///abs/path`).
//!
//! Writes are crash-safe and atomic: the bytes go to a temp file in the
//! target folder, which is fsynced and then published — with `link(2)` for
//! create-if-absent (atomic, fails if the name exists, no lock needed) or
//! `rename(2)` under an advisory lock for compare-and-swap — and the folder
//! is fsynced. Readers never lock: a rename is atomic for them.
//!
//! ETags come from the file's inode, modification time and size. Every
//! write creates a new inode, so a changed object always gets a new ETag,
//! and reading one costs a `stat`, not a hash of the content.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::atomic_file::{TempFile, fsync_dir};

use super::types::{ETag, GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
use super::{Store, validate_key, validate_prefix};

const READ_CHUNK: usize = 256 * 1024;

/// A store in a local folder.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    url: String,
}

impl FileStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        let root = root.into();
        let url = format!("file://{}", root.display());
        FileStore { root, url }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

fn io_error<'a>(op: &'static str, key: &'a str) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound { op, key: key.to_string() }
        } else {
            StoreError::Io { op, key: key.to_string(), source }
        }
    }
}

fn etag_of(metadata: &fs::Metadata) -> ETag {
    let mtime =
        metadata.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    #[cfg(not(unix))]
    let inode = 0u64;
    ETag(format!("\"{inode:x}-{mtime:x}-{:x}\"", metadata.len()))
}

fn meta_of(key: &str, metadata: &fs::Metadata) -> ObjectMeta {
    ObjectMeta { key: key.to_string(), size: metadata.len(), etag: Some(etag_of(metadata)) }
}

/// Runs blocking filesystem work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|join| {
        Err(StoreError::Io { op: "run", key: String::new(), source: io::Error::other(join.to_string()) })
    })
}

/// A temp file beside `target` holding `payload`, fsynced: racing puts of
/// one key each write their own.
fn write_temp(target: &Path, payload: &Payload) -> io::Result<TempFile> {
    fs::create_dir_all(target.parent().expect("object paths are below the root"))?;
    let (temp, mut file) = TempFile::unique_beside(target)?;
    match payload {
        Payload::Bytes(bytes) => file.write_all(bytes)?,
        Payload::File(source) => {
            io::copy(&mut File::open(source)?, &mut file)?;
        }
    }
    file.sync_all()?;
    Ok(temp)
}

fn create(path: &Path, key: &str, payload: &Payload) -> Result<ObjectMeta, StoreError> {
    let temp = write_temp(path, payload).map_err(io_error("create", key))?;
    let metadata = fs::metadata(temp.path()).map_err(io_error("create", key))?;
    match temp.link_as(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(StoreError::AlreadyExists { key: key.to_string() });
        }
        Err(e) => return Err(io_error("create", key)(e)),
    }
    fsync_dir(path.parent().expect("below the root")).map_err(io_error("create", key))?;
    Ok(meta_of(key, &metadata))
}

fn update(path: &Path, key: &str, payload: &Payload, expected: &ETag) -> Result<ObjectMeta, StoreError> {
    let dir = path.parent().expect("below the root");
    fs::create_dir_all(dir).map_err(io_error("update", key))?;
    let name = path.file_name().expect("keys have a last component").to_string_lossy();
    // Serialises writers of this key across processes; released on drop.
    let lock = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(format!(".{name}.lock")))
        .map_err(io_error("update", key))?;
    lock.lock().map_err(io_error("update", key))?;
    let current = match fs::metadata(path) {
        Ok(metadata) => etag_of(&metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::PreconditionFailed { key: key.to_string() });
        }
        Err(e) => return Err(io_error("update", key)(e)),
    };
    if current != *expected {
        return Err(StoreError::PreconditionFailed { key: key.to_string() });
    }
    let temp = write_temp(path, payload).map_err(io_error("update", key))?;
    temp.rename_over(path).map_err(io_error("update", key))?;
    fsync_dir(dir).map_err(io_error("update", key))?;
    let metadata = fs::metadata(path).map_err(io_error("update", key))?;
    drop(lock);
    Ok(meta_of(key, &metadata))
}

fn list(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
    // Walk only the folder the prefix names, not the whole tree.
    let start_dir = match prefix.rfind('/') {
        Some(slash) => root.join(&prefix[..slash]),
        None => root.to_path_buf(),
    };
    let mut out = Vec::new();
    let mut pending = vec![start_dir];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::Io { op: "list", key: prefix.to_string(), source });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io { op: "list", key: prefix.to_string(), source })?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue; // temp and lock files
            }
            let path = entry.path();
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                Err(source) => {
                    return Err(StoreError::Io { op: "list", key: prefix.to_string(), source });
                }
            };
            if metadata.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(root).expect("walked below the root");
            let key = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            if key.starts_with(prefix) {
                out.push(meta_of(&key, &metadata));
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let path = self.path(key)?;
        let key = key.to_string();
        let (file, meta, range) = blocking(move || {
            let mut file = File::open(&path).map_err(io_error("get", &key))?;
            let metadata = file.metadata().map_err(io_error("get", &key))?;
            let meta = meta_of(&key, &metadata);
            let range = options.range_of(&meta)?;
            file.seek(SeekFrom::Start(range.start)).map_err(io_error("get", &key))?;
            Ok((file, meta, range))
        })
        .await?;
        let key = meta.key.clone();
        let remaining = range.end - range.start;
        let body = futures::stream::try_unfold((file, remaining, key), |(mut file, remaining, key)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(READ_CHUNK as u64) as usize;
            let (file, chunk) = blocking(move || {
                let mut chunk = vec![0u8; want];
                let mut filled = 0;
                while filled < want {
                    match file.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(StoreError::Io { op: "get", key: String::new(), source });
                        }
                    }
                }
                chunk.truncate(filled);
                Ok((file, chunk))
            })
            .await?;
            if chunk.is_empty() {
                return Err(StoreError::Backend {
                    op: "get",
                    key,
                    message: "file shrank while being read".into(),
                    retryable: true,
                });
            }
            let left = remaining - chunk.len() as u64;
            Ok(Some((Bytes::from(chunk), (file, left, key))))
        });
        Ok(GetResult { meta, range, body: Box::pin(body) })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || {
            let metadata = fs::metadata(&path).map_err(io_error("head", &key))?;
            Ok(meta_of(&key, &metadata))
        })
        .await
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let key = key.to_string();
        blocking(move || match &mode {
            PutMode::Create => create(&path, &key, &payload),
            PutMode::Update(etag) => update(&path, &key, &payload, etag),
        })
        .await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let paths =
            keys.iter().map(|key| Ok((key.clone(), self.path(key)?))).collect::<Result<Vec<_>, StoreError>>()?;
        blocking(move || {
            let mut dirs = std::collections::BTreeSet::new();
            for (key, path) in paths {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        dirs.insert(path.parent().expect("below the root").to_path_buf());
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(StoreError::Io { op: "delete", key, source });
                    }
                }
            }
            for dir in dirs {
                fsync_dir(&dir).map_err(|source| StoreError::Io {
                    op: "delete",
                    key: dir.display().to_string(),
                    source,
                })?;
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let (root, prefix) = (self.root.clone(), prefix.to_string());
        blocking(move || list(&root, &prefix)).await
    }

    fn url(&self) -> &str {
        &self.url
    }
}
