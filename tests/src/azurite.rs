//! Azurite's blob service (Microsoft's Azure Storage emulator) on a free
//! loopback port, for tests of the `abs://` store.
//!
//! Each [`AzuriteServer`] is its own process with its own data folder,
//! stopped when dropped; each test asks for a fresh container. Requests are
//! signed with Azurite's well-known development account and key.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use distributary_core::store::{AbsCredential, AbsOptions, AbsStore, Store};

use crate::moto::free_port;

/// Azurite's development storage account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published key for [`ACCOUNT`].
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Names the folder holding an npm install of Azurite (`scripts/setup.sh`
/// installs it in `$HOME/.cache/distributary/azurite`).
pub const AZURITE_ENV: &str = "DISTRIBUTARY_AZURITE";

/// A running Azurite blob service.
pub struct AzuriteServer {
    child: Child,
    port: u16,
    containers: AtomicU32,
    _data: tempfile::TempDir,
}

impl AzuriteServer {
    /// Starts `azurite-blob` on a free loopback port and waits until it
    /// says it listens. Panics with the fix if Azurite is not installed.
    pub fn start() -> AzuriteServer {
        let port = free_port();
        let data = tempfile::tempdir().expect("a temp folder for Azurite's data");
        let mut child = Command::new(azurite_command())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck", "--loose"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (install Azurite with scripts/setup.sh, or set {AZURITE_ENV} to \
                     the folder of an `npm install azurite`)",
                    azurite_command().display()
                )
            });
        // Ready when Azurite says so on stdout; the reader thread keeps
        // draining it so the pipe never fills.
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("successfully listens on") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let server = AzuriteServer { child, port, containers: AtomicU32::new(0), _data: data };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!("azurite-blob did not start listening on port {port} within 60 s");
        }
        server
    }

    /// The blob endpoint, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Options for `container/prefix` on this server with the dev key.
    pub fn options(&self, container: &str, prefix: &str) -> AbsOptions {
        AbsOptions {
            account: ACCOUNT.into(),
            container: container.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint()),
            credential: AbsCredential::AccountKey(ACCOUNT_KEY.into()),
        }
    }

    /// The `abs://` URL of `container/prefix` (credentials from [`Self::env`]).
    pub fn url(&self, container: &str, prefix: &str) -> String {
        format!("abs://{container}/{prefix}?account={ACCOUNT}&endpoint={}", self.endpoint())
    }

    /// Environment variables a child process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.into()), ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY.into())]
    }

    /// A container name not used yet on this server (not created).
    pub fn new_container_name(&self) -> String {
        let n = self.containers.fetch_add(1, Ordering::SeqCst);
        format!("test-{}-{n}", std::process::id())
    }

    /// Creates a new, empty container and returns its name.
    pub async fn create_container(&self) -> String {
        let container = self.new_container_name();
        let store = self.connect(&container, "");
        store.create_container().await.unwrap_or_else(|e| panic!("create container {container}: {e}"));
        container
    }

    /// A client of `container/prefix` on this server.
    pub fn connect(&self, container: &str, prefix: &str) -> AbsStore {
        AbsStore::connect(self.options(container, prefix)).unwrap_or_else(|e| panic!("connect to Azurite: {e}"))
    }

    /// A store on a fresh container of this server.
    pub async fn store(&self, prefix: &str) -> Arc<dyn Store> {
        let container = self.create_container().await;
        Arc::new(self.connect(&container, prefix))
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `azurite-blob`: under `$DISTRIBUTARY_AZURITE` or setup.sh's folder when
/// installed there, else from `PATH`.
fn azurite_command() -> PathBuf {
    let folder = std::env::var_os(AZURITE_ENV)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/distributary/azurite")));
    folder
        .map(|folder| folder.join("node_modules/.bin/azurite-blob"))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("azurite-blob"))
}
