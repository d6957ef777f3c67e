//! Hooks: a stable identity with an immutable contract, integer-versioned
//! immutable releases, and the provenance of every delivery (runs).

use crate::change::EventType;
use crate::error::InvalidValue;
use crate::names::{QueueName, validate_simple_name, validated_string};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};

validated_string!(
    /// A hook's unique name: 1..=100 bytes of `[A-Za-z0-9._-]`.
    HookName,
    validate_hook_name
);

fn validate_hook_name(v: &str) -> Result<(), InvalidValue> {
    if v.is_empty() {
        return Err(InvalidValue::new("hook name", v, "a non-empty name"));
    }
    validate_simple_name("hook name", v, 100)
}

/// What a hook subscribes to. Immutable once the hook exists: re-creating it
/// with a different contract is a conflict. An empty `queues` set means every
/// queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookContract {
    pub events: BTreeSet<EventType>,
    pub queues: BTreeSet<QueueName>,
}

impl HookContract {
    pub fn new(
        events: BTreeSet<EventType>,
        queues: BTreeSet<QueueName>,
    ) -> Result<Self, InvalidValue> {
        if events.is_empty() {
            return Err(InvalidValue::new(
                "hook contract",
                "events: []",
                "at least one event type",
            ));
        }
        Ok(Self { events, queues })
    }

    pub fn matches(&self, event: EventType, queue: Option<&QueueName>) -> bool {
        self.events.contains(&event)
            && (self.queues.is_empty() || queue.is_some_and(|q| self.queues.contains(q)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub name: HookName,
    pub contract: HookContract,
    /// The live release's version; `None` until the first release.
    pub live_version: Option<u32>,
    pub created_at: Timestamp,
}

/// Delivery settings of a release, as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookReleaseSpec {
    pub url: String,
    /// Signing secret; never returned by the API.
    pub secret: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u32,
    pub max_attempts: u32,
}

impl HookReleaseSpec {
    pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

    /// Validates the settings: an http(s) URL, a timeout in 1 ms..=5 min,
    /// 1..=20 attempts, header names that are tokens.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://"))
            || self.url.len() > 2048
            || self.url.chars().any(char::is_whitespace)
        {
            return Err(InvalidValue::new(
                "hook url",
                &self.url,
                "an http:// or https:// URL of at most 2048 bytes",
            ));
        }
        if !(1..=300_000).contains(&self.timeout_ms) {
            return Err(InvalidValue::new(
                "timeout_ms",
                &self.timeout_ms.to_string(),
                "1..=300000",
            ));
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(InvalidValue::new(
                "max_attempts",
                &self.max_attempts.to_string(),
                "1..=20",
            ));
        }
        for name in self.headers.keys() {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(InvalidValue::new("header name", name, "[A-Za-z0-9-]+"));
            }
        }
        Ok(())
    }

    /// Hash of the delivery settings (hex SHA-256 over their canonical JSON).
    /// Two releases with the same digest deliver identically.
    pub fn digest(&self) -> String {
        // BTreeMap keys serialise in order, so the JSON is canonical.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let hash = Sha256::digest(&canonical);
        hash.iter().fold(String::with_capacity(64), |mut hex, b| {
            use std::fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }
}

/// An immutable, integer-versioned release of a hook (1, 2, 3 … no gaps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRelease {
    pub hook: HookName,
    pub version: u32,
    pub spec: HookReleaseSpec,
    pub digest: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookRunStatus {
    Delivered,
    Failed,
    GaveUp,
}

/// Provenance of delivering one event to one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    /// Deterministic from (event id, hook): see [`hook_run_id`].
    pub id: String,
    pub hook: HookName,
    /// The release snapshotted when the dispatcher picked the event up.
    pub release_version: u32,
    pub event_id: String,
    pub status: HookRunStatus,
    pub attempts: u32,
    pub last_http_status: Option<u16>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// The run id of delivering `event_id` to `hook`; redelivery maps to the
/// same id, so a run is never written twice.
pub fn hook_run_id(event_id: &str, hook: &HookName) -> String {
    format!("{hook}:{event_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> HookReleaseSpec {
        HookReleaseSpec {
            url: url.into(),
            secret: Some("s".into()),
            headers: BTreeMap::new(),
            timeout_ms: 1000,
            max_attempts: 3,
        }
    }

    #[test]
    fn digest_depends_on_settings_only() {
        assert_eq!(spec("http://a/x").digest(), spec("http://a/x").digest());
        assert_ne!(spec("http://a/x").digest(), spec("http://a/y").digest());
        assert_eq!(spec("http://a/x").digest().len(), 64);
    }

    #[test]
    fn spec_validation() {
        assert!(spec("http://a/x").validate().is_ok());
        assert!(spec("ftp://a").validate().is_err());
        let mut s = spec("http://a");
        s.max_attempts = 0;
        assert!(s.validate().is_err());
        let mut s = spec("http://a");
        s.headers.insert("bad header".into(), "v".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn contract_matching() {
        let q = QueueName::new("q").unwrap();
        let all_queues =
            HookContract::new([EventType::ValidationRecorded].into(), BTreeSet::new()).unwrap();
        assert!(all_queues.matches(EventType::ValidationRecorded, Some(&q)));
        assert!(!all_queues.matches(EventType::LastGreenAdvanced, Some(&q)));
        let only_p = HookContract::new(
            [EventType::ValidationRecorded].into(),
            [QueueName::new("p").unwrap()].into(),
        )
        .unwrap();
        assert!(!only_p.matches(EventType::ValidationRecorded, Some(&q)));
        assert!(HookContract::new(BTreeSet::new(), BTreeSet::new()).is_err());
    }
}
