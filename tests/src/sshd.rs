//! A real OpenSSH server (Debian's `/usr/sbin/sshd`) on a free loopback
//! port, for the SFTP store's tests.
//!
//! Each [`SshServer`] runs in the foreground (`-D -e`) with a generated
//! config, a throwaway host key and user key in its own temp folder, and
//! `internal-sftp`; it logs in the current user (root here) with that key,
//! and is killed when dropped. Objects live under [`SshServer::data_dir`].

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use distributary_core::store::{HostKeyCheck, SftpAuth, SftpOptions, SftpStore, Store};

use crate::moto::free_port;

const SSHD: &str = "/usr/sbin/sshd";

/// The local account of the password-login tests, which `scripts/setup.sh`
/// creates: no shell, so it is only reachable through these servers'
/// `internal-sftp`.
pub const PASSWORD_USER: &str = "distributary-sftp";
/// Its password (a test account on a test machine, set by `scripts/setup.sh`).
pub const PASSWORD: &str = "distributary-sftp-test-only";
/// Its home folder, where its stores live.
const PASSWORD_USER_HOME: &str = "/var/lib/distributary-sftp";

/// A running sshd.
pub struct SshServer {
    child: Child,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
    roots: AtomicU32,
}

impl SshServer {
    /// Starts sshd on a free loopback port and waits until it accepts
    /// connections. Panics with the fix if OpenSSH's server is missing.
    pub fn start() -> SshServer {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: install it with `apt-get install -y openssh-server` (or run scripts/setup.sh)"
        );
        let dir = tempfile::tempdir().expect("a temp folder for sshd");
        for name in ["host_key", "user_key", "other_key"] {
            keygen(&dir.path().join(name));
        }
        std::fs::copy(dir.path().join("user_key.pub"), dir.path().join("authorized_keys")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        // sshd started by root insists on its privilege-separation folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = current_user();
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile none\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\nPermitRootLogin yes\n\
                 PubkeyAuthentication yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 AllowUsers {user} {PASSWORD_USER}\nSubsystem sftp internal-sftp\nLogLevel ERROR\n\
                 Match User {PASSWORD_USER}\n  ForceCommand internal-sftp\n",
                dir = dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {SSHD}: {e}"));
        let mut server = SshServer { child, port, user, dir, roots: AtomicU32::new(0) };
        // The known_hosts entry the store checks against.
        let host_key = std::fs::read_to_string(server.dir.path().join("host_key.pub")).unwrap();
        std::fs::write(server.known_hosts(), format!("[127.0.0.1]:{port} {host_key}")).unwrap();
        server.wait_ready();
        server
    }

    /// Waits until the port accepts a connection, or sshd exits (a bad
    /// config: its log says why).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut exited = None;
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            exited = self.child.try_wait().ok().flatten();
            if exited.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sshd did not accept connections on port {} (exit: {exited:?}): {}", self.port, self.log());
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user the server lets in.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key the server accepts.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("user_key")
    }

    /// A valid private key the server does not accept.
    pub fn other_key_path(&self) -> PathBuf {
        self.dir.path().join("other_key")
    }

    /// A known_hosts file listing this server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The folder the tests' stores live in (absolute).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A fresh, absolute store folder below [`SshServer::data_dir`].
    pub fn fresh_root(&self) -> String {
        let n = self.roots.fetch_add(1, Ordering::SeqCst);
        self.data_dir().join(format!("store-{n}")).display().to_string()
    }

    /// Options for a store at `root` with this server's key and host key.
    pub fn options(&self, root: &str) -> SftpOptions {
        SftpOptions {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            root: root.to_string(),
            auth: SftpAuth::KeyFile(self.key_path()),
            host_keys: HostKeyCheck::KnownHosts(self.known_hosts()),
            lock: Default::default(),
        }
    }

    /// Options for a store on a fresh folder of [`PASSWORD_USER`], who logs
    /// in with [`PASSWORD`]. Panics with the fix if the account is missing.
    pub fn password_options(&self) -> SftpOptions {
        let exists = Command::new("id").arg(PASSWORD_USER).stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(
            exists.is_ok_and(|status| status.success()),
            "the account {PASSWORD_USER} is missing: run scripts/setup.sh (it creates it for the password-login tests)"
        );
        let n = self.roots.fetch_add(1, Ordering::SeqCst);
        let root = format!("{PASSWORD_USER_HOME}/store-{}-{n}", self.port);
        SftpOptions { user: PASSWORD_USER.into(), auth: SftpAuth::Password(PASSWORD.into()), ..self.options(&root) }
    }

    /// A store on a fresh folder.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(SftpStore::new(self.options(&self.fresh_root())).expect("an sftp store"))
    }

    /// The `sftp://` URL of `root` (absolute) on this server.
    pub fn url(&self, root: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{root}?key-path={}&known-hosts={}",
            self.user,
            self.port,
            self.key_path().display(),
            self.known_hosts().display()
        )
    }

    /// What sshd logged (errors only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "distributary-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run ssh-keygen: {e} (install openssh-client)"));
    assert!(status.success(), "ssh-keygen {}: {status}", path.display());
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
