//! The live releases each event matches, cached for the dispatcher.
//!
//! Every hook-able change is dispatched, and each dispatch asks the
//! registry which live releases match the event: a database round trip per
//! event (three per validated request) for an answer that changes only
//! when an operator registers, releases or rolls back a hook.
//! [`CachedHookRegistry`] serves `resolve_live` for at most
//! [`HOOK_STALENESS`] after its fetch began (the rules of
//! [`crate::cache`]); a write through it (`upsert_hook`, `create_release`,
//! `set_live`) empties the cache, so this process sees its own changes at
//! once, and another replica's are seen within the bound. The snapshot a
//! delivery records is therefore at most that old at pick-up, exactly as
//! if the dispatcher had picked the event up that much earlier. Every other
//! method (runs, listings) always asks the registry.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use stovepipe_entity::{
    EventType, Hook, HookContract, HookName, HookRelease, HookReleaseSpec, HookRun, QueueName,
    Timestamp,
};
use stovepipe_ports::{Clock, HookError, HookRegistry, ReleaseOutcome, UpsertOutcome};

use crate::cache::FreshCache;

/// How long a `resolve_live` answer may be served after its fetch began;
/// the same bound as queue configurations ([`crate::CONFIG_STALENESS`]).
pub const HOOK_STALENESS: Duration = Duration::from_secs(1);

type Live = Vec<(Hook, HookRelease)>;

/// A [`HookRegistry`] whose `resolve_live` is served from a cache at most
/// [`HOOK_STALENESS`] old (see the module).
pub struct CachedHookRegistry {
    inner: Arc<dyn HookRegistry>,
    clock: Arc<dyn Clock>,
    live: FreshCache<(EventType, Option<QueueName>), Live>,
}

impl CachedHookRegistry {
    pub fn new(inner: Arc<dyn HookRegistry>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            clock,
            live: FreshCache::new(HOOK_STALENESS),
        }
    }

    /// Passes a write's result on, emptying the cache whatever it was: a
    /// failed write may still have committed.
    fn written<T>(&self, result: T) -> T {
        self.live.clear();
        result
    }
}

impl std::fmt::Debug for CachedHookRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedHookRegistry").finish_non_exhaustive()
    }
}

#[async_trait]
impl HookRegistry for CachedHookRegistry {
    async fn upsert_hook(
        &self,
        name: &HookName,
        contract: &HookContract,
        now: Timestamp,
    ) -> Result<(Hook, UpsertOutcome), HookError> {
        self.written(self.inner.upsert_hook(name, contract, now).await)
    }

    async fn create_release(
        &self,
        name: &HookName,
        spec: &HookReleaseSpec,
        created_by: &str,
        now: Timestamp,
    ) -> Result<ReleaseOutcome, HookError> {
        self.written(self.inner.create_release(name, spec, created_by, now).await)
    }

    async fn set_live(&self, name: &HookName, version: u32) -> Result<Hook, HookError> {
        self.written(self.inner.set_live(name, version).await)
    }

    async fn get(&self, name: &HookName) -> Result<Option<Hook>, HookError> {
        self.inner.get(name).await
    }

    async fn list(&self) -> Result<Vec<Hook>, HookError> {
        self.inner.list().await
    }

    async fn list_releases(&self, name: &HookName) -> Result<Vec<HookRelease>, HookError> {
        self.inner.list_releases(name).await
    }

    async fn get_release(
        &self,
        name: &HookName,
        version: u32,
    ) -> Result<Option<HookRelease>, HookError> {
        self.inner.get_release(name, version).await
    }

    async fn resolve_live(
        &self,
        event: EventType,
        queue: Option<QueueName>,
    ) -> Result<Vec<(Hook, HookRelease)>, HookError> {
        let key = (event, queue);
        let fetch = async {
            self.inner
                .resolve_live(key.0, key.1.clone())
                .await
                .map(Some)
        };
        let live = self.live.get(&key, self.clock.now(), fetch).await?;
        Ok(live.map(|l| (*l).clone()).unwrap_or_default())
    }

    async fn record_run(&self, run: &HookRun) -> Result<bool, HookError> {
        self.inner.record_run(run).await
    }

    async fn list_runs(&self, name: &HookName, limit: usize) -> Result<Vec<HookRun>, HookError> {
        self.inner.list_runs(name, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use stovepipe_adapter_memory::{ManualClock, MemoryBackend};

    fn spec(url: &str) -> HookReleaseSpec {
        HookReleaseSpec {
            url: url.to_owned(),
            secret: None,
            headers: BTreeMap::new(),
            timeout_ms: 1_000,
            max_attempts: 3,
        }
    }

    async fn live_urls(registry: &dyn HookRegistry) -> Vec<String> {
        registry
            .resolve_live(EventType::ValidationRecorded, None)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, release)| release.spec.url)
            .collect()
    }

    #[tokio::test]
    async fn own_writes_are_seen_at_once_and_other_writers_within_the_bound() {
        let clock = ManualClock::default();
        let backend = MemoryBackend::new(Arc::new(clock.clone()));
        let store: Arc<dyn HookRegistry> = backend.clone();
        let cached = CachedHookRegistry::new(store.clone(), Arc::new(clock.clone()));
        let name = HookName::new("deploy").unwrap();
        let contract = HookContract::new(
            BTreeSet::from([EventType::ValidationRecorded]),
            BTreeSet::new(),
        )
        .unwrap();
        let now = clock.now();

        assert!(live_urls(&cached).await.is_empty(), "no hook yet");
        cached.upsert_hook(&name, &contract, now).await.unwrap();
        cached
            .create_release(&name, &spec("http://v1"), "test", now)
            .await
            .unwrap();
        assert_eq!(
            live_urls(&cached).await,
            ["http://v1"],
            "its own write, at once"
        );

        // Another replica releases v2 (the write does not pass the cache).
        store
            .create_release(&name, &spec("http://v2"), "test", now)
            .await
            .unwrap();
        assert_eq!(
            live_urls(&cached).await,
            ["http://v1"],
            "another writer's release waits for the bound"
        );
        clock.advance(HOOK_STALENESS);
        assert_eq!(live_urls(&cached).await, ["http://v2"]);

        // A rollback through the cache is seen at once.
        cached.set_live(&name, 1).await.unwrap();
        assert_eq!(live_urls(&cached).await, ["http://v1"]);
    }
}
