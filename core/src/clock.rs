//! Wall-clock time and sleeping, in one place so the wasm build can swap
//! them for the JavaScript host's.

use std::time::Duration;

/// Milliseconds since the Unix epoch.
#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Sleeps without blocking the async runtime.
#[cfg(not(target_arch = "wasm32"))]
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Sleeps without blocking (no timer is bound in wasm yet: returns at once).
#[cfg(target_arch = "wasm32")]
pub async fn sleep(_duration: Duration) {}
