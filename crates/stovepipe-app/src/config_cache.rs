//! The read side's queue configurations, cached so that a read does not pay
//! a database round trip for a configuration that rarely changes.
//!
//! Owns the staleness bound of the read side: an entry is served only while
//! the clock is less than [`CONFIG_STALENESS`] past the instant its fetch
//! began, so
//! - a written configuration is seen by every read that starts
//!   `CONFIG_STALENESS` or more after the write;
//! - a queue whose configuration is gone stops answering by then too;
//! - an unknown queue is never cached: a new queue answers at once;
//! - a clock that went backwards (which a [`Clock`] must not do) drops the
//!   entry rather than extending it.
//!
//! Does not own: anything the pipeline decides with. The stages, ingest and
//! the reconciler read the configuration store every time; only
//! `QueryService` uses this cache. Facts and requests are never cached.
//!
//! [`Clock`]: stovepipe_ports::Clock

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use stovepipe_entity::{QueueConfig, QueueName, Timestamp};
use stovepipe_ports::{QueueConfigStore, StoreError};

/// How long the read side may keep answering from a configuration it
/// fetched. One second: a configuration changes when an operator restarts
/// a server with a new one, so a second of old answers is invisible, while
/// thousands of reads per second share one fetch.
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
}
