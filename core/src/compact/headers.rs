//! Segment headers already read, remembered across the compaction runs of
//! one process (`distributary compact --watch`, a warm Lambda).
//!
//! Without it, every run reads again the header of each L0 segment of the
//! window still open (a window lasts a minute; runs come every few seconds,
//! or on every upload), and retention reads them once more before deleting
//! them: that was most of the compactor's GET requests. Segments are
//! immutable (invariant 3), so a header read once stays true for as long as
//! the object exists. Runs only ask for segments the current manifest leads
//! to, which retention has not deleted; a run that finds one gone anyway (a
//! concurrent run's retention) forgets it before starting over.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::format::Header;

/// Most headers kept (about 150 bytes each). When full, the cache starts
/// over: simpler than LRU and the next runs only re-read the open window.
const CAPACITY: usize = 8_192;

/// Headers by store URL and key. Shared by reference; safe across tasks.
#[derive(Debug, Default)]
pub struct HeaderCache {
    entries: Mutex<HashMap<(String, String), Header>>,
}

impl HeaderCache {
    /// An empty cache.
    pub fn new() -> HeaderCache {
        HeaderCache::default()
    }

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
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Header>> {
        // A panic while holding the lock cannot leave a half-written entry.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
