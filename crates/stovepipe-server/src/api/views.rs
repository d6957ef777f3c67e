//! The wire shapes of the API (OpenAPI objects), converted from the
//! application's views. Timestamps are RFC 3339 strings in UTC.

use poem_openapi::Object;
use std::time::{Duration, UNIX_EPOCH};
use stovepipe_app::IngestOutcome;
use stovepipe_app::query::{CommitView, GreennessView, LastGreenView, QueueStatus, RequestView};
use stovepipe_entity::{Build, Fact, TargetResult, Timestamp};
use stovepipe_ports::DeadLetter;

pub fn rfc3339(t: Timestamp) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(t.as_millis()).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct IngestBody {
    /// A commit id, ref name or URI; the branch head when absent.
    #[oai(nullable)]
    pub rev: Option<String>,
}

#[derive(Debug, Object)]
pub struct IngestView {
    pub request_id: String,
    pub uri: String,
    pub state: String,
    pub created: bool,
}

impl From<IngestOutcome> for IngestView {
    fn from(o: IngestOutcome) -> Self {
        Self {
            request_id: o.request_id.to_string(),
            uri: o.uri.to_string(),
            state: o.state.to_string(),
            created: o.created,
        }
    }
}

#[derive(Debug, Object)]
pub struct LastGreen {
    pub uri: String,
    pub commit: String,
    pub request_id: String,
    pub recorded_at: String,
}

impl From<LastGreenView> for LastGreen {
    fn from(v: LastGreenView) -> Self {
        Self {
            uri: v.uri.to_string(),
            commit: v.commit,
            request_id: v.request_id.to_string(),
            recorded_at: rfc3339(v.recorded_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct ProjectLastGreen {
    pub project: String,
    #[oai(nullable)]
    pub last_green: Option<LastGreen>,
}

#[derive(Debug, Object)]
pub struct QueueStatusView {
    pub name: String,
    #[oai(nullable)]
    pub last_green: Option<LastGreen>,
    /// Build slots held.
    pub in_flight: u64,
    pub in_flight_requests: Vec<String>,
    #[oai(nullable)]
    pub latest_request_id: Option<String>,
    pub projects: Vec<ProjectLastGreen>,
}

impl From<QueueStatus> for QueueStatusView {
    fn from(q: QueueStatus) -> Self {
        Self {
            name: q.name.to_string(),
            last_green: q.last_green.map(Into::into),
            in_flight: q.in_flight as u64,
            in_flight_requests: q
                .in_flight_requests
                .iter()
                .map(ToString::to_string)
                .collect(),
            latest_request_id: q.latest_request_id.map(|r| r.to_string()),
            projects: q
                .projects
                .into_iter()
                .map(|p| ProjectLastGreen {
                    project: p.project.to_string(),
                    last_green: p.last_green.map(Into::into),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct QueueList {
    pub queues: Vec<QueueStatusView>,
}

#[derive(Debug, Object)]
pub struct ProjectDegreeView {
    pub project: String,
    pub degree: f64,
}

#[derive(Debug, Object)]
pub struct CommitItem {
    pub uri: String,
    pub commit: String,
    pub title: String,
    pub author: String,
    pub created_at: String,
    /// green, broken, pending, skipped, error or not_validated.
    pub status: String,
    #[oai(nullable)]
    pub degree: Option<f64>,
    #[oai(nullable)]
    pub request_id: Option<String>,
    pub projects: Vec<ProjectDegreeView>,
}

impl From<CommitView> for CommitItem {
    fn from(c: CommitView) -> Self {
        Self {
            uri: c.uri.to_string(),
            commit: c.commit,
            title: c.title,
            author: c.author,
            created_at: rfc3339(c.created_at),
            status: c.status.as_str().to_owned(),
            degree: c.degree.map(stovepipe_entity::Degree::value),
            request_id: c.request_id.map(|r| r.to_string()),
            projects: c
                .projects
                .into_iter()
                .map(|p| ProjectDegreeView {
                    project: p.project.to_string(),
                    degree: p.degree.value(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct CommitPageView {
    pub items: Vec<CommitItem>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct Greenness {
    pub uri: String,
    pub commit: String,
    pub project: String,
    pub status: String,
    /// Null when no fact exists (which is never green).
    #[oai(nullable)]
    pub degree: Option<f64>,
    #[oai(nullable)]
    pub request_id: Option<String>,
    #[oai(nullable)]
    pub recorded_at: Option<String>,
}

impl From<GreennessView> for Greenness {
    fn from(g: GreennessView) -> Self {
        Self {
            uri: g.uri.to_string(),
            commit: g.commit,
            project: g.project.to_string(),
            status: g.status.as_str().to_owned(),
            degree: g.degree.map(stovepipe_entity::Degree::value),
            request_id: g.request_id.map(|r| r.to_string()),
            recorded_at: g.recorded_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Object)]
pub struct TargetView {
    pub target: String,
    pub status: String,
}

impl From<&TargetResult> for TargetView {
    fn from(t: &TargetResult) -> Self {
        let status = match t.status {
            stovepipe_entity::TargetStatus::Passed => "passed",
            stovepipe_entity::TargetStatus::Failed => "failed",
        };
        Self {
            target: t.target.clone(),
            status: status.to_owned(),
        }
    }
}

#[derive(Debug, Object)]
pub struct BuildView {
    pub id: String,
    pub request_id: String,
    pub project: String,
    pub status: String,
    #[oai(nullable)]
    pub url: Option<String>,
    #[oai(nullable)]
    pub reason: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub targets: Vec<TargetView>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Build> for BuildView {
    fn from(b: &Build) -> Self {
        Self {
            id: b.id.to_string(),
            request_id: b.request_id.to_string(),
            project: b.project.to_string(),
            status: b.status.to_string(),
            url: b.url.clone(),
            reason: b.reason.clone(),
            metadata: b.metadata.clone(),
            targets: b.targets.iter().map(Into::into).collect(),
            created_at: rfc3339(b.created_at),
            updated_at: rfc3339(b.updated_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct FactView {
    pub uri: String,
    pub project: String,
    pub degree: f64,
    pub green: bool,
    pub request_id: String,
    #[oai(nullable)]
    pub build_id: Option<String>,
    pub created_at: String,
}

impl From<&Fact> for FactView {
    fn from(f: &Fact) -> Self {
        Self {
            uri: f.uri.to_string(),
            project: f.project.to_string(),
            degree: f.degree.value(),
            green: f.is_green(),
            request_id: f.request_id.to_string(),
            build_id: f.build_id.as_ref().map(ToString::to_string),
            created_at: rfc3339(f.created_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct RequestItem {
    pub id: String,
    pub queue: String,
    pub uri: String,
    pub commit: String,
    pub state: String,
    #[oai(nullable)]
    pub build_strategy: Option<String>,
    #[oai(nullable)]
    pub base_uri: Option<String>,
    pub origin: String,
    pub failed_closed: bool,
    #[oai(nullable)]
    pub failure_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub builds: Vec<BuildView>,
    pub facts: Vec<FactView>,
}

impl From<&RequestView> for RequestItem {
    fn from(v: &RequestView) -> Self {
        let r = &v.request;
        Self {
            id: r.id.to_string(),
            queue: r.queue.to_string(),
            uri: r.uri.to_string(),
            commit: v.commit.clone(),
            state: r.state.to_string(),
            build_strategy: r.build_strategy.map(|s| s.as_str().to_owned()),
            base_uri: r.base_uri.as_ref().map(ToString::to_string),
            origin: r.origin.as_str().to_owned(),
            failed_closed: r.failed_closed,
            failure_reason: r.failure_reason.clone(),
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            builds: v.builds.iter().map(Into::into).collect(),
            facts: v.facts.iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Object)]
pub struct RequestPageView {
    pub items: Vec<RequestItem>,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct TargetBody {
    pub target: String,
    /// passed or failed.
    pub status: String,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct StatusReportBody {
    /// accepted, running, succeeded, failed or cancelled.
    pub status: String,
    #[oai(nullable)]
    pub url: Option<String>,
    #[oai(nullable)]
    pub targets: Option<Vec<TargetBody>>,
}

#[derive(Debug, Object)]
pub struct ChangeView {
    pub seq: u64,
    #[oai(nullable)]
    pub queue: Option<String>,
    #[oai(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub data: serde_json::Value,
    pub created_at: String,
}

impl From<&stovepipe_entity::ChangeEvent> for ChangeView {
    fn from(c: &stovepipe_entity::ChangeEvent) -> Self {
        Self {
            seq: c.seq,
            queue: c.queue.as_ref().map(ToString::to_string),
            kind: c.kind.as_str().to_owned(),
            subject: c.subject.clone(),
            data: c.data.clone(),
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct ChangePage {
    pub items: Vec<ChangeView>,
    /// Pass as `after` to continue.
    pub last_seq: u64,
}

#[derive(Debug, Object)]
pub struct DeadLetterView {
    pub id: u64,
    pub topic: String,
    pub partition_key: String,
    pub message_id: String,
    pub payload: serde_json::Value,
    pub attempts: u32,
    pub last_error: String,
    pub published_at: String,
    pub dead_at: String,
}

impl From<&DeadLetter> for DeadLetterView {
    fn from(d: &DeadLetter) -> Self {
        Self {
            id: d.id,
            topic: d.topic.to_string(),
            partition_key: d.partition_key.clone(),
            message_id: d.message_id.clone(),
            payload: d.payload.clone(),
            attempts: d.attempts,
            last_error: d.last_error.clone(),
            published_at: rfc3339(d.published_at),
            dead_at: rfc3339(d.dead_at),
        }
    }
}

#[derive(Debug, Object)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterView>,
}
