//! Per-queue configuration, as an operator sets it (`[[queue]]` in the
//! configuration file). The server parses the file; this is the validated
//! result the pipeline reads.

use crate::names::{ProjectName, QueueName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which `BuildRunner` a queue uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerKind {
    #[default]
    Command,
    External,
    GithubActions,
    Buildkite,
}

impl RunnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::External => "external",
            Self::GithubActions => "github-actions",
            Self::Buildkite => "buildkite",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BuildConfig {
    pub runner: RunnerKind,
    /// Command runner: run with `sh -c` in a clean checkout of the head.
    pub command: Option<String>,
    /// Command runner: kill the process group after this long.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Optional JSON targets report path or JUnit XML glob.
    pub targets_report: Option<String>,
    /// Runner-specific settings (GitHub owner/repo/workflow, Buildkite
    /// organization/pipeline, token environment variable names…).
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectConfig {
    pub name: ProjectName,
    pub paths: Vec<String>,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub name: QueueName,
    /// Local path or remote URL.
    pub repo: String,
    pub branch: String,
    pub promotion_ref: Option<String>,
    #[serde(with = "duration_ms")]
    pub poll_interval: Duration,
    pub max_concurrent: u32,
    #[serde(with = "duration_ms")]
    pub gate_wait_delay: Duration,
    /// Buildsignal poll delay while the build is `accepted`.
    #[serde(with = "duration_ms")]
    pub poll_delay_accepted: Duration,
    /// Buildsignal poll delay while the build is `running`.
    #[serde(with = "duration_ms")]
    pub poll_delay_running: Duration,
    #[serde(with = "duration_ms")]
    pub max_validation: Duration,
    pub culprit_finding: bool,
    pub build: BuildConfig,
    pub projects: Vec<ProjectConfig>,
}

impl QueueConfig {
    /// A queue with every default of interface.md.
    pub fn new(name: QueueName, repo: impl Into<String>, branch: impl Into<String>) -> Self {
        Self {
            name,
            repo: repo.into(),
            branch: branch.into(),
            promotion_ref: None,
            poll_interval: Duration::from_secs(10),
            max_concurrent: 1,
            gate_wait_delay: Duration::from_secs(5),
            poll_delay_accepted: Duration::from_secs(5),
            poll_delay_running: Duration::from_secs(2),
            max_validation: Duration::from_hours(2),
            culprit_finding: false,
            build: BuildConfig {
                timeout: Duration::from_mins(30),
                ..BuildConfig::default()
            },
            projects: Vec::new(),
        }
    }
}

/// Durations cross boundaries as whole milliseconds.
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let c = QueueConfig::new(
            QueueName::new("monorepo/main").unwrap(),
            "/srv/repo",
            "main",
        );
        assert_eq!(c.max_concurrent, 1);
        assert_eq!(c.gate_wait_delay, Duration::from_secs(5));
        assert_eq!(c.max_validation, Duration::from_hours(2));
        let json = serde_json::to_string(&c).unwrap();
        let back: QueueConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
