//! Which failures are worth retrying, and the bounded retry of one-shot
//! commands.
//!
//! | class | examples | daemons (`replicate`, `compact --watch`) | one-shot commands |
//! |---|---|---|---|
//! | [`ErrorClass::Permanent`] | read-only store, not a folder, access denied, no such bucket, wrong region, conditional writes unsupported, no credentials, bad URL | stop with the message, exit 1 | stop with the message, exit 1 |
//! | [`ErrorClass::Transient`] | 5xx, throttling, connection reset or refused, timeout, full disk | retry forever with backoff | retry with backoff until the bound (`--retry-for`, 2 minutes by default), then exit 1 |
//! | [`ErrorClass::Other`] | a corrupt object, a database that is not in WAL mode, a chain with a hole | as before: the component's own policy | exit 1 at once |
//!
//! `docs/REPLICATE.md` carries the same table for users.

use std::error::Error;
#[cfg(not(target_arch = "wasm32"))]
use std::future::Future;
use std::time::Duration;

use crate::store::StoreError;

/// How long one-shot commands retry transient failures by default.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(120);

/// What a failure says about trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The store cannot do this as configured: retrying cannot help.
    Permanent,
    /// The store (or the network, or the disk) failed now; later may work.
    Transient,
    /// Not a failure of the store: the data or the local setup is wrong.
    Other,
}

impl StoreError {
    /// The class of this error (see the module's table).
    pub fn class(&self) -> ErrorClass {
        use std::io::ErrorKind;
        match self {
            StoreError::ReadOnly { .. }
            | StoreError::Unsupported { .. }
            | StoreError::InvalidUrl { .. }
            | StoreError::InvalidKey { .. } => ErrorClass::Permanent,
            StoreError::Backend { retryable: true, .. } => ErrorClass::Transient,
            StoreError::Backend { retryable: false, .. } => ErrorClass::Permanent,
            StoreError::Io { source, .. } => match source.kind() {
                ErrorKind::PermissionDenied
                | ErrorKind::ReadOnlyFilesystem
                | ErrorKind::NotADirectory
                | ErrorKind::IsADirectory
                | ErrorKind::InvalidInput
                | ErrorKind::InvalidFilename
                | ErrorKind::Unsupported => ErrorClass::Permanent,
                ErrorKind::InvalidData => ErrorClass::Other,
                _ => ErrorClass::Transient,
            },
            StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::PreconditionFailed { .. }
            | StoreError::NotModified { .. }
            | StoreError::InvalidRange { .. } => ErrorClass::Other,
        }
    }
}

/// Errors of this crate that may carry a [`StoreError`] inside them
/// (`#[error(transparent)]` hides it from the `source()` chain).
pub trait WrapsStoreError {
    /// The store error inside, if that is what this error is.
    fn store_error(&self) -> Option<&StoreError>;

    /// The class of this error (see the module's table): the store error's,
    /// or [`ErrorClass::Other`].
    fn class(&self) -> ErrorClass {
        self.store_error().map_or(ErrorClass::Other, StoreError::class)
    }
}

impl WrapsStoreError for crate::manifest::ManifestError {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            crate::manifest::ManifestError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl WrapsStoreError for crate::plan::PlanError {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            crate::plan::PlanError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl WrapsStoreError for crate::apply::ApplyError {
    fn store_error(&self) -> Option<&StoreError> {
        use crate::apply::ApplyError;
        match self {
            ApplyError::Store(e) => Some(e),
            ApplyError::Manifest(e) => e.store_error(),
            ApplyError::Plan(e) => e.store_error(),
            // A streamed object's download failed while it was decoded.
            ApplyError::Format(crate::format::FormatError::Io { source, .. }) => {
                source.get_ref().and_then(|e| e.downcast_ref::<StoreError>())
            }
            _ => None,
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl WrapsStoreError for crate::compact::CompactError {
    fn store_error(&self) -> Option<&StoreError> {
        use crate::compact::CompactError;
        match self {
            CompactError::Store(e) => Some(e),
            CompactError::Manifest(e) => e.store_error(),
            _ => None,
        }
    }
}

/// The class of an error and everything it was caused by: the first store
/// error found in the chain decides; an error without one is
/// [`ErrorClass::Other`].
pub fn classify(error: &(dyn Error + 'static)) -> ErrorClass {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(link) = next {
        if let Some(store_error) = as_store_error(link) {
            return store_error.class();
        }
        next = link.source();
    }
    ErrorClass::Other
}

fn as_store_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a StoreError> {
    if let Some(e) = error.downcast_ref::<StoreError>() {
        return Some(e);
    }
    if let Some(e) = error.downcast_ref::<crate::manifest::ManifestError>() {
        return e.store_error();
    }
    if let Some(e) = error.downcast_ref::<crate::plan::PlanError>() {
        return e.store_error();
    }
    if let Some(e) = error.downcast_ref::<crate::apply::ApplyError>() {
        return e.store_error();
    }
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(e) = error.downcast_ref::<crate::compact::CompactError>() {
        return e.store_error();
    }
    None
}

/// How long a one-shot command keeps retrying transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBound {
    /// Give up once this much time has passed since the first failure.
    pub give_up_after: Duration,
}

impl Default for RetryBound {
    fn default() -> Self {
        RetryBound { give_up_after: DEFAULT_RETRY_FOR }
    }
}

/// A retry schedule: a first delay doubling up to a cap, with random
/// jitter added, and optionally a limit on attempts. The one place retry
/// delays are computed; each loop names its schedule as a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// No wait is longer than this, jitter included.
    pub cap: Duration,
    /// Up to this fraction of each delay, in per cent, is added at random,
    /// so clients failing together do not retry together.
    pub jitter_percent: u32,
    /// Attempts in all, the first one included (`None`: no limit, for loops
    /// that stop on their own terms).
    pub attempts: Option<u32>,
}

impl Backoff {
    /// Daemons and one-shot commands retrying a store: 0.5 s doubling to
    /// 30 s, up to half again at random, no attempt limit.
    pub const STORE: Backoff =
        Backoff { first: Duration::from_millis(500), cap: Duration::from_secs(30), jitter_percent: 50, attempts: None };

    /// A schedule without jitter or attempt limit.
    pub const fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff { first, cap, jitter_percent: 0, attempts: None }
    }

    /// The wait before retry `retry` (0 after the first failure): `first`
    /// doubled `retry` times plus jitter, at most `cap`.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = (self.first.as_millis() as u64).saturating_mul(1 << retry.min(32));
        let spread = base.saturating_mul(u64::from(self.jitter_percent)) / 100;
        let jitter = if spread == 0 { 0 } else { jitter_bits() % spread.saturating_add(1) };
        Duration::from_millis(base.saturating_add(jitter)).min(self.cap)
    }

    /// Whether attempt `attempt` (1 for the first) may be followed by another.
    pub fn allows_another(&self, attempt: u32) -> bool {
        self.attempts.is_none_or(|limit| attempt < limit)
    }
}

/// [`Backoff::STORE`]'s delay before retry `attempt` (0-based).
pub fn backoff(attempt: u32) -> Duration {
    Backoff::STORE.delay(attempt)
}

/// Random bits for retry jitter, or none where the system has no
/// generator: jitter only spreads retries, a retry without it still works.
#[cfg(not(target_arch = "wasm32"))]
fn jitter_bits() -> u64 {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_or(0, |()| u64::from_le_bytes(random))
}

/// No jitter in the wasm reader: its one retry loop (the HTTP store's) has
/// none, and a generator would cost its code and glue in the .wasm, which
/// has no bytes to spare.
#[cfg(target_arch = "wasm32")]
fn jitter_bits() -> u64 {
    0
}

/// Runs `attempt` until it succeeds, fails with an error `is_transient`
/// does not accept, or `backoff`'s attempts are used up, sleeping on
/// `backoff`'s schedule between attempts; returns the last result.
pub async fn retry<T, E, F, Fut>(backoff: &Backoff, is_transient: impl Fn(&E) -> bool, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempts = 0u32;
    loop {
        let result = attempt().await;
        attempts += 1;
        match result {
            Err(error) if is_transient(&error) && backoff.allows_another(attempts) => {
                crate::clock::sleep(backoff.delay(attempts - 1)).await;
            }
            result => return result,
        }
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not
/// transient, or transient failures have lasted `bound`; `class_of` tells
/// the class of an error (`classify` over its chain). Each retry is logged
/// with `what` and the error.
#[cfg(not(target_arch = "wasm32"))]
pub async fn retry_bounded<T, E, F, Fut>(
    bound: RetryBound,
    what: &str,
    class_of: impl Fn(&E) -> ErrorClass,
    mut attempt: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut first_failure: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if class_of(&error) == ErrorClass::Transient => {
                let elapsed = first_failure.get_or_insert_with(tokio::time::Instant::now).elapsed();
                let wait = backoff(failures);
                if elapsed + wait > bound.give_up_after {
                    return Err(error);
                }
                failures += 1;
                tracing::warn!(
                    error = %error,
                    retry_in_ms = wait.as_millis() as u64,
                    giving_up_in_s = (bound.give_up_after - elapsed).as_secs(),
                    "{what} failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> StoreError {
        StoreError::Io { op: "create", key: "k".into(), source: kind.into() }
    }

    #[test]
    fn store_errors_are_classified_by_what_retrying_can_change() {
        use std::io::ErrorKind;
        assert_eq!(io(ErrorKind::NotADirectory).class(), ErrorClass::Permanent);
        assert_eq!(io(ErrorKind::PermissionDenied).class(), ErrorClass::Permanent);
        assert_eq!(io(ErrorKind::StorageFull).class(), ErrorClass::Transient);
        let backend = |retryable| StoreError::Backend { op: "put", key: "k".into(), message: "m".into(), retryable };
        assert_eq!(backend(true).class(), ErrorClass::Transient);
        assert_eq!(backend(false).class(), ErrorClass::Permanent);
        let read_only = StoreError::ReadOnly { op: "put", key: "k".into(), url: "https://x".into(), hint: "h" };
        assert_eq!(read_only.class(), ErrorClass::Permanent);
        assert_eq!(StoreError::NotFound { op: "get", key: "k".into() }.class(), ErrorClass::Other);
    }

    #[test]
    fn the_class_is_found_through_wrapping_errors() {
        let inner = StoreError::Backend { op: "get", key: "k".into(), message: "503".into(), retryable: true };
        let wrapped = crate::manifest::ManifestError::Store(inner);
        assert_eq!(classify(&wrapped), ErrorClass::Transient);
        let format = crate::format::FormatError::Misuse { object: "x".into(), reason: "r".into() };
        assert_eq!(classify(&format), ErrorClass::Other);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_the_bound_and_others_not_at_all() {
        let bound = RetryBound { give_up_after: Duration::from_secs(10) };
        let mut calls = 0;
        let result: Result<(), StoreError> = retry_bounded(bound, "test", StoreError::class, || {
            calls += 1;
            async { Err(StoreError::Backend { op: "get", key: "k".into(), message: "503".into(), retryable: true }) }
        })
        .await;
        assert!(result.is_err());
        assert!((3..=8).contains(&calls), "{calls} attempts in 10 s");
        let mut calls = 0;
        let result: Result<(), StoreError> = retry_bounded(bound, "test", StoreError::class, || {
            calls += 1;
            async { Err(io(std::io::ErrorKind::NotADirectory)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
