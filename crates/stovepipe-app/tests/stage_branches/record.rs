//! `record`: fact, bookmark, promotion, slot release (pipeline.md,
//! "record").

use serde_json::json;
use stovepipe_app::stages::record::RecordStage;
use stovepipe_app::{Outcome, StageError};
use stovepipe_entity::{
    Bookmark, BuildStatus, ChangeKind, Degree, Fact, ProjectName, Queue, QueueConfig, RequestState,
};
use stovepipe_ports::{PromoteOutcome, ScmError, StoreError};

use crate::mocks::{
    Fixture, Journal, NOW, QUEUE_VERSION, Write, bid, build, changes, config, fact,
    failed_closed_request, hook_feeds, hops, kinds_and_subjects, queue, queue_name, record_hop,
    released, request, rid, uri,
};

async fn run(f: Fixture) -> (Result<Outcome, StageError>, Journal) {
    let (deps, log) = f.deps();
    let out = RecordStage::new(deps).run(&record_hop(3)).await;
    (out, log)
}

/// Request 3 ended `state` on build b-1, holds its slot; the bookmark is on
/// request 1.
fn recording(state: RequestState) -> Fixture {
    let status = match state {
        RequestState::Failed => BuildStatus::Failed,
        RequestState::Cancelled => BuildStatus::Cancelled,
        _ => BuildStatus::Succeeded,
    };
    Fixture::new()
        .with_request(request(3, state))
        .with_queue(queue(Some(3), &[3], Some(1)))
        .with_builds_of_request(vec![
            build("b-0", 3, BuildStatus::Cancelled),
            build("b-1", 3, status),
        ])
}

fn already_exists() -> StoreError {
    StoreError::AlreadyExists {
        entity: "fact",
        key: uri(3).to_string(),
    }
}

/// The fact request 3 must write.
fn expected_fact(degree: Degree) -> Fact {
    Fact {
        queue: queue_name(),
        uri: uri(3),
        project: ProjectName::whole_repo(),
        degree,
        request_id: rid(3),
        build_id: Some(bid("b-1")),
        created_at: NOW,
    }
}

fn assert_fact_written(w: &Write, degree: Degree) {
    let (f, outbox) = w.fact_create();
    assert_eq!(f, &expected_fact(degree));
    assert_eq!(
        changes(outbox),
        [(ChangeKind::ValidationRecorded, rid(3).to_string())]
    );
    assert_eq!(outbox.changes[0].data["green"], json!(degree.is_green()));
    assert_eq!(
        hook_feeds(outbox),
        [format!("validation.recorded/{}", rid(3))]
    );
    assert!(hops(outbox).is_empty());
}

/// A change of an outbox, as `changes` gives it.
type Told = (ChangeKind, String);

/// A joint write of request 3's fact of `degree` (its event first in the
/// outbox) and, when there is one, the queue row's write, returned with
/// the version it expects and the changes after the fact's.
fn assert_joint_fact(w: &Write, degree: Degree) -> (Option<(&Queue, u64)>, Vec<Told>) {
    assert_eq!(w.joint_fact(), Some(&expected_fact(degree)));
    let outbox = w.joint().1;
    let told = changes(outbox);
    assert_eq!(
        told[0],
        (ChangeKind::ValidationRecorded, rid(3).to_string()),
        "the fact's event comes first"
    );
    assert_eq!(outbox.changes[0].data["green"], json!(degree.is_green()));
    assert!(
        hook_feeds(outbox).contains(&format!("validation.recorded/{}", rid(3))),
        "{outbox:#?}"
    );
    assert!(hops(outbox).is_empty());
    (w.joint_queue(), told[1..].to_vec())
}

/// The last queue write releases request 3's slot and nothing else.
fn assert_released(w: &Write, expected_version: u64) {
    assert_released_with(w, expected_version, &[]);
}

/// The last queue write releases request 3's slot, appending `with` (the
/// promotions' events) and publishing nothing.
fn assert_released_with(w: &Write, expected_version: u64, with: &[(ChangeKind, String)]) {
    let (q, expected, outbox) = w.queue_update();
    assert_eq!(expected, expected_version);
    assert!(!q.holds_slot(&rid(3)));
    assert_eq!(q.in_flight_count(), 0);
    assert_eq!(q.version, expected_version + 1);
    assert_eq!(changes(outbox), with);
    assert!(outbox.messages.is_empty());
}

/// The test configuration without a promotion ref: record then moves the
/// bookmark and releases the slot in one write.
fn unpromoted() -> QueueConfig {
    let mut c = config();
    c.promotion_ref = None;
    c
}

/// A queue write that moves the bookmark to request 3 and releases its
/// slot together: two changes of the row, each counting a version, in one
/// conditional write.
fn assert_advanced_and_released(w: &Write, expected_version: u64) {
    assert_advanced_and_released_with(w, expected_version, &[]);
}

/// [`assert_advanced_and_released`], the write also carrying `promoted`
/// (the ref's moves, made before it).
fn assert_advanced_and_released_with(
    w: &Write,
    expected_version: u64,
    promoted: &[(ChangeKind, String)],
) {
    let (q, expected, outbox) = w.queue_update();
    assert_eq!(expected, expected_version);
    assert_eq!(q.last_green.as_ref().map(|b| &b.request_id), Some(&rid(3)));
    assert!(!q.holds_slot(&rid(3)));
    assert_eq!(q.in_flight_count(), 0);
    assert_eq!(q.version, expected_version + 2);
    let mut told = vec![(ChangeKind::LastGreenAdvanced, rid(3).to_string())];
    told.extend_from_slice(promoted);
    assert_eq!(changes(outbox), told);
    assert!(outbox.messages.is_empty());
}

#[tokio::test]
async fn superseded_is_acked_without_writes() {
    let f = Fixture::new()
        .with_request(request(3, RequestState::Superseded))
        .with_queue(queue(Some(4), &[], Some(1)));
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn cancelled_releases_the_slot_and_records_no_fact() {
    let before = queue(Some(3), &[3], Some(1));
    let mut f = recording(RequestState::Cancelled).with_queue(before.clone());
    f.expect_queue_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["queues.update"]);
    assert_released(&w[0], QUEUE_VERSION);
    assert_eq!(w[0].queue_update().0, &released(before, 3));
}

#[tokio::test]
async fn cancelled_with_slot_already_released_writes_nothing() {
    let f = recording(RequestState::Cancelled).with_queue(queue(Some(3), &[], Some(1)));
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn failed_closed_releases_the_slot_and_records_no_fact() {
    let mut f = recording(RequestState::Failed).with_request(failed_closed_request(3));
    f.expect_queue_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["queues.update"],
        "no fact for a failed-closed request"
    );
    assert_released(&w[0], QUEUE_VERSION);
    assert_eq!(
        w[0].queue_update().0.last_green,
        Some(crate::mocks::bookmark(1))
    );
}

/// Record follows the write that gave the request its outcome: a request
/// read without one is a view from before that write, retried (and
/// dead-lettered after the attempts if it really has none).
#[tokio::test]
async fn record_before_an_outcome_is_retried() {
    for state in [RequestState::Accepted, RequestState::Processing] {
        let f = recording(state);
        let (out, log) = run(f).await;
        assert!(
            matches!(&out, Err(StageError::Retryable(m)) if m.contains(&state.to_string())),
            "{state}: {out:?}"
        );
        assert!(log.writes().is_empty(), "{state}");
    }
}

#[tokio::test]
async fn missing_request_is_permanent() {
    let (out, log) = run(Fixture::new()).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

/// The ref moves first, then one write moves the bookmark and releases the
/// slot, carrying both events.
#[tokio::test]
async fn succeeded_records_green_promotes_then_advances_the_bookmark_and_releases() {
    let mut f = recording(RequestState::Succeeded);
    f.expect_fact_create(Ok(()));
    f.expect_promote(Ok(PromoteOutcome::Moved));
    f.expect_queue_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["facts.create", "scm.promote", "queues.update"]
    );
    assert_fact_written(&w[0], Degree::GREEN);
    assert_eq!(w[1], Write::Promote(uri(3)));
    assert_advanced_and_released_with(
        &w[2],
        QUEUE_VERSION,
        &[(ChangeKind::Promoted, rid(3).to_string())],
    );
    let (q, _, outbox) = w[2].queue_update();
    assert_eq!(
        q.last_green,
        Some(Bookmark {
            uri: uri(3),
            request_id: rid(3),
            recorded_at: NOW
        })
    );
    assert_eq!(outbox.changes[0].data["previous_uri"], json!(uri(1)));
    assert_eq!(
        hook_feeds(outbox),
        [format!("last_green.advanced/{}", rid(3))],
        "promotions are no hook event"
    );
}

#[tokio::test]
async fn first_green_advances_an_empty_bookmark() {
    let mut f = recording(RequestState::Succeeded)
        .with_queue(queue(Some(3), &[3], None))
        .with_config(unpromoted());
    f.expect_joint();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    let (q, _) = w[0].joint_queue().unwrap();
    assert_eq!(q.last_green.as_ref().unwrap().request_id, rid(3));
    let outbox = w[0].joint().1;
    assert_eq!(outbox.changes[1].data["previous_uri"], json!(null));
}

#[tokio::test]
async fn fact_of_the_same_request_already_stored_is_adopted() {
    let mut f = recording(RequestState::Succeeded).with_fact(fact(3, 3, Degree::GREEN));
    f.expect_fact_create(Err(already_exists()));
    f.expect_promote(Ok(PromoteOutcome::AlreadyThere));
    f.expect_queue_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(
        log.names(),
        ["facts.create", "scm.promote", "queues.update"],
        "adopted: the bookmark still moves; AlreadyThere appends no promoted event"
    );
    assert_advanced_and_released(&log.writes()[2], QUEUE_VERSION);
}

/// Redelivery after the bookmark moved and the slot was released: the
/// bookmark is already held (no write), promotion is re-asserted
/// (idempotent), nothing to release.
#[tokio::test]
async fn redelivery_with_bookmark_already_held_writes_nothing_but_promotes() {
    let mut f = recording(RequestState::Succeeded)
        .with_fact(fact(3, 3, Degree::GREEN))
        .with_queue(queue(Some(3), &[], Some(3)));
    f.expect_fact_create(Err(already_exists()));
    f.expect_promote(Ok(PromoteOutcome::AlreadyThere));
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["facts.create", "scm.promote"]);
}

#[tokio::test]
async fn fact_of_another_request_is_permanent_and_nothing_else_moves() {
    let mut f = recording(RequestState::Succeeded).with_fact(fact(3, 2, Degree::BROKEN));
    f.expect_fact_create(Err(already_exists()));
    let (out, log) = run(f).await;
    assert!(
        matches!(&out, Err(StageError::Permanent(m)) if m.contains("invariant")),
        "{out:?}"
    );
    assert_eq!(log.names(), ["facts.create"]);
}

#[tokio::test]
async fn fact_store_unavailable_is_retryable() {
    let mut f = recording(RequestState::Succeeded);
    f.expect_fact_create(Err(StoreError::Unavailable("pool".into())));
    let (out, log) = run(f).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert_eq!(log.names(), ["facts.create"]);
}

/// A broken fact moves no ref, so even with a promotion ref it rides in
/// the release's write.
#[tokio::test]
async fn failed_records_broken_keeps_the_bookmark_and_does_not_promote() {
    let before = queue(Some(3), &[3], Some(1));
    let mut f = recording(RequestState::Failed).with_queue(before.clone());
    f.expect_joint();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["joint.write_all"]);
    let (queue_write, after) = assert_joint_fact(&w[0], Degree::BROKEN);
    let (q, expected) = queue_write.expect("the release rides with the fact");
    assert_eq!(expected, QUEUE_VERSION);
    assert_eq!(q, &released(before, 3));
    assert!(after.is_empty(), "no bookmark event: {after:?}");
}

/// With or without a promotion ref: the release is the only queue write
/// (with the fact, when there is no ref).
#[tokio::test]
async fn newer_bookmark_holder_is_not_overwritten_and_not_promoted() {
    let wake = Write::Wake("process".into(), "monorepo/main".into());
    let before = queue(Some(5), &[3], Some(5));
    let mut f = recording(RequestState::Succeeded).with_queue(before.clone());
    f.expect_fact_create(Ok(()));
    f.expect_queue_update();
    f.expect_wake();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["facts.create", "queues.update", "mq.wake"],
        "only the release: no bookmark write, no promote"
    );
    assert_fact_written(&w[0], Degree::GREEN);
    assert_eq!(w[1].queue_update().0, &released(before.clone(), 3));
    assert_eq!(
        w[2], wake,
        "head 5 is newer: its process delivery may be held at the gate"
    );

    let mut f = recording(RequestState::Succeeded)
        .with_config(unpromoted())
        .with_queue(before.clone());
    f.expect_joint();
    f.expect_wake();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["joint.write_all", "mq.wake"]);
    let (queue_write, after) = assert_joint_fact(&w[0], Degree::GREEN);
    assert_eq!(queue_write.unwrap().0, &released(before, 3));
    assert!(after.is_empty(), "no bookmark event: {after:?}");
    assert_eq!(w[1], wake);
}

/// A redelivery (the fact is stored) may follow a delivery that moved the
/// ref to this commit after a newer one had been promoted and then
/// stopped: it promotes the newer holder again, so the ref does not stay
/// behind the bookmark.
#[tokio::test]
async fn redelivery_behind_a_newer_holder_promotes_the_holder() {
    let before = queue(Some(5), &[3], Some(5));
    let mut f = recording(RequestState::Succeeded)
        .with_fact(fact(3, 3, Degree::GREEN))
        .with_queue(before.clone());
    f.expect_fact_create(Err(already_exists()));
    f.expect_promote(Ok(PromoteOutcome::Moved));
    f.expect_queue_update();
    f.expect_wake();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["facts.create", "scm.promote", "queues.update", "mq.wake"]
    );
    assert_eq!(w[1], Write::Promote(uri(5)));
    assert_eq!(w[2].queue_update().0, &released(before, 3));
    assert_eq!(
        changes(w[2].queue_update().2),
        [(ChangeKind::Promoted, rid(5).to_string())]
    );
}

/// Several slots recording at once: another record moved the bookmark on
/// while this one promoted, so its write loses. It starts over from the row
/// as it is now and promotes the new holder (this promotion may have moved
/// the ref behind it) before releasing, and the ref ends on the bookmark.
#[tokio::test]
async fn a_write_that_lost_promotes_the_new_holder_before_it_releases() {
    let mut moved_on = queue(Some(4), &[3], Some(4));
    moved_on.version = QUEUE_VERSION + 2;
    let mut f = recording(RequestState::Succeeded);
    f.expect_fact_create(Ok(()));
    f.expect_promote_while_bookmark_moves(Ok(PromoteOutcome::Moved), moved_on.clone());
    f.expect_queue_update_conflict(moved_on.clone());
    f.expect_promote(Ok(PromoteOutcome::Moved));
    f.expect_queue_update();
    f.expect_wake();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        [
            "facts.create",
            "scm.promote",
            "queues.update",
            "scm.promote",
            "queues.update",
            "mq.wake"
        ]
    );
    assert_eq!(w[1], Write::Promote(uri(3)));
    assert_eq!(w[2].queue_update().1, QUEUE_VERSION, "the lost write");
    assert_eq!(w[3], Write::Promote(uri(4)));
    let (q, expected, outbox) = w[4].queue_update();
    assert_eq!(expected, QUEUE_VERSION + 2);
    assert_eq!(q, &released(moved_on, 3));
    assert_eq!(
        changes(outbox),
        [
            (ChangeKind::Promoted, rid(3).to_string()),
            (ChangeKind::Promoted, rid(4).to_string())
        ],
        "both moves of the ref, with the release"
    );
}

/// The bookmark is held already and the slot is gone (the reconcile loop
/// released it): the row stays as it is and the promotion's event is
/// appended on its own.
#[tokio::test]
async fn a_promotion_without_a_row_change_appends_its_event_alone() {
    let mut f = recording(RequestState::Succeeded).with_queue(queue(Some(3), &[], Some(3)));
    f.expect_fact_create(Ok(()));
    f.expect_promote(Ok(PromoteOutcome::Moved));
    f.expect_feed_append();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["facts.create", "scm.promote", "feed.append"]);
    assert_eq!(
        appended(&log, 2),
        [(ChangeKind::Promoted, rid(3).to_string())]
    );
}

/// `(kind, subject)` of the changes of the `feed.append` that is write `at`.
fn appended(log: &Journal, at: usize) -> Vec<(ChangeKind, String)> {
    let w = log.writes();
    let Write::FeedAppend(changes) = &w[at] else {
        panic!("{w:#?}")
    };
    kinds_and_subjects(changes)
}

/// The ref moved but the write that was to carry its event failed: the
/// event is appended on its own (the retry finds the ref already there and
/// would not tell it), and the delivery is retried.
#[tokio::test]
async fn a_promotion_whose_write_fails_still_appends_its_event() {
    let mut f = recording(RequestState::Succeeded);
    f.expect_fact_create(Ok(()));
    f.expect_promote(Ok(PromoteOutcome::Moved));
    f.expect_queue_update_err(StoreError::Unavailable("database restarting".into()));
    f.expect_feed_append();
    let (out, log) = run(f).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert_eq!(
        log.names(),
        [
            "facts.create",
            "scm.promote",
            "queues.update",
            "feed.append"
        ]
    );
    assert_eq!(
        appended(&log, 3),
        [(ChangeKind::Promoted, rid(3).to_string())]
    );
}

#[tokio::test]
async fn promote_not_found_still_advances_and_releases() {
    let mut f = recording(RequestState::Succeeded);
    f.expect_fact_create(Ok(()));
    f.expect_promote(Err(ScmError::NotFound("c3 left the branch".into())));
    f.expect_queue_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(
        log.names(),
        ["facts.create", "scm.promote", "queues.update"],
        "no promoted event"
    );
    assert_advanced_and_released(&log.writes()[2], QUEUE_VERSION);
}

/// A promotion outage does not hold last green back: the bookmark moves in
/// a write of its own, the slot stays claimed (the next head waits), and
/// the delivery is retried.
#[tokio::test]
async fn promote_unavailable_moves_the_bookmark_keeps_the_slot_and_retries() {
    let mut f = recording(RequestState::Succeeded);
    f.expect_fact_create(Ok(()));
    f.expect_promote(Err(ScmError::Unavailable("push timed out".into())));
    f.expect_queue_update();
    let (out, log) = run(f).await;
    assert!(
        matches!(&out, Err(StageError::Retryable(m)) if m.contains("promote")),
        "{out:?}"
    );
    assert_eq!(
        log.names(),
        ["facts.create", "scm.promote", "queues.update"]
    );
    let w = log.writes();
    let (q, expected, outbox) = w[2].queue_update();
    assert_eq!(expected, QUEUE_VERSION);
    assert_eq!(q.last_green.as_ref().map(|b| &b.request_id), Some(&rid(3)));
    assert!(q.holds_slot(&rid(3)), "the slot waits for the promotion");
    assert_eq!(q.version, QUEUE_VERSION + 1);
    assert_eq!(
        changes(outbox),
        [(ChangeKind::LastGreenAdvanced, rid(3).to_string())]
    );
}

/// A joint write's queue row: the bookmark moved to request 3 and its slot
/// released, from `expected_version`, with `last_green.advanced` after the
/// fact's event.
fn assert_joint_advanced_and_released(w: &Write, expected_version: u64) {
    let (queue_write, after) = assert_joint_fact(w, Degree::GREEN);
    let Some((q, expected)) = queue_write else {
        panic!("the bookmark rides with the fact: {w:#?}")
    };
    assert_eq!(expected, expected_version);
    assert_eq!(q.last_green.as_ref().map(|b| &b.request_id), Some(&rid(3)));
    assert!(!q.holds_slot(&rid(3)));
    assert_eq!(q.version, expected_version + 2);
    assert_eq!(after, [(ChangeKind::LastGreenAdvanced, rid(3).to_string())]);
}

#[tokio::test]
async fn no_promotion_ref_never_calls_promote() {
    let mut f = recording(RequestState::Succeeded).with_config(unpromoted());
    f.expect_joint();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["joint.write_all"],
        "with no promotion, the fact, the bookmark and the release are one write"
    );
    assert_joint_advanced_and_released(&w[0], QUEUE_VERSION);
}

#[tokio::test]
async fn bookmark_cas_conflict_reloads_and_retries() {
    let mut concurrent = queue(Some(4), &[3], Some(1));
    concurrent.version = QUEUE_VERSION + 1;
    let mut f = recording(RequestState::Succeeded).with_config(unpromoted());
    f.expect_joint_err(Fixture::joint_conflict("queue"), move |rows| {
        *rows.queue.lock().unwrap() = Some(concurrent.clone());
    });
    f.expect_joint();
    f.expect_wake();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["joint.write_all", "joint.write_all", "mq.wake"]
    );
    assert_eq!(
        w[1].joint_queue().unwrap().0.latest_request_id,
        Some(rid(4)),
        "rebased on the reloaded row"
    );
    assert_joint_advanced_and_released(&w[1], QUEUE_VERSION + 1);
}

/// Without a promotion ref, a fact already stored (an earlier delivery's)
/// makes the joint write write nothing; the delivery adopts the fact as
/// one with a ref does, and settles the row alone.
#[tokio::test]
async fn a_stored_fact_falls_back_to_adopting_it_without_a_promotion_ref() {
    let mut f = recording(RequestState::Succeeded)
        .with_config(unpromoted())
        .with_fact(fact(3, 3, Degree::GREEN));
    f.expect_joint_err(already_exists(), |_| {});
    f.expect_fact_create(Err(already_exists()));
    f.expect_queue_update();
    let (out, log) = run(f).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["joint.write_all", "facts.create", "queues.update"]
    );
    assert_advanced_and_released(&w[2], QUEUE_VERSION);
}
