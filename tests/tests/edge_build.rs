//! The small edge reader for devices (scripts/build-edge.sh): `edge-reader`
//! without the AWS SDK, statically linked against musl for x86-64 and
//! aarch64. Both builds stay within 8 MB (8,000,000 bytes), are static ELF
//! executables for their architecture, and the x86-64 one brings a replica
//! of a WAL-mode primary up to date from a store served over loopback HTTP
//! (a new replica from a snapshot, then the primary's next commits) and
//! refuses an `s3://` store with the fix in its message.
//!
//! Needs what scripts/setup.sh installs (cargo-zigbuild, ziglang, the two
//! musl targets); build-edge.sh installs them too if they are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use distributary_tests::bins::{target_dir, workspace};
use distributary_tests::chain::database_checksum;
use distributary_tests::static_files::StaticServer;
use distributary_tests::wal_primary::WalPrimary;
use serde_json::Value;

/// The size budget of each build, in bytes (8 MB).
const LIMIT_BYTES: u64 = 8_000_000;

/// ELF `e_machine` values.
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// The two builds, made once per test process by scripts/build-edge.sh into
/// the tests' own target folder (so later runs reuse it).
struct Builds {
    x86_64: PathBuf,
    aarch64: PathBuf,
}

fn builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let target = target_dir();
        let output = Command::new("bash")
            .arg(workspace().join("scripts/build-edge.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/build-edge.sh");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "scripts/build-edge.sh failed ({}): {stdout}", output.status);
        // It prints "<path>\t<size> bytes" per build.
        let built = |triple: &str| {
            let path = target.join(triple).join("edge-release/edge-reader");
            assert!(
                stdout.lines().any(|l| l.starts_with(&format!("{}\t", path.display()))),
                "build-edge.sh did not report {}: {stdout}",
                path.display()
            );
            path
        };
        Builds { x86_64: built("x86_64-unknown-linux-musl"), aarch64: built("aarch64-unknown-linux-musl") }
    })
}

/// What the ELF header and program headers of a binary say.
#[derive(Debug)]
struct Elf {
    machine: u16,
    /// A `PT_INTERP` segment: the binary needs a dynamic loader.
    interpreter: bool,
    /// A `PT_DYNAMIC` segment: the binary has dynamic linking to do.
    dynamic: bool,
}

/// Reads a 64-bit little-endian ELF file's machine and program headers
/// (the layout of the System V ABI's ELF-64 header).
fn read_elf(path: &Path) -> Elf {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(bytes.len() > 64 && &bytes[..4] == b"\x7fELF", "{} is not an ELF file", path.display());
    assert_eq!(bytes[4], 2, "{} is not a 64-bit ELF file", path.display());
    assert_eq!(bytes[5], 1, "{} is not little-endian", path.display());
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let machine = u16_at(18);
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56) as usize);
    let types: Vec<u32> = (0..phnum).map(|i| u32_at(phoff + i * phentsize)).collect();
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    Elf { machine, interpreter: types.contains(&PT_INTERP), dynamic: types.contains(&PT_DYNAMIC) }
}

#[test]
fn both_builds_are_small_static_executables_for_their_architecture() {
    let builds = builds();
    for (path, machine) in [(&builds.x86_64, EM_X86_64), (&builds.aarch64, EM_AARCH64)] {
        let size = std::fs::metadata(path).unwrap().len();
        assert!(size <= LIMIT_BYTES, "{} is {size} bytes, over the {LIMIT_BYTES}-byte budget", path.display());
        let elf = read_elf(path);
        assert_eq!(elf.machine, machine, "{}: wrong architecture", path.display());
        assert!(!elf.interpreter, "{} asks for a dynamic loader (PT_INTERP): not static", path.display());
        assert!(!elf.dynamic, "{} has a dynamic section (PT_DYNAMIC): not static", path.display());
    }
}

/// A primary with an `events` table of 1,500-byte blobs.
struct Primary {
    wal: WalPrimary,
    next: i64,
}

impl Primary {
    fn new() -> Primary {
        Primary { wal: WalPrimary::create("CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB)"), next: 1 }
    }

    /// Commits `transactions` of `rows` inserts each, then ships them.
    fn write(&mut self, transactions: usize, rows: usize) {
        let mut connection = rusqlite::Connection::open(self.wal.db()).unwrap();
        for _ in 0..transactions {
            let transaction = connection.transaction().unwrap();
            for _ in 0..rows {
                // Varied bytes, so pages differ and compress like data.
                let body: Vec<u8> = (0..1500).map(|i| (self.next.wrapping_mul(31) + i) as u8).collect();
                transaction.execute("INSERT INTO events (id, body) VALUES (?1, ?2)", (self.next, body)).unwrap();
                self.next += 1;
            }
            transaction.commit().unwrap();
        }
        drop(connection);
        self.wal.ship();
    }
}

fn run(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary).args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
}

/// `edge-reader sync --json`'s summary, or a panic with its stderr.
fn sync(binary: &Path, source: &str, db: &Path) -> Value {
    let output =
        run(binary, &["sync", "--json", "--progress", "none", "--source", source, "--db", db.to_str().unwrap()]);
    assert!(output.status.success(), "sync from {source} failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("sync --json prints a JSON summary")
}

#[test]
fn the_static_x86_64_build_syncs_a_replica_over_http() {
    let reader = &builds().x86_64;
    let mut primary = Primary::new();
    // A snapshot of about 3 MB, then commits after it as L0 segments.
    primary.write(1, 2000);
    primary.write(20, 10);
    let server = StaticServer::start(vec![("/store".into(), primary.wal.store())]);
    let source = format!("{}/store", server.url());
    let work = tempfile::tempdir().unwrap();
    let replica = work.path().join("replica.db");

    let summary = sync(reader, &source, &replica);
    assert!(summary["to_txid"].as_u64().is_some_and(|txid| txid > 1), "the first sync stopped short: {summary}");
    assert_eq!(
        database_checksum(&replica).unwrap(),
        database_checksum(&primary.wal.db()).unwrap(),
        "the new replica differs from the primary"
    );

    // The primary's next commits, applied to the replica in place.
    primary.write(5, 50);
    let summary = sync(reader, &source, &replica);
    assert_eq!(
        database_checksum(&replica).unwrap(),
        database_checksum(&primary.wal.db()).unwrap(),
        "the replica differs from the primary after an incremental sync: {summary}"
    );
    let output =
        run(reader, &["query", "--json", "--db", replica.to_str().unwrap(), "SELECT count(*) AS n FROM events"]);
    assert!(output.status.success(), "query failed: {}", String::from_utf8_lossy(&output.stderr));
    let rows: Value = serde_json::from_slice(&output.stdout).expect("query --json prints JSON rows");
    assert_eq!(rows[0]["n"].as_i64(), Some(primary.next - 1), "query counted other rows than the primary's: {rows}");
}

#[test]
fn the_small_build_refuses_s3_and_names_the_fix() {
    let reader = &builds().x86_64;
    let work = tempfile::tempdir().unwrap();
    let replica = work.path().join("replica.db");
    let output =
        run(reader, &["sync", "--source", "s3://bucket/app?region=us-east-1", "--db", replica.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "an s3:// store must fail the sync");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in ["built without S3 support", "https://", "full build"] {
        assert!(stderr.contains(needle), "the refusal does not say {needle:?}: {stderr}");
    }
    // Refused before anything was written beside the replica.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "the refused sync left files behind");
}
