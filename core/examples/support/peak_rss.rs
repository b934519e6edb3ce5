//! The process's peak resident memory, for the benchmarks that report it
//! (core's `bench_merge` example and the tests crate's `bench_compact`,
//! which includes this file by path: no crate both depend on should carry
//! /proc readers in its API for two benchmarks).

/// Resets the kernel's peak-RSS counter so it measures what runs next alone.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set since the last reset, in KiB (0 off Linux).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
