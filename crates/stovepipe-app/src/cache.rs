//! The two rules behind every cache the application keeps.
//!
//! [`FreshCache`] holds stored state that changes (queue configurations,
//! live hook releases): an entry is served for a bounded time after its
//! fetch began. An entry is served only while the clock is less than the
//! bound past the instant its fetch began, so a value written elsewhere is
//! seen by every read that starts the bound or more after the write; a
//! fetch that found nothing is never cached; a slower fetch that began
//! earlier never replaces a newer entry; and a clock that went backwards
//! (which a `Clock` must not do) drops the entry rather than extending it.
//!
//! [`SettledCache`] holds values that never change once stored (recorded
//! facts): an entry is served until it is crowded out, never expired, so
//! it is bounded in count instead of age. Its callers keep only what was
//! found: absence is exactly what changes.

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

/// Values that never change once stored, by key (see the module).
///
/// Bounded to about `2 × capacity` entries by two generations: entries go
/// into the young one; when it is full it becomes the old one and the
/// previous old one is dropped; a hit in the old generation moves the entry
/// back into the young one. So what is read often stays, what was read once
/// leaves after two turnovers, and every operation is O(1).
#[derive(Debug)]
pub(crate) struct SettledCache<K, V> {
    capacity: usize,
    generations: Mutex<Generations<K, V>>,
}

#[derive(Debug)]
struct Generations<K, V> {
    young: HashMap<K, Arc<V>>,
    old: HashMap<K, Arc<V>>,
}

impl<K: Eq + Hash + Clone, V> SettledCache<K, V> {
    /// `capacity` is the size of one generation; at least 1.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            generations: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    /// The kept value of `key`, if any.
    pub(crate) fn kept(&self, key: &K) -> Option<Arc<V>> {
        let mut g = self.lock();
        if let Some(v) = g.young.get(key) {
            return Some(v.clone());
        }
        let v = g.old.remove(key)?;
        g.insert(self.capacity, key.clone(), v.clone());
        Some(v)
    }

    /// Keeps `value` for `key` (a settled value: the same for every caller).
    pub(crate) fn keep(&self, key: K, value: Arc<V>) {
        self.lock().insert(self.capacity, key, value);
    }

    /// How many entries are kept (both generations).
    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    fn lock(&self) -> MutexGuard<'_, Generations<K, V>> {
        // Maps are changed by whole entries: a panic elsewhere cannot leave
        // one half-written.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Eq + Hash, V> Generations<K, V> {
    fn insert(&mut self, capacity: usize, key: K, value: Arc<V>) {
        if self.young.len() >= capacity && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
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

    #[test]
    fn a_kept_value_is_served_and_nothing_else_is_made_up() {
        let cache: SettledCache<&str, &str> = SettledCache::new(4);
        assert_eq!(cache.kept(&"fact"), None);
        cache.keep("fact", Arc::new("v"));
        assert_eq!(cache.kept(&"fact").as_deref(), Some(&"v"));
        assert_eq!(cache.kept(&"other"), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn settled_entries_are_bounded_and_what_is_read_stays() {
        let cache: SettledCache<u32, u32> = SettledCache::new(3);
        for k in 0..3 {
            cache.keep(k, Arc::new(k));
        }
        // The young generation is full: the next entry turns it over.
        cache.keep(3, Arc::new(3));
        assert_eq!(cache.len(), 4);
        // A hit in the old generation moves the entry back into the young.
        assert_eq!(cache.kept(&0).as_deref(), Some(&0));
        cache.keep(4, Arc::new(4));
        // Young {3, 0, 4} is full: 5 turns it over and drops {1, 2}.
        cache.keep(5, Arc::new(5));
        assert_eq!(cache.kept(&1), None);
        assert_eq!(cache.kept(&2), None);
        for k in [0, 3, 4, 5] {
            assert_eq!(cache.kept(&k).as_deref(), Some(&k), "entry {k}");
        }
        for k in 6..100 {
            cache.keep(k, Arc::new(k));
        }
        assert!(cache.len() <= 6, "{} entries kept", cache.len());
    }
}
