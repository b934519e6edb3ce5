//! One database replicated at once to a folder, S3 (moto on loopback), an
//! SFTP server (OpenSSH's sshd on loopback) and Azure Blob Storage (Azurite
//! on loopback) from one
//! configuration file in Litestream's form, each store with its own sync
//! interval; then restored, synced by an edge reader and compacted from
//! each, and every copy equal to the primary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use distributary_tests::azurite::{ACCOUNT, ACCOUNT_KEY, AzuriteServer};
use distributary_tests::bins::binary;
use distributary_tests::chain::database_checksum;
use distributary_tests::moto::{ACCESS_KEY_ID, MotoServer, SECRET_ACCESS_KEY};
use distributary_tests::programs::{Env, distributary, edge_sync};
use distributary_tests::sshd::SshServer;

/// The rows the app writes, one transaction each.
const ROWS: usize = 200;

/// A HOME for the programs whose `~/.ssh/known_hosts` knows the test's
/// sshd: the default host-key check, as on a user's machine.
fn home_knowing(sshd: &SshServer, dir: &Path) -> PathBuf {
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::copy(sshd.known_hosts(), home.join(".ssh/known_hosts")).unwrap();
    home
}

fn assert_equal_to_primary(copy: &Path, primary: &Path, what: &str) {
    assert_eq!(
        database_checksum(copy).unwrap(),
        database_checksum(primary).unwrap(),
        "{what} holds the primary's database"
    );
    let connection = rusqlite::Connection::open(copy).unwrap();
    let rows: i64 = connection.query_row("SELECT count(*) FROM events", [], |row| row.get(0)).unwrap();
    assert_eq!(rows, ROWS as i64, "{what}: every row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_database_fans_out_to_a_folder_s3_sftp_and_azure_and_comes_back_from_each() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start();
    let bucket = moto.create_bucket();
    let sshd = SshServer::start();
    let azurite = AzuriteServer::start();
    let container = azurite.create_container().await;
    let sftp_root = sshd.fresh_root();
    let home = home_knowing(&sshd, dir.path());
    let db = dir.path().join("app.db");
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:
  - path: {db}
    replicas:
      - type: file
        path: {folder}
        sync-interval: 100ms
      - type: s3
        bucket: {bucket}
        path: app
        endpoint: {s3_endpoint}
        region: us-east-1
        access-key-id: {ACCESS_KEY_ID}
        secret-access-key: {SECRET_ACCESS_KEY}
        sync-interval: 200ms
      - type: sftp
        host: 127.0.0.1:{ssh_port}
        user: {user}
        path: {sftp_root}
        key-path: {key}
        sync-interval: 300ms
      - type: abs
        account-name: {ACCOUNT}
        account-key: {ACCOUNT_KEY}
        bucket: {container}
        path: app
        endpoint: {endpoint}
        sync-interval: 500ms
",
            db = db.display(),
            folder = dir.path().join("folder").display(),
            ssh_port = sshd.port(),
            user = sshd.user(),
            key = sshd.key_path().display(),
            endpoint = azurite.endpoint(),
            s3_endpoint = moto.endpoint(),
        ),
    )
    .unwrap();
    // The app creates the database, commits ROWS transactions and exits;
    // the replicator ships everything to every store before it exits too.
    let app = format!(
        "python3 -c \"import sqlite3; c = sqlite3.connect('{}', isolation_level=None); \
         c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE events(id INTEGER PRIMARY KEY, body TEXT)'); \
         [c.execute('INSERT INTO events(body) VALUES (?)', ('row %d ' % i + 'x' * (i % 500),)) for i in range({ROWS})]\"",
        db.display()
    );
    let output = Command::new(binary("distributary", "distributary"))
        .args(["replicate", "--config"])
        .arg(&config)
        .args(["--exec", &app])
        .env("HOME", &home)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "replicate: {}", String::from_utf8_lossy(&output.stderr));

    let env: Vec<(&'static str, String)> =
        [("HOME", home.display().to_string())].into_iter().chain(azurite.env()).chain(moto.env()).collect();
    let stores = [
        ("folder", format!("file://{}", dir.path().join("folder").display())),
        ("s3", moto.url(&bucket, "app")),
        ("sftp", sshd.url(&sftp_root)),
        ("azure", azurite.url(&container, "app")),
    ];
    for (name, url) in &stores {
        restore_sync_and_compact(name, url, &db, dir.path(), &env);
    }
}

/// Restores `url` into a new file, syncs an edge reader from it, compacts
/// it, and restores again: each copy equal to `primary`.
fn restore_sync_and_compact(name: &str, url: &str, primary: &Path, dir: &Path, env: &Env) {
    let restored = dir.join(format!("restored-{name}.db"));
    let output = distributary(&["restore", url, "-o", restored.to_str().unwrap()], env);
    assert!(output.status.success(), "restore from {name}: {}", String::from_utf8_lossy(&output.stderr));
    assert_equal_to_primary(&restored, primary, &format!("the restore from {name}"));

    let replica = dir.join(format!("replica-{name}.db"));
    edge_sync(url, &replica, env).unwrap_or_else(|e| panic!("edge-reader sync from {name}: {e}"));
    assert_equal_to_primary(&replica, primary, &format!("the edge replica of {name}"));

    // Everything into L1 and a snapshot now, rather than on the defaults' schedule.
    let output =
        distributary(&["compact", url, "--l1-window", "0s", "--snapshot-interval", "0s", "--l0-retention", "0s"], env);
    assert!(output.status.success(), "compact {name}: {}", String::from_utf8_lossy(&output.stderr));
    let after = dir.join(format!("compacted-{name}.db"));
    let output = distributary(&["restore", url, "-o", after.to_str().unwrap()], env);
    assert!(
        output.status.success(),
        "restore from {name} after compaction: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_equal_to_primary(&after, primary, &format!("the restore from {name} after compaction"));
}
