//! Change-log rows the stages write. One constructor per kind, so every
//! writer of a kind emits the same data shape (what SSE clients and hooks
//! parse), and [`OutboxExt::emit`], the one way a write emits a change, so
//! every hook-able change also feeds the hook dispatcher in the same
//! transaction.

use serde_json::json;
use stovepipe_entity::{
    Bookmark, Build, ChangeEvent, ChangeKind, EventEnvelope, Fact, NewChange, ProjectName,
    QueueName, Request, Timestamp,
};
use stovepipe_ports::{Outbox, OutgoingMessage, Topic};

/// Emitting changes through a write's outbox.
pub trait OutboxExt {
    /// Appends `change` to the change log and, when hooks can subscribe to
    /// its kind, publishes its envelope on topic `hook` (partition key and
    /// message id = the event id, so a redelivered write never feeds the
    /// dispatcher twice) as a hook event: only when some hook is live
    /// (`Outbox::hook_events`). `now` is the write's clock time: the envelope's
    /// `occurred_at`.
    #[must_use]
    fn emit(self, change: NewChange, now: Timestamp) -> Outbox;
}

impl OutboxExt for Outbox {
    fn emit(self, change: NewChange, now: Timestamp) -> Outbox {
        let hook = envelope(&change, now).map(|e| hook_message(&e));
        let outbox = self.change(change);
        match hook {
            Some(message) => outbox.publish_hook_event(message),
            None => outbox,
        }
    }
}

/// The hook envelope of a change about to be written at `now`, when hooks
/// can subscribe to its kind. (The entity owns the id format and envelope
/// shape; this only supplies the write's time.)
pub fn envelope(change: &NewChange, now: Timestamp) -> Option<EventEnvelope> {
    change.kind.event_type()?;
    ChangeEvent {
        seq: 0,
        queue: change.queue.clone(),
        kind: change.kind,
        subject: change.subject.clone(),
        data: change.data.clone(),
        created_at: now,
    }
    .envelope()
}

/// The `hook` topic message carrying `envelope`.
pub fn hook_message(envelope: &EventEnvelope) -> OutgoingMessage {
    OutgoingMessage::new(
        Topic::hook(),
        envelope.id.as_str(),
        envelope.id.as_str(),
        // An envelope is plain data (string keys only): serialising it
        // cannot fail.
        serde_json::to_value(envelope).unwrap_or(serde_json::Value::Null),
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueName {
        QueueName::new("q").unwrap()
    }

    #[test]
    fn hookable_changes_feed_the_dispatcher_in_the_same_outbox() {
        let change = NewChange::new(
            &queue(),
            ChangeKind::LastGreenAdvanced,
            "request/q/3",
            json!({"uri": "u"}),
        );
        let outbox = Outbox::none().emit(change.clone(), Timestamp(42));
        assert_eq!(outbox.changes, vec![change]);
        assert!(outbox.messages.is_empty(), "not a hop");
        assert_eq!(outbox.hook_events.len(), 1);
        let m = &outbox.hook_events[0];
        assert_eq!(m.topic, Topic::hook());
        assert_eq!(m.partition_key, "last_green.advanced/request/q/3");
        assert_eq!(m.message_id, "last_green.advanced/request/q/3");
        assert_eq!(m.payload["type"], "last_green.advanced");
        assert_eq!(m.payload["source"], "stovepipe");
        assert_eq!(m.payload["queue"], "q");
        assert_eq!(m.payload["occurred_at"], 42);
        assert_eq!(m.payload["data"]["uri"], "u");
    }

    #[test]
    fn other_changes_only_reach_the_log() {
        let change = NewChange::new(&queue(), ChangeKind::RequestChanged, "r", json!({}));
        let outbox = Outbox::none().emit(change, Timestamp(1));
        assert_eq!(outbox.changes.len(), 1);
        assert!(outbox.messages.is_empty());
        assert!(outbox.hook_events.is_empty());
    }
}
