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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stovepipe_entity::{QueueConfig, QueueName};
use stovepipe_ports::{Clock, QueueConfigStore, StoreError};

use crate::cache::FreshCache;

/// How long a configuration may be served after its fetch began. One
/// second: a configuration changes when an operator restarts a server with
/// a new one, so a second of old answers is invisible, while thousands of
/// reads and deliveries per second share one fetch.
pub const CONFIG_STALENESS: Duration = Duration::from_secs(1);

/// A [`QueueConfigStore`] whose `get` is served from a cache at most
/// [`CONFIG_STALENESS`] old (see the module). `list` always asks the store;
/// `upsert` writes through and drops the cached entry, so this process sees
/// its own writes at once.
pub struct CachedQueueConfigs {
    inner: Arc<dyn QueueConfigStore>,
    clock: Arc<dyn Clock>,
    cache: FreshCache<QueueName, QueueConfig>,
}

impl CachedQueueConfigs {
    pub fn new(inner: Arc<dyn QueueConfigStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            clock,
            cache: FreshCache::new(CONFIG_STALENESS),
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
        // An unknown queue is never cached: a new queue answers at once.
        let found = self
            .cache
            .get(queue, self.clock.now(), self.inner.get(queue))
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
    use stovepipe_entity::Timestamp;

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
        let cache = FreshCache::new(CONFIG_STALENESS);
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
            let got = cache
                .get(&name, Timestamp(at), store.get(&name))
                .await
                .unwrap();
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
