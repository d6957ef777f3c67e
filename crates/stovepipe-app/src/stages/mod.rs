//! The pipeline stages. Each consumes one topic, advances one entity under
//! optimistic locking and publishes the next hop (through the write's
//! outbox, so the state change and the hop commit together). Every stage is
//! idempotent under at-least-once delivery.

use async_trait::async_trait;
use std::time::Duration;
use stovepipe_ports::{Delivery, Topic};

use crate::error::StageError;

pub mod build;
pub mod buildsignal;
pub mod dead_letter;
pub mod process;
pub mod record;

/// What a handler asks the runtime to do with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: remove the message.
    Ack,
    /// Not yet: postpone without counting an attempt (a barrier for the
    /// partition).
    Hold(Duration),
}

/// A stage handler, as the consumer runtime drives it.
#[async_trait]
pub trait Handler: Send + Sync {
    /// The topic this handler consumes.
    fn topic(&self) -> Topic;
    async fn handle(&self, delivery: &Delivery) -> Result<Outcome, StageError>;
}
