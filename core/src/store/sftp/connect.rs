//! One SSH connection with its SFTP channel: host-key checking against a
//! `known_hosts` file, key or password authentication, and the mapping of
//! SFTP failures onto [`StoreError`] kinds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::StatusCode;

use super::{HostKeyCheck, SftpAuth, SftpOptions};
use crate::store::StoreError;

/// Seconds an SFTP request may wait for its reply before the connection is
/// taken for dead (and replaced on the next call).
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// A live connection. Cheap to share: requests are pipelined by id, so
/// concurrent store calls use one connection.
pub(super) struct Conn {
    ssh: client::Handle<HostKeyChecker>,
    pub sftp: RawSftpSession,
    /// The server offers `fsync@openssh.com` (temp files reach its disk
    /// before they are published).
    pub fsync: bool,
    /// The server offers `posix-rename@openssh.com` (rename over an
    /// existing name, atomically), which compare-and-swap needs.
    pub posix_rename: bool,
    /// Set when a request failed in a way that leaves the connection
    /// unusable; the next call connects again.
    broken: AtomicBool,
}

impl Conn {
    /// Whether this connection can still carry requests.
    pub fn is_usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.ssh.is_closed()
    }
}

/// Checks the server's host key while the SSH handshake runs, and keeps
/// the reason for a refusal so the error can name the host and the fix
/// (russh itself only reports "unknown key").
struct HostKeyChecker {
    host: String,
    port: u16,
    check: HostKeyCheck,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyChecker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, offered: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let verdict = match (&self.check, offered) {
            (HostKeyCheck::InsecureSkipForTests, _) => Ok(()),
            (HostKeyCheck::KnownHosts(_), russh::keys::PublicKeyOrCertificate::Certificate(_)) => Err(format!(
                "{} presented a host certificate, which is not supported: list its plain host key in the known_hosts file",
                host_label(&self.host, self.port)
            )),
            (HostKeyCheck::KnownHosts(path), russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }) => {
                check_known_host(&self.host, self.port, key, path.as_path())
            }
            (HostKeyCheck::Pinned(pinned), russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }) => {
                check_pinned(&self.host, self.port, key, pinned)
            }
            (HostKeyCheck::Pinned(_), russh::keys::PublicKeyOrCertificate::Certificate(_)) => Err(format!(
                "{} presented a host certificate, which is not supported: give its plain host key as host-key",
                host_label(&self.host, self.port)
            )),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(reason) => {
                *self.refusal.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason);
                Ok(false)
            }
        }
    }
}

/// `host:port` as known_hosts spells it (`[host]:port` off port 22).
fn host_label(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

fn check_pinned(host: &str, port: u16, key: &PublicKey, pinned: &PublicKey) -> Result<(), String> {
    if key.key_data() == pinned.key_data() {
        return Ok(());
    }
    Err(format!(
        "host key of {} ({} {}) is not the host-key configured ({} {}): the server was reinstalled or someone \
         is intercepting the connection; if the change is expected, configure the new key",
        host_label(host, port),
        key.algorithm(),
        key.fingerprint(HashAlg::Sha256),
        pinned.algorithm(),
        pinned.fingerprint(HashAlg::Sha256)
    ))
}

fn check_known_host(host: &str, port: u16, key: &PublicKey, path: &Path) -> Result<(), String> {
    let label = host_label(host, port);
    let fingerprint = key.fingerprint(HashAlg::Sha256);
    let file = path.display();
    match russh::keys::check_known_hosts_path(host, port, key, path) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "host key of {label} ({} {fingerprint}) is not in {file}: check the fingerprint with the server's \
             administrator, then add it with `ssh-keyscan -p {port} {host} >> {file}` (or name another file \
             with ?known-hosts=)",
            key.algorithm()
        )),
        Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
            "host key of {label} ({} {fingerprint}) does not match line {line} of {file}: the server was \
             reinstalled or someone is intercepting the connection; if the change is expected, remove the old \
             key with `ssh-keygen -R '{label}' -f {file}` and add the new one",
            key.algorithm()
        )),
        Err(e) => Err(format!("read known hosts {file}: {e}")),
    }
}

/// A permanent failure of the connection's setup (retrying cannot help).
fn permanent(op: &'static str, key: &str, message: String) -> StoreError {
    StoreError::Backend { op, key: key.to_string(), message, retryable: false }
}

/// A failure that may pass (network, server restarting).
fn transient(op: &'static str, key: &str, message: String) -> StoreError {
    StoreError::Backend { op, key: key.to_string(), message, retryable: true }
}

/// Loads a private key file, with a message naming the file.
pub(super) fn load_key(path: &Path) -> Result<PrivateKey, StoreError> {
    russh::keys::load_secret_key(path, None).map_err(|e| {
        permanent(
            "connect",
            "",
            format!(
                "load SSH private key {}: {e} (keys with a passphrase are not supported: use a key without one, \
                 readable only by this user)",
                path.display()
            ),
        )
    })
}

/// The key files tried when neither a key nor a password is given, in
/// OpenSSH's order.
pub(super) fn default_key_files() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else { return Vec::new() };
    let ssh = PathBuf::from(home).join(".ssh");
    vec![ssh.join("id_ed25519"), ssh.join("id_rsa")]
}

/// `~/.ssh/known_hosts`.
pub(super) fn default_known_hosts() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ssh").join("known_hosts"))
}

/// Opens a connection, checks the host key, authenticates and starts the
/// SFTP subsystem. `key` is the loaded key for [`SftpAuth::KeyFile`].
pub(super) async fn connect(
    options: &SftpOptions,
    key: Option<&Arc<PrivateKey>>,
    store_url: &str,
) -> Result<Arc<Conn>, StoreError> {
    let label = host_label(&options.host, options.port);
    let config = client::Config {
        // A dead server or network is noticed by keepalives, not only when
        // a request times out.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        inactivity_timeout: None,
        ..Default::default()
    };
    let refusal = Arc::new(Mutex::new(None));
    let checker = HostKeyChecker {
        host: options.host.clone(),
        port: options.port,
        check: options.host_keys.clone(),
        refusal: refusal.clone(),
    };
    let connecting = client::connect(Arc::new(config), (options.host.as_str(), options.port), checker);
    let mut ssh = match tokio::time::timeout(Duration::from_secs(20), connecting).await {
        Ok(Ok(ssh)) => ssh,
        Ok(Err(e)) => {
            if let Some(reason) = refusal.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() {
                return Err(permanent("connect", store_url, format!("refuse {reason}")));
            }
            return Err(transient("connect", store_url, format!("connect to {label}: {e}")));
        }
        Err(_) => return Err(transient("connect", store_url, format!("connect to {label}: timed out after 20 s"))),
    };
    let user = options.user.as_str();
    let (result, what) = match (&options.auth, key) {
        (SftpAuth::KeyFile(path), Some(key)) => {
            // RSA keys sign with the best hash the server accepts (not SHA-1).
            // (Asked only for RSA: the answer waits for the server's
            // extension info, which not every server sends.)
            let hash = if key.algorithm().is_rsa() {
                ssh.best_supported_rsa_hash().await.ok().flatten().flatten()
            } else {
                None
            };
            let result = ssh.authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash)).await;
            (result, format!("key {}", path.display()))
        }
        (SftpAuth::Password(password), _) => {
            (ssh.authenticate_password(user, password.as_str()).await, "a password".to_string())
        }
        (SftpAuth::KeyFile(path), None) => {
            return Err(permanent("connect", store_url, format!("key {} was not loaded", path.display())));
        }
    };
    match result {
        Ok(AuthResult::Success) => {}
        Ok(AuthResult::Failure { .. }) => {
            let fix = match &options.auth {
                SftpAuth::KeyFile(_) => "add its public key to the user's ~/.ssh/authorized_keys on the server",
                SftpAuth::Password(_) => "check DISTRIBUTARY_SFTP_PASSWORD, or use a key (?key-path=)",
            };
            return Err(permanent(
                "connect",
                store_url,
                format!("authenticate to {label} as {user} with {what}: refused by the server ({fix})"),
            ));
        }
        Err(e) => return Err(transient("connect", store_url, format!("authenticate to {label} as {user}: {e}"))),
    }
    let channel = ssh
        .channel_open_session()
        .await
        .map_err(|e| transient("connect", store_url, format!("open an SSH channel to {label}: {e}")))?;
    channel.request_subsystem(true, "sftp").await.map_err(|e| {
        permanent("connect", store_url, format!("start the sftp subsystem on {label}: {e} (is SFTP enabled there?)"))
    })?;
    let sftp = RawSftpSession::new(channel.into_stream());
    sftp.set_timeout(REQUEST_TIMEOUT_SECS);
    let version =
        sftp.init().await.map_err(|e| transient("connect", store_url, format!("start SFTP with {label}: {e}")))?;
    let offers = |name: &str| version.extensions.contains_key(name);
    Ok(Arc::new(Conn {
        ssh,
        sftp,
        fsync: offers("fsync@openssh.com"),
        posix_rename: offers("posix-rename@openssh.com"),
        broken: AtomicBool::new(false),
    }))
}

/// Whether an SFTP status code is `code`.
pub(super) fn is_status(error: &SftpError, code: StatusCode) -> bool {
    matches!(error, SftpError::Status(status) if status.status_code == code)
}

/// Maps an SFTP failure of `op` on `key` to a store error. Failures that
/// mean the connection is gone mark it broken, so the next call connects
/// again, and are retryable.
pub(super) fn map_error(conn: &Conn, op: &'static str, key: &str, store_url: &str, error: SftpError) -> StoreError {
    let (retryable, message) = match &error {
        SftpError::Status(status) => match status.status_code {
            StatusCode::NoSuchFile => return StoreError::NotFound { op, key: key.to_string() },
            StatusCode::PermissionDenied => {
                (false, format!("permission denied by {store_url} (check the folder's owner and mode)"))
            }
            StatusCode::OpUnsupported => (false, format!("{store_url} does not support this operation")),
            StatusCode::NoConnection | StatusCode::ConnectionLost => {
                conn.broken.store(true, Ordering::Relaxed);
                (true, format!("connection to {store_url} lost"))
            }
            // SSH_FX_FAILURE covers every other errno (a full disk among
            // them): later may work.
            _ => (true, format!("{store_url}: {}: {}", status.status_code, status.error_message)),
        },
        SftpError::Limited(limit) => (false, format!("{store_url}: {limit}")),
        SftpError::Timeout | SftpError::IO(_) | SftpError::UnexpectedPacket | SftpError::UnexpectedBehavior(_) => {
            conn.broken.store(true, Ordering::Relaxed);
            (true, format!("connection to {store_url} failed: {error}"))
        }
    };
    StoreError::Backend { op, key: key.to_string(), message, retryable }
}
