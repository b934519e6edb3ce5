//! `distributary replicate --dir` (issue #16): a folder of databases, each
//! to its own prefix of the store. While it runs, a database is created
//! (picked up within an interval), one is removed (flushed and stopped),
//! and a file that is not a WAL database is reported once and skipped;
//! after the stop, each database restores to what its app committed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use distributary_tests::bins::binary;
use distributary_tests::e2e::{FAST_LOCAL_COMPACTION, replicate_with_config};
use distributary_tests::process::{Process, tail};

fn create(db: &Path, rows: u32) {
    let app = rusqlite::Connection::open(db).unwrap();
    app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    app.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT);").unwrap();
    for i in 0..rows {
        app.execute("INSERT INTO t (body) VALUES (?1)", [format!("{} row {i}", db.display())]).unwrap();
    }
}

fn rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
}

/// Waits until `done` holds, or fails with the replicator's log.
fn wait_for(replicator: &mut Process, what: &str, mut done: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = replicator.log();
        if done(&log) {
            return;
        }
        if let Some(status) = replicator.exited() {
            panic!("replicate exited with {status} while waiting for {what}:\n{}", tail(&log));
        }
        assert!(Instant::now() < deadline, "after 60 s, no {what}:\n{}", tail(&log));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn restore(store: &Path, name: &str, out: &Path) {
    let url = format!("file://{}/{name}", store.display());
    let output = Command::new(binary("distributary", "distributary"))
        .args(["restore", &url, "--output"])
        .arg(out)
        .output()
        .unwrap();
    assert!(output.status.success(), "restore {url}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_folder_of_databases_is_replicated_each_to_its_prefix_as_databases_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = dir.path().join("store");
    std::fs::create_dir_all(data.join("tenants")).unwrap();
    let path = |name: &str| -> PathBuf { data.join(name) };
    create(&path("a.db"), 10);
    create(&path("tenants/b.db"), 20);
    create(&path("gone.db"), 5);
    std::fs::write(path("notes.txt"), "not matched by the pattern").unwrap();

    let mut replicator = Process::spawn(
        "replicate",
        dir.path(),
        Command::new(binary("distributary", "distributary"))
            .args(["replicate", "--sync-interval", "200ms", "--recursive", "--dir"])
            .arg(&data)
            .arg(format!("file://{}", store.display())),
    );
    let manifest = |name: &str| store.join(name).join("manifest.json");
    for name in ["a.db", "tenants/b.db", "gone.db"] {
        wait_for(&mut replicator, &format!("first upload of {name}"), |_| manifest(name).exists());
    }

    // Created while running: picked up at the next scan.
    create(&path("tenants/new.db"), 7);
    wait_for(&mut replicator, "the new database's first upload", |_| manifest("tenants/new.db").exists());

    // A database in rollback-journal mode is reported once, with the fix,
    // however often its app writes; switched to WAL, it is picked up.
    let rollback = rusqlite::Connection::open(path("rollback.db")).unwrap();
    rollback.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)").unwrap();
    wait_for(&mut replicator, "the report of rollback.db", |log| log.contains("journal_mode=WAL"));
    for i in 0..4 {
        rollback.execute("INSERT INTO t (body) VALUES (?1)", [format!("rollback row {i}")]).unwrap();
        std::thread::sleep(Duration::from_millis(250)); // past a scan or two
    }
    rollback.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    drop(rollback);
    wait_for(&mut replicator, "rollback.db picked up once in WAL mode", |_| manifest("rollback.db").exists());

    // Removed while running: flushed and stopped.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path("gone.db").display()));
    }
    wait_for(&mut replicator, "gone.db stopping", |log| log.contains("the database is gone"));

    // Writes after the start reach their prefix.
    create(&path("a.db"), 5);
    create(&path("tenants/new.db"), 3);
    let status = replicator.terminate();
    let log = replicator.log();
    assert!(status.success(), "replicate exited with {status}:\n{}", tail(&log));
    assert_eq!(log.matches("skipped: not in WAL mode").count(), 1, "reported once:\n{}", tail(&log));
    assert!(!store.join("notes.txt").exists());

    for (name, expected) in
        [("a.db", 15), ("tenants/b.db", 20), ("tenants/new.db", 10), ("gone.db", 5), ("rollback.db", 4)]
    {
        let out = dir.path().join("restored").join(name);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        restore(&store, name, &out);
        assert_eq!(rows(&out), expected, "{name} restored");
        if name != "gone.db" {
            let primary = rusqlite::Connection::open(path(name)).unwrap();
            let want: String = primary.query_row("SELECT group_concat(body) FROM t", [], |r| r.get(0)).unwrap();
            let got: String = rusqlite::Connection::open(&out)
                .unwrap()
                .query_row("SELECT group_concat(body) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, want, "{name}: the restored rows are the primary's");
        }
    }
}

/// `compaction: local` with a folder: each database's prefix is compacted
/// in the replicator (Litestream 0.5's `levels` and `snapshot-interval`,
/// short for the test).
#[test]
fn a_folders_databases_are_compacted_locally_each_in_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&data).unwrap();
    let path = |name: &str| -> PathBuf { data.join(name) };
    create(&path("a.db"), 3);
    create(&path("b.db"), 3);
    let mut replicator = replicate_with_config(
        dir.path(),
        &format!(
            "{FAST_LOCAL_COMPACTION}\
             dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    replica:\n      type: file\n      path: {}\n      \
             sync-interval: 200ms\n      retention-check-interval: 1s\n      snapshot-interval: 2s\n",
            data.display(),
            store.display()
        ),
    );
    let compacted = |name: &str| -> bool {
        let level = store.join(name);
        let Ok(generations) = std::fs::read_dir(&level) else { return false };
        generations.flatten().any(|g| std::fs::read_dir(g.path().join("l1")).is_ok_and(|mut l1| l1.next().is_some()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while !(compacted("a.db") && compacted("b.db")) {
        // Commits keep coming, so windows close with segments in them.
        create(&path("a.db"), 1);
        create(&path("b.db"), 1);
        i += 1;
        if let Some(status) = replicator.exited() {
            panic!("replicate exited with {status}:\n{}", tail(&replicator.log()));
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s and {i} commits each, no L1 in both prefixes:\n{}",
            tail(&replicator.log())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = replicator.terminate();
    assert!(status.success(), "replicate exited with {status}:\n{}", tail(&replicator.log()));
    for name in ["a.db", "b.db"] {
        let out = dir.path().join("restored").join(name);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        restore(&store, name, &out);
        assert_eq!(rows(&out), rows(&path(name)), "{name} restored after compaction");
    }
}
