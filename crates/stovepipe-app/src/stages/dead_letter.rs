//! Dead-letter reconcilers: fail closed, so no request is ever left hanging.
//!
//! For `process`, `build` and `buildsignal`: load the request (missing →
//! ack), fail it closed with a reason naming the stage and the error, and
//! publish `record`, which releases the slot and records no fact. For
//! `record`: run record again. A reconciler that fails too is rejected from
//! the dead-letter topic, which parks the message for an operator (see the
//! admin dead-letter endpoints).

use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;
use stovepipe_entity::{BuildId, QueueName, RequestId};
use stovepipe_ports::{Delivery, Topic};

use super::record::RecordStage;
use super::{Handler, Outcome};
use crate::deps::Deps;
use crate::error::StageError;
use crate::fail_closed::fail_closed;
use crate::hops::decode;
use crate::metrics;

/// The fields every hop shape shares, read leniently.
#[derive(Debug, Deserialize)]
struct AnyHop {
    queue: QueueName,
    request_id: Option<RequestId>,
    build_id: Option<BuildId>,
}

#[derive(Debug)]
pub struct DeadLetterReconciler {
    deps: Arc<Deps>,
    original: Topic,
    record: RecordStage,
}

impl DeadLetterReconciler {
    /// The reconciler of `original`'s dead-letter topic.
    pub fn new(deps: Arc<Deps>, original: Topic) -> Self {
        Self {
            record: RecordStage::new(deps.clone()),
            deps,
            original,
        }
    }

    async fn fail_request(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        let hop: AnyHop = decode(delivery)?;
        let stores = self.deps.stores(&hop.queue);
        let request_id = match (hop.request_id, hop.build_id) {
            (Some(id), _) => id,
            (None, Some(build)) => match stores.builds.get(&build).await? {
                Some(b) => b.request_id,
                None => return Ok(Outcome::Ack),
            },
            (None, None) => {
                return Err(StageError::permanent(format!(
                    "dead letter of {} names no request or build",
                    self.original
                )));
            }
        };
        let reason = format!(
            "{} dead-lettered: {}",
            self.original,
            delivery.last_error.as_deref().unwrap_or("unknown error")
        );
        fail_closed(&self.deps, &stores, &request_id, &reason).await?;
        Ok(Outcome::Ack)
    }
}

#[async_trait]
impl Handler for DeadLetterReconciler {
    fn topic(&self) -> Topic {
        self.original.dlq()
    }

    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError> {
        metrics::dead_letter_reconciled(&self.original);
        if self.original.as_str() == Topic::RECORD {
            return self.record.handle(delivery).await;
        }
        self.fail_request(delivery).await
    }
}
