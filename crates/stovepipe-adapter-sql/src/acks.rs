//! Group commit of acks: acks that arrive while one is being written go
//! out together, as one statement, when it is done.
//!
//! Every handled message ends in an ack, so under load acks are a large
//! share of the queue's statements. An ack joins the pending list, then
//! waits for the one lane (`group_commit`); whoever holds it takes every
//! pending ack and deletes them in one conditional `DELETE` (each row only
//! while its delivery still holds the lease), then hands each ack its own
//! result. An ack whose result a previous holder already delivered returns
//! at once. Alone, an ack is flushed at once: nothing waits for company,
//! so an idle queue pays no latency for this, and a busy one pays one
//! statement per round trip instead of one per ack.
//!
//! The port's promises are unchanged: an ack returns `Ok` only once its
//! row is deleted, `LeaseLost` when its lease was no longer held (settled,
//! expired or taken over), and the partition's waiters are woken as by a
//! single ack.

use std::collections::HashSet;

use stovepipe_ports::MqError;

use crate::backend::values;
use crate::group_commit::{GroupCommit, Pending};
use crate::mq::Wake;
use crate::{SqlBackend, error, rows};

/// At most this many acks per statement (a longer batch is several).
const MAX_BATCH: usize = 64;

/// An ack waiting for its flush: the message row and its lease owner.
type PendingAck = Pending<(i64, String), Result<(), MqError>>;

/// The acks of one backend (see the module): one lane.
pub(crate) struct AckBatch(GroupCommit<(i64, String), Result<(), MqError>>);

impl Default for AckBatch {
    fn default() -> Self {
        Self(GroupCommit::new(1, MAX_BATCH))
    }
}

impl AckBatch {
    /// Acks the delivery `owner` of message row `row`.
    pub(crate) async fn ack(
        &self,
        backend: &SqlBackend,
        row: i64,
        owner: &str,
    ) -> Result<(), MqError> {
        self.0
            .submit(
                (row, owner.to_owned()),
                || Err(abandoned()),
                |chunk| flush(backend, chunk),
            )
            .await
    }
}

/// The flusher that took an ack was cancelled before its statement's
/// result: whether the row was deleted is unknown, so the ack failed (the
/// message is delivered again if it was not, which handlers tolerate).
fn abandoned() -> MqError {
    MqError::Unavailable("the ack's batch was abandoned before its result".into())
}

/// Deletes the leased rows of `chunk` in one statement and answers each.
async fn flush(backend: &SqlBackend, chunk: Vec<PendingAck>) {
    let now = backend.shared.clock.now();
    let mut v = values![now.as_millis()];
    let mut pairs = Vec::with_capacity(chunk.len());
    for p in &chunk {
        let (row, owner) = &p.item;
        v.push((*row).into());
        v.push(owner.as_str().into());
        pairs.push(format!("(${}, ${})", v.len() - 1, v.len()));
    }
    // The partition's next message is deliverable now: wake.
    let sql = backend.settle_statement(
        &format!(
            "DELETE FROM messages WHERE (id, lease_owner) IN (VALUES {}) \
             AND lease_expires > $1",
            pairs.join(", ")
        ),
        &mut v,
        Wake::IfPartitionHasMore,
    );
    let settled = match backend.shared.lease_write(&sql, v).await {
        Ok(rows) => rows,
        Err(e) => return fail(chunk, &error::mq(e)),
    };
    let deleted = backend.wake_settled(&settled).and_then(|()| {
        settled
            .iter()
            .map(|row| {
                Ok((
                    rows::get::<i64>(row, "id")?,
                    rows::get::<String>(row, "lease_owner")?,
                ))
            })
            .collect::<Result<HashSet<_>, sea_orm::DbErr>>()
    });
    let mut deleted = match deleted {
        Ok(deleted) => deleted,
        // The rows are deleted but unreadable: a bug, not a lost lease.
        Err(e) => return fail(chunk, &error::mq(e)),
    };
    for p in chunk {
        // A row is deleted once: a second ack of the same delivery in the
        // batch finds it settled, as it would one statement later.
        let answer = if deleted.remove(&p.item) {
            Ok(())
        } else {
            Err(MqError::LeaseLost(p.item.1.clone()))
        };
        p.answer(answer);
    }
}

/// Answers every ack of `chunk` with the statement's error.
fn fail(chunk: Vec<PendingAck>, e: &MqError) {
    for p in chunk {
        p.answer(Err(e.clone()));
    }
}
