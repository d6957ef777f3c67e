//! A build: one run of a build runner for a request (whole repo or one
//! project). A terminal status is write-once.

use crate::error::{InvalidValue, TransitionError};
use crate::ids::{BuildId, RequestId};
use crate::names::{ProjectName, QueueName};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Accepted,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl BuildStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or reported status; an unknown status is an error,
    /// never an empty or default value.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        Ok(match s {
            "accepted" => Self::Accepted,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => {
                return Err(InvalidValue::new(
                    "build status",
                    s,
                    "one of accepted, running, succeeded, failed, cancelled",
                ));
            }
        })
    }

    /// Position in the lifecycle; a poll that reports an earlier phase than
    /// stored (running → accepted) is stale and ignored.
    fn phase(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::Running => 1,
            Self::Succeeded | Self::Failed | Self::Cancelled => 2,
        }
    }
}

impl std::fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Passed,
    Failed,
}

/// One build target's (or test id's) result from a targets report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetResult {
    pub target: String,
    pub status: TargetStatus,
}

/// What a runner says about a build when asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BuildReport {
    pub status: Option<BuildStatus>,
    pub url: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub targets: Vec<TargetResult>,
    /// Why a build ended the way it did, when the runner knows (timeout…).
    pub reason: Option<String>,
}

impl BuildReport {
    pub fn with_status(status: BuildStatus) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub id: BuildId,
    pub queue: QueueName,
    pub request_id: RequestId,
    /// Empty = whole repository.
    pub project: ProjectName,
    pub status: BuildStatus,
    pub url: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub targets: Vec<TargetResult>,
    pub reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
}

/// What applying a report did to a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildUpdate {
    /// Nothing new: no write needed.
    Unchanged,
    /// The build changed; write it with a CAS.
    Changed,
}

impl Build {
    /// A freshly triggered build (version 1, `accepted`).
    pub fn accepted(
        id: BuildId,
        queue: QueueName,
        request_id: RequestId,
        project: ProjectName,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            queue,
            request_id,
            project,
            status: BuildStatus::Accepted,
            url: None,
            metadata: BTreeMap::new(),
            targets: Vec::new(),
            reason: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// Folds a runner report into the build.
    ///
    /// A terminal status is write-once: the same terminal status again is
    /// `Unchanged`, a different one is refused. A report of an earlier phase
    /// than stored is stale and changes nothing.
    pub fn apply_report(
        &mut self,
        report: &BuildReport,
        now: Timestamp,
    ) -> Result<BuildUpdate, TransitionError> {
        let mut changed = false;
        if let Some(status) = report.status {
            if self.status.is_terminal() {
                if status != self.status {
                    return Err(TransitionError {
                        entity: "build",
                        id: self.id.to_string(),
                        action: "change a terminal status (write-once)",
                        from: self.status.to_string(),
                    });
                }
                return Ok(BuildUpdate::Unchanged);
            }
            if status.phase() > self.status.phase() {
                self.status = status;
                changed = true;
            }
        } else if self.status.is_terminal() {
            return Ok(BuildUpdate::Unchanged);
        }
        if report.url.is_some() && report.url != self.url {
            self.url.clone_from(&report.url);
            changed = true;
        }
        for (k, v) in &report.metadata {
            if self.metadata.get(k) != Some(v) {
                self.metadata.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        if !report.targets.is_empty() && report.targets != self.targets {
            self.targets.clone_from(&report.targets);
            changed = true;
        }
        if report.reason.is_some() && report.reason != self.reason {
            self.reason.clone_from(&report.reason);
            changed = true;
        }
        if changed {
            self.updated_at = now;
            self.version += 1;
            Ok(BuildUpdate::Changed)
        } else {
            Ok(BuildUpdate::Unchanged)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [BuildStatus; 5] = [
        BuildStatus::Accepted,
        BuildStatus::Running,
        BuildStatus::Succeeded,
        BuildStatus::Failed,
        BuildStatus::Cancelled,
    ];

    fn build_in(status: BuildStatus) -> Build {
        let queue = QueueName::new("q").unwrap();
        let mut b = Build::accepted(
            BuildId::new("b1").unwrap(),
            queue.clone(),
            RequestId::new(&queue, 1).unwrap(),
            ProjectName::whole_repo(),
            Timestamp(1),
        );
        b.status = status;
        b
    }

    #[test]
    fn every_status_pair() {
        for from in ALL {
            for to in ALL {
                let mut b = build_in(from);
                let before = b.clone();
                let result = b.apply_report(&BuildReport::with_status(to), Timestamp(5));
                if from.is_terminal() {
                    if from == to {
                        assert_eq!(result, Ok(BuildUpdate::Unchanged));
                    } else {
                        assert!(result.is_err(), "{from} -> {to} must be refused");
                    }
                    assert_eq!(b, before);
                } else if to.phase() > from.phase() {
                    assert_eq!(result, Ok(BuildUpdate::Changed), "{from} -> {to}");
                    assert_eq!(b.status, to);
                    assert_eq!(b.version, 2);
                } else {
                    assert_eq!(result, Ok(BuildUpdate::Unchanged), "{from} -> {to}");
                    assert_eq!(b, before);
                }
            }
        }
    }

    #[test]
    fn url_and_metadata_changes_are_writes() {
        let mut b = build_in(BuildStatus::Running);
        let report = BuildReport {
            status: Some(BuildStatus::Running),
            url: Some("https://ci/1".into()),
            ..BuildReport::default()
        };
        assert_eq!(
            b.apply_report(&report, Timestamp(2)),
            Ok(BuildUpdate::Changed)
        );
        assert_eq!(
            b.apply_report(&report, Timestamp(3)),
            Ok(BuildUpdate::Unchanged)
        );
        assert_eq!(b.url.as_deref(), Some("https://ci/1"));
    }

    #[test]
    fn unknown_status_is_an_error() {
        assert!(BuildStatus::parse("").is_err());
        assert!(BuildStatus::parse("SUCCESS").is_err());
        for s in ALL {
            assert_eq!(BuildStatus::parse(s.as_str()), Ok(s));
        }
        assert!(serde_json::from_str::<BuildStatus>("\"passed\"").is_err());
    }
}
