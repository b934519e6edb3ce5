//! Restore and a new replica's first sync write the database once, straight
//! into a new file (issue 17): checked here against the real binaries, with
//! a snapshot larger than what readers hold in memory (so it is streamed
//! from the store as it is decoded) and commits after it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distributary_core::apply::replica_checksum;
use distributary_core::layout::snapshot_key;
use distributary_core::store::{FileStore, Store};
use distributary_tests::bins::binary;
use distributary_tests::history::History;

/// 3,000 rows of 4,000 random bytes: a 12 MB database whose snapshot does
/// not compress (past the 8 MiB readers hold in memory).
const SETUP: &str = "CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
     INSERT INTO blobs (body) SELECT randomblob(4000) FROM n;";

struct Fixture {
    dir: tempfile::TempDir,
    history: History,
    root: PathBuf,
    url: String,
}

/// A store holding a large snapshot at TXID 1 and ten commits after it.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(root.clone()));
    let mut history = History::create(&dir.path().join("primary.db"), store, SETUP).await;
    for i in 0..10 {
        history.commit(&format!("UPDATE blobs SET body = randomblob(4000) WHERE id % 10 = {i}")).await;
        history.commit("INSERT INTO blobs (body) VALUES (randomblob(9000))").await;
    }
    let url = format!("file://{}", root.display());
    Fixture { dir, history, root, url }
}

impl Fixture {
    fn folder(&self, name: &str) -> PathBuf {
        let folder = self.dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        folder
    }

    /// The primary's file with every commit checkpointed into it.
    fn primary_bytes(&self) -> Vec<u8> {
        self.history.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        std::fs::read(&self.history.path).unwrap()
    }
}

fn distributary(args: &[&str]) -> Command {
    let mut command = Command::new(binary("distributary", "distributary"));
    command.args(args);
    command
}

fn edge_reader(args: &[&str]) -> Command {
    let mut command = Command::new(binary("edge-reader", "edge-reader"));
    command.args(args);
    command
}

fn run(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn names_in(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The restored file is the primary's byte for byte, and so is a new
/// replica's first sync (whose folder holds the database and its sidecar,
/// no temp file); the next sync continues it through SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_and_a_first_sync_write_the_primary_byte_for_byte() {
    let mut f = fixture().await;
    let out = f.folder("restored").join("out.db");
    let output = run(distributary(&["restore", &f.url, "-o", out.to_str().unwrap(), "--integrity-check", "full"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(names_in(out.parent().unwrap()), ["out.db"]);
    let primary = f.primary_bytes();
    assert!(primary.len() > 12_000_000, "the fixture is {} bytes", primary.len());
    assert!(std::fs::read(&out).unwrap() == primary, "the restored file differs from the primary's");

    let replica = f.folder("edge").join("replica.db");
    let sync = || run(edge_reader(&["sync", "--source", &f.url, "--db", replica.to_str().unwrap()]));
    let output = sync();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        names_in(replica.parent().unwrap()),
        ["replica.db", "replica.db-distributary.json", "replica.db-distributary.lock"]
    );
    assert!(std::fs::read(&replica).unwrap() == primary, "the first sync's file differs from the primary's");

    f.history.commit("DELETE FROM blobs WHERE id % 3 = 0").await;
    let output = sync();
    assert!(output.status.success(), "{}", text(&output.stderr));
    // SQLite restamps page 1 when the sync commits; the sidecar holds the
    // primary's, which the replica's checksum counts.
    assert_eq!(replica_checksum(&replica).unwrap(), *f.history.checksums.last().unwrap());
}

/// kill -9 at moments of a restore and of a first sync: no output appears
/// (the file is renamed into place only whole), and the next run succeeds
/// and removes what the killed one left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_or_first_sync_killed_leaves_no_output_and_the_next_run_cleans_up() {
    let f = fixture().await;
    let folder = f.folder("killed");
    let out = folder.join("out.db");
    let replica = folder.join("replica.db");
    let restore = || distributary(&["restore", &f.url, "-o", out.to_str().unwrap()]);
    let sync = || edge_reader(&["sync", "--source", &f.url, "--db", replica.to_str().unwrap()]);
    let mut killed = 0;
    for (command, temp_prefix) in
        [(&restore as &dyn Fn() -> Command, ".out.db.restoring-"), (&sync, ".replica.db.syncing-")]
    {
        // Killed once its temp file appears, and once it holds 4 MB.
        for bytes in [0u64, 4 << 20] {
            let mut child = command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let reached = loop {
                let temp = names_in(&folder).into_iter().find(|n| n.starts_with(temp_prefix));
                let size = temp.map(|n| std::fs::metadata(folder.join(n)).map_or(0, |m| m.len()));
                if size.is_some_and(|s| s >= bytes) {
                    break true;
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            child.kill().unwrap();
            child.wait().unwrap();
            killed += usize::from(reached);
            assert!(!out.exists() && !replica.exists(), "a killed run left an output: {:?}", names_in(&folder));
        }
    }
    assert!(killed >= 2, "only {killed} runs were killed mid-way");
    for command in [restore(), sync()] {
        let output = run(command);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    assert_eq!(
        names_in(&folder),
        ["out.db", "replica.db", "replica.db-distributary.json", "replica.db-distributary.lock"]
    );
}

/// A damaged byte in the middle of the streamed snapshot: the restore and a
/// first sync fail naming the object, and leave no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_large_snapshot_fails_by_name_and_leaves_nothing() {
    let f = fixture().await;
    let key = snapshot_key(f.history.generation, distributary_core::TxId(1));
    let path = History::object_path(&f.root, &key);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8 << 20, "the snapshot is {} bytes: not streamed", bytes.len());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, bytes).unwrap();

    let folder = f.folder("damaged");
    let out = folder.join("out.db");
    let output = run(distributary(&["restore", &f.url, "-o", out.to_str().unwrap(), "--retry-for", "0s"]));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains(&key), "the error names the object: {}", text(&output.stderr));
    let replica = folder.join("replica.db");
    let output =
        run(edge_reader(&["sync", "--source", &f.url, "--db", replica.to_str().unwrap(), "--retry-for", "0s"]));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains(&key), "the error names the object: {}", text(&output.stderr));
    assert_eq!(names_in(&folder), ["replica.db-distributary.lock"]);
}

/// On a terminal (a pseudo-terminal from `script`), restore and sync draw a
/// progress bar that ends at 100%; piped, they print one summary line and
/// nothing on stderr; `--progress json` writes JSON lines ending with one
/// marked done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_a_bar_on_a_terminal_json_lines_on_request_and_nothing_when_piped() {
    let f = fixture().await;
    let folder = f.folder("progress");
    let restore_args = |out: &str| {
        format!(
            "{} restore {} -o {}",
            binary("distributary", "distributary").display(),
            f.url,
            folder.join(out).display()
        )
    };
    let on_terminal = |command_line: String| {
        let output = run({
            let mut command = Command::new("script");
            command.args(["-q", "-e", "-c", &command_line, "/dev/null"]);
            command
        });
        assert!(output.status.success(), "{}{}", text(&output.stdout), text(&output.stderr));
        text(&output.stdout)
    };
    let screen = on_terminal(restore_args("bar.db"));
    assert!(screen.contains("restoring ["), "no bar on the terminal: {screen:?}");
    assert!(screen.contains("100%") && screen.contains("ETA"), "{screen:?}");
    assert!(screen.contains("restored "), "{screen:?}");
    let sync_line = format!(
        "{} sync --source {} --db {}",
        binary("edge-reader", "edge-reader").display(),
        f.url,
        folder.join("replica.db").display()
    );
    let screen = on_terminal(sync_line);
    assert!(screen.contains("syncing [") && screen.contains("100%"), "no bar on the terminal: {screen:?}");

    let output = run(distributary(&["restore", &f.url, "-o", folder.join("piped.db").to_str().unwrap(), "--json"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "");
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str::<serde_json::Value>(&stdout).unwrap();

    let output =
        run(distributary(&["restore", &f.url, "-o", folder.join("json.db").to_str().unwrap(), "--progress", "json"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> =
        text(&output.stderr).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let last = lines.last().expect("progress lines");
    assert_eq!(last["progress"], "restoring");
    assert_eq!(last["done"], true);
    assert_eq!(last["fetched_bytes"], last["expected_bytes"]);
    assert!(last["pages_written"].as_u64().unwrap() > 3000, "{last}");
}

/// A new file takes the chain after its snapshot first and the snapshot
/// last, writing each page once: pages the chain changes, pages it drops
/// by shrinking the database (with auto-vacuum, a DELETE cuts the file)
/// and pages it adds again must all come out as the primary had them.
/// Restored at every TXID, through L0 objects (one of them several TXIDs
/// that shrink and regrow within it), then through L1 objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_shrinks_and_regrows_the_database_restores_byte_for_byte_at_every_txid() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::new(root.clone()));
    // WAL mode already wrote page 1: VACUUM makes the setting take.
    let setup = format!("PRAGMA auto_vacuum = FULL; VACUUM; {SETUP}");
    let mut history = History::create(&dir.path().join("primary.db"), store, &setup).await;
    let image = |history: &History| {
        history.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        std::fs::read(&history.path).unwrap()
    };
    let mut images = vec![image(&history)];
    let steps = [
        "UPDATE blobs SET body = randomblob(4000) WHERE id % 7 = 0",
        "DELETE FROM blobs WHERE id > 1000",
        "INSERT INTO blobs (body) SELECT randomblob(3000) FROM blobs WHERE id <= 1500",
        "DELETE FROM blobs WHERE id % 2 = 0",
    ];
    for sql in steps {
        history.commit(sql).await;
        images.push(image(&history));
    }
    // One object of three TXIDs: it shrinks the file, then grows it past
    // where it started.
    history
        .commit_many(&[
            "DELETE FROM blobs WHERE id > 200".into(),
            "UPDATE blobs SET body = randomblob(100)".into(),
            "INSERT INTO blobs (body) SELECT randomblob(4000) FROM blobs".into(),
        ])
        .await;
    history.publish().await;
    for _ in 0..3 {
        images.push(Vec::new());
    }
    *images.last_mut().unwrap() = image(&history);
    let sizes: Vec<usize> = images.iter().map(Vec::len).collect();
    assert!(sizes[2] < sizes[1] && sizes[3] > sizes[2] && sizes[4] < sizes[3], "the sizes {sizes:?}");

    let url = format!("file://{}", root.display());
    let out = dir.path().join("restored.db");
    let restore_at = |txid: Option<usize>| {
        let _ = std::fs::remove_file(&out);
        let mut args = vec!["restore".to_string(), url.clone(), "-o".into(), out.to_str().unwrap().into()];
        if let Some(txid) = txid {
            args.extend(["--txid".into(), (txid + 1).to_string()]);
        }
        let output = run(distributary(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        assert!(output.status.success(), "restore at {txid:?}: {}", text(&output.stderr));
        std::fs::read(&out).unwrap()
    };
    for (i, expected) in images.iter().enumerate().skip(1).filter(|(_, image)| !image.is_empty()) {
        assert!(restore_at(Some(i)) == *expected, "the restore at TXID {} differs from the primary's", i + 1);
    }
    assert!(restore_at(None) == *images.last().unwrap(), "the newest restore differs from the primary's");

    history.compact(&[(2, 3), (4, 5)], None).await;
    assert!(restore_at(None) == *images.last().unwrap(), "the restore through L1 objects differs");
}
