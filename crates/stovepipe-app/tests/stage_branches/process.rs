//! `process`: coalesce → gate → strategy → claim → admit (pipeline.md,
//! "process").

use std::sync::Arc;

use stovepipe_app::stages::process::ProcessStage;
use stovepipe_app::{Deps, Outcome, StageError};
use stovepipe_entity::{BuildStrategy, ChangeKind, Origin, Queue, Request, RequestState, Uri};
use stovepipe_ports::ScmError;

use crate::mocks::{
    Fixture, GATE_WAIT, Journal, NOW, QUEUE_VERSION, T0, admitted, admitted_build_message,
    build_message, changes, claimed, config, failed_closed_request, process_hop, queue, queue_name,
    released, request, rid, superseded, uri,
};

async fn run(f: Fixture, n: u64) -> (Result<Outcome, StageError>, Journal) {
    let (deps, log): (Arc<Deps>, Journal) = f.deps();
    let out = ProcessStage::new(deps).run(&process_hop(n)).await;
    (out, log)
}

/// Asserts the write of a successful admission of request 3 from `queue`:
/// one joint write of the slot claimed by CAS and the request CAS to
/// processing, with `request.changed` and the build hop in its outbox.
fn assert_admitted(
    log: &Journal,
    queue_before: &Queue,
    strategy: BuildStrategy,
    base: Option<Uri>,
) {
    let w = log.writes();
    assert_eq!(log.names(), ["joint.write_all"], "{w:#?}");
    let Some((q, expected)) = w[0].joint_queue() else {
        panic!("the claim rides in the admit: {w:#?}")
    };
    assert_eq!(expected, QUEUE_VERSION);
    assert_eq!(q, &claimed(queue_before.clone(), 3));
    assert_eq!(q.version, QUEUE_VERSION + 1);

    let (r, expected) = w[0].joint_request();
    let outbox = w[0].joint().1;
    assert_eq!(expected, Some(1));
    assert_eq!(
        r,
        &admitted(request(3, RequestState::Accepted), strategy, base)
    );
    assert_eq!(r.version, 2);
    assert_eq!(
        changes(outbox),
        [(ChangeKind::RequestChanged, rid(3).to_string())]
    );
    assert_eq!(outbox.changes[0].data["state"], "processing");
    assert_eq!(outbox.messages, [admitted_build_message(3)]);
}

#[tokio::test]
async fn terminal_request_is_acked_without_writes() {
    for state in [
        RequestState::Superseded,
        RequestState::Succeeded,
        RequestState::Failed,
        RequestState::Cancelled,
    ] {
        let f = Fixture::new()
            .with_request(request(3, state))
            .with_queue(queue(Some(3), &[], None));
        let (out, log) = run(f, 3).await;
        assert_eq!(out, Ok(Outcome::Ack), "{state}");
        assert!(log.writes().is_empty(), "{state}");
    }
}

#[tokio::test]
async fn processing_request_republishes_its_build_hop() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Processing))
        .with_queue(queue(Some(3), &[3], None));
    f.expect_publish();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.writes()[0].published(), &build_message(3));
    assert_eq!(log.names(), ["mq.publish"]);
}

#[tokio::test]
async fn missing_request_is_permanent() {
    let f = Fixture::new().with_queue(queue(Some(3), &[], None));
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn queue_not_configured_is_permanent() {
    let f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], None))
        .without_config();
    let (out, log) = run(f, 3).await;
    assert!(
        matches!(&out, Err(StageError::Permanent(m)) if m.contains("not configured")),
        "{out:?}"
    );
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn missing_latest_pointer_is_retryable_never_acked() {
    let f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(None, &[], None));
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn missing_queue_row_is_retryable() {
    let f = Fixture::new().with_request(request(3, RequestState::Accepted));
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn older_than_latest_is_superseded() {
    let mut f = Fixture::new()
        .with_request(request(2, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], None));
    f.expect_request_update();
    let (out, log) = run(f, 2).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["requests.update"]);
    let (r, expected, outbox) = w[0].request_update();
    assert_eq!(expected, 1);
    assert_eq!(r, &superseded(request(2, RequestState::Accepted)));
    assert_eq!(r.state, RequestState::Superseded);
    assert_eq!(
        changes(outbox),
        [(ChangeKind::RequestChanged, rid(2).to_string())]
    );
    assert!(
        outbox.messages.is_empty(),
        "a superseded request has no next hop"
    );
}

/// Numeric, not textual, order: request 9 is older than request 10.
#[tokio::test]
async fn coalescing_compares_request_numbers_not_text() {
    let mut f = Fixture::new()
        .with_request(request(9, RequestState::Accepted))
        .with_queue(queue(Some(10), &[], None));
    f.expect_request_update();
    let (out, log) = run(f, 9).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(
        log.writes()[0].request_update().0.state,
        RequestState::Superseded
    );
}

/// Coalescing runs before the gate: an intermediate is superseded even while
/// every slot is taken.
#[tokio::test]
async fn intermediate_is_superseded_while_the_gate_is_closed() {
    let mut f = Fixture::new()
        .with_request(request(2, RequestState::Accepted))
        .with_queue(queue(Some(3), &[1], None));
    f.expect_request_update();
    let (out, log) = run(f, 2).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["requests.update"]);
    assert_eq!(
        log.writes()[0].request_update().0.state,
        RequestState::Superseded
    );
}

/// A claim written before a crash (admit not): the slot is released before
/// the request is superseded, so a superseded request never owns a slot.
#[tokio::test]
async fn older_than_latest_holding_a_slot_releases_it_before_superseding() {
    let before = queue(Some(3), &[2], None);
    let mut f = Fixture::new()
        .with_request(request(2, RequestState::Accepted))
        .with_queue(before.clone());
    f.expect_queue_update();
    f.expect_request_update();
    let (out, log) = run(f, 2).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["queues.update", "requests.update"]);
    let (q, expected, outbox) = w[0].queue_update();
    assert_eq!(expected, QUEUE_VERSION);
    assert_eq!(q, &released(before, 2));
    assert_eq!(q.in_flight_count(), 0);
    assert!(outbox.is_empty());
    assert_eq!(w[1].request_update().0.state, RequestState::Superseded);
}

#[tokio::test]
async fn gate_closed_holds_for_gate_wait_delay_without_writes() {
    let f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[1], Some(1)));
    // No is_ancestor expectation either: the strategy is not chosen yet.
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Hold(GATE_WAIT)));
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn gate_counts_slots_against_max_concurrent() {
    let mut cfg = config();
    cfg.max_concurrent = 2;
    let before = queue(Some(3), &[1], None);
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before.clone())
        .with_config(cfg);
    f.expect_joint();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_admitted(&log, &before, BuildStrategy::Full, None);
    assert_eq!(
        log.writes()[0].joint_queue().unwrap().0.in_flight_count(),
        2
    );
}

#[tokio::test]
async fn no_last_green_builds_in_full_after_claiming_a_slot() {
    let before = queue(Some(3), &[], None);
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before.clone());
    f.expect_joint();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_admitted(&log, &before, BuildStrategy::Full, None);
    let q = log.writes()[0].joint_queue().unwrap().0.clone();
    assert_eq!(q.in_flight[0].request_id, rid(3));
    assert_eq!(q.in_flight[0].admitted_at, NOW);
}

#[tokio::test]
async fn last_green_ancestor_builds_incrementally_from_it() {
    let before = queue(Some(3), &[], Some(1));
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before.clone());
    f.scm
        .expect_is_ancestor()
        .withf(|a, d| a == &uri(1) && d == &uri(3))
        .times(1)
        .returning(|_, _| Ok(true));
    f.expect_joint();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_admitted(
        &log,
        &before,
        BuildStrategy::IncrementalSinceGreen,
        Some(uri(1)),
    );
}

#[tokio::test]
async fn last_green_not_an_ancestor_builds_in_full() {
    let before = queue(Some(3), &[], Some(1));
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before.clone());
    f.scm
        .expect_is_ancestor()
        .times(1)
        .returning(|_, _| Ok(false));
    f.expect_joint();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_admitted(&log, &before, BuildStrategy::Full, None);
}

#[tokio::test]
async fn last_green_unknown_to_scm_builds_in_full() {
    let before = queue(Some(3), &[], Some(1));
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before.clone());
    f.scm
        .expect_is_ancestor()
        .times(1)
        .returning(|_, _| Err(ScmError::NotFound("c1".into())));
    f.expect_joint();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_admitted(&log, &before, BuildStrategy::Full, None);
}

#[tokio::test]
async fn is_ancestor_unavailable_is_retryable_without_writes() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], Some(1)));
    f.scm
        .expect_is_ancestor()
        .times(1)
        .returning(|_, _| Err(ScmError::Unavailable("fetch timed out".into())));
    let (out, log) = run(f, 3).await;
    assert!(
        matches!(&out, Err(StageError::Retryable(m)) if m.contains("is_ancestor")),
        "{out:?}"
    );
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn is_ancestor_backend_error_is_permanent() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], Some(1)));
    f.scm
        .expect_is_ancestor()
        .times(1)
        .returning(|_, _| Err(ScmError::Backend("corrupt pack".into())));
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Permanent(_))), "{out:?}");
    assert!(log.writes().is_empty());
}

#[tokio::test]
async fn queue_cas_conflict_reloads_and_claims_on_the_new_version() {
    let before = queue(Some(3), &[], None);
    let mut concurrent = before.clone();
    concurrent.version = QUEUE_VERSION + 1;
    concurrent.updated_at = T0;
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before.clone());
    let stored = concurrent.clone();
    f.expect_joint_err(Fixture::joint_conflict("queue"), move |rows| {
        *rows.queue.lock().unwrap() = Some(stored.clone());
    });
    f.expect_joint();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["joint.write_all", "joint.write_all"]);
    assert_eq!(w[0].joint_queue().unwrap().1, QUEUE_VERSION);
    let (q, expected) = w[1].joint_queue().unwrap();
    assert_eq!(
        expected,
        QUEUE_VERSION + 1,
        "the retry uses the reloaded version"
    );
    assert_eq!(q, &claimed(concurrent, 3));
    assert_eq!(w[1].joint_request().0.state, RequestState::Processing);
}

/// The reload goes back to coalescing and the gate: a slot claimed
/// meanwhile by another request closes the gate.
#[tokio::test]
async fn queue_cas_conflict_rechecks_the_gate() {
    let before = queue(Some(3), &[], None);
    let mut concurrent = queue(Some(3), &[1], None);
    concurrent.version = QUEUE_VERSION + 1;
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before);
    f.expect_joint_err(Fixture::joint_conflict("queue"), move |rows| {
        *rows.queue.lock().unwrap() = Some(concurrent.clone());
    });
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Hold(GATE_WAIT)));
    assert_eq!(log.names(), ["joint.write_all"]);
}

/// The reload goes back to coalescing: a newer head ingested meanwhile
/// supersedes the request instead of admitting it.
#[tokio::test]
async fn queue_cas_conflict_recheck_supersedes_when_a_newer_head_arrived() {
    let before = queue(Some(3), &[], None);
    let mut concurrent = queue(Some(4), &[], None);
    concurrent.version = QUEUE_VERSION + 1;
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before);
    f.expect_joint_err(Fixture::joint_conflict("queue"), move |rows| {
        *rows.queue.lock().unwrap() = Some(concurrent.clone());
    });
    f.expect_request_update();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["joint.write_all", "requests.update"]);
    assert_eq!(
        log.writes()[1].request_update().0.state,
        RequestState::Superseded
    );
}

/// A claim written apart from its admit (before joint writes): the slot is
/// already ours (no second claim, and our own slot does not close the
/// gate), so the admit is written alone.
#[tokio::test]
async fn slot_already_claimed_goes_straight_to_admit() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[3], None));
    f.expect_joint();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["joint.write_all"]);
    let w = log.writes();
    assert_eq!(w[0].joint().0.len(), 1, "no queue write: {w:#?}");
    let (r, expected) = w[0].joint_request();
    let outbox = w[0].joint().1;
    assert_eq!(expected, Some(1));
    assert_eq!(
        r,
        &admitted(
            request(3, RequestState::Accepted),
            BuildStrategy::Full,
            None
        )
    );
    assert_eq!(outbox.messages, [admitted_build_message(3)]);
}

/// Culprit-finding midpoints bypass coalescing (but not the gate).
#[tokio::test]
async fn bisect_request_older_than_latest_is_not_superseded() {
    let bisect = Request::accepted(rid(2), queue_name(), uri(2), Origin::Bisect, T0);
    let mut f = Fixture::new()
        .with_request(bisect.clone())
        .with_queue(queue(Some(5), &[], None));
    f.expect_joint();
    let (out, log) = run(f, 2).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["joint.write_all"]);
    let w = log.writes();
    assert_eq!(
        w[0].joint_request().0,
        &admitted(bisect, BuildStrategy::Full, None)
    );
}

#[tokio::test]
async fn admit_conflict_with_request_now_processing_republishes_and_keeps_the_slot() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], None));
    f.expect_joint_err(Fixture::joint_conflict("request"), |rows| {
        *rows.request.lock().unwrap() = Some(request(3, RequestState::Processing));
    });
    f.expect_publish();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(
        log.names(),
        ["joint.write_all", "mq.publish"],
        "no release: the slot belongs to the admitted request"
    );
    assert_eq!(w[1].published(), &build_message(3));
}

/// The joint write claimed nothing: a request that ended meanwhile leaves
/// the queue row as it is.
#[tokio::test]
async fn admit_conflict_with_request_now_terminal_claims_nothing() {
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], None));
    f.expect_joint_err(Fixture::joint_conflict("request"), |rows| {
        *rows.request.lock().unwrap() = Some(failed_closed_request(3));
    });
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    assert_eq!(log.names(), ["joint.write_all"]);
}

/// A slot claimed apart from its admit (before joint writes) is released
/// when the request ended meanwhile.
#[tokio::test]
async fn admit_conflict_with_request_now_terminal_releases_a_held_slot() {
    let before = queue(Some(3), &[3], None);
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(before.clone());
    f.expect_joint_err(Fixture::joint_conflict("request"), |rows| {
        *rows.request.lock().unwrap() = Some(failed_closed_request(3));
    });
    f.expect_queue_update();
    let (out, log) = run(f, 3).await;
    assert_eq!(out, Ok(Outcome::Ack));
    let w = log.writes();
    assert_eq!(log.names(), ["joint.write_all", "queues.update"]);
    let (q, expected, outbox) = w[1].queue_update();
    assert_eq!(expected, QUEUE_VERSION);
    assert_eq!(q, &released(before, 3));
    assert_eq!(q.in_flight_count(), 0);
    assert!(outbox.is_empty());
}

#[tokio::test]
async fn admit_conflict_with_request_still_accepted_is_retryable() {
    let mut touched = request(3, RequestState::Accepted);
    touched.version = 2;
    let mut f = Fixture::new()
        .with_request(request(3, RequestState::Accepted))
        .with_queue(queue(Some(3), &[], None));
    f.expect_joint_err(Fixture::joint_conflict("request"), move |rows| {
        *rows.request.lock().unwrap() = Some(touched.clone());
    });
    let (out, log) = run(f, 3).await;
    assert!(matches!(out, Err(StageError::Retryable(_))), "{out:?}");
    assert_eq!(log.names(), ["joint.write_all"]);
}
