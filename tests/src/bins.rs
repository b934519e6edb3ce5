//! The workspace's binaries, for tests that run them as processes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Binaries built by this test process already.
static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The path of binary `name` of package `package`, built (debug profile,
/// into the same target folder as the tests) if it is not there yet.
pub fn binary(package: &str, name: &str) -> PathBuf {
    // Tests run from target/<profile>/deps/; binaries sit in target/<profile>/.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.get_or_insert_with(HashSet::new).contains(name) {
        return path;
    }
    // Ask cargo once per test process: a stale binary would test old code.
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .env("CARGO_TARGET_DIR", profile_dir.parent().expect("target folder"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    assert!(path.exists(), "{} was not built", path.display());
    built.get_or_insert_with(HashSet::new).insert(name.to_string());
    path
}
