//! Failing a request closed: the pipeline, not the build, ends it.
//!
//! Shared by the dead-letter reconcilers, the max-validation timeout and the
//! reconcile loop. The request becomes `failed` with `failed_closed` and a
//! reason, and `record` is published, which releases the slot and records
//! **no fact**: the validation did not complete, so the commit stays
//! not-green and is shown as `error`, never as broken code.

use stovepipe_entity::{ProjectName, Request, RequestId};
use stovepipe_ports::{Outbox, StoreError, Stores};
use tracing::warn;

use crate::deps::Deps;
use crate::error::StageError;
use crate::events::{self, OutboxExt as _};
use crate::hops::RecordHop;
use crate::metrics;

/// The record hop a repair publishes, under its own message id.
pub fn repair_record_hop(request: &Request, why: &str) -> stovepipe_ports::OutgoingMessage {
    RecordHop {
        request_id: request.id.clone(),
        queue: request.queue.clone(),
        project: ProjectName::whole_repo(),
        build_id: None,
    }
    .message_with_id(format!("{}/{why}", request.id))
}

/// Fails `id` closed unless it is already terminal; in every case makes sure
/// `record` runs for a request that has an outcome (it releases the slot).
/// Returns whether this call failed it.
pub async fn fail_closed(
    deps: &Deps,
    stores: &Stores,
    id: &RequestId,
    reason: &str,
) -> Result<bool, StageError> {
    for _ in 0..8 {
        let Some(mut request) = stores.requests.get(id).await? else {
            return Ok(false);
        };
        if request.state.is_terminal() {
            if request.state.has_build_outcome() {
                deps.mq
                    .publish(repair_record_hop(&request, "failed-closed"))
                    .await?;
            }
            return Ok(false);
        }
        let expected = request.version;
        let now = deps.now();
        request.fail_closed(reason, now)?;
        let outbox = Outbox::none()
            .emit(events::request_changed(&request), now)
            .emit(events::validation_error(&request), now)
            .publish(repair_record_hop(&request, "failed-closed"));
        match stores.requests.update(&request, expected, outbox).await {
            Ok(()) => {
                warn!(request = %request.id, reason, "request failed closed");
                metrics::failed_closed(&request.queue);
                return Ok(true);
            }
            Err(StoreError::VersionMismatch { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(StageError::retryable(format!(
        "request {id}: conflicting while failing closed"
    )))
}
