//! The change log (every state change, in order) and hook event envelopes.

use crate::names::QueueName;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Kinds of change-log rows. The string form is the SSE `event:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChangeKind {
    #[serde(rename = "request.created")]
    RequestCreated,
    #[serde(rename = "request.changed")]
    RequestChanged,
    #[serde(rename = "build.status")]
    BuildStatus,
    #[serde(rename = "build.finished")]
    BuildFinished,
    #[serde(rename = "validation.recorded")]
    ValidationRecorded,
    #[serde(rename = "validation.project.recorded")]
    ValidationProjectRecorded,
    #[serde(rename = "validation.error")]
    ValidationError,
    #[serde(rename = "last_green.advanced")]
    LastGreenAdvanced,
    #[serde(rename = "promoted")]
    Promoted,
    #[serde(rename = "culprit.found")]
    CulpritFound,
    #[serde(rename = "hook.run")]
    HookRun,
}

impl ChangeKind {
    pub const ALL: [Self; 11] = [
        Self::RequestCreated,
        Self::RequestChanged,
        Self::BuildStatus,
        Self::BuildFinished,
        Self::ValidationRecorded,
        Self::ValidationProjectRecorded,
        Self::ValidationError,
        Self::LastGreenAdvanced,
        Self::Promoted,
        Self::CulpritFound,
        Self::HookRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestCreated => "request.created",
            Self::RequestChanged => "request.changed",
            Self::BuildStatus => "build.status",
            Self::BuildFinished => "build.finished",
            Self::ValidationRecorded => "validation.recorded",
            Self::ValidationProjectRecorded => "validation.project.recorded",
            Self::ValidationError => "validation.error",
            Self::LastGreenAdvanced => "last_green.advanced",
            Self::Promoted => "promoted",
            Self::CulpritFound => "culprit.found",
            Self::HookRun => "hook.run",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The hook event type this change is delivered as, if hooks can
    /// subscribe to it.
    pub fn event_type(self) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.change_kind() == self)
    }
}

/// Event types hooks subscribe to (a subset of change kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "validation.recorded")]
    ValidationRecorded,
    #[serde(rename = "validation.project.recorded")]
    ValidationProjectRecorded,
    #[serde(rename = "validation.error")]
    ValidationError,
    #[serde(rename = "last_green.advanced")]
    LastGreenAdvanced,
    #[serde(rename = "build.finished")]
    BuildFinished,
    #[serde(rename = "culprit.found")]
    CulpritFound,
}

impl EventType {
    pub const ALL: [Self; 6] = [
        Self::ValidationRecorded,
        Self::ValidationProjectRecorded,
        Self::ValidationError,
        Self::LastGreenAdvanced,
        Self::BuildFinished,
        Self::CulpritFound,
    ];

    pub fn change_kind(self) -> ChangeKind {
        match self {
            Self::ValidationRecorded => ChangeKind::ValidationRecorded,
            Self::ValidationProjectRecorded => ChangeKind::ValidationProjectRecorded,
            Self::ValidationError => ChangeKind::ValidationError,
            Self::LastGreenAdvanced => ChangeKind::LastGreenAdvanced,
            Self::BuildFinished => ChangeKind::BuildFinished,
            Self::CulpritFound => ChangeKind::CulpritFound,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.change_kind().as_str()
    }

    pub fn parse(s: &str) -> Option<Self> {
        ChangeKind::parse(s).and_then(ChangeKind::event_type)
    }
}

/// A change to append, before the log assigns its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewChange {
    pub queue: Option<QueueName>,
    pub kind: ChangeKind,
    /// What changed: a request id, build id, hook name…
    pub subject: String,
    pub data: serde_json::Value,
}

impl NewChange {
    pub fn new(
        queue: &QueueName,
        kind: ChangeKind,
        subject: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            queue: Some(queue.clone()),
            kind,
            subject: subject.into(),
            data,
        }
    }
}

/// A change-log row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Strictly increasing across the log.
    pub seq: u64,
    pub queue: Option<QueueName>,
    pub kind: ChangeKind,
    pub subject: String,
    pub data: serde_json::Value,
    pub created_at: Timestamp,
}

impl ChangeEvent {
    /// Deterministic event id: `<type>/<subject>`. Hooks are idempotent on it.
    pub fn event_id(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.subject)
    }

    /// The hook envelope for this change, when hooks can subscribe to it.
    pub fn envelope(&self) -> Option<EventEnvelope> {
        let event_type = self.kind.event_type()?;
        Some(EventEnvelope {
            id: self.event_id(),
            event_type,
            source: "stovepipe".to_owned(),
            queue: self.queue.clone(),
            occurred_at: self.created_at,
            data: self.data.clone(),
        })
    }
}

/// The body a hook receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub source: String,
    pub queue: Option<QueueName>,
    pub occurred_at: Timestamp,
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_map_to_events() {
        for k in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        for e in EventType::ALL {
            assert_eq!(e.change_kind().event_type(), Some(e));
            assert_eq!(EventType::parse(e.as_str()), Some(e));
        }
        assert_eq!(ChangeKind::RequestChanged.event_type(), None);
        assert_eq!(EventType::parse("request.changed"), None);
    }

    #[test]
    fn envelope_ids_are_deterministic() {
        let ev = ChangeEvent {
            seq: 7,
            queue: Some(QueueName::new("q").unwrap()),
            kind: ChangeKind::ValidationRecorded,
            subject: "request/q/3".into(),
            data: serde_json::json!({"degree": 0.0}),
            created_at: Timestamp(5),
        };
        let env = ev.envelope().unwrap();
        assert_eq!(env.id, "validation.recorded/request/q/3");
        let body = serde_json::to_value(&env).unwrap();
        assert_eq!(body["type"], "validation.recorded");
        assert_eq!(body["source"], "stovepipe");
    }
}
