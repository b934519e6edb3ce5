//! Segment headers already read, remembered across the compaction runs of
//! one process (`distributary compact --watch`, a warm Lambda), and the
//! bodies of the small L0 segments read with them.
//!
//! Without it, every run reads again the header of each L0 segment of the
//! window still open (a window lasts a minute; runs come every few seconds,
//! or on every upload), and retention reads them once more before deleting
//! them: that was most of the compactor's GET requests. Segments are
//! immutable (invariant 3), so a header read once stays true for as long as
//! the object exists. Runs only ask for segments the current manifest leads
//! to, which retention has not deleted; a run that finds one gone anyway (a
//! concurrent run's retention) forgets it before starting over.
//!
//! The walk reads a new L0 segment whole, in one GET, rather than its
//! header by range and its body again for the merge: a body up to
//! [`BODY_MAX`] is kept here until the L1 merge takes it (about a minute,
//! one window), so each L0 segment costs one request. Memory is bounded by
//! [`BODY_CAPACITY`]; past it the bodies start over and the merge reads
//! what it misses.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::format::Header;

/// Most headers kept (about 150 bytes each). When full, the cache starts
/// over: simpler than LRU and the next runs only re-read the open window.
const CAPACITY: usize = 8_192;

/// Largest segment body kept: an L0 segment of a few commits is far
/// smaller; a larger one (a bulk load) is read again by the merge.
pub(crate) const BODY_MAX: u64 = 4 << 20;
/// Most bytes of bodies kept in all: 60 one-second L0 segments of a busy
/// database take a few MiB.
const BODY_CAPACITY: usize = 64 << 20;

/// Headers (and small bodies) by store URL and key. Shared by reference;
/// safe across tasks.
#[derive(Debug, Default)]
pub(crate) struct HeaderCache {
    entries: Mutex<HashMap<(String, String), Header>>,
    bodies: Mutex<Bodies>,
}

#[derive(Debug, Default)]
struct Bodies {
    by_key: HashMap<(String, String), Bytes>,
    bytes: usize,
}

impl HeaderCache {
    pub(crate) fn get(&self, store_url: &str, key: &str) -> Option<Header> {
        self.lock().get(&(store_url.to_string(), key.to_string())).cloned()
    }

    pub(crate) fn insert(&self, store_url: &str, key: &str, header: &Header) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert((store_url.to_string(), key.to_string()), header.clone());
    }

    pub(crate) fn forget(&self, store_url: &str, key: &str) {
        self.lock().remove(&(store_url.to_string(), key.to_string()));
        self.take_body(store_url, key);
    }

    /// Keeps the whole object `key` (at most [`BODY_MAX`] bytes) for
    /// [`HeaderCache::take_body`].
    pub(crate) fn insert_body(&self, store_url: &str, key: &str, body: Bytes) {
        if body.len() as u64 > BODY_MAX {
            return;
        }
        let mut bodies = lock(&self.bodies);
        if bodies.bytes + body.len() > BODY_CAPACITY {
            *bodies = Bodies::default();
        }
        bodies.bytes += body.len();
        if let Some(old) = bodies.by_key.insert((store_url.to_string(), key.to_string()), body) {
            bodies.bytes -= old.len();
        }
    }

    /// The whole object `key` if it was kept; it is not kept any longer.
    pub(crate) fn take_body(&self, store_url: &str, key: &str) -> Option<Bytes> {
        let mut bodies = lock(&self.bodies);
        let body = bodies.by_key.remove(&(store_url.to_string(), key.to_string()))?;
        bodies.bytes -= body.len();
        Some(body)
    }

    /// The last `n` bytes of the object `key`, if its body is kept.
    pub(crate) fn body_suffix(&self, store_url: &str, key: &str, n: usize) -> Option<Bytes> {
        let bodies = lock(&self.bodies);
        let body = bodies.by_key.get(&(store_url.to_string(), key.to_string()))?;
        (body.len() >= n).then(|| body.slice(body.len() - n..))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Header>> {
        lock(&self.entries)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written entry.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
