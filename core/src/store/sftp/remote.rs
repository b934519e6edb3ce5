//! The SFTP requests the store is built from, on one connection, each
//! failure mapped to a [`StoreError`] naming the key and the store.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::AsyncReadExt;

use super::connect::{Conn, is_status, map_error};
use crate::store::{ETag, ObjectMeta, Payload, StoreError};

/// Bytes per SFTP write request: OpenSSH accepts up to 256 KiB, but 32 KiB
/// is what every server takes (the draft's minimum packet size).
const WRITE_CHUNK: usize = 32 * 1024;
/// Bytes per SFTP read request (OpenSSH serves up to 256 KiB at once).
pub(super) const READ_CHUNK: u32 = 64 * 1024;
/// Requests in flight per transfer: enough to hide the round trip.
pub(super) const IN_FLIGHT: usize = 16;

/// The ETag of a file's attributes: its modification time (seconds) and
/// size. Writers make it change on every version (`docs/STORES.md`, "SFTP:
/// ETags").
pub(super) fn etag_of(attrs: &FileAttributes) -> ETag {
    ETag(format!("\"{:x}-{:x}\"", attrs.mtime.unwrap_or(0), attrs.size.unwrap_or(0)))
}

pub(super) fn meta_of(key: &str, attrs: &FileAttributes) -> ObjectMeta {
    ObjectMeta { key: key.to_string(), size: attrs.size.unwrap_or(0), etag: Some(etag_of(attrs)) }
}

/// A random name part for temp and lock files, unique across writers.
pub(super) fn nonce() -> String {
    // getrandom only fails without an OS random source; a clock value
    // still separates writers of one process then.
    format!("{:016x}", getrandom::u64().unwrap_or_else(|_| crate::clock::now_ms()))
}

/// The folder part of a path (`""` for a bare name).
pub(super) fn parent_of(path: &str) -> &str {
    path.rfind('/').map_or("", |slash| &path[..slash])
}

/// Requests on one connection, with the key and store for messages.
pub(super) struct Remote<'a> {
    pub conn: &'a Arc<Conn>,
    pub url: &'a str,
}

impl Remote<'_> {
    pub fn error(&self, op: &'static str, key: &str, error: SftpError) -> StoreError {
        map_error(self.conn, op, key, self.url, error)
    }

    /// The attributes of `path`, or `None` if nothing is there.
    pub async fn stat(&self, op: &'static str, key: &str, path: &str) -> Result<Option<FileAttributes>, StoreError> {
        match self.conn.sftp.stat(path).await {
            Ok(attrs) => Ok(Some(attrs.attrs)),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(None),
            Err(e) => Err(self.error(op, key, e)),
        }
    }

    /// Creates `dir` and its missing parents (like `mkdir -p`).
    pub async fn create_dirs(&self, op: &'static str, key: &str, dir: &str) -> Result<(), StoreError> {
        let mut missing = Vec::new();
        let mut current = dir;
        while !current.is_empty() {
            match self.stat(op, key, current).await? {
                Some(attrs) if attrs.is_dir() => break,
                Some(_) => {
                    return Err(StoreError::Backend {
                        op,
                        key: key.to_string(),
                        message: format!("{current} on {} is a file, not a folder", self.url),
                        retryable: false,
                    });
                }
                None => missing.push(current),
            }
            current = parent_of(current);
        }
        for dir in missing.into_iter().rev() {
            if let Err(e) = self.conn.sftp.mkdir(dir, FileAttributes::default()).await {
                // Another writer may have created it meanwhile.
                if !self.stat(op, key, dir).await?.is_some_and(|attrs| attrs.is_dir()) {
                    return Err(self.error(op, key, e));
                }
            }
        }
        Ok(())
    }

    /// Writes `payload` to a new file at `path` (its folder created as
    /// needed), on the server's disk when it offers `fsync@openssh.com`, and
    /// returns the file's attributes.
    pub async fn write_new(
        &self,
        op: &'static str,
        key: &str,
        path: &str,
        payload: &Payload,
    ) -> Result<FileAttributes, StoreError> {
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
        let handle = match self.conn.sftp.open(path, flags, FileAttributes::default()).await {
            Ok(handle) => handle.handle,
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => {
                self.create_dirs(op, key, parent_of(path)).await?;
                self.conn
                    .sftp
                    .open(path, flags, FileAttributes::default())
                    .await
                    .map_err(|e| self.error(op, key, e))?
                    .handle
            }
            Err(e) => return Err(self.error(op, key, e)),
        };
        let written = self.write_all(op, key, &handle, payload).await;
        let synced = match written {
            Ok(()) if self.conn.fsync => {
                self.conn.sftp.fsync(handle.as_str()).await.map(|_| ()).map_err(|e| self.error(op, key, e))
            }
            other => other,
        };
        let attrs = match synced {
            Ok(()) => self.conn.sftp.fstat(handle.as_str()).await.map(|a| a.attrs).map_err(|e| self.error(op, key, e)),
            Err(e) => Err(e),
        };
        let closed = self.conn.sftp.close(handle).await;
        let attrs = attrs?;
        closed.map_err(|e| self.error(op, key, e))?;
        Ok(attrs)
    }

    /// Sends the payload in pipelined write requests.
    async fn write_all(&self, op: &'static str, key: &str, handle: &str, payload: &Payload) -> Result<(), StoreError> {
        let chunks: futures::stream::BoxStream<'_, Result<(u64, Vec<u8>), StoreError>> = match payload {
            Payload::Bytes(bytes) => Box::pin(futures::stream::iter(
                bytes.chunks(WRITE_CHUNK).enumerate().map(|(i, c)| Ok(((i * WRITE_CHUNK) as u64, c.to_vec()))),
            )),
            // Streamed from the file: a multi-GB segment is never in memory.
            Payload::File(source) => {
                let file = tokio::fs::File::open(source).await.map_err(|source_error| StoreError::Io {
                    op,
                    key: source.display().to_string(),
                    source: source_error,
                })?;
                let source = source.clone();
                Box::pin(futures::stream::try_unfold((file, 0u64), move |(mut file, offset)| {
                    let source = source.clone();
                    async move {
                        let mut chunk = vec![0u8; WRITE_CHUNK];
                        let mut filled = 0;
                        while filled < WRITE_CHUNK {
                            let n = file.read(&mut chunk[filled..]).await.map_err(|e| StoreError::Io {
                                op,
                                key: source.display().to_string(),
                                source: e,
                            })?;
                            if n == 0 {
                                break;
                            }
                            filled += n;
                        }
                        if filled == 0 {
                            return Ok(None);
                        }
                        chunk.truncate(filled);
                        Ok(Some(((offset, chunk), (file, offset + filled as u64))))
                    }
                }))
            }
        };
        chunks
            .map_ok(|(offset, data)| async move {
                self.conn.sftp.write(handle, offset, data).await.map(|_| ()).map_err(|e| self.error(op, key, e))
            })
            .try_buffered(IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    /// Reads a small whole file (a lock), or `None` if it does not exist.
    pub async fn read_small(&self, op: &'static str, key: &str, path: &str) -> Result<Option<Bytes>, StoreError> {
        let handle = match self.conn.sftp.open(path, OpenFlags::READ, FileAttributes::default()).await {
            Ok(handle) => handle.handle,
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => return Ok(None),
            Err(e) => return Err(self.error(op, key, e)),
        };
        let read = self.conn.sftp.read(handle.as_str(), 0, 4096).await;
        let _ = self.conn.sftp.close(handle).await;
        match read {
            Ok(data) => Ok(Some(data.data.into())),
            Err(e) if is_status(&e, StatusCode::Eof) => Ok(Some(Bytes::new())),
            Err(e) => Err(self.error(op, key, e)),
        }
    }

    /// Reads `len` bytes at `offset` of an open file, through as many
    /// requests as the server's replies need (a reply may be short).
    pub async fn read_exact_at(
        &self,
        op: &'static str,
        key: &str,
        handle: &str,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, StoreError> {
        let mut out = Vec::with_capacity(len as usize);
        while out.len() < len as usize {
            let want = len - out.len() as u32;
            match self.conn.sftp.read(handle, offset + out.len() as u64, want).await {
                Ok(data) if !data.data.is_empty() => out.extend_from_slice(&data.data),
                Ok(_) => break,
                Err(e) if is_status(&e, StatusCode::Eof) => break,
                Err(e) => return Err(self.error(op, key, e)),
            }
        }
        if out.len() < len as usize {
            return Err(StoreError::Backend {
                op,
                key: key.to_string(),
                message: format!("the file on {} shrank while being read", self.url),
                retryable: true,
            });
        }
        Ok(out.into())
    }

    /// Removes a file; a missing one is not an error.
    pub async fn remove(&self, op: &'static str, key: &str, path: &str) -> Result<(), StoreError> {
        match self.conn.sftp.remove(path).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(self.error(op, key, e)),
        }
    }

    /// Removes a file the caller no longer needs (a temp file after a
    /// failure): a failure to clean up must not hide the first error, and
    /// backend files are invisible to users anyway.
    pub async fn remove_quietly(&self, path: &str) {
        let _ = self.conn.sftp.remove(path).await;
    }

    /// Plain `SSH_FXP_RENAME`, which never replaces: OpenSSH's sftp-server
    /// performs it as `link(2)` + `unlink(2)` for regular files, and
    /// `link` fails if the new name exists. `Ok(false)` if the new name was
    /// taken (the server's generic "failure" with the name now present).
    pub async fn rename_no_replace(
        &self,
        op: &'static str,
        key: &str,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        // The name may be freed between the failed rename and the stat (a
        // lock released, an object deleted): then the rename is tried again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.conn.sftp.rename(from, to).await {
                Ok(_) => return Ok(true),
                Err(e) if is_status(&e, StatusCode::Failure) => {
                    if self.stat(op, key, to).await?.is_some() {
                        return Ok(false);
                    }
                    if attempts == 3 {
                        return Err(self.error(op, key, e));
                    }
                }
                Err(e) => return Err(self.error(op, key, e)),
            }
        }
    }

    /// `posix-rename@openssh.com`: `rename(2)`, replacing `to` atomically.
    pub async fn rename_over(&self, op: &'static str, key: &str, from: &str, to: &str) -> Result<(), StoreError> {
        if !self.conn.posix_rename {
            return Err(StoreError::Backend {
                op,
                key: key.to_string(),
                message: format!(
                    "{} does not offer posix-rename@openssh.com, which replacing an object atomically needs \
                     (use an OpenSSH server)",
                    self.url
                ),
                retryable: false,
            });
        }
        let mut data = Vec::with_capacity(8 + from.len() + to.len());
        for path in [from, to] {
            data.extend_from_slice(&(path.len() as u32).to_be_bytes());
            data.extend_from_slice(path.as_bytes());
        }
        match self.conn.sftp.extended("posix-rename@openssh.com", data).await {
            Ok(Packet::Status(status)) if status.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(status)) => Err(self.error(op, key, SftpError::Status(status))),
            Ok(_) => Err(self.error(op, key, SftpError::UnexpectedPacket)),
            Err(e) => Err(self.error(op, key, e)),
        }
    }

    /// Sets a file's modification (and access) time, in seconds since the
    /// Unix epoch.
    pub async fn set_mtime(&self, op: &'static str, key: &str, path: &str, mtime: u32) -> Result<(), StoreError> {
        let attrs = FileAttributes { atime: Some(mtime), mtime: Some(mtime), ..FileAttributes::empty() };
        self.conn.sftp.setstat(path, attrs).await.map(|_| ()).map_err(|e| self.error(op, key, e))
    }
}
