//! Bad inputs a new user tries, run against the real binaries: each test
//! names the defect it guards (issue 15). Nothing may be lost, and each
//! mistake gets an error naming the thing and the fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use distributary_core::GenerationId;
use distributary_core::TxId;
use distributary_core::format::{EncryptionKey, HEADER_SIZE, KeyCheck, read_segment_header};
use distributary_core::layout::l0_key;
use distributary_core::manifest::read_manifest;
use distributary_core::store::{FileStore, Store};
use distributary_tests::bins::binary;
use distributary_tests::chain::database_checksum;
use distributary_tests::moto::{MotoServer, free_port};
use distributary_tests::static_files::StaticServer;

/// A row text no encrypted object may show in the clear.
const MARKER: &str = "plaintext-marker-7f3a";

fn create_db(path: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    connection.execute_batch("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT);").unwrap();
    connection
}

fn write_rows(connection: &rusqlite::Connection, count: usize) {
    for i in 0..count {
        // Uncompressible enough that zstd keeps the marker's bytes visible
        // in a plaintext segment.
        connection
            .execute("INSERT INTO notes (body) VALUES (?1)", [format!("{MARKER} {i} {}", "q".repeat(i % 50))])
            .unwrap();
    }
}

/// Runs a workspace binary to completion, failing the test if it is still
/// running after `limit` (a command that should give up, hanging instead).
fn run_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn distributary(args: &[&str]) -> Command {
    let mut command = Command::new(binary("distributary", "distributary"));
    command.args(args).env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn replicate_once(db: &Path, url: &str, key_file: Option<&Path>) -> Output {
    let mut command = distributary(&["replicate", "--once", db.to_str().unwrap(), url]);
    if let Some(key_file) = key_file {
        command.arg("--encryption-key-file").arg(key_file);
    }
    run_within(command, Duration::from_secs(120))
}

fn restore(url: &str, out: &Path, key_file: Option<&Path>) -> Output {
    let mut command = distributary(&["restore", url, "-o", out.to_str().unwrap(), "--integrity-check", "full"]);
    if let Some(key_file) = key_file {
        command.arg("--encryption-key-file").arg(key_file);
    }
    run_within(command, Duration::from_secs(120))
}

async fn current_generation(store: &dyn Store) -> GenerationId {
    read_manifest(store).await.unwrap().expect("the store has a manifest").value.generation
}

/// Every segment of `generation` is sealed with `key_check`, and (when
/// sealed) no object shows the rows in the clear.
async fn assert_generation_sealed_with(store: &FileStore, root: &Path, generation: GenerationId, key_check: KeyCheck) {
    let objects = store.list(&format!("{generation}/")).await.unwrap();
    let segments: Vec<_> = objects.iter().filter(|o| o.key.ends_with(".seg")).collect();
    assert!(!segments.is_empty(), "generation {generation} holds no segment");
    for object in segments {
        let bytes = std::fs::read(root.join(&object.key)).unwrap();
        let header = read_segment_header(&object.key, &bytes[..HEADER_SIZE]).unwrap();
        assert_eq!(header.key_check, key_check, "{} is sealed with another key", object.key);
        if key_check != KeyCheck::NONE {
            let clear = bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes());
            assert!(!clear, "{} holds the rows in plaintext inside an encrypted generation", object.key);
        }
    }
}

/// Regression: changing the key (A→B, B→none, none→A) kept one generation
/// holding segments sealed with A, then B, then plaintext, which neither
/// restore nor compact could read. Each change now starts a generation, and
/// the newest state restores with the key it was written with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_starts_a_new_generation_and_every_state_restores_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("store");
    let url = format!("file://{}", root.display());
    let store = FileStore::new(root.clone());
    let key_a = dir.path().join("key-a");
    let key_b = dir.path().join("key-b");
    std::fs::write(&key_a, "aa".repeat(32)).unwrap();
    std::fs::write(&key_b, "bb".repeat(32)).unwrap();
    let check = |file: &Path| EncryptionKey::parse(&std::fs::read(file).unwrap()).unwrap().check();
    let app = create_db(&db);

    let mut generations = Vec::new();
    for (step, key) in [Some(&key_a), Some(&key_a), Some(&key_b), None, Some(&key_a)].into_iter().enumerate() {
        write_rows(&app, 20);
        let key = key.map(PathBuf::as_path);
        let output = replicate_once(&db, &url, key);
        assert!(output.status.success(), "step {step}: {}", stderr(&output));
        let generation = current_generation(&store).await;
        generations.push(generation);
        assert_generation_sealed_with(&store, &root, generation, key.map_or(KeyCheck::NONE, check)).await;

        // The newest state restores with its key, and equals the primary.
        let out = dir.path().join(format!("restored-{step}.db"));
        let output = restore(&url, &out, key);
        assert!(output.status.success(), "step {step}: restore: {}", stderr(&output));
        assert_eq!(database_checksum(&out).unwrap(), database_checksum(&db).unwrap(), "step {step}");
    }
    // The same key continues its generation; each change starts one.
    assert_eq!(generations[0], generations[1], "the same key must not start a generation");
    for step in 2..generations.len() {
        assert_ne!(generations[step], generations[step - 1], "step {step}: the key changed in one generation");
    }
    // The compactor reads what the replicator wrote (it refused mixed keys).
    let output = run_within(distributary(&["compact", &url]), Duration::from_secs(120));
    assert!(output.status.success(), "compact: {}", stderr(&output));
    // A wrong key is refused by name, not mistaken for damage.
    let output = restore(&url, &dir.path().join("wrong.db"), Some(&key_b));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("wrong encryption key"), "{}", stderr(&output));
}

/// Regression: a one-shot replicate to a read-only store, or to a
/// `file://` path that is a regular file, logged the reason and retried
/// forever. Permanent failures now exit 1 at once with the message.
#[test]
fn permanent_store_failures_stop_one_shot_commands_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    write_rows(&create_db(&db), 5);
    let limit = Duration::from_secs(30);

    let folder = dir.path().join("served");
    std::fs::create_dir_all(&folder).unwrap();
    let server = StaticServer::start(vec![("/".into(), folder)]);
    let command = distributary(&["replicate", "--once", db.to_str().unwrap(), &format!("{}/store", server.url())]);
    let output = run_within(command, limit);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("read-only"), "{}", stderr(&output));

    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let command = distributary(&["replicate", "--once", db.to_str().unwrap(), &format!("file://{}", file.display())]);
    let output = run_within(command, limit);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("is a file, not a folder"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a folder", "the file was changed");

    // The same for the daemon: it stops instead of retrying forever.
    for url in [format!("file://{}", file.display()), format!("{}/store", server.url())] {
        let output = run_within(distributary(&["replicate", db.to_str().unwrap(), &url]), limit);
        assert_eq!(output.status.code(), Some(1), "{url}: {}", stderr(&output));
    }

    // A bucket that does not exist is not an empty store (S3 answers 404).
    let moto = MotoServer::start();
    let mut command = distributary(&["replicate", db.to_str().unwrap(), &moto.url("no-such-bucket", "app")]);
    command.envs(moto.env());
    let output = run_within(command, limit);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("bucket does not exist"), "{}", stderr(&output));
}

/// Regression: `file:///` (the filesystem root) was accepted as a store and
/// written into, and `memory://` was accepted and the data went nowhere.
#[test]
fn the_filesystem_root_and_memory_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    write_rows(&create_db(&db), 1);
    for (url, needle) in [("file:///", "filesystem root"), ("memory://", "for tests")] {
        let output =
            run_within(distributary(&["replicate", "--once", db.to_str().unwrap(), url]), Duration::from_secs(30));
        assert_eq!(output.status.code(), Some(1), "{url}");
        assert!(stderr(&output).contains(needle), "{url}: {}", stderr(&output));
    }
}

/// An `s3://` store with no region found fails at once naming the fix, and
/// one whose endpoint does not answer (a transient failure) gives up after
/// `--retry-for` instead of hanging.
#[test]
fn s3_stores_without_a_region_or_an_answer_fail_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let isolated = |command: &mut Command| {
        for name in ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE"] {
            command.env_remove(name);
        }
        command
            .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("no-credentials"))
            .env("HOME", dir.path());
    };
    let mut command = distributary(&["restore", "s3://app-bucket/app", "-o", out.to_str().unwrap()]);
    isolated(&mut command);
    let output = run_within(command, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("AWS_REGION") && stderr(&output).contains("region="), "{}", stderr(&output));

    // No credentials anywhere: refused before any request, naming the chain.
    let url = format!("s3://app-bucket/app?region=us-east-1&endpoint=http://127.0.0.1:{}", free_port());
    let mut command = distributary(&["restore", &url, "-o", out.to_str().unwrap()]);
    isolated(&mut command);
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        command.env_remove(name);
    }
    let output = run_within(command, Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("AWS_ACCESS_KEY_ID"), "{}", stderr(&output));

    // Credentials, but nobody listens: retried, then given up on.
    let mut command = distributary(&["restore", &url, "-o", out.to_str().unwrap(), "--retry-for", "3s"]);
    isolated(&mut command);
    command.env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", "testing");
    let output = run_within(command, Duration::from_secs(90));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("unreachable"), "{}", stderr(&output));
    assert!(!out.exists());
    // The edge reader's one-shot sync gives up the same way.
    let mut command = Command::new(binary("edge-reader", "edge-reader"));
    command.args(["sync", "--source", &url, "--db", out.to_str().unwrap(), "--retry-for", "3s"]);
    isolated(&mut command);
    command.env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", "testing");
    command.env("AWS_EC2_METADATA_DISABLED", "true");
    let output = run_within(command, Duration::from_secs(90));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("unreachable"), "{}", stderr(&output));
    assert!(stderr(&output).contains("retrying"), "the retries are logged: {}", stderr(&output));
}

/// The names in `folder`, sorted.
fn names_in(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Regression: every successful restore left `.OUT.restoring-PID-shm` and
/// `-wal` beside the output. After success the folder holds exactly the
/// output file; after a failure, nothing new.
#[test]
fn a_restore_leaves_exactly_its_output_and_a_failed_one_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("store").display());
    write_rows(&create_db(&db), 30);
    assert!(replicate_once(&db, &url, None).status.success());

    let folder = dir.path().join("restored");
    std::fs::create_dir_all(&folder).unwrap();
    let output = restore(&url, &folder.join("out.db"), None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(names_in(&folder), ["out.db"]);
    // Opening the restored file works as for any SQLite database.
    assert_eq!(database_checksum(&folder.join("out.db")).unwrap(), database_checksum(&db).unwrap());

    let failed = dir.path().join("failed");
    std::fs::create_dir_all(&failed).unwrap();
    let output = run_within(
        distributary(&["restore", &url, "-o", failed.join("out.db").to_str().unwrap(), "--txid", "999999"]),
        Duration::from_secs(60),
    );
    assert!(!output.status.success());
    assert_eq!(names_in(&failed), Vec::<String>::new());
}

/// Regression: bytes after a segment's trailer were accepted by sync and
/// restore, though the format ends at the trailer. Both refuse the object
/// by name, and the replica keeps its last good state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_a_trailer_are_refused_by_sync_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let root = dir.path().join("store");
    let url = format!("file://{}", root.display());
    let app = create_db(&db);
    write_rows(&app, 10);
    assert!(replicate_once(&db, &url, None).status.success());
    let replica = dir.path().join("replica.db");
    let sync = || {
        let mut command = Command::new(binary("edge-reader", "edge-reader"));
        command.args(["sync", "--source", &url, "--db", replica.to_str().unwrap()]);
        run_within(command, Duration::from_secs(60))
    };
    assert!(sync().status.success());
    write_rows(&app, 10);
    assert!(replicate_once(&db, &url, None).status.success());

    let store = FileStore::new(root.clone());
    let generation = current_generation(&store).await;
    let key = l0_key(generation, TxId(2));
    let mut bytes = std::fs::read(root.join(&key)).unwrap();
    bytes.extend_from_slice(b"tail");
    std::fs::write(root.join(&key), bytes).unwrap();

    let before = database_checksum(&replica).unwrap();
    let output = sync();
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&key) && stderr(&output).contains("after the trailer"), "{}", stderr(&output));
    assert_eq!(database_checksum(&replica).unwrap(), before, "the replica changed");

    let output = restore(&url, &dir.path().join("restored.db"), None);
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&key) && stderr(&output).contains("after the trailer"), "{}", stderr(&output));
}
