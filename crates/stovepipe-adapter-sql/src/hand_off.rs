//! Hand-offs (the port's module docs): a hop a store write publishes for a
//! consumer in this process is inserted already leased to it and handed
//! over after the commit, instead of waking the consumer to `receive` it.
//!
//! Under the pipeline benchmark a hop's `receive` was a statement and a
//! message update of its own, and one of the lane round trips a request
//! waits through (docs/benchmarks.md, 2026-12-06, seventh session).
//!
//! Which messages of a write are handed off: the first of each partition
//! in the outbox (a later one is behind it), of a topic with a consumer
//! that has a free slot ([`Candidates::claim`]), and only when, as the
//! insert runs, no other message of its partition is pending: it is the
//! partition's head. On SQLite the one writer makes that check exact. On
//! Postgres a statement's snapshot predates the partition lock it takes, so
//! a publisher that committed while this one waited for the lock would be
//! missed; the check is the function `stovepipe_hand_off` (migration
//! `m20250101_000020_messages_hand_off`), which takes the lock itself
//! (again, harmlessly) and, being volatile, reads with a fresh snapshot.
//!
//! A handed row's `lease_owner` is the write's token and its
//! `lease_expires` the consumer's lease from the write's clock, so until
//! then no `receive` takes it; the delivery is handed over with the local
//! wake-ups (`after_commit`), and its topic is not woken for it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use stovepipe_entity::Timestamp;
use stovepipe_ports::{Delivery, HandOff, HandOffClaim, OutgoingMessage, Topic};

/// The consumers of this process that take hand-offs, by topic.
#[derive(Default)]
pub(crate) struct HandOffs(Mutex<HashMap<Topic, Vec<HandOff>>>);

impl HandOffs {
    pub(crate) fn offer(&self, topic: &Topic, offer: HandOff) {
        self.lock().entry(topic.clone()).or_default().push(offer);
    }

    /// A free slot of some consumer of `topic`, forgetting consumers that
    /// have gone.
    fn claim(&self, topic: &Topic) -> Option<HandOffClaim> {
        let mut offers = self.lock();
        let list = offers.get_mut(topic)?;
        list.retain(|o| !o.is_gone());
        list.iter().find_map(HandOff::claim)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, Vec<HandOff>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The lease a message is inserted with: its token and expiry (millis).
pub(crate) type Lease = Option<(String, i64)>;

/// The messages of one write that may be handed off, each with the slot it
/// claimed.
pub(crate) struct Candidates {
    token: String,
    now: Timestamp,
    list: Vec<Candidate>,
}

struct Candidate {
    topic: Topic,
    partition_key: String,
    message_id: String,
    payload: serde_json::Value,
    claim: HandOffClaim,
}

impl Candidates {
    /// Claims a slot for each message that may be handed off (see the
    /// module) and returns, for each of `messages` (in their order, sorted
    /// by partition), the lease to insert it with if it is its partition's
    /// head.
    pub(crate) fn claim(
        offers: &HandOffs,
        messages: &[OutgoingMessage],
        now: Timestamp,
    ) -> (Self, Vec<Lease>) {
        let mut out = Self {
            token: String::new(),
            now,
            list: Vec::new(),
        };
        let mut leases = Vec::with_capacity(messages.len());
        let mut previous: Option<(&Topic, &str)> = None;
        for m in messages {
            let first = previous != Some((&m.topic, m.partition_key.as_str()));
            previous = Some((&m.topic, m.partition_key.as_str()));
            let claim = if first { offers.claim(&m.topic) } else { None };
            let Some(claim) = claim else {
                leases.push(None);
                continue;
            };
            if out.token.is_empty() {
                out.token = uuid::Uuid::new_v4().simple().to_string();
            }
            let expires = now.saturating_add(claim.lease()).as_millis();
            leases.push(Some((out.token.clone(), expires)));
            out.list.push(Candidate {
                topic: m.topic.clone(),
                partition_key: m.partition_key.clone(),
                message_id: m.message_id.clone(),
                payload: m.payload.clone(),
                claim,
            });
        }
        (out, leases)
    }

    /// The deliveries of the rows inserted leased, `(row id, topic,
    /// partition key)`, each with its claim; the other claims are dropped,
    /// their slots free again.
    pub(crate) fn handed(self, rows: Vec<(i64, String, String)>) -> Handed {
        if rows.is_empty() {
            return Handed::default();
        }
        let mut list = self.list;
        let mut out = Vec::with_capacity(rows.len());
        for (id, topic, key) in rows {
            let Some(at) = list
                .iter()
                .position(|c| c.topic.as_str() == topic && c.partition_key == key)
            else {
                continue;
            };
            let c = list.swap_remove(at);
            let delivery = Delivery {
                delivery_id: crate::mq::delivery_id(id, &self.token),
                topic: c.topic,
                partition_key: c.partition_key,
                message_id: c.message_id,
                payload: c.payload,
                attempt: 1,
                last_error: None,
                published_at: self.now,
            };
            out.push((c.claim, delivery));
        }
        Handed(out)
    }
}

/// Deliveries to hand over once their write committed.
#[derive(Default)]
pub(crate) struct Handed(Vec<(HandOffClaim, Delivery)>);

impl Handed {
    /// Hands each delivery to its consumer. One that has gone leaves its
    /// message leased until the lease expires, when it is delivered again.
    pub(crate) fn deliver(self) {
        for (claim, delivery) in self.0 {
            if !claim.deliver(delivery) {
                tracing::debug!("a hand-off's consumer has gone; its lease will expire");
            }
        }
    }
}
