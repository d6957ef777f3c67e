//! Hooks: the dispatcher that turns hook-able changes into deliveries, and
//! the application service behind the hook endpoints ([`HookService`]).
//!
//! Feeding: every hook-able change is written with its envelope on topic
//! `hook` in the same outbox ([`crate::events::OutboxExt::emit`]).
//!
//! Dispatch is two stages, so a slow or failing hook never slows the
//! pipeline (its retries live on their own topic) nor another hook (each
//! hook is its own partition):
//!
//! 1. [`HookDispatchStage`] on `hook` (partition = event id): resolves the
//!    live release of every matching hook — the provenance snapshot taken
//!    at pick-up (the server serves it through [`CachedHookRegistry`], at
//!    most [`HOOK_STALENESS`] old) — and publishes one [`DeliveryHop`] per hook on
//!    `hook_delivery` (partition = hook name, message id = the run id
//!    [`hook_run_id`]`(event id, hook)`, so a redelivered dispatch
//!    publishes nothing new).
//! 2. [`HookDeliveryStage`] on `hook_delivery`: loads the snapshotted
//!    release, makes one attempt through the `HookSink`, and records the
//!    run once it is final (delivered, failed, or gave up after the
//!    release's `max_attempts`). Transient failures are retried by the
//!    consumer runtime with exponential backoff.
//! 3. [`HookDeadLetterReconciler`] on `hook_delivery_dlq`: a delivery the
//!    runtime dead-lettered (attempts exhausted before the release's own
//!    limit, or an error that cannot be retried) is recorded as `gave_up`;
//!    it never fails a request.

mod cache;
mod service;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use stovepipe_entity::{EventEnvelope, HookName, HookRelease, HookRun, HookRunStatus, hook_run_id};
use stovepipe_ports::{Delivery, DeliveryOutcome, OutgoingMessage, Topic};
use tracing::{info, warn};

use crate::deps::Deps;
use crate::error::StageError;
use crate::hops::decode;
use crate::stages::{Handler, Outcome};

pub use cache::{CachedHookRegistry, HOOK_STALENESS};
pub use service::{HookService, HookServiceError, ReleaseInfo};

/// The topic of per-hook deliveries.
pub const HOOK_DELIVERY: &str = "hook_delivery";

pub fn hook_delivery_topic() -> Topic {
    Topic::new(HOOK_DELIVERY)
}

/// One event to deliver to one hook, with the release snapshotted when the
/// dispatcher picked the event up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryHop {
    pub envelope: EventEnvelope,
    pub hook: HookName,
    pub version: u32,
}

impl DeliveryHop {
    pub fn run_id(&self) -> String {
        hook_run_id(&self.envelope.id, &self.hook)
    }

    pub fn message(&self) -> OutgoingMessage {
        OutgoingMessage::new(
            hook_delivery_topic(),
            self.hook.as_str(),
            self.run_id(),
            // Plain data with string keys: serialising cannot fail.
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// Stage 1: fan an event out to the live release of every matching hook.
#[derive(Debug)]
pub struct HookDispatchStage {
    deps: Arc<Deps>,
}

impl HookDispatchStage {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }
}

#[async_trait]
impl Handler for HookDispatchStage {
    fn topic(&self) -> Topic {
        Topic::hook()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        let envelope: EventEnvelope = decode(delivery)?;
        let targets = self
            .deps
            .hooks
            .resolve_live(envelope.event_type, envelope.queue.clone())
            .await?;
        for (hook, release) in targets {
            let hop = DeliveryHop {
                envelope: envelope.clone(),
                hook: hook.name,
                version: release.version,
            };
            // Deduplicated on the run id: after a crash mid-fan-out, the
            // redelivery publishes only the missing hops, and the ones
            // already out keep the release they snapshotted.
            self.deps.mq.publish(hop.message()).await?;
        }
        Ok(Outcome::Ack)
    }
}

/// Stage 2: one attempt per delivery; the run is recorded once final.
#[derive(Debug)]
pub struct HookDeliveryStage {
    deps: Arc<Deps>,
}

impl HookDeliveryStage {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }
}

/// Records the run of `hop` (idempotent on its id: a redelivery after the
/// record keeps the first).
async fn record(
    deps: &Deps,
    hop: &DeliveryHop,
    delivery: &Delivery,
    status: HookRunStatus,
    attempts: u32,
    last_http_status: Option<u16>,
) -> Result<(), StageError> {
    let run = HookRun {
        id: hop.run_id(),
        hook: hop.hook.clone(),
        release_version: hop.version,
        event_id: hop.envelope.id.clone(),
        status,
        attempts,
        last_http_status,
        // The first publish of the delivery hop: retries keep it.
        started_at: delivery.published_at,
        finished_at: deps.now(),
    };
    deps.hooks.record_run(&run).await?;
    info!(hook = %run.hook, version = run.release_version, event = %run.event_id, ?status, attempts, "hook run recorded");
    Ok(())
}

/// The error text of a retried attempt. It names the HTTP status so the
/// dead-letter reconciler can still record it (see [`retried_status`]).
fn retry_error(release: &HookRelease, status: Option<u16>, error: &str) -> String {
    let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
    format!(
        "hook {}@{}: http_status={status}: {error}",
        release.hook, release.version
    )
}

/// The HTTP status written by [`retry_error`], if any.
fn retried_status(error: &str) -> Option<u16> {
    let rest = &error[error.find("http_status=")? + "http_status=".len()..];
    rest.split(':').next()?.parse().ok()
}

/// The attempts the runtime counted before dead-lettering, from its
/// `after <n> attempts: …` reason.
fn dead_letter_attempts(error: &str) -> Option<u32> {
    error
        .strip_prefix("after ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[async_trait]
impl Handler for HookDeliveryStage {
    fn topic(&self) -> Topic {
        hook_delivery_topic()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        let hop: DeliveryHop = decode(delivery)?;
        let release = self
            .deps
            .hooks
            .get_release(&hop.hook, hop.version)
            .await?
            .ok_or_else(|| {
                // Releases are immutable and never deleted.
                StageError::permanent(format!(
                    "invariant: release {}@{} does not exist",
                    hop.hook, hop.version
                ))
            })?;
        let attempt = delivery.attempt;
        match self.deps.sink.deliver(&release, &hop.envelope).await {
            DeliveryOutcome::Delivered { status } => {
                record(
                    &self.deps,
                    &hop,
                    delivery,
                    HookRunStatus::Delivered,
                    attempt,
                    Some(status),
                )
                .await?;
            }
            DeliveryOutcome::Retryable { status, error } => {
                if attempt < release.spec.max_attempts {
                    return Err(StageError::retryable(retry_error(&release, status, &error)));
                }
                warn!(hook = %hop.hook, event = %hop.envelope.id, attempt, %error, "hook delivery gave up");
                record(
                    &self.deps,
                    &hop,
                    delivery,
                    HookRunStatus::GaveUp,
                    attempt,
                    status,
                )
                .await?;
            }
            DeliveryOutcome::Failed { status, error } => {
                warn!(hook = %hop.hook, event = %hop.envelope.id, attempt, %error, "hook delivery failed");
                record(
                    &self.deps,
                    &hop,
                    delivery,
                    HookRunStatus::Failed,
                    attempt,
                    status,
                )
                .await?;
            }
        }
        Ok(Outcome::Ack)
    }
}

/// Records a dead-lettered delivery as `gave_up`.
#[derive(Debug)]
pub struct HookDeadLetterReconciler {
    deps: Arc<Deps>,
}

impl HookDeadLetterReconciler {
    pub fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }
}

#[async_trait]
impl Handler for HookDeadLetterReconciler {
    fn topic(&self) -> Topic {
        hook_delivery_topic().dlq()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        let hop: DeliveryHop = decode(delivery)?;
        let error = delivery.last_error.as_deref().unwrap_or_default();
        warn!(hook = %hop.hook, event = %hop.envelope.id, %error, "hook delivery dead-lettered: recording gave_up");
        record(
            &self.deps,
            &hop,
            delivery,
            HookRunStatus::GaveUp,
            dead_letter_attempts(error).unwrap_or(1),
            retried_status(error),
        )
        .await?;
        Ok(Outcome::Ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_errors_keep_the_status_for_the_reconciler() {
        let release = HookRelease {
            hook: HookName::new("h").unwrap(),
            version: 2,
            spec: stovepipe_entity::HookReleaseSpec {
                url: "http://x".into(),
                secret: None,
                headers: std::collections::BTreeMap::new(),
                timeout_ms: 1,
                max_attempts: 1,
            },
            digest: String::new(),
            created_by: String::new(),
            created_at: stovepipe_entity::Timestamp(0),
        };
        let e = retry_error(&release, Some(503), "receiver answered 503");
        assert_eq!(retried_status(&e), Some(503));
        assert_eq!(
            retried_status(&retry_error(&release, None, "timeout")),
            None
        );
        // As the runtime words an exhausted retry.
        let dead = format!("after 5 attempts: {e}");
        assert_eq!(dead_letter_attempts(&dead), Some(5));
        assert_eq!(retried_status(&dead), Some(503));
        assert_eq!(dead_letter_attempts("malformed payload"), None);
    }
}
