//! The built-in poller: ingests each queue's head every `poll_interval`
//! (queues with `0s` are only ingested from outside, through the API).
//! Ingest dedups on `(queue, commit)`, so polling an unchanged head costs one
//! index lookup and mints nothing.

use std::sync::Arc;
use std::time::Duration;

use stovepipe_entity::QueueConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ingest::IngestService;

/// Polls every queue of `configs` with a non-zero interval until `cancel`.
pub async fn run_poller(
    ingest: IngestService,
    configs: Vec<QueueConfig>,
    cancel: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    for config in configs.into_iter().filter(|c| !c.poll_interval.is_zero()) {
        tasks.spawn(poll_queue(ingest.clone(), Arc::new(config), cancel.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn poll_queue(ingest: IngestService, config: Arc<QueueConfig>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(config.poll_interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match ingest.ingest(config.name.as_str(), None).await {
            Ok(outcome) if outcome.created => {
                debug!(queue = %config.name, request = %outcome.request_id, "poller: new head");
            }
            Ok(_) => {}
            Err(e) => warn!(queue = %config.name, error = %e, "poller: ingest failed"),
        }
    }
}
