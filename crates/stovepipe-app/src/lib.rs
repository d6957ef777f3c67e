//! Stovepipe's application layer: the greenness pipeline of
//! `shared/design/pipeline.md`.
//!
//! Owns: ingest ([`IngestService`]), the stages (`process`, `build`,
//! `buildsignal`, `record`) and their dead-letter reconcilers
//! ([`stages`]), the hook dispatcher and service ([`hooks`]), the
//! reconcile loop ([`Reconciler`]), the consumer runtime
//! ([`runtime`]), the change events and metrics they emit.
//!
//! Depends only on `stovepipe-entity` and `stovepipe-ports`: it never names
//! a database, git, HTTP or a concrete adapter. Whoever wires the
//! application builds a [`Deps`] from adapters and calls [`Pipeline::new`].

mod cache;
mod config_cache;
pub mod deps;
pub mod error;
pub mod events;
pub mod fail_closed;
pub mod hooks;
pub mod hops;
pub mod ingest;
pub mod metrics;
pub mod poller;
pub mod query;
pub mod reconcile;
pub mod reports;
mod row_cache;
pub mod runtime;
pub mod stages;

use std::sync::Arc;

pub use config_cache::{CONFIG_STALENESS, CachedQueueConfigs};
pub use deps::Deps;
pub use error::StageError;
pub use hooks::{CachedHookRegistry, HOOK_STALENESS, HookService, HookServiceError, ReleaseInfo};
pub use ingest::{IngestError, IngestOutcome, IngestService};
pub use query::{CommitStatus, QueryError, QueryService, RECORDED_FACTS_CAPACITY, RecordedFacts};
pub use reconcile::{Reconciler, Repairs};
pub use reports::{ReportError, ReportService};
pub use row_cache::{CachedStores, ROW_STALENESS};
pub use runtime::{ConsumerSettings, DEFAULT_MAX_IN_FLIGHT, Pump, RetryPolicy, Settlement};
pub use stages::{Handler, Outcome};

use hooks::{HookDeadLetterReconciler, HookDeliveryStage, HookDispatchStage};
use stages::build::BuildStage;
use stages::buildsignal::BuildSignalStage;
use stages::dead_letter::DeadLetterReconciler;
use stages::process::ProcessStage;
use stages::record::RecordStage;
use stovepipe_ports::Topic;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The assembled pipeline: every handler plus ingest and the reconciler.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// As given: what the read side uses.
    deps: Arc<Deps>,
    /// The same ports, with the stores behind [`CachedStores`]: what every
    /// writer (ingest, the stages, reconcilers, reports, hooks) uses, so
    /// the rows one stage writes are there for the next.
    writers: Arc<Deps>,
    /// Shared by every query service, so facts read once stay kept.
    facts: Arc<RecordedFacts>,
}

impl Pipeline {
    pub fn new(deps: Deps) -> Self {
        let writers = Deps {
            stores: Arc::new(CachedStores::new(deps.stores.clone(), deps.clock.clone())),
            ..deps.clone()
        };
        Self {
            deps: Arc::new(deps),
            writers: Arc::new(writers),
            facts: Arc::default(),
        }
    }

    /// The ports as given to [`Pipeline::new`].
    pub fn deps(&self) -> &Arc<Deps> {
        &self.deps
    }

    pub fn ingest(&self) -> IngestService {
        IngestService::new(self.writers.clone())
    }

    /// The read side: requests and queue rows from the store on every call.
    pub fn query(&self) -> QueryService {
        QueryService::new(self.deps.clone(), self.facts.clone())
    }

    pub fn reports(&self) -> ReportService {
        ReportService::new(self.writers.clone())
    }

    pub fn hooks(&self) -> HookService {
        HookService::new(self.writers.clone())
    }

    pub fn reconciler(&self) -> Reconciler {
        Reconciler::new(self.writers.clone())
    }

    /// Every stage handler and dead-letter reconciler, in pipeline order,
    /// then the hook dispatcher's.
    pub fn handlers(&self) -> Vec<Arc<dyn Handler>> {
        let d = &self.writers;
        vec![
            Arc::new(ProcessStage::new(d.clone())),
            Arc::new(BuildStage::new(d.clone())),
            Arc::new(BuildSignalStage::new(d.clone())),
            Arc::new(RecordStage::new(d.clone())),
            Arc::new(DeadLetterReconciler::new(d.clone(), Topic::process())),
            Arc::new(DeadLetterReconciler::new(d.clone(), Topic::build())),
            Arc::new(DeadLetterReconciler::new(d.clone(), Topic::buildsignal())),
            Arc::new(DeadLetterReconciler::new(d.clone(), Topic::record())),
            Arc::new(HookDispatchStage::new(d.clone())),
            Arc::new(HookDeliveryStage::new(d.clone())),
            Arc::new(HookDeadLetterReconciler::new(d.clone())),
        ]
    }

    /// A synchronous driver over every handler.
    pub fn pump(&self, policy: RetryPolicy) -> Pump {
        Pump::new(self.handlers(), self.deps.mq.clone(), policy)
    }

    /// Spawns one consumer per topic; they run until `cancel` fires and
    /// then drain. Await the returned set to know they are done.
    pub fn spawn_consumers(
        &self,
        policy: &RetryPolicy,
        settings: &ConsumerSettings,
        cancel: &CancellationToken,
    ) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for handler in self.handlers() {
            let mut s = settings.clone();
            s.consumer_id = format!("{}/{}", settings.consumer_id, handler.topic());
            set.spawn(runtime::run_consumer(
                handler,
                self.deps.mq.clone(),
                self.deps.clock.clone(),
                policy.clone(),
                s,
                cancel.clone(),
            ));
        }
        set
    }
}
