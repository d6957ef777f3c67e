//! Injected failures between any two writes converge after redelivery:
//! nothing lost, no leaked slot, the same facts and bookmark as a clean run.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod support;

use std::time::Duration;

use stovepipe_app::IngestError;
use stovepipe_entity::{BuildStatus, Degree, RequestState};
use support::World;

/// Ingest as a poller would: a failed call is tried again on the next poll.
async fn ingest_until_ok(w: &World) {
    for _ in 0..5 {
        match w.pipeline.ingest().ingest(w.queue.as_str(), None).await {
            Ok(_) => return,
            Err(IngestError::Unavailable(_)) => {}
            Err(e) => panic!("ingest failed permanently: {e}"),
        }
    }
    panic!("ingest kept failing");
}

/// A green A, a broken B, a green C pushed while B builds; optionally with
/// the `fault`-th write failing. `promote`: the queue has a promotion ref
/// (record then moves the bookmark and releases the slot in two writes,
/// otherwise in one). Returns the writes the run performed.
async fn run(fault: Option<usize>, promote: bool) -> u64 {
    let w = World::new(|c| {
        if !promote {
            c.promotion_ref = None;
        }
    })
    .await;
    w.runner.set_polls_before_finish(1);
    let start = w.memory().writes_performed();
    if let Some(n) = fault {
        w.memory().fail_writes_after(n);
    }
    w.push("A");
    ingest_until_ok(&w).await;
    w.settle().await;
    let b = w.push("B");
    w.runner.set_outcome(&b, BuildStatus::Failed);
    ingest_until_ok(&w).await;
    w.step().await;
    w.push("C");
    ingest_until_ok(&w).await;
    w.settle().await;
    // The poller notices the head again; the reconcile loop runs.
    ingest_until_ok(&w).await;
    w.clock.advance(Duration::from_mins(2));
    w.pipeline.reconciler().reconcile_all().await.unwrap();
    w.settle().await;
    let writes = w.memory().writes_performed() - start;

    let context = format!("fault at write {fault:?}, promotion {promote}");
    let requests = w.all_requests().await;
    assert!(
        requests.iter().all(|r| r.state.is_terminal()),
        "{context}: {requests:#?}"
    );
    assert!(
        requests.iter().all(|r| !r.failed_closed),
        "{context}: a single transient fault must not fail a request: {requests:#?}"
    );
    let q = w.queue_row().await;
    assert_eq!(q.in_flight_count(), 0, "{context}: leaked slot");
    assert_eq!(
        q.last_green.as_ref().map(|b| b.uri.clone()),
        Some(w.uri("C")),
        "{context}"
    );
    let promoted = promote.then(|| w.uri("C"));
    assert_eq!(w.repo.promoted(), promoted, "{context}");
    assert!(w.fact(&w.uri("A")).await.unwrap().is_green(), "{context}");
    assert!(w.fact(&w.uri("C")).await.unwrap().is_green(), "{context}");
    // A fault that delays B's admission until C arrived lets coalescing skip
    // B, which is correct; otherwise B is validated broken. Nothing else.
    let b = requests.iter().find(|r| r.uri == w.uri("B")).unwrap();
    match b.state {
        RequestState::Failed => {
            assert_eq!(
                w.fact(&w.uri("B")).await.unwrap().degree,
                Degree::BROKEN,
                "{context}"
            );
        }
        RequestState::Superseded => assert!(w.fact(&w.uri("B")).await.is_none(), "{context}"),
        other => panic!("{context}: B ended {other}"),
    }
    assert_eq!(
        requests.len(),
        3,
        "{context}: one request per head: {requests:#?}"
    );
    writes
}

#[tokio::test]
async fn a_fault_at_any_write_converges() {
    for promote in [true, false] {
        let clean = run(None, promote).await;
        assert!(clean > 20, "the scenario performs many writes ({clean})");
        for n in 0..usize::try_from(clean).unwrap() {
            run(Some(n), promote).await;
        }
    }
}
