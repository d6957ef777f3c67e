//! The message-queue port: the transport between pipeline stages.
//!
//! Semantics every implementation MUST provide:
//! - **Dedup**: `publish` of a message whose `(topic, partition_key,
//!   message_id)` is still retained writes nothing and returns `Ok(false)`.
//! - **Partitions**: within a `(topic, partition_key)` messages are delivered
//!   in publish order, one at a time: the next message is not delivered until
//!   the head is acked or rejected. Different partitions are independent.
//! - **Leases**: `receive` leases a partition's head to one consumer for
//!   `lease`; no other consumer receives it meanwhile. When the lease expires
//!   without ack/hold/retry/reject/renew, the head is delivered again (to any
//!   consumer) with the attempt counted, and the old holder's later
//!   ack/hold/retry/reject/renew returns `LeaseLost`.
//! - **Hold** (`hold`): postpones the head by a delay without counting an
//!   attempt; it stays the head, so it blocks its partition (a barrier).
//! - **Retry** (`retry`): postpones the head by a delay and counts an
//!   attempt; `last_error` is kept for the next delivery.
//! - **Reject** (`reject`): removes the head and dead-letters it. A message of
//!   topic `t` (not itself a dead-letter topic) is also published to
//!   `t_dlq` (same partition key and message id, `last_error` set) for that
//!   topic's reconciler. Every rejected message is kept as a [`DeadLetter`]
//!   until purged.
//! - **Wake-ups**: a publish (or `wake`) wakes `wait`ers on that topic at once.
//!   Holds, retries and timeouts use the clock the adapter was built with.

use crate::error::MqError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use stovepipe_entity::Timestamp;

/// A topic name. Dead-letter topics end in `_dlq`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    pub const PROCESS: &'static str = "process";
    pub const BUILD: &'static str = "build";
    pub const BUILDSIGNAL: &'static str = "buildsignal";
    pub const RECORD: &'static str = "record";
    pub const HOOK: &'static str = "hook";
    pub const ANALYZE: &'static str = "analyze";
    const DLQ_SUFFIX: &'static str = "_dlq";

    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn process() -> Self {
        Self::new(Self::PROCESS)
    }
    pub fn build() -> Self {
        Self::new(Self::BUILD)
    }
    pub fn buildsignal() -> Self {
        Self::new(Self::BUILDSIGNAL)
    }
    pub fn record() -> Self {
        Self::new(Self::RECORD)
    }
    pub fn hook() -> Self {
        Self::new(Self::HOOK)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<topic>_dlq`.
    #[must_use]
    pub fn dlq(&self) -> Self {
        Self(format!("{}{}", self.0, Self::DLQ_SUFFIX))
    }

    pub fn is_dlq(&self) -> bool {
        self.0.ends_with(Self::DLQ_SUFFIX)
    }

    /// For a dead-letter topic, the topic it collects from.
    pub fn original(&self) -> Option<Self> {
        self.0
            .strip_suffix(Self::DLQ_SUFFIX)
            .map(|s| Self(s.to_owned()))
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    pub topic: Topic,
    pub partition_key: String,
    pub message_id: String,
    pub payload: serde_json::Value,
}

impl OutgoingMessage {
    pub fn new(
        topic: Topic,
        partition_key: impl Into<String>,
        message_id: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        Self {
            topic,
            partition_key: partition_key.into(),
            message_id: message_id.into(),
            payload,
        }
    }
}

/// One delivery of a message to a consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Identifies this lease; ack/hold/retry/reject/renew name it.
    pub delivery_id: String,
    pub topic: Topic,
    pub partition_key: String,
    pub message_id: String,
    pub payload: serde_json::Value,
    /// 1 on the first delivery; holds do not count, retries and expired
    /// leases do.
    pub attempt: u32,
    pub last_error: Option<String>,
    pub published_at: Timestamp,
}

impl Delivery {
    /// No handler has had this message before, unless one held it: its
    /// first attempt, with no error kept (a retry and an expired lease
    /// count an attempt; a requeued dead letter starts again at 1 but
    /// keeps the reason it died).
    #[must_use]
    pub fn is_first(&self) -> bool {
        self.attempt == 1 && self.last_error.is_none()
    }
}

/// A rejected message, kept for operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub topic: Topic,
    pub partition_key: String,
    pub message_id: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub last_error: String,
    pub published_at: Timestamp,
    pub dead_at: Timestamp,
}

/// Contract: see the module documentation.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait MessageQueue: Send + Sync {
    /// Publishes; `Ok(false)` when deduplicated.
    async fn publish(&self, message: OutgoingMessage) -> Result<bool, MqError>;

    /// Leases up to `max` partition heads of `topic` that are visible now,
    /// for `lease`. Never blocks; an empty result means nothing is ready.
    async fn receive(
        &self,
        topic: &Topic,
        consumer: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, MqError>;

    /// Removes the head. `LeaseLost` when the lease was lost.
    async fn ack(&self, delivery: &Delivery) -> Result<(), MqError>;
    /// Postpones the head by `delay` without counting an attempt.
    async fn hold(&self, delivery: &Delivery, delay: Duration) -> Result<(), MqError>;
    /// Postpones the head by `delay`, counting an attempt and keeping `error`.
    async fn retry(&self, delivery: &Delivery, delay: Duration, error: &str)
    -> Result<(), MqError>;
    /// Removes the head and dead-letters it (see module docs).
    async fn reject(&self, delivery: &Delivery, error: &str) -> Result<DeadLetter, MqError>;
    /// Extends the lease by `lease` from now.
    async fn renew(&self, delivery: &Delivery, lease: Duration) -> Result<(), MqError>;

    /// Makes a held head of `(topic, partition_key)` visible now (a runner
    /// that was told a status wakes the poll chain). `Ok(false)` when there
    /// was nothing held.
    async fn wake(&self, topic: &Topic, partition_key: &str) -> Result<bool, MqError>;
    /// Waits until something is published to `topic` (or woken), or until
    /// `timeout` of real time passes. May return spuriously.
    async fn wait(&self, topic: &Topic, timeout: Duration);
    /// The earliest time a message of `topic` becomes visible, if any is
    /// pending (leased messages count at their lease expiry).
    async fn next_visible_at(&self, topic: &Topic) -> Result<Option<Timestamp>, MqError>;

    /// Dead letters, oldest first, optionally of one original topic.
    async fn dead_letters(
        &self,
        topic: Option<Topic>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, MqError>;
    /// Publishes the dead letter's message to its topic again (with attempts
    /// reset) and removes the dead letter. `NotFound` for an unknown id.
    async fn requeue_dead_letter(&self, id: u64) -> Result<(), MqError>;
    /// Deletes a dead letter. `NotFound` for an unknown id.
    async fn purge_dead_letter(&self, id: u64) -> Result<(), MqError>;
}
