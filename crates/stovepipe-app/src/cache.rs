//! A cache whose entries are served for a bounded time after their fetch
//! began: the rule behind every cache of stored state the application
//! keeps (queue configurations, live hook releases).
//!
//! An entry is served only while the clock is less than the bound past the
//! instant its fetch began, so a value written elsewhere is seen by every
//! read that starts the bound or more after the write; a fetch that found
//! nothing is never cached; a slower fetch that began earlier never
//! replaces a newer entry; and a clock that went backwards (which a
//! `Clock` must not do) drops the entry rather than extending it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stovepipe_entity::Timestamp;

#[derive(Debug)]
struct Entry<V> {
    /// Clock time when the fetch that produced `value` began: the stored
    /// state was at least this new.
    fetched_at: Timestamp,
    value: Arc<V>,
}

/// Values by key, each at most `bound` old (see the module).
#[derive(Debug)]
pub(crate) struct FreshCache<K, V> {
    bound: Duration,
    entries: Mutex<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash + Clone, V> FreshCache<K, V> {
    pub(crate) fn new(bound: Duration) -> Self {
        Self {
            bound,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `key` as of less than the bound before `now`: cached,
    /// or the result of `fetch` (`Ok(None)` is passed on, never cached).
    pub(crate) async fn get<E>(
        &self,
        key: &K,
        now: Timestamp,
        fetch: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<Arc<V>>, E> {
        if let Some(fresh) = self.fresh(key, now) {
            return Ok(Some(fresh));
        }
        let found = fetch.await?;
        let mut entries = self.lock();
        let Some(value) = found else {
            entries.remove(key);
            return Ok(None);
        };
        let value = Arc::new(value);
        if entries.get(key).is_none_or(|e| e.fetched_at <= now) {
            entries.insert(
                key.clone(),
                Entry {
                    fetched_at: now,
                    value: value.clone(),
                },
            );
        }
        Ok(Some(value))
    }

    /// Drops `key`'s entry: the next `get` fetches.
    pub(crate) fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn fresh(&self, key: &K, now: Timestamp) -> Option<Arc<V>> {
        let entries = self.lock();
        let entry = entries.get(key)?;
        let age = now.as_millis().checked_sub(entry.fetched_at.as_millis())?;
        let bound = i64::try_from(self.bound.as_millis()).unwrap_or(i64::MAX);
        (0..bound).contains(&age).then(|| entry.value.clone())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<V>>> {
        // Entries are replaced whole: a panic elsewhere cannot leave one
        // half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn an_entry_is_fresh_from_its_fetch_until_the_bound_and_never_before_it() {
        let bound = Duration::from_secs(1);
        let cache: FreshCache<&str, &str> = FreshCache::new(bound);
        let calls = AtomicUsize::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(Some("value"))
        };
        let bound = i64::try_from(bound.as_millis()).unwrap();
        let t = 10_000;
        let mut fetches = Vec::new();
        for at in [
            t,
            t + bound - 1,
            t + bound,
            t + bound - 1,
            t + 2 * bound - 1,
        ] {
            let got = cache.get(&"key", Timestamp(at), fetch()).await.unwrap();
            assert_eq!(got.as_deref(), Some(&"value"));
            fetches.push(calls.load(Ordering::SeqCst));
        }
        // t: fetched; t+bound-1: fresh; t+bound: stale, fetched again; an
        // instant before that fetch (a clock gone back): fetched again;
        // then fresh until its own bound.
        assert_eq!(fetches, [1, 1, 2, 3, 3]);
    }

    #[tokio::test]
    async fn nothing_found_is_never_cached() {
        let cache: FreshCache<&str, &str> = FreshCache::new(Duration::from_secs(1));
        let none = cache.get(&"key", Timestamp(1), async { Ok::<_, ()>(None) });
        assert_eq!(none.await, Ok(None));
        let found = cache.get(&"key", Timestamp(2), async { Ok::<_, ()>(Some("v")) });
        assert_eq!(found.await.unwrap().as_deref(), Some(&"v"));
    }
}
