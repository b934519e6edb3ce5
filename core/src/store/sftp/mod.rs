//! A folder on an SFTP server as an object store
//! (`sftp://user@host:port/path`), over a pure-Rust SSH client (russh).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the store: options, paths, the [`Store`] operations |
//! | `connect.rs` | the connection: host-key check, authentication, error mapping |
//! | `remote.rs` | the SFTP requests the operations are built from |
//! | `lock.rs` | the lock a compare-and-swap holds |
//!
//! Writes go to a temp file beside the object (names starting with `.` are
//! the backend's), fsynced where the server offers `fsync@openssh.com`, and
//! are then published with one rename, so readers see the old object or the
//! whole new one:
//! - create-if-absent: plain `SSH_FXP_RENAME`, which OpenSSH performs as
//!   `link(2)` + `unlink(2)` and which therefore fails if the key exists;
//! - compare-and-swap: under a lock file with a lease, the ETag compared,
//!   then `posix-rename@openssh.com` over the object.
//!
//! ETags are the modification time (seconds) and the size; a swap sets the
//! new version's time to `max(now, previous + 1)` so every version's ETag
//! differs. `docs/STORES.md` ("SFTP") argues each of these choices and
//! states what they assume of the server.

mod connect;
mod lock;
mod remote;

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use russh::keys::PrivateKey;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use self::connect::{Conn, is_status};
pub use self::lock::LockSettings;
use self::remote::{IN_FLIGHT, READ_CHUNK, Remote, meta_of, nonce, parent_of};
use super::types::{GetOptions, GetResult, ObjectMeta, Payload, PutMode, StoreError};
use super::{Store, validate_key, validate_prefix};

/// The environment variable holding an SFTP password (never the URL).
pub const PASSWORD_ENV: &str = super::url::SFTP_PASSWORD_ENV;

/// How to authenticate.
#[derive(Clone)]
pub enum SftpAuth {
    /// A private key file without a passphrase (OpenSSH or PEM format).
    KeyFile(PathBuf),
    /// A password.
    Password(String),
}

impl std::fmt::Debug for SftpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SftpAuth::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
            SftpAuth::Password(_) => f.write_str("Password(<hidden>)"),
        }
    }
}

/// How to check the server's host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// Against an OpenSSH `known_hosts` file: an unknown or changed key is
    /// refused (a permanent error naming the host and the fix).
    KnownHosts(PathBuf),
    /// This key and no other (a configuration file's `host-key`).
    Pinned(russh::keys::PublicKey),
    /// Accept any host key. For tests against throwaway servers only: it
    /// lets anyone on the network path impersonate the server.
    InsecureSkipForTests,
}

/// Everything an [`SftpStore`] needs: what a `sftp://` URL or a
/// configuration file's `type: sftp` section says.
#[derive(Clone, Debug)]
pub struct SftpOptions {
    /// Host name or address.
    pub host: String,
    /// TCP port (22 usually).
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The store's folder on the server: absolute (`/srv/backup/db`) or
    /// relative to the user's login folder (`backup/db`; empty for that
    /// folder itself). No trailing `/`.
    pub root: String,
    /// Credentials.
    pub auth: SftpAuth,
    /// Host-key checking.
    pub host_keys: HostKeyCheck,
    /// The compare-and-swap lock's lease and wait.
    pub lock: LockSettings,
}

/// The options a parsed `sftp://` URL names, with the credentials and the
/// host-key check resolved: `?key-path=`, else `password` (a configuration
/// file's), else the password in [`PASSWORD_ENV`], else `~/.ssh/id_ed25519`
/// or `~/.ssh/id_rsa`; `?host-key=`, else `?known-hosts=`, else
/// `~/.ssh/known_hosts`.
pub fn options_from_url(
    url: &str,
    parsed: super::StoreUrl,
    password: Option<String>,
) -> Result<SftpOptions, StoreError> {
    let super::StoreUrl::Sftp { user, host, port, root, key_path, known_hosts, host_key, insecure_skip_host_key } =
        parsed
    else {
        return Err(StoreError::InvalidUrl {
            url: url.to_string(),
            reason: "not an sftp:// URL".into(),
            example: "sftp://backup@files.example.com/srv/app-db",
        });
    };
    let password = password.or_else(|| std::env::var(PASSWORD_ENV).ok()).filter(|p| !p.is_empty());
    let auth = match (key_path, password) {
        (Some(path), _) => SftpAuth::KeyFile(path),
        (None, Some(password)) => SftpAuth::Password(password),
        (None, None) => match connect::default_key_files().into_iter().find(|path| path.is_file()) {
            Some(path) => SftpAuth::KeyFile(path),
            None => {
                return Err(StoreError::InvalidUrl {
                    url: url.to_string(),
                    reason: format!(
                        "no credentials: name a private key with ?key-path=, set {PASSWORD_ENV}, or create \
                         ~/.ssh/id_ed25519"
                    ),
                    example: "sftp://backup@files.example.com/srv/app-db?key-path=/etc/distributary/id_ed25519",
                });
            }
        },
    };
    let host_keys = if insecure_skip_host_key {
        HostKeyCheck::InsecureSkipForTests
    } else if let Some(text) = host_key {
        HostKeyCheck::Pinned(russh::keys::PublicKey::from_openssh(&text).map_err(|e| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: format!("host-key {text:?} is not an OpenSSH public key ({e})"),
            example: "sftp://backup@files.example.com/srv/app-db?host-key=ssh-ed25519%20AAAAC3Nza...",
        })?)
    } else {
        match known_hosts.or_else(connect::default_known_hosts) {
            Some(path) => HostKeyCheck::KnownHosts(path),
            None => {
                return Err(StoreError::InvalidUrl {
                    url: url.to_string(),
                    reason: "no known_hosts file: HOME is not set; name one with ?known-hosts=".into(),
                    example: "sftp://backup@files.example.com/srv/app-db?known-hosts=/etc/distributary/known_hosts",
                });
            }
        }
    };
    Ok(SftpOptions { host, port, user, root, auth, host_keys, lock: LockSettings::default() })
}

/// A folder on an SFTP server.
pub struct SftpStore {
    options: SftpOptions,
    /// The loaded private key, for [`SftpAuth::KeyFile`].
    key: Option<Arc<PrivateKey>>,
    url: String,
    /// The current connection, replaced when it breaks. A tokio mutex:
    /// it is held across the connect, so racing calls share one.
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

impl std::fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpStore").field("url", &self.url).finish_non_exhaustive()
    }
}

impl SftpStore {
    /// A store that connects on first use (and again after the connection
    /// breaks). Loads the key file now, so a missing or unreadable key is
    /// reported at once.
    pub fn new(mut options: SftpOptions) -> Result<SftpStore, StoreError> {
        if options.root.len() > 1 {
            options.root = options.root.trim_end_matches('/').to_string();
        }
        let key = match &options.auth {
            SftpAuth::KeyFile(path) => Some(Arc::new(connect::load_key(path)?)),
            SftpAuth::Password(_) => None,
        };
        let root = match options.root.as_str() {
            "" => "~".to_string(),
            absolute if absolute.starts_with('/') => absolute.to_string(),
            relative => format!("~/{relative}"),
        };
        let host = if options.host.contains(':') { format!("[{}]", options.host) } else { options.host.clone() };
        let url = format!("sftp://{}@{host}:{}/{}", options.user, options.port, root.trim_start_matches('/'));
        Ok(SftpStore { options, key, url, conn: tokio::sync::Mutex::new(None) })
    }

    /// Like [`SftpStore::new`], and connects now: an unreachable server, a
    /// refused host key or refused credentials are reported at once.
    pub async fn connect(options: SftpOptions) -> Result<SftpStore, StoreError> {
        let store = SftpStore::new(options)?;
        store.connection().await?;
        Ok(store)
    }

    /// The connection, connecting first if there is none or it broke.
    async fn connection(&self) -> Result<Arc<Conn>, StoreError> {
        let mut current = self.conn.lock().await;
        if let Some(conn) = current.as_ref().filter(|conn| conn.is_usable()) {
            return Ok(conn.clone());
        }
        let conn = connect::connect(&self.options, self.key.as_ref(), &self.url).await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// The object's path on the server.
    fn path(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(self.join(key))
    }

    fn join(&self, relative: &str) -> String {
        match self.options.root.as_str() {
            "" => relative.to_string(),
            root => format!("{root}/{relative}"),
        }
    }

    /// The key of a path below the root.
    fn key_of<'a>(&self, path: &'a str) -> &'a str {
        match self.options.root.as_str() {
            "" => path,
            root => path.strip_prefix(root).and_then(|p| p.strip_prefix('/')).unwrap_or(path),
        }
    }

    async fn create(
        &self,
        remote: &Remote<'_>,
        key: &str,
        path: &str,
        payload: &Payload,
    ) -> Result<ObjectMeta, StoreError> {
        let temp = temp_beside(path);
        let attrs = remote.write_new("create", key, &temp, payload).await?;
        match remote.rename_no_replace("create", key, &temp, path).await {
            // The rename links the same file: its attributes are the object's.
            Ok(true) => Ok(meta_of(key, &attrs)),
            Ok(false) => {
                remote.remove_quietly(&temp).await;
                Err(StoreError::AlreadyExists { key: key.to_string() })
            }
            Err(e) => {
                remote.remove_quietly(&temp).await;
                Err(e)
            }
        }
    }

    async fn update(
        &self,
        remote: &Remote<'_>,
        key: &str,
        path: &str,
        payload: &Payload,
        expected: &super::ETag,
    ) -> Result<ObjectMeta, StoreError> {
        // Uploaded before the lock is taken: the lock is held for a few
        // round trips, not for the transfer.
        let temp = temp_beside(path);
        let attrs = remote.write_new("update", key, &temp, payload).await?;
        let lock_path = beside(path, &format!(".{}.lock", file_name(path)));
        let lock = match lock::acquire(remote, key, &lock_path, self.options.lock).await {
            Ok(lock) => lock,
            Err(e) => {
                remote.remove_quietly(&temp).await;
                return Err(e);
            }
        };
        let result = self.swap_locked(remote, key, path, &temp, attrs.size.unwrap_or(0), expected, &lock).await;
        if result.is_err() {
            remote.remove_quietly(&temp).await;
        }
        lock.release(remote, key).await;
        result
    }

    /// Compares and replaces, under the lock.
    #[allow(clippy::too_many_arguments)]
    async fn swap_locked(
        &self,
        remote: &Remote<'_>,
        key: &str,
        path: &str,
        temp: &str,
        size: u64,
        expected: &super::ETag,
        lock: &lock::HeldLock,
    ) -> Result<ObjectMeta, StoreError> {
        let Some(current) = remote.stat("update", key, path).await? else {
            return Err(StoreError::PreconditionFailed { key: key.to_string() });
        };
        if meta_of(key, &current).etag.as_ref() != Some(expected) {
            return Err(StoreError::PreconditionFailed { key: key.to_string() });
        }
        // The new version's time is later than the old one's even within
        // one second, so its ETag differs (docs/STORES.md, "SFTP: ETags").
        let now_s = (crate::clock::now_ms() / 1000) as u32;
        let mtime = now_s.max(current.mtime.unwrap_or(0).saturating_add(1));
        remote.set_mtime("update", key, temp, mtime).await?;
        lock.confirm(remote, key).await?;
        remote.rename_over("update", key, temp, path).await?;
        let attrs = FileAttributes { size: Some(size), mtime: Some(mtime), ..FileAttributes::empty() };
        Ok(meta_of(key, &attrs))
    }

    /// Walks the folders under `dir`, collecting objects whose key starts
    /// with `prefix`.
    async fn walk(&self, remote: &Remote<'_>, start: String, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut out = Vec::new();
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let listing = if dir.is_empty() { "." } else { dir.as_str() };
            let handle = match remote.conn.sftp.opendir(listing).await {
                Ok(handle) => handle.handle,
                Err(e) if is_status(&e, StatusCode::NoSuchFile) => continue,
                Err(e) => return Err(remote.error("list", prefix, e)),
            };
            let mut entries = Vec::new();
            let read = loop {
                match remote.conn.sftp.readdir(handle.as_str()).await {
                    Ok(name) => entries.extend(name.files),
                    Err(e) if is_status(&e, StatusCode::Eof) => break Ok(()),
                    Err(e) => break Err(remote.error("list", prefix, e)),
                }
            };
            let _ = remote.conn.sftp.close(handle).await;
            read?;
            for entry in entries {
                // `.`, `..`, and the backend's temp, lock and tombstone files.
                if entry.filename.starts_with('.') {
                    continue;
                }
                let path = if dir.is_empty() { entry.filename.clone() } else { format!("{dir}/{}", entry.filename) };
                if entry.attrs.is_dir() {
                    pending.push(path);
                } else if entry.attrs.is_regular() {
                    let key = self.key_of(&path);
                    if key.starts_with(prefix) {
                        out.push(meta_of(key, &entry.attrs));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// A unique temp name beside `path` (a `.` name: invisible as a key).
fn temp_beside(path: &str) -> String {
    beside(path, &format!(".{}.{}.tmp", file_name(path), nonce()))
}

/// The path of `name` in `path`'s folder.
fn beside(path: &str, name: &str) -> String {
    match parent_of(path) {
        "" => name.to_string(),
        dir => format!("{dir}/{name}"),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[async_trait::async_trait]
impl Store for SftpStore {
    async fn get(&self, key: &str, options: GetOptions) -> Result<GetResult, StoreError> {
        let path = self.path(key)?;
        let conn = self.connection().await?;
        let remote = Remote { conn: &conn, url: &self.url };
        let handle = match conn.sftp.open(path.as_str(), OpenFlags::READ, FileAttributes::default()).await {
            Ok(handle) => handle.handle,
            Err(e) => return Err(remote.error("get", key, e)),
        };
        // The handle's attributes describe the file it reads, even if the
        // object is replaced meanwhile: ETag and bytes always agree.
        let checked = async {
            let attrs = conn.sftp.fstat(handle.as_str()).await.map_err(|e| remote.error("get", key, e))?.attrs;
            if attrs.is_dir() {
                return Err(StoreError::NotFound { op: "get", key: key.to_string() });
            }
            let meta = meta_of(key, &attrs);
            let range = options.range_of(&meta)?;
            Ok((meta, range))
        }
        .await;
        let (meta, range) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                let _ = conn.sftp.close(handle).await;
                return Err(e);
            }
        };
        let body = download(conn, self.url.clone(), key.to_string(), handle, range.clone());
        Ok(GetResult { meta, range, body })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let conn = self.connection().await?;
        let remote = Remote { conn: &conn, url: &self.url };
        match remote.stat("head", key, &path).await? {
            Some(attrs) if !attrs.is_dir() => Ok(meta_of(key, &attrs)),
            _ => Err(StoreError::NotFound { op: "head", key: key.to_string() }),
        }
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let conn = self.connection().await?;
        let remote = Remote { conn: &conn, url: &self.url };
        match &mode {
            PutMode::Create => self.create(&remote, key, &path, &payload).await,
            PutMode::Update(etag) => self.update(&remote, key, &path, &payload, etag).await,
        }
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        let paths = keys.iter().map(|key| Ok((key, self.path(key)?))).collect::<Result<Vec<_>, StoreError>>()?;
        if paths.is_empty() {
            return Ok(());
        }
        let conn = self.connection().await?;
        let remote = Remote { conn: &conn, url: &self.url };
        for batch in paths.chunks(IN_FLIGHT) {
            let removals: Vec<_> = batch.iter().map(|(key, path)| remote.remove("delete", key, path)).collect();
            futures::future::try_join_all(removals).await?;
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        validate_prefix(prefix)?;
        let conn = self.connection().await?;
        let remote = Remote { conn: &conn, url: &self.url };
        // Walk only the folder the prefix names, not the whole tree.
        let start = match prefix.rfind('/') {
            Some(slash) => self.join(&prefix[..slash]),
            None => self.options.root.clone(),
        };
        self.walk(&remote, start, prefix).await
    }

    fn url(&self) -> &str {
        &self.url
    }
}

/// The body of a get: pipelined reads of `range`, the handle closed at the
/// end (or when the body is dropped early).
fn download(conn: Arc<Conn>, url: String, key: String, handle: String, range: std::ops::Range<u64>) -> super::Body {
    let closer = CloseOnDrop { conn: conn.clone(), handle: Some(handle.clone()) };
    let offsets = (range.start..range.end).step_by(READ_CHUNK as usize);
    let reads = futures::stream::iter(offsets).map(move |offset| {
        let (conn, url, key, handle) = (conn.clone(), url.clone(), key.clone(), handle.clone());
        let len = (range.end - offset).min(READ_CHUNK as u64) as u32;
        async move { Remote { conn: &conn, url: &url }.read_exact_at("get", &key, &handle, offset, len).await }
    });
    // The closer lives as long as the stream.
    Box::pin(reads.buffered(IN_FLIGHT).map(move |chunk| {
        let _ = &closer;
        chunk
    }))
}

/// Closes a remote file handle when dropped (a body read to its end or
/// dropped halfway): the server keeps open handles until the connection
/// ends otherwise.
struct CloseOnDrop {
    conn: Arc<Conn>,
    handle: Option<String>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let (Some(handle), Ok(runtime)) = (self.handle.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let conn = self.conn.clone();
        runtime.spawn(async move {
            let _ = conn.sftp.close(handle).await;
        });
    }
}
