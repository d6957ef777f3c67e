//! Queue configurations, cached so that the pipeline and the read side do
//! not pay a database round trip for a configuration that rarely changes.
//!
//! [`CachedQueueConfigs`] wraps a [`QueueConfigStore`]: an entry is served
//! at most [`CONFIG_STALENESS`] after its fetch began (the rules of
//! [`crate::cache`]), so a configuration written by another replica, or
//! removed, is seen within the bound, one written through this cache at
//! once, and an unknown queue is never cached: a new queue answers at once.
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
