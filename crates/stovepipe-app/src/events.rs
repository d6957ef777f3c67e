//! Change-log rows the stages write. One constructor per kind, so every
//! writer of a kind emits the same data shape (what SSE clients and hooks
//! parse).

use serde_json::json;
use stovepipe_entity::{
    Bookmark, Build, ChangeKind, Fact, NewChange, ProjectName, QueueName, Request,
};

pub fn request_created(r: &Request) -> NewChange {
    NewChange::new(
        &r.queue,
        ChangeKind::RequestCreated,
        r.id.as_str(),
        request_data(r),
    )
}

pub fn request_changed(r: &Request) -> NewChange {
    NewChange::new(
        &r.queue,
        ChangeKind::RequestChanged,
        r.id.as_str(),
        request_data(r),
    )
}

fn request_data(r: &Request) -> serde_json::Value {
    json!({
        "request_id": r.id,
        "uri": r.uri,
        "state": r.state,
        "origin": r.origin,
        "build_strategy": r.build_strategy,
        "base_uri": r.base_uri,
        "failed_closed": r.failed_closed,
        "failure_reason": r.failure_reason,
    })
}

fn build_data(b: &Build) -> serde_json::Value {
    json!({
        "build_id": b.id,
        "request_id": b.request_id,
        "project": b.project,
        "status": b.status,
        "url": b.url,
        "reason": b.reason,
    })
}

pub fn build_status(b: &Build) -> NewChange {
    NewChange::new(
        &b.queue,
        ChangeKind::BuildStatus,
        b.id.as_str(),
        build_data(b),
    )
}

/// Sent as soon as a build is terminal, so red is never delayed by
/// attribution or recording.
pub fn build_finished(b: &Build) -> NewChange {
    NewChange::new(
        &b.queue,
        ChangeKind::BuildFinished,
        b.id.as_str(),
        build_data(b),
    )
}

/// `validation.recorded` (whole repo) or `validation.project.recorded`.
pub fn validation_recorded(f: &Fact) -> NewChange {
    let kind = if f.project.is_whole_repo() {
        ChangeKind::ValidationRecorded
    } else {
        ChangeKind::ValidationProjectRecorded
    };
    NewChange::new(
        &f.queue,
        kind,
        scoped_subject(f.request_id.as_str(), &f.project),
        json!({
            "request_id": f.request_id,
            "uri": f.uri,
            "project": f.project,
            "degree": f.degree,
            "green": f.is_green(),
            "build_id": f.build_id,
        }),
    )
}

pub fn validation_error(r: &Request) -> NewChange {
    NewChange::new(
        &r.queue,
        ChangeKind::ValidationError,
        r.id.as_str(),
        json!({
            "request_id": r.id,
            "uri": r.uri,
            "state": r.state,
            "reason": r.failure_reason,
        }),
    )
}

pub fn last_green_advanced(
    r: &Request,
    project: &ProjectName,
    previous: Option<&Bookmark>,
) -> NewChange {
    NewChange::new(
        &r.queue,
        ChangeKind::LastGreenAdvanced,
        scoped_subject(r.id.as_str(), project),
        json!({
            "request_id": r.id,
            "uri": r.uri,
            "project": project,
            "previous_uri": previous.map(|b| &b.uri),
            "previous_request_id": previous.map(|b| &b.request_id),
        }),
    )
}

pub fn promoted(queue: &QueueName, mark: &Bookmark, reference: Option<&str>) -> NewChange {
    NewChange::new(
        queue,
        ChangeKind::Promoted,
        mark.request_id.as_str(),
        json!({ "request_id": mark.request_id, "uri": mark.uri, "ref": reference }),
    )
}

fn scoped_subject(subject: &str, project: &ProjectName) -> String {
    if project.is_whole_repo() {
        subject.to_owned()
    } else {
        format!("{subject}#{project}")
    }
}
