//! The request: one validation of one queue head, and its state machine.
//!
//! | from → to | method |
//! |---|---|
//! | (new) → `accepted` | [`Request::accepted`] (ingest) |
//! | `accepted` → `superseded` | [`Request::supersede`] (process, coalescing) |
//! | `accepted` → `processing` | [`Request::admit`] (process, sets strategy and base) |
//! | `processing` → `succeeded`/`failed`/`cancelled` | [`Request::record_outcome`] (buildsignal) |
//! | `accepted`/`processing` → `failed` | [`Request::fail_closed`] (reconcilers, max-validation) |
//!
//! Every successful transition bumps `version` and `updated_at`; the store's
//! conditional write compares against the version the caller loaded.

use crate::build::BuildStatus;
use crate::error::TransitionError;
use crate::ids::{RequestId, Uri};
use crate::names::QueueName;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Accepted,
    Superseded,
    Processing,
    Succeeded,
    Failed,
    Cancelled,
}

impl RequestState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Superseded | Self::Succeeded | Self::Failed | Self::Cancelled
        )
    }

    /// Succeeded, failed or cancelled: a build verdict was stamped.
    pub fn has_build_outcome(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Superseded => "superseded",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Self::Accepted,
            "superseded" => Self::Superseded,
            "processing" => Self::Processing,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a request's build covers the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStrategy {
    /// Build since the last green commit (`base_uri`).
    IncrementalSinceGreen,
    /// Build everything: no last green, or history was rewritten.
    Full,
}

impl BuildStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IncrementalSinceGreen => "incremental_since_green",
            Self::Full => "full",
        }
    }
}

/// Why a request exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A queue head noticed by a poller, webhook or API call.
    #[default]
    Ingest,
    /// A midpoint validated by culprit finding.
    Bisect,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Bisect => "bisect",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub queue: QueueName,
    pub uri: Uri,
    pub state: RequestState,
    pub build_strategy: Option<BuildStrategy>,
    pub base_uri: Option<Uri>,
    pub origin: Origin,
    /// Set when the pipeline, not the build, ended the request.
    pub failed_closed: bool,
    pub failure_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
}

impl Request {
    /// A freshly ingested request (version 1).
    pub fn accepted(
        id: RequestId,
        queue: QueueName,
        uri: Uri,
        origin: Origin,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            queue,
            uri,
            state: RequestState::Accepted,
            build_strategy: None,
            base_uri: None,
            origin,
            failed_closed: false,
            failure_reason: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError {
            entity: "request",
            id: self.id.to_string(),
            action,
            from: self.state.to_string(),
        }
    }

    fn moved(&mut self, to: RequestState, now: Timestamp) {
        self.state = to;
        self.updated_at = now;
        self.version += 1;
    }

    /// `accepted` → `superseded` (a newer head was ingested).
    pub fn supersede(&mut self, now: Timestamp) -> Result<(), TransitionError> {
        if self.state != RequestState::Accepted {
            return Err(self.refuse("supersede"));
        }
        self.moved(RequestState::Superseded, now);
        Ok(())
    }

    /// `accepted` → `processing`, setting strategy and base in the same
    /// write. An incremental build needs a base; a full build has none.
    pub fn admit(
        &mut self,
        strategy: BuildStrategy,
        base_uri: Option<Uri>,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        if self.state != RequestState::Accepted {
            return Err(self.refuse("admit"));
        }
        let consistent = match strategy {
            BuildStrategy::IncrementalSinceGreen => base_uri.is_some(),
            BuildStrategy::Full => base_uri.is_none(),
        };
        if !consistent {
            return Err(
                self.refuse("admit (incremental builds need a base, full builds have none)")
            );
        }
        self.build_strategy = Some(strategy);
        self.base_uri = base_uri;
        self.moved(RequestState::Processing, now);
        Ok(())
    }

    /// `processing` → the build's terminal outcome. Only a terminal build
    /// status is an outcome.
    pub fn record_outcome(
        &mut self,
        outcome: BuildStatus,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        if self.state != RequestState::Processing {
            return Err(self.refuse("record an outcome"));
        }
        let to = match outcome {
            BuildStatus::Succeeded => RequestState::Succeeded,
            BuildStatus::Failed => RequestState::Failed,
            BuildStatus::Cancelled => RequestState::Cancelled,
            BuildStatus::Accepted | BuildStatus::Running => {
                return Err(self.refuse("record a non-terminal build status as outcome"));
            }
        };
        self.moved(to, now);
        Ok(())
    }

    /// `accepted`/`processing` → `failed`, closed by the pipeline: the
    /// validation did not complete, so no fact is recorded for it.
    pub fn fail_closed(
        &mut self,
        reason: impl Into<String>,
        now: Timestamp,
    ) -> Result<(), TransitionError> {
        if !matches!(
            self.state,
            RequestState::Accepted | RequestState::Processing
        ) {
            return Err(self.refuse("fail closed"));
        }
        self.failed_closed = true;
        self.failure_reason = Some(reason.into());
        self.moved(RequestState::Failed, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RequestState; 6] = [
        RequestState::Accepted,
        RequestState::Superseded,
        RequestState::Processing,
        RequestState::Succeeded,
        RequestState::Failed,
        RequestState::Cancelled,
    ];

    fn request_in(state: RequestState) -> Request {
        let queue = QueueName::new("q").unwrap();
        let mut r = Request::accepted(
            RequestId::new(&queue, 1).unwrap(),
            queue,
            Uri::new("git://r/main/a").unwrap(),
            Origin::Ingest,
            Timestamp(1),
        );
        r.state = state;
        r
    }

    fn base() -> Option<Uri> {
        Uri::new("git://r/main/base").ok()
    }

    /// Runs `action` from every state; only `legal` states may succeed, and
    /// they must land in `to` with the version bumped. Refusals change nothing.
    fn check(
        legal: &[RequestState],
        to: impl Fn(RequestState) -> RequestState,
        action: impl Fn(&mut Request) -> Result<(), TransitionError>,
    ) {
        for from in ALL {
            let mut r = request_in(from);
            let before = r.clone();
            let result = action(&mut r);
            if legal.contains(&from) {
                assert!(result.is_ok(), "from {from}: {result:?}");
                assert_eq!(r.state, to(from), "from {from}");
                assert_eq!(r.version, before.version + 1);
                assert_eq!(r.updated_at, Timestamp(9));
            } else {
                assert!(result.is_err(), "from {from} must be refused");
                assert_eq!(r, before, "a refused transition changes nothing");
            }
        }
    }

    #[test]
    fn supersede_only_from_accepted() {
        check(
            &[RequestState::Accepted],
            |_| RequestState::Superseded,
            |r| r.supersede(Timestamp(9)),
        );
    }

    #[test]
    fn admit_only_from_accepted() {
        check(
            &[RequestState::Accepted],
            |_| RequestState::Processing,
            |r| r.admit(BuildStrategy::IncrementalSinceGreen, base(), Timestamp(9)),
        );
        let mut r = request_in(RequestState::Accepted);
        r.admit(BuildStrategy::Full, None, Timestamp(9)).unwrap();
        assert_eq!(r.build_strategy, Some(BuildStrategy::Full));
        assert_eq!(r.base_uri, None);
    }

    #[test]
    fn admit_requires_consistent_base() {
        let mut r = request_in(RequestState::Accepted);
        assert!(
            r.admit(BuildStrategy::IncrementalSinceGreen, None, Timestamp(9))
                .is_err()
        );
        assert!(r.admit(BuildStrategy::Full, base(), Timestamp(9)).is_err());
        assert_eq!(r.state, RequestState::Accepted);
    }

    #[test]
    fn outcome_only_from_processing() {
        for (status, state) in [
            (BuildStatus::Succeeded, RequestState::Succeeded),
            (BuildStatus::Failed, RequestState::Failed),
            (BuildStatus::Cancelled, RequestState::Cancelled),
        ] {
            check(
                &[RequestState::Processing],
                |_| state,
                |r| r.record_outcome(status, Timestamp(9)),
            );
        }
        for status in [BuildStatus::Accepted, BuildStatus::Running] {
            check(&[], |s| s, |r| r.record_outcome(status, Timestamp(9)));
        }
    }

    #[test]
    fn fail_closed_from_accepted_or_processing() {
        check(
            &[RequestState::Accepted, RequestState::Processing],
            |_| RequestState::Failed,
            |r| r.fail_closed("build: dead-lettered", Timestamp(9)),
        );
        let mut r = request_in(RequestState::Processing);
        r.fail_closed("timed out", Timestamp(9)).unwrap();
        assert!(r.failed_closed);
        assert_eq!(r.failure_reason.as_deref(), Some("timed out"));
    }

    #[test]
    fn terminal_and_outcome_sets() {
        let terminal: Vec<_> = ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                RequestState::Superseded,
                RequestState::Succeeded,
                RequestState::Failed,
                RequestState::Cancelled
            ]
        );
        assert!(!RequestState::Superseded.has_build_outcome());
        for s in ALL {
            assert_eq!(RequestState::parse(s.as_str()), Some(s));
        }
        assert_eq!(RequestState::parse("done"), None);
    }
}
