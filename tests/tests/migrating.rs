//! `docs/MIGRATING.md`, run as written (issue #16): its `litestream.yml`,
//! the systemd unit's `ExecStartPre` and `ExecStart`, and every command of
//! its `sh` blocks, in order, against moto on loopback. Paths under `/etc`,
//! `/data` and `/usr/local/bin` move into a temporary folder, the bucket
//! gains moto's endpoint, and the example timestamp becomes "now"; nothing
//! else of the guide changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use distributary_tests::bins::binary;
use distributary_tests::moto::MotoServer;
use distributary_tests::process::{Process, tail};

const BUCKET: &str = "my-backup-bucket";
const EXAMPLE_TIME: &str = "2026-12-06T10:00:00Z";

fn guide() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/MIGRATING.md")).unwrap()
}

/// The bodies of the fenced blocks whose info string is `info`, in order.
fn blocks(doc: &str, info: &str) -> Vec<String> {
    let fence = format!("```{info}\n");
    let mut found = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("a closed block");
        found.push(body[..end].to_string());
        rest = &body[end..];
    }
    found
}

/// Where the guide's machine lives in this test.
struct Sandbox {
    root: PathBuf,
    moto: MotoServer,
}

impl Sandbox {
    /// The guide's text with its machine's paths and store moved here.
    fn localize(&self, text: &str) -> String {
        let root = self.root.display();
        let endpoint = format!("http://127.0.0.1:{}", self.moto.port());
        let now = chrono_like_now();
        text.replace("/etc/", &format!("{root}/etc/"))
            .replace("/data/", &format!("{root}/data/"))
            .replace("/usr/local/bin/", &format!("{root}/bin/"))
            .replace("region=us-east-1'", &format!("region=us-east-1&endpoint={endpoint}&path-style=true'"))
            .replace(
                "region: us-east-1\n",
                &format!("region: us-east-1\n        endpoint: {endpoint}\n        force-path-style: true\n"),
            )
            .replace(EXAMPLE_TIME, &now)
    }

    /// Runs a shell script with the sandbox's programs first on PATH.
    fn run(&self, script: &str) -> String {
        let output = self.command("sh").args(["-e", "-c", script]).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "`{script}` failed:\n{text}");
        text
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let path = format!("{}:{}", self.root.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        command.env("PATH", path).envs(self.moto.env());
        command
    }
}

/// A time just past now in RFC 3339 (UTC), from `date`, as a user would
/// type it: whole seconds, so the next second, to include every commit
/// made so far.
fn chrono_like_now() -> String {
    let output = Command::new("date").args(["-u", "-d", "+1 second", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn rows(db: &Path) -> i64 {
    let connection = rusqlite::Connection::open(db).unwrap();
    connection.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap()
}

fn unit_line<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("{key}= in the unit"))
}

#[test]
fn the_migration_guide_runs_as_written() {
    let doc = guide();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox { root: dir.path().to_path_buf(), moto: MotoServer::start() };
    sandbox.moto.create_named_bucket(BUCKET);
    for folder in ["etc", "data/edge", "bin"] {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
    }
    let bin = dir.path().join("bin");
    for program in [("distributary", "distributary"), ("edge-reader", "edge-reader")] {
        std::os::unix::fs::symlink(binary(program.0, program.1), bin.join(program.1)).unwrap();
    }
    let db = dir.path().join("data/app.db");
    // The app: a WAL database it keeps adding events to; `myapp` adds 100.
    let app = rusqlite::Connection::open(&db).unwrap();
    app.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
    app.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT);").unwrap();
    let insert = |n: usize| {
        for i in 0..n {
            app.execute("INSERT INTO events (body) VALUES (?1)", [format!("event {i}")]).unwrap();
        }
    };
    insert(50);
    let myapp = bin.join("myapp");
    std::fs::write(
        &myapp,
        format!(
            "#!/bin/sh\nexec python3 -c \"import sqlite3; c = sqlite3.connect('{}', isolation_level=None); \
             [c.execute('INSERT INTO events (body) VALUES (?)', ('from myapp',)) for _ in range(100)]\"\n",
            db.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&myapp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // 1. The config file, as it is (but for the store's endpoint).
    let [config] = &blocks(&doc, "yaml /etc/litestream.yml")[..] else { panic!("one litestream.yml") };
    std::fs::write(dir.path().join("etc/litestream.yml"), sandbox.localize(config)).unwrap();
    let sh = blocks(&doc, "sh");
    assert_eq!(sh.len(), 4, "the guide's command blocks: {sh:?}");
    let checked = sandbox.run(&sandbox.localize(&sh[0]));
    assert!(checked.contains("TXID"), "--once ships: {checked}");
    assert!(checked.contains("DISTRIBUTARY_SNAPSHOT_RETENTION=720h"), "the retention goes to the compactor: {checked}");

    // 2. The service: ExecStartPre with the database present does nothing;
    // ExecStart replicates until SIGTERM, shipping what was committed.
    let [unit] = &blocks(&doc, "ini /etc/systemd/system/distributary.service")[..] else { panic!("one unit") };
    let unit = sandbox.localize(unit);
    let pre = unit_line(&unit, "ExecStartPre");
    sandbox.run(pre);
    assert_eq!(rows(&db), 50, "ExecStartPre leaves an existing database alone");
    let mut service = Process::spawn(
        "service",
        dir.path(),
        sandbox.command("sh").args(["-c", &format!("exec {}", unit_line(&unit, "ExecStart"))]),
    );
    // Up (its signal handlers in place) once it says it replicates.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !service.log().contains("replicating;") {
        assert!(service.exited().is_none(), "the service exited:\n{}", tail(&service.log()));
        assert!(std::time::Instant::now() < deadline, "the service did not start:\n{}", tail(&service.log()));
        std::thread::sleep(Duration::from_millis(50));
    }
    insert(25);
    let status = service.terminate();
    assert!(status.success(), "the service stops cleanly on SIGTERM: {status}\n{}", tail(&service.log()));

    // 3. -exec: myapp adds 100 events and exits 0.
    sandbox.run(&sandbox.localize(&sh[1]));
    assert_eq!(rows(&db), 175);

    // 4. Restoring: the newest state, a point in time, the snapshots.
    let restored = sandbox.run(&sandbox.localize(&sh[2]));
    assert_eq!(rows(&dir.path().join("data/restored.db")), 175, "{restored}");
    assert_eq!(rows(&dir.path().join("data/as-of-ten.db")), 175, "{restored}");
    // A fresh machine: no database, no metadata; ExecStartPre restores it.
    drop(app);
    for leftover in ["app.db", "app.db-wal", "app.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join("data").join(leftover));
    }
    std::fs::remove_dir_all(dir.path().join("data/app.db-distributary")).unwrap();
    sandbox.run(pre);
    assert_eq!(rows(&db), 175, "ExecStartPre restores on a fresh machine");

    // 5. Readers.
    let answer = sandbox.run(&sandbox.localize(&sh[3]));
    assert!(answer.contains("175"), "the reader's replica has every event: {answer}");
}
