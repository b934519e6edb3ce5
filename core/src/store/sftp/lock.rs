//! The lock a compare-and-swap holds while it compares and replaces an
//! object: SFTP has no conditional write. `docs/STORES.md`, "SFTP:
//! conditional writes", argues why it is safe and what the lease bounds.
//!
//! The lock of `dir/name` is the file `dir/.name.lock`, holding one line:
//! `<owner> <expires_ms>` (a random owner id and the end of its lease, in
//! milliseconds since the Unix epoch). It is published whole with the
//! non-replacing rename (exactly one of racing writers gets it) and broken,
//! once its lease is over, by renaming it to `dir/.name.lock.broken-<owner>`:
//! a tombstone named after the dead owner, so only one breaker of that
//! owner's lock can succeed, and a late breaker cannot take a newer lock.

use std::time::Duration;

use super::remote::{Remote, nonce};
use crate::store::StoreError;

/// How long a lock is held at most, and how long a writer waits for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSettings {
    /// A holder's lease: past it, others may break the lock. The holder
    /// checks it is still within it before it replaces the object.
    pub lease: Duration,
    /// How long a writer waits for a lock held by a live holder before it
    /// gives up with a retryable error.
    pub wait: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        // A swap holds the lock for a few round trips (the new object is
        // uploaded before the lock is taken), so 30 s is ample, and a
        // crashed holder blocks writers of its key for at most that long.
        LockSettings { lease: Duration::from_secs(30), wait: Duration::from_secs(40) }
    }
}

/// Margin kept before the lease's end: a holder that has less left than
/// this does not start its final rename.
const LEASE_MARGIN_MS: u64 = 2_000;

/// A held lock.
pub(super) struct HeldLock {
    path: String,
    owner: String,
    expires_ms: u64,
}

fn parse(content: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(content).ok()?;
    let (owner, expires) = text.trim().split_once(' ')?;
    Some((owner.to_string(), expires.parse().ok()?))
}

/// Takes the lock at `path` for `key`, waiting up to `settings.wait` for a
/// live holder and breaking a lock whose lease is over.
pub(super) async fn acquire(
    remote: &Remote<'_>,
    key: &str,
    path: &str,
    settings: LockSettings,
) -> Result<HeldLock, StoreError> {
    let owner = nonce();
    let temp = format!("{path}.{owner}.tmp");
    let started = crate::clock::now_ms();
    let mut pause = Duration::from_millis(10);
    loop {
        let expires_ms = crate::clock::now_ms() + settings.lease.as_millis() as u64;
        let content = format!("{owner} {expires_ms}\n");
        remote.write_new("update", key, &temp, &content.into_bytes().into()).await?;
        match remote.rename_no_replace("update", key, &temp, path).await {
            Ok(true) => return Ok(HeldLock { path: path.to_string(), owner, expires_ms }),
            Ok(false) => remote.remove_quietly(&temp).await,
            Err(e) => {
                remote.remove_quietly(&temp).await;
                return Err(e);
            }
        }
        let Some(content) = remote.read_small("update", key, path).await? else {
            continue; // released meanwhile
        };
        let now = crate::clock::now_ms();
        match parse(&content) {
            // Only whole locks are ever published, so one that does not
            // parse was not written by this store: break it like a dead one.
            None => break_lock(remote, key, path, "unreadable").await?,
            Some((holder, expires)) if expires <= now => break_lock(remote, key, path, &holder).await?,
            Some((holder, expires)) => {
                if now.saturating_sub(started) >= settings.wait.as_millis() as u64 {
                    return Err(StoreError::Backend {
                        op: "update",
                        key: key.to_string(),
                        message: format!(
                            "lock {path} is held by writer {holder} for {} ms more: another writer is updating \
                             this key (a lock left by a crashed writer expires by itself)",
                            expires - now
                        ),
                        retryable: true,
                    });
                }
                crate::clock::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}

/// Moves a dead holder's lock aside to its tombstone. The tombstones stay:
/// removing one would let a breaker that saw the same dead lock long ago
/// take a newer, live lock for the dead one. Whether this breaker's rename
/// won does not matter: the caller tries to take the lock again either way.
async fn break_lock(remote: &Remote<'_>, key: &str, path: &str, holder: &str) -> Result<(), StoreError> {
    tracing::warn!(lock = path, holder, "breaking an SFTP lock whose lease is over");
    remote.rename_no_replace("update", key, path, &format!("{path}.broken-{holder}")).await.map(|_| ())
}

impl HeldLock {
    /// Checks that the lock is still this writer's, with at least
    /// [`LEASE_MARGIN_MS`] of its lease left: called right before the
    /// object is replaced. A holder that was paused past its lease gets a
    /// retryable error and replaces nothing.
    pub async fn confirm(&self, remote: &Remote<'_>, key: &str) -> Result<(), StoreError> {
        let lost = |why: &str| StoreError::Backend {
            op: "update",
            key: key.to_string(),
            message: format!("lost lock {path} ({why}); nothing was written", path = self.path),
            retryable: true,
        };
        if crate::clock::now_ms() + LEASE_MARGIN_MS >= self.expires_ms {
            return Err(lost("its lease ran out"));
        }
        match remote.read_small("update", key, &self.path).await?.as_deref().and_then(parse) {
            Some((owner, _)) if owner == self.owner => Ok(()),
            _ => Err(lost("another writer broke it")),
        }
    }

    /// Releases the lock if it is still this writer's.
    pub async fn release(self, remote: &Remote<'_>, key: &str) {
        if let Ok(Some(content)) = remote.read_small("update", key, &self.path).await
            && parse(&content).is_some_and(|(owner, _)| owner == self.owner)
        {
            remote.remove_quietly(&self.path).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn lock_lines_parse() {
        assert_eq!(parse(b"00ab 1700000000000\n"), Some(("00ab".to_string(), 1_700_000_000_000)));
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"owner-only"), None);
    }
}
