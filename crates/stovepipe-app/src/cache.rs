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
use tokio::sync::watch;

/// How long a read of a key whose write is in flight waits for that write
/// to end before it reads the store instead. A write ends within a batch
/// round trip or two; one held up longer (a row lock, a lost connection)
/// should not hold its readers with it.
pub(crate) const WRITE_WAIT: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Entry<V> {
    /// Clock time when the fetch that produced `value` began: the stored
    /// state was at least this new.
    fetched_at: Timestamp,
    value: Arc<V>,
}

/// Values by key, each at most `bound` old (see the module).
///
/// Entries live in two generations turned over every `bound`, so an entry
/// no one asks for again is dropped within two bounds: the cache holds what
/// was fetched or offered in the last two bounds, never more.
#[derive(Debug)]
pub(crate) struct FreshCache<K, V> {
    bound: Duration,
    /// Orders two values of one key: of an entry and a newcomer, the one
    /// with the higher revision stays (equal revisions: the later fetch).
    revision: fn(&V) -> u64,
    entries: Mutex<AgedGenerations<K, V>>,
}

#[derive(Debug)]
struct AgedGenerations<K, V> {
    young: HashMap<K, Entry<V>>,
    old: HashMap<K, Entry<V>>,
    /// When the young generation began.
    young_since: Option<Timestamp>,
    /// Keys with a write through this cache in flight: their entries are
    /// neither served nor taken from reads until it ends.
    writing: HashMap<K, Writing>,
}

/// The writes of one key in flight: how many, and, once a read waits for
/// them, a channel whose sender goes when the last ends, which is what
/// the read hears (made only then: most writes meet no read).
#[derive(Debug)]
struct Writing {
    count: usize,
    ended: Option<watch::Sender<()>>,
}

impl<K: Eq + Hash + Clone, V> FreshCache<K, V> {
    /// Values without revisions: the later fetch wins.
    pub(crate) fn new(bound: Duration) -> Self {
        Self::versioned(bound, |_| 0)
    }

    /// Values with a revision that only grows in the store (a row's
    /// version): a newer revision is never replaced by an older one, even
    /// by a fetch that began later but read before the newer write landed.
    pub(crate) fn versioned(bound: Duration, revision: fn(&V) -> u64) -> Self {
        Self {
            bound,
            revision,
            entries: Mutex::new(AgedGenerations {
                young: HashMap::new(),
                old: HashMap::new(),
                young_since: None,
                writing: HashMap::new(),
            }),
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
        Ok(self.get_served(key, now, fetch).await?.0)
    }

    /// [`get`](Self::get), and where the value came from. A read that
    /// meets a write of `key` in flight waits for it, at most
    /// [`WRITE_WAIT`], and is served what it kept: read from the store
    /// meanwhile, the row would be as it was before the write, and a
    /// compare-and-swap from it would lose to the write.
    pub(crate) async fn get_served<E>(
        &self,
        key: &K,
        now: Timestamp,
        fetch: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<(Option<Arc<V>>, Served), E> {
        let served = match self.lookup(key, now) {
            Ok(kept) => return Ok((Some(kept), Served::Kept)),
            Err(Miss::Writing(mut ended)) => {
                // Err once the sender is gone: the write ended.
                let _ = tokio::time::timeout(WRITE_WAIT, ended.changed()).await;
                if let Ok(kept) = self.lookup(key, now) {
                    return Ok((Some(kept), Served::KeptAfterWrite));
                }
                Served::FetchedDuringWrite
            }
            Err(Miss::Absent) => Served::Fetched,
        };
        Ok((self.refresh(key, now, fetch).await?, served))
    }

    /// [`get_served`](Self::get_served) for a reader that takes from the
    /// value only what a write cannot take back (a pointer that only moves
    /// forward): a kept value within the bound is served even while a
    /// write of `key` is in flight, as it was before that write, instead
    /// of waiting for it. Without one, as `get_served`.
    pub(crate) async fn get_served_passing_writes<E>(
        &self,
        key: &K,
        now: Timestamp,
        fetch: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<(Option<Arc<V>>, Served), E> {
        if let Some(kept) = self.within_bound(&self.lock(), key, now) {
            return Ok((Some(kept), Served::Kept));
        }
        self.get_served(key, now, fetch).await
    }

    /// The result of `fetch`, which began at `now`, whatever the cache
    /// holds; offered for the next reads (`Ok(None)` drops the entry).
    pub(crate) async fn refresh<E>(
        &self,
        key: &K,
        now: Timestamp,
        fetch: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<Arc<V>>, E> {
        let Some(value) = fetch.await? else {
            self.forget(key);
            return Ok(None);
        };
        Ok(Some(self.offer(key.clone(), value, now)))
    }

    /// Offers `value`, read from the store in a fetch that began at
    /// `fetched_at`, as the stored state of `key`: kept unless the entry
    /// holds a higher revision or the same one fetched later, or a write of
    /// `key` is in flight (the read may predate it). Returns the value the
    /// cache holds for `key` afterwards (or `value`, when not kept).
    pub(crate) fn offer(&self, key: K, value: V, fetched_at: Timestamp) -> Arc<V> {
        let mut entries = self.lock();
        if entries.writing.contains_key(&key) {
            return Arc::new(value);
        }
        self.insert(&mut entries, key, value, fetched_at)
    }

    /// Marks a write of `key` as in flight until a matching
    /// [`end_write`](Self::end_write): meanwhile the entry is gone and
    /// reads go to the store, so no one is served the row as it was before
    /// the write once the write is visible (its hop may be delivered before
    /// the write returns to its writer).
    pub(crate) fn begin_write(&self, key: K) {
        self.lock()
            .writing
            .entry(key)
            .or_insert_with(|| Writing {
                count: 0,
                ended: None,
            })
            .count += 1;
    }

    /// Ends a write of `key` begun by [`begin_write`](Self::begin_write):
    /// `wrote` is the value it stored and when it began, kept as the entry;
    /// `None` (a failed or abandoned write, whose outcome is unknown) leaves
    /// no entry.
    pub(crate) fn end_write(&self, key: K, wrote: Option<(V, Timestamp)>) {
        let mut entries = self.lock();
        if let Some(writing) = entries.writing.get_mut(&key) {
            writing.count -= 1;
            if writing.count == 0 {
                // Dropping the sender wakes the reads waiting for it.
                entries.writing.remove(&key);
            }
        }
        match wrote {
            Some((value, began)) => {
                self.insert(&mut entries, key, value, began);
            }
            None => entries.remove(&key),
        }
    }

    fn insert(
        &self,
        entries: &mut AgedGenerations<K, V>,
        key: K,
        value: V,
        fetched_at: Timestamp,
    ) -> Arc<V> {
        let revision = (self.revision)(&value);
        entries.turn_over(fetched_at, self.bound_ms());
        if let Some(kept) = entries.get(&key)
            && ((self.revision)(&kept.value), kept.fetched_at) > (revision, fetched_at)
        {
            return kept.value.clone();
        }
        let value = Arc::new(value);
        entries.old.remove(&key);
        entries.young.insert(
            key,
            Entry {
                fetched_at,
                value: value.clone(),
            },
        );
        value
    }

    /// Drops `key`'s entry: the next `get` fetches.
    pub(crate) fn forget(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Drops every entry (writes in flight stay marked).
    pub(crate) fn clear(&self) {
        let mut entries = self.lock();
        entries.young.clear();
        entries.old.clear();
    }

    #[cfg(test)]
    fn fresh(&self, key: &K, now: Timestamp) -> Option<Arc<V>> {
        self.lookup(key, now).ok()
    }

    /// The kept value of `key` if it may be served at `now`, else why not.
    fn lookup(&self, key: &K, now: Timestamp) -> Result<Arc<V>, Miss> {
        let mut entries = self.lock();
        if let Some(writing) = entries.writing.get_mut(key) {
            // Subscribed under the lock: the write cannot end unheard.
            let ended = writing
                .ended
                .get_or_insert_with(|| watch::Sender::new(()))
                .subscribe();
            return Err(Miss::Writing(ended));
        }
        self.within_bound(&entries, key, now).ok_or(Miss::Absent)
    }

    /// The kept value of `key` in `entries` (this cache's, locked) if it
    /// was fetched less than the bound before `now`, whatever writes of it
    /// are in flight.
    fn within_bound(
        &self,
        entries: &AgedGenerations<K, V>,
        key: &K,
        now: Timestamp,
    ) -> Option<Arc<V>> {
        let entry = entries.get(key)?;
        let age = now.as_millis().checked_sub(entry.fetched_at.as_millis());
        match age {
            Some(age) if (0..self.bound_ms()).contains(&age) => Some(entry.value.clone()),
            _ => None,
        }
    }

    fn bound_ms(&self) -> i64 {
        i64::try_from(self.bound.as_millis()).unwrap_or(i64::MAX)
    }

    /// How many entries are held (both generations).
    #[cfg(test)]
    fn len(&self) -> usize {
        let entries = self.lock();
        entries.young.len() + entries.old.len()
    }

    fn lock(&self) -> MutexGuard<'_, AgedGenerations<K, V>> {
        // Entries are replaced whole: a panic elsewhere cannot leave one
        // half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a key's kept value cannot be served.
enum Miss {
    /// Nothing is kept, or it is too old.
    Absent,
    /// A write of the key is in flight; this hears it end.
    Writing(watch::Receiver<()>),
}

/// Where [`FreshCache::get_served`] found its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// The kept entry.
    Kept,
    /// The entry a write in flight kept, waited for.
    KeptAfterWrite,
    /// The store: nothing was kept, or it was too old.
    Fetched,
    /// The store: a write of the key was in flight, and failed or did not
    /// end within [`WRITE_WAIT`].
    FetchedDuringWrite,
}

impl Served {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::KeptAfterWrite => "kept_after_write",
            Self::Fetched => "fetched",
            Self::FetchedDuringWrite => "fetched_during_write",
        }
    }
}

impl<K: Eq + Hash, V> AgedGenerations<K, V> {
    fn get(&self, key: &K) -> Option<&Entry<V>> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    fn remove(&mut self, key: &K) {
        self.young.remove(key);
        self.old.remove(key);
    }

    /// Starts a new young generation when the current one is `bound_ms`
    /// old: the old one, whose every entry was offered more than a bound
    /// ago, is dropped. `now` may lag the newest offer (a fetch that began
    /// earlier); that only delays a turnover, and an entry is served by its
    /// own age.
    fn turn_over(&mut self, now: Timestamp, bound_ms: i64) {
        let due = self.young_since.is_none_or(|since| {
            now.as_millis()
                .checked_sub(since.as_millis())
                .is_some_and(|age| age >= bound_ms)
        });
        if due {
            self.old = std::mem::take(&mut self.young);
            self.young_since = Some(now);
        }
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
    fn a_higher_revision_stays_whatever_the_order_of_offers() {
        let cache: FreshCache<&str, (u64, &str)> =
            FreshCache::versioned(Duration::from_secs(1), |v| v.0);
        cache.offer("row", (2, "written"), Timestamp(10));
        // A read that began later but saw the row before the write landed.
        let kept = cache.offer("row", (1, "read"), Timestamp(11));
        assert_eq!(*kept, (2, "written"));
        // The same revision fetched later refreshes the entry's age.
        cache.offer("row", (2, "read again"), Timestamp(900));
        assert_eq!(
            cache.fresh(&"row", Timestamp(1_500)).as_deref(),
            Some(&(2, "read again"))
        );
        cache.offer("row", (3, "newer"), Timestamp(5));
        assert_eq!(
            cache.fresh(&"row", Timestamp(900)).as_deref(),
            Some(&(3, "newer"))
        );
    }

    #[test]
    fn while_a_write_is_in_flight_its_key_is_read_from_the_store() {
        let cache: FreshCache<&str, (u64, &str)> =
            FreshCache::versioned(Duration::from_secs(1), |v| v.0);
        cache.offer("row", (1, "before"), Timestamp(10));
        cache.begin_write("row");
        // The write may already be visible: neither the entry nor a read
        // that may predate the write is served.
        assert_eq!(cache.fresh(&"row", Timestamp(11)), None);
        cache.offer("row", (1, "read meanwhile"), Timestamp(11));
        assert_eq!(cache.fresh(&"row", Timestamp(12)), None);
        cache.end_write("row", Some(((2, "written"), Timestamp(11))));
        assert_eq!(
            cache.fresh(&"row", Timestamp(13)).as_deref(),
            Some(&(2, "written"))
        );
        // A read that began before the write and ends after it is older.
        cache.offer("row", (1, "late read"), Timestamp(12));
        assert_eq!(
            cache.fresh(&"row", Timestamp(13)).as_deref(),
            Some(&(2, "written"))
        );
        // Two writes of one key in flight: the entry is served again only
        // once both ended.
        cache.begin_write("row");
        cache.begin_write("row");
        cache.end_write("row", Some(((3, "first"), Timestamp(13))));
        assert_eq!(cache.fresh(&"row", Timestamp(14)), None);
        cache.end_write("row", Some(((4, "second"), Timestamp(13))));
        assert_eq!(
            cache.fresh(&"row", Timestamp(14)).as_deref(),
            Some(&(4, "second"))
        );
        // A write that fails (or is abandoned) leaves nothing behind.
        cache.begin_write("row");
        cache.end_write("row", None);
        assert_eq!(cache.fresh(&"row", Timestamp(14)), None);
        assert_eq!(cache.len(), 0);
    }

    /// The reads a cache of versioned rows serves `"row"` at `began`,
    /// fetching `stored` if it must.
    async fn read(
        cache: &FreshCache<&'static str, (u64, &'static str)>,
        began: i64,
        stored: (u64, &'static str),
    ) -> (Option<(u64, &'static str)>, Served) {
        let fetch = async move { Ok::<_, ()>(Some(stored)) };
        let (found, served) = cache
            .get_served(&"row", Timestamp(began), fetch)
            .await
            .unwrap();
        (found.map(|row| *row), served)
    }

    type Reader = tokio::task::JoinHandle<(Option<(u64, &'static str)>, Served)>;

    /// A cache keeping `"row"` at version 1, a write of it in flight, and
    /// a read begun meanwhile that would fetch `stored`, now waiting.
    async fn a_read_waiting_for_a_write(
        stored: (u64, &'static str),
    ) -> (Arc<FreshCache<&'static str, (u64, &'static str)>>, Reader) {
        let cache = Arc::new(FreshCache::versioned(
            Duration::from_secs(1),
            |v: &(u64, &str)| v.0,
        ));
        cache.offer("row", (1, "before"), Timestamp(10));
        cache.begin_write("row");
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { read(&cache, 11, stored).await }
        });
        // The reader runs until it waits (one thread: it cannot run ahead).
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "the read waits for the write");
        (cache, reader)
    }

    #[tokio::test]
    async fn a_read_during_a_write_waits_for_it_and_is_served_what_it_kept() {
        let (cache, reader) = a_read_waiting_for_a_write((1, "as before the write")).await;
        cache.end_write("row", Some(((2, "written"), Timestamp(11))));
        assert_eq!(
            reader.await.unwrap(),
            (Some((2, "written")), Served::KeptAfterWrite)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_goes_to_the_store_after_a_failed_write_or_past_the_wait() {
        let (cache, reader) = a_read_waiting_for_a_write((2, "stored")).await;
        cache.end_write("row", None);
        assert_eq!(
            reader.await.unwrap(),
            (Some((2, "stored")), Served::FetchedDuringWrite),
            "a failed write's outcome is unknown: the store answers"
        );

        cache.begin_write("row");
        let waited = tokio::time::Instant::now();
        assert_eq!(
            read(&cache, 12, (3, "stored meanwhile")).await,
            (Some((3, "stored meanwhile")), Served::FetchedDuringWrite),
        );
        assert_eq!(waited.elapsed(), WRITE_WAIT, "waited the bound, no more");
        assert_eq!(
            cache.fresh(&"row", Timestamp(13)),
            None,
            "a read during a write is not kept: it may predate the write"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_passing_writes_is_served_the_kept_row_at_once_during_a_write() {
        let (cache, waiting) = a_read_waiting_for_a_write((1, "as before the write")).await;
        let began = tokio::time::Instant::now();
        let passing = |at: i64| {
            let fetch = async { Ok::<_, ()>(Some((9, "stored"))) };
            cache.get_served_passing_writes(&"row", Timestamp(at), fetch)
        };
        let (found, served) = passing(11).await.unwrap();
        assert_eq!(
            (found.as_deref(), served),
            (Some(&(1, "before")), Served::Kept),
            "the row as kept before the write"
        );
        assert_eq!(began.elapsed(), Duration::ZERO, "without waiting");
        assert!(!waiting.is_finished(), "a plain read still waits");
        cache.end_write("row", Some(((2, "written"), Timestamp(11))));
        let (found, _) = passing(12).await.unwrap();
        assert_eq!(found.as_deref(), Some(&(2, "written")));
        // Past the bound nothing is kept: the store answers.
        let (found, served) = passing(11 + 1_000).await.unwrap();
        assert_eq!(
            (found.as_deref(), served),
            (Some(&(9, "stored")), Served::Fetched)
        );
        waiting.await.unwrap();
    }

    #[test]
    fn fresh_entries_are_dropped_two_bounds_after_their_offer() {
        let cache: FreshCache<u32, u32> = FreshCache::new(Duration::from_millis(100));
        for k in 0..50 {
            cache.offer(k, k, Timestamp(1_000));
        }
        // A bound later the young generation turns over; the entries are
        // stale, not served, and gone at the next turnover.
        cache.offer(50, 50, Timestamp(1_100));
        assert_eq!(cache.fresh(&0, Timestamp(1_100)), None);
        assert_eq!(cache.len(), 51);
        cache.offer(51, 51, Timestamp(1_200));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.fresh(&51, Timestamp(1_250)).as_deref(), Some(&51));
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
