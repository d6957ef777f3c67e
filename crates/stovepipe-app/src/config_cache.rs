//! Queue configurations, cached so that the pipeline and the read side do
//! not pay a database round trip for a configuration that rarely changes.
//!
//! [`CachedQueueConfigs`] wraps a [`QueueConfigStore`] and owns the
//! staleness bound: an entry is served only while the clock is less than
//! [`CONFIG_STALENESS`] past the instant its fetch began, so
//! - a configuration written by another replica is seen by every read that
//!   starts `CONFIG_STALENESS` or more after the write (one written through
//!   this cache at once);
//! - a queue whose configuration is gone stops answering by then too;
//! - an unknown queue is never cached: a new queue answers at once;
//! - a clock that went backwards (which a [`Clock`] must not do) drops the
//!   entry rather than extending it.
//!
//! The server wires it in front of the configuration store for every
//! consumer (stages, ingest, reconcile, queries). What a second of an old
//! configuration can do is bounded: a configuration changes when an
//! operator restarts a server with a new one, and every stage re-reads it
//! on its next delivery. Facts, requests and queues are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use stovepipe_entity::{QueueConfig, QueueName, Timestamp};
use stovepipe_ports::{Clock, QueueConfigStore, StoreError};

/// How long a configuration may be served after its fetch began. One
/// second: a configuration changes when an operator restarts a server with
/// a new one, so a second of old answers is invisible, while thousands of
/// reads and deliveries per second share one fetch.
pub const CONFIG_STALENESS: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Entry {
    /// Clock time when the fetch that produced `config` began: the stored
    /// configuration was at least this new.
    fetched_at: Timestamp,
    config: Arc<QueueConfig>,
}

/// Queue configurations by name, each at most [`CONFIG_STALENESS`] old.
#[derive(Debug, Default)]
pub(crate) struct ConfigCache {
    entries: Mutex<HashMap<QueueName, Entry>>,
}

impl ConfigCache {
    /// The configuration of `queue` as of less than [`CONFIG_STALENESS`]
    /// before `now`: cached, or fetched from `store` (`Ok(None)` for an
    /// unknown queue, never cached).
    pub(crate) async fn get(
        &self,
        store: &dyn QueueConfigStore,
        queue: &QueueName,
        now: Timestamp,
    ) -> Result<Option<Arc<QueueConfig>>, StoreError> {
        if let Some(fresh) = self.fresh(queue, now) {
            return Ok(Some(fresh));
        }
        let found = store.get(queue).await?;
        let mut entries = self.lock();
        let Some(config) = found else {
            entries.remove(queue);
            return Ok(None);
        };
        let config = Arc::new(config);
        // A slower fetch that began earlier must not replace a newer one.
        if entries.get(queue).is_none_or(|e| e.fetched_at <= now) {
            entries.insert(
                queue.clone(),
                Entry {
                    fetched_at: now,
                    config: config.clone(),
                },
            );
        }
        Ok(Some(config))
    }

    /// Drops `queue`'s entry: the next `get` fetches.
    pub(crate) fn forget(&self, queue: &QueueName) {
        self.lock().remove(queue);
    }

    fn fresh(&self, queue: &QueueName, now: Timestamp) -> Option<Arc<QueueConfig>> {
        let entries = self.lock();
        let entry = entries.get(queue)?;
        let age = now.as_millis().checked_sub(entry.fetched_at.as_millis())?;
        let bound = i64::try_from(CONFIG_STALENESS.as_millis()).unwrap_or(i64::MAX);
        (0..bound).contains(&age).then(|| entry.config.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueName, Entry>> {
        // Entries are replaced whole: a panic elsewhere cannot leave one
        // half-written.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A [`QueueConfigStore`] whose `get` is served from a cache at most
/// [`CONFIG_STALENESS`] old (see the module). `list` always asks the store;
/// `upsert` writes through and drops the cached entry, so this process sees
/// its own writes at once.
pub struct CachedQueueConfigs {
    inner: Arc<dyn QueueConfigStore>,
    clock: Arc<dyn Clock>,
    cache: ConfigCache,
}

impl CachedQueueConfigs {
    pub fn new(inner: Arc<dyn QueueConfigStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            clock,
            cache: ConfigCache::default(),
        }
    }
}

impl std::fmt::Debug for CachedQueueConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedQueueConfigs")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl QueueConfigStore for CachedQueueConfigs {
    async fn get(&self, queue: &QueueName) -> Result<Option<QueueConfig>, StoreError> {
        let found = self
            .cache
            .get(self.inner.as_ref(), queue, self.clock.now())
            .await?;
        Ok(found.map(|c| (*c).clone()))
    }

    async fn list(&self) -> Result<Vec<QueueConfig>, StoreError> {
        self.inner.list().await
    }

    async fn upsert(&self, config: &QueueConfig) -> Result<(), StoreError> {
        self.inner.upsert(config).await?;
        self.cache.forget(&config.name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One queue's configuration, counting reads.
    struct Counting(QueueConfig, AtomicUsize);

    #[async_trait]
    impl QueueConfigStore for Counting {
        async fn get(&self, queue: &QueueName) -> Result<Option<QueueConfig>, StoreError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok((*queue == self.0.name).then(|| self.0.clone()))
        }
        async fn list(&self) -> Result<Vec<QueueConfig>, StoreError> {
            Ok(vec![self.0.clone()])
        }
        async fn upsert(&self, _: &QueueConfig) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_entry_is_fresh_from_its_fetch_until_the_bound_and_never_before_it() {
        let name = QueueName::new("q").unwrap();
        let store = Counting(
            QueueConfig::new(name.clone(), "mem", "main"),
            AtomicUsize::new(0),
        );
        let cache = ConfigCache::default();
        let bound = i64::try_from(CONFIG_STALENESS.as_millis()).unwrap();
        let t = 10_000;
        let mut fetches = Vec::new();
        for at in [
            t,
            t + bound - 1,
            t + bound,
            t + bound - 1,
            t + 2 * bound - 1,
        ] {
            let got = cache.get(&store, &name, Timestamp(at)).await.unwrap();
            assert_eq!(got.map(|c| c.name.clone()), Some(name.clone()));
            fetches.push(store.1.load(Ordering::SeqCst));
        }
        // t: fetched; t+bound-1: fresh; t+bound: stale, fetched again; an
        // instant before that fetch (a clock gone back): fetched again;
        // then fresh until its own bound.
        assert_eq!(fetches, [1, 1, 2, 3, 3]);
    }

    #[tokio::test]
    async fn a_write_through_the_cache_is_seen_at_once_and_other_writes_after_the_bound() {
        use stovepipe_adapter_memory::{ManualClock, MemoryBackend};
        let clock = ManualClock::default();
        let backend = MemoryBackend::new(Arc::new(clock.clone()));
        let store: Arc<dyn QueueConfigStore> = backend.clone();
        let cached = CachedQueueConfigs::new(store.clone(), Arc::new(clock.clone()));
        let name = QueueName::new("q").unwrap();
        let mut config = QueueConfig::new(name.clone(), "mem", "main");
        cached.upsert(&config).await.unwrap();
        assert_eq!(cached.get(&name).await.unwrap(), Some(config.clone()));

        config.max_concurrent = 7;
        cached.upsert(&config).await.unwrap();
        assert_eq!(
            cached.get(&name).await.unwrap().map(|c| c.max_concurrent),
            Some(7),
            "its own write, at once"
        );

        config.max_concurrent = 9;
        store.upsert(&config).await.unwrap();
        assert_eq!(
            cached.get(&name).await.unwrap().map(|c| c.max_concurrent),
            Some(7),
            "another writer's change waits for the bound"
        );
        clock.advance(CONFIG_STALENESS);
        assert_eq!(
            cached.get(&name).await.unwrap().map(|c| c.max_concurrent),
            Some(9)
        );
    }
}
