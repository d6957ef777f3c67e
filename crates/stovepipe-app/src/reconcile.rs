//! The reconcile loop: self-healing instead of trusting that every message
//! arrived. Periodically (and once at start-up), per queue:
//!
//! - a slot owned by a missing request, or by one whose verdict is settled
//!   (superseded, cancelled, failed closed, or with its fact recorded) for
//!   longer than the grace period, is released;
//! - a request that ended on a build verdict but has no fact gets `record`
//!   republished;
//! - an `accepted` request older than the grace period gets `process`
//!   republished (deduplicated against a pending one);
//! - a `processing` request past `max_validation` is failed closed (its
//!   build cancelled, best effort).
//!
//! Every repair is counted in metrics and logged.

use std::sync::Arc;
use std::time::Duration;

use stovepipe_entity::{QueueName, Request, RequestState};
use stovepipe_ports::Stores;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::deps::{Deps, release_slot};
use crate::error::StageError;
use crate::fail_closed::{fail_closed, repair_record_hop};
use crate::hops::ProcessHop;
use crate::metrics;

/// What one pass repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    pub slots_released: usize,
    pub records_republished: usize,
    pub process_republished: usize,
    pub failed_closed: usize,
}

impl Repairs {
    pub fn total(&self) -> usize {
        self.slots_released
            + self.records_republished
            + self.process_republished
            + self.failed_closed
    }
}

#[derive(Debug, Clone)]
pub struct Reconciler {
    deps: Arc<Deps>,
    /// How long a state may look stuck before it is repaired; keeps the loop
    /// from racing a stage that is about to do the same thing.
    pub grace: Duration,
    /// Requests examined per query.
    pub batch: usize,
}

impl Reconciler {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self {
            deps,
            grace: Duration::from_mins(1),
            batch: 500,
        }
    }

    /// One pass over every configured queue.
    pub async fn reconcile_all(&self) -> Result<Repairs, StageError> {
        let mut total = Repairs::default();
        for config in self.deps.configs.list().await? {
            let r = self.reconcile_queue(&config.name).await?;
            total.slots_released += r.slots_released;
            total.records_republished += r.records_republished;
            total.process_republished += r.process_republished;
            total.failed_closed += r.failed_closed;
        }
        Ok(total)
    }

    pub async fn reconcile_queue(&self, queue: &QueueName) -> Result<Repairs, StageError> {
        let mut repairs = Repairs::default();
        let stores = self.deps.stores(queue);
        let Some(queue_row) = stores.queues.get().await? else {
            return Ok(repairs);
        };
        let config = self.deps.config(queue).await?;
        let now = self.deps.now();
        let stale = |r: &Request| now.since(r.updated_at) >= self.grace;

        // Slots.
        for slot in &queue_row.in_flight {
            let request = stores.requests.get(&slot.request_id).await?;
            let release = match &request {
                None => true,
                Some(r) => match r.state {
                    RequestState::Superseded | RequestState::Cancelled => stale(r),
                    RequestState::Failed if r.failed_closed => stale(r),
                    RequestState::Succeeded | RequestState::Failed => {
                        stale(r) && self.has_fact(&stores, r).await?
                    }
                    RequestState::Accepted | RequestState::Processing => false,
                },
            };
            if release {
                let id = slot.request_id.clone();
                release_slot(&self.deps, &stores, &id, None, Vec::new()).await?;
                warn!(%queue, request = %id, "reconcile: released a leaked slot");
                metrics::repaired(queue, "slot_released");
                repairs.slots_released += 1;
            }
        }

        // Verdicts without a fact.
        for r in self
            .deps
            .read
            .requests_missing_fact(queue, self.batch)
            .await?
        {
            if stale(&r) {
                self.deps
                    .mq
                    .publish(repair_record_hop(
                        &r,
                        &format!("reconcile-{}", now.as_millis()),
                    ))
                    .await?;
                info!(%queue, request = %r.id, "reconcile: republished record");
                metrics::repaired(queue, "record_republished");
                repairs.records_republished += 1;
            }
        }

        // Open requests.
        for r in self.deps.read.open_requests(queue, self.batch).await? {
            match r.state {
                RequestState::Accepted if stale(&r) => {
                    let hop = ProcessHop {
                        request_id: r.id.clone(),
                        queue: queue.clone(),
                    };
                    if self.deps.mq.publish(hop.message()).await? {
                        info!(%queue, request = %r.id, "reconcile: republished process");
                        metrics::repaired(queue, "process_republished");
                        repairs.process_republished += 1;
                    }
                }
                RequestState::Processing if now.since(r.updated_at) >= config.max_validation => {
                    self.cancel_builds(&stores, &config, &r).await;
                    let reason = format!(
                        "reconcile: processing for longer than max_validation ({}s)",
                        config.max_validation.as_secs()
                    );
                    if fail_closed(&self.deps, &stores, &r.id, &reason).await? {
                        metrics::repaired(queue, "failed_closed");
                        repairs.failed_closed += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(repairs)
    }

    async fn has_fact(&self, stores: &Stores, r: &Request) -> Result<bool, StageError> {
        Ok(stores
            .facts
            .get(&r.uri, &stovepipe_entity::ProjectName::whole_repo())
            .await?
            .is_some())
    }

    async fn cancel_builds(
        &self,
        stores: &Stores,
        config: &stovepipe_entity::QueueConfig,
        r: &Request,
    ) {
        let Ok(runner) = self.deps.runner(config).await else {
            return;
        };
        if let Ok(builds) = stores.builds.list_for_request(&r.id).await {
            for b in builds.iter().filter(|b| !b.status.is_terminal()) {
                if let Err(e) = runner.cancel(&b.id).await {
                    warn!(build = %b.id, error = %e, "reconcile: cancel failed");
                }
            }
        }
    }

    /// Runs a pass at once and then every `interval` until cancelled.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        loop {
            match self.reconcile_all().await {
                Ok(r) if r.total() > 0 => info!(?r, "reconcile pass repaired"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "reconcile pass failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
