//! The workspace's binaries, for tests that run them as processes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Binaries built by this test process already.
static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The path of binary `name` of package `package`, built (debug profile,
/// into the same target folder as the tests) if it is not there yet.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.get_or_insert_with(HashSet::new).contains(name) {
        return path;
    }
    // Ask cargo once per test process: a stale binary would test old code.
    let mut cargo = Command::new(env!("CARGO"));
    // The variables cargo sets for this test crate (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, ...) describe it, not the build: ring's build script
    // reruns when they change, so passing them on rebuilt ring, rustls and
    // everything above them (the AWS SDK included) whenever a build from a
    // shell and one from the tests took turns.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if is_crate_variable(&key) {
            cargo.env_remove(&*key);
        }
    }
    let status = cargo
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    assert!(path.exists(), "{} was not built", path.display());
    built.get_or_insert_with(HashSet::new).insert(name.to_string());
    path
}

/// The workspace's root folder (the repository).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace folder").to_path_buf()
}

/// The target folder the tests were built into: builds made for a test
/// (binaries, scripts' outputs) go there too, so later runs reuse them.
pub fn target_dir() -> PathBuf {
    profile_dir().parent().expect("target/<profile>").to_path_buf()
}

/// target/<profile>/, where the binaries sit: tests run from its deps/.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors().nth(2).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// Whether `key` is one of the variables cargo sets for the crate it builds
/// or tests (not one that configures cargo, like CARGO_TARGET_DIR or CARGO_HOME).
fn is_crate_variable(key: &str) -> bool {
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_CFG_"].iter().any(|p| key.starts_with(p))
        || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&key)
}
