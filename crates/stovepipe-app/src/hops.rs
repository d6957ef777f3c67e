//! The messages between stages ("hops"). Hops carry ids (plus the queue
//! name for routing); every stage reloads the entity from storage.
//!
//! Partitioning: `process` is partitioned by queue (strictly serial per
//! queue, which is what makes coalescing and the gate race-free);
//! `build` and `record` by request id; `buildsignal` by build id (one poll
//! chain per build).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stovepipe_entity::{BuildId, ProjectName, QueueName, RequestId};
use stovepipe_ports::{Delivery, OutgoingMessage, Topic};

use crate::error::StageError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessHop {
    pub request_id: RequestId,
    pub queue: QueueName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildHop {
    pub request_id: RequestId,
    pub queue: QueueName,
    #[serde(default)]
    pub project: ProjectName,
    /// Published by the admit, in the same write that moved the request to
    /// `processing`: until this hop's first delivery no build of the
    /// request can exist (only `build` writes one, after a trigger), so
    /// that delivery need not look for one. False for every hop published
    /// again (a redelivered admit, a repair), which always looks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_admit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSignalHop {
    pub build_id: BuildId,
    pub queue: QueueName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordHop {
    pub request_id: RequestId,
    pub queue: QueueName,
    #[serde(default)]
    pub project: ProjectName,
    /// The terminal build whose outcome buildsignal stamped, so record need
    /// not look it up. Repairs do not know it (absent: record finds the
    /// request's terminal build itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<BuildId>,
}

/// Serialising these plain structs cannot fail (no maps with non-string
/// keys, no custom serialisers that error).
fn to_payload<T: Serialize>(hop: &T) -> serde_json::Value {
    serde_json::to_value(hop).unwrap_or(serde_json::Value::Null)
}

impl ProcessHop {
    pub fn message(&self) -> OutgoingMessage {
        OutgoingMessage::new(
            Topic::process(),
            self.queue.as_str(),
            self.request_id.as_str(),
            to_payload(self),
        )
    }
}

impl BuildHop {
    pub fn message(&self) -> OutgoingMessage {
        OutgoingMessage::new(
            Topic::build(),
            self.request_id.as_str(),
            scoped_id(&self.request_id, &self.project),
            to_payload(self),
        )
    }
}

impl BuildSignalHop {
    pub fn message(&self) -> OutgoingMessage {
        OutgoingMessage::new(
            Topic::buildsignal(),
            self.build_id.as_str(),
            self.build_id.as_str(),
            to_payload(self),
        )
    }
}

impl RecordHop {
    /// The regular record hop.
    pub fn message(&self) -> OutgoingMessage {
        self.message_with_id(scoped_id(&self.request_id, &self.project))
    }

    /// A record hop published by a repair (reconciler, reconcile loop) under
    /// its own message id, so dedup against the regular hop still retained
    /// after its ack cannot swallow it. Record is idempotent.
    pub fn message_with_id(&self, message_id: String) -> OutgoingMessage {
        OutgoingMessage::new(
            Topic::record(),
            self.request_id.as_str(),
            message_id,
            to_payload(self),
        )
    }
}

fn scoped_id(request_id: &RequestId, project: &ProjectName) -> String {
    if project.is_whole_repo() {
        request_id.to_string()
    } else {
        format!("{request_id}#{project}")
    }
}

/// Decodes a delivery's payload. A payload that does not decode can never
/// be handled: permanent.
pub fn decode<T: DeserializeOwned>(delivery: &Delivery) -> Result<T, StageError> {
    serde_json::from_value(delivery.payload.clone()).map_err(|e| {
        StageError::permanent(format!(
            "malformed {} payload {}: {e}",
            delivery.topic, delivery.payload
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_route_as_designed() {
        let queue = QueueName::new("monorepo/main").unwrap();
        let id = RequestId::new(&queue, 7).unwrap();
        let m = ProcessHop {
            request_id: id.clone(),
            queue: queue.clone(),
        }
        .message();
        assert_eq!(
            (m.topic.as_str(), m.partition_key.as_str()),
            ("process", "monorepo/main")
        );
        assert_eq!(m.message_id, "request/monorepo/main/7");
        let m = BuildHop {
            request_id: id.clone(),
            queue: queue.clone(),
            project: ProjectName::new("pay").unwrap(),
            from_admit: true,
        }
        .message();
        assert_eq!(m.partition_key, "request/monorepo/main/7");
        assert_eq!(m.message_id, "request/monorepo/main/7#pay");
        let b = BuildId::new("b-1").unwrap();
        let m = BuildSignalHop { build_id: b, queue }.message();
        assert_eq!(
            (m.partition_key.as_str(), m.message_id.as_str()),
            ("b-1", "b-1")
        );
    }

    #[test]
    fn malformed_payload_is_permanent() {
        let d = Delivery {
            delivery_id: "d".into(),
            topic: Topic::process(),
            partition_key: "q".into(),
            message_id: "m".into(),
            payload: serde_json::json!({"request_id": "nope", "queue": "q"}),
            attempt: 1,
            last_error: None,
            published_at: stovepipe_entity::Timestamp(0),
        };
        let e = decode::<ProcessHop>(&d).unwrap_err();
        assert!(matches!(e, StageError::Permanent(_)), "{e:?}");
    }
}
