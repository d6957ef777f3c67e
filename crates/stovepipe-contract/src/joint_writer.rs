//! Contract of `JointWriter`: several entities of one queue and one outbox
//! written all or nothing, each write refused as its own store would
//! refuse it, bad lists refused whole, and one winner among concurrent
//! writers of the same versions, whichever order their lists name the
//! rows in.

use crate::fixtures::{
    StoreFixture, T0, build, change, counted_commit_hook, deliverable_ids, fact, logged_subjects,
    message, outbox_topic, queue_a, queue_b, request, uri,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use stovepipe_entity::{Build, ProjectName, Queue, Request, Timestamp};
use stovepipe_ports::{EntityWrite, Outbox, StoreError, Stores};
use tokio::task::JoinHandle;

crate::suite!($, joint_writer, joint_writer_tests, StoreFixture, [
    every_write_and_the_outbox_commit_together,
    a_create_commits_with_the_updates,
    a_stale_update_writes_nothing,
    a_missing_row_is_a_mismatch_and_writes_nothing,
    a_taken_create_writes_nothing,
    a_create_beside_a_stale_update_writes_nothing,
    bad_lists_are_invalid_and_write_nothing,
    an_entity_of_another_queue_is_wrong_queue,
    concurrent_joint_writes_of_one_version_have_one_winner,
    joint_and_single_writes_of_one_row_have_one_winner,
]);

fn outbox(subject: &str) -> Outbox {
    Outbox::none()
        .change(change(&queue_a(), subject))
        .publish(message(&outbox_topic(), "j", subject))
}

/// Queue `queue_a`'s row, request 1 and its build `b1`, stored at version 1.
async fn stored(s: &Stores) -> (Queue, Request, Build) {
    let q = Queue::new(queue_a(), T0);
    s.queues.create(&q).await.unwrap();
    let r = request(&queue_a(), 1);
    s.requests.create(&r, Outbox::none()).await.unwrap();
    let b = build(&queue_a(), 1, "b1");
    s.builds.create(&b, Outbox::none()).await.unwrap();
    (q, r, b)
}

/// The next version of each row, marked with `by`.
fn next(q: &Queue, r: &Request, b: &Build, by: &str) -> (Queue, Request, Build) {
    let (mut q, mut r, mut b) = (q.clone(), r.clone(), b.clone());
    q.version += 1;
    q.updated_at = Timestamp(T0.0 + 7);
    r.version += 1;
    r.failure_reason = Some(by.to_owned());
    b.version += 1;
    b.reason = Some(by.to_owned());
    (q, r, b)
}

fn update_queue(queue: &Queue, expected_version: u64) -> EntityWrite {
    EntityWrite::UpdateQueue {
        queue: queue.clone(),
        expected_version,
    }
}

fn update_request(request: &Request, expected_version: u64) -> EntityWrite {
    EntityWrite::UpdateRequest {
        request: request.clone(),
        expected_version,
    }
}

fn update_build(build: &Build, expected_version: u64) -> EntityWrite {
    EntityWrite::UpdateBuild {
        build: build.clone(),
        expected_version,
    }
}

async fn rows(s: &Stores, r: &Request, b: &Build) -> (Queue, Request, Build) {
    (
        s.queues.get_fresh().await.unwrap().unwrap(),
        s.requests.get_fresh(&r.id).await.unwrap().unwrap(),
        s.builds.get_fresh(&b.id).await.unwrap().unwrap(),
    )
}

/// The error refusing `writes`, a joint write that must be refused; their
/// outbox's commit hook must not run.
async fn refused(s: &Stores, writes: Vec<EntityWrite>, subject: &str) -> StoreError {
    let (hook, runs) = counted_commit_hook();
    let written = s.joint.write_all(writes, outbox(subject).on_commit(hook));
    let err = match written.await {
        Ok(()) => panic!("the joint write {subject:?} must be refused"),
        Err(e) => e,
    };
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the refused joint write {subject:?} ran its commit hook"
    );
    err
}

async fn nothing_published(fx: &StoreFixture) {
    assert!(
        logged_subjects(&fx.feed).await.is_empty(),
        "a refused joint write must not append its changes"
    );
    assert!(
        deliverable_ids(&fx.messages, &outbox_topic())
            .await
            .is_empty(),
        "a refused joint write must not publish its messages"
    );
}

async fn every_write_and_the_outbox_commit_together(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let (q2, r2, b2) = next(&q, &r, &b, "joint");
    let writes = vec![
        update_queue(&q2, 1),
        update_request(&r2, 1),
        update_build(&b2, 1),
    ];
    let (hook, runs) = counted_commit_hook();
    let outbox = outbox("joint").on_commit(hook);
    s.joint.write_all(writes, outbox).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the commit hook runs once");
    assert_eq!(rows(&s, &r, &b).await, (q2, r2, b2));
    assert_eq!(logged_subjects(&fx.feed).await, ["joint"]);
    assert_eq!(
        deliverable_ids(&fx.messages, &outbox_topic()).await,
        ["joint"]
    );
}

async fn a_create_commits_with_the_updates(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let (q2, ..) = next(&q, &r, &b, "joint");
    let green = fact(&queue_a(), &uri("c1"), &ProjectName::whole_repo(), 1.0, 1);
    let writes = vec![EntityWrite::CreateFact(green.clone()), update_queue(&q2, 1)];
    s.joint.write_all(writes, outbox("fact")).await.unwrap();
    assert_eq!(s.queues.get_fresh().await.unwrap(), Some(q2.clone()));
    assert_eq!(
        s.facts.get(&green.uri, &green.project).await.unwrap(),
        Some(green)
    );

    let second = request(&queue_a(), 2);
    let mut q3 = q2.clone();
    q3.version += 1;
    let writes = vec![
        EntityWrite::CreateRequest(second.clone()),
        update_queue(&q3, q2.version),
    ];
    s.joint.write_all(writes, Outbox::none()).await.unwrap();
    assert_eq!(
        s.requests.get_fresh(&second.id).await.unwrap(),
        Some(second)
    );
    assert_eq!(s.queues.get_fresh().await.unwrap(), Some(q3));
}

async fn a_stale_update_writes_nothing(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let (q2, r2, b2) = next(&q, &r, &b, "stale");
    // The stale write last, then first: either way nothing is written.
    for writes in [
        vec![
            update_queue(&q2, 1),
            update_build(&b2, 1),
            update_request(&r2, 9),
        ],
        vec![
            update_request(&r2, 9),
            update_build(&b2, 1),
            update_queue(&q2, 1),
        ],
    ] {
        let err = refused(&s, writes, "stale").await;
        assert!(
            matches!(
                &err,
                StoreError::VersionMismatch {
                    entity: "request",
                    expected: 9,
                    ..
                }
            ),
            "the stale request's write is the one refused, got {err:?}"
        );
        assert_eq!(rows(&s, &r, &b).await, (q.clone(), r.clone(), b.clone()));
    }
    nothing_published(&fx).await;
}

async fn a_missing_row_is_a_mismatch_and_writes_nothing(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let (q2, r2, _) = next(&q, &r, &b, "missing");
    let unknown = build(&queue_a(), 1, "never-created");
    let writes = vec![
        update_queue(&q2, 1),
        update_request(&r2, 1),
        update_build(&unknown, 1),
    ];
    let err = refused(&s, writes, "missing").await;
    assert!(
        matches!(
            &err,
            StoreError::VersionMismatch {
                entity: "build",
                ..
            }
        ),
        "got {err:?}"
    );
    assert_eq!(rows(&s, &r, &b).await, (q, r, b));
    nothing_published(&fx).await;
}

async fn a_taken_create_writes_nothing(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let first = fact(&queue_a(), &uri("c1"), &ProjectName::whole_repo(), 1.0, 1);
    s.facts.create(&first, Outbox::none()).await.unwrap();
    let (q2, r2, _) = next(&q, &r, &b, "taken");
    let mut second = first.clone();
    second.degree = stovepipe_entity::Degree::BROKEN;
    let writes = vec![
        update_request(&r2, 1),
        EntityWrite::CreateFact(second),
        update_queue(&q2, 1),
    ];
    let err = refused(&s, writes, "taken").await;
    assert!(
        matches!(&err, StoreError::AlreadyExists { entity: "fact", .. }),
        "got {err:?}"
    );
    assert_eq!(rows(&s, &r, &b).await, (q, r, b));
    assert_eq!(
        s.facts.get(&first.uri, &first.project).await.unwrap(),
        Some(first),
        "the first fact stays"
    );
    nothing_published(&fx).await;
}

async fn a_create_beside_a_stale_update_writes_nothing(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let (q2, ..) = next(&q, &r, &b, "stale");
    let green = fact(&queue_a(), &uri("c1"), &ProjectName::whole_repo(), 1.0, 1);
    let writes = vec![EntityWrite::CreateFact(green.clone()), update_queue(&q2, 5)];
    let err = refused(&s, writes, "stale").await;
    assert!(
        matches!(
            &err,
            StoreError::VersionMismatch {
                entity: "queue",
                ..
            }
        ),
        "got {err:?}"
    );
    assert_eq!(s.facts.get(&green.uri, &green.project).await.unwrap(), None);
    assert_eq!(s.queues.get_fresh().await.unwrap(), Some(q));
    nothing_published(&fx).await;
}

async fn bad_lists_are_invalid_and_write_nothing(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let (q2, r2, _) = next(&q, &r, &b, "bad");
    let whole = ProjectName::whole_repo();
    let lists = [
        (vec![], "at least one"),
        (
            vec![
                EntityWrite::CreateFact(fact(&queue_a(), &uri("c1"), &whole, 1.0, 1)),
                EntityWrite::CreateRequest(request(&queue_a(), 2)),
                update_queue(&q2, 1),
            ],
            "at most one create",
        ),
        (
            vec![update_request(&r2, 1), update_request(&r2, 1)],
            "at most once",
        ),
    ];
    for (writes, expected) in lists {
        let err = refused(&s, writes, "bad").await;
        match &err {
            StoreError::Invalid(invalid) => assert!(
                invalid.expected.contains(expected),
                "the error says what a list must be ({expected}), got {err}"
            ),
            other => panic!("a bad list is Invalid, got {other:?}"),
        }
    }
    assert_eq!(rows(&s, &r, &b).await, (q, r, b));
    assert_eq!(
        s.requests.get(&request(&queue_a(), 2).id).await.unwrap(),
        None
    );
    nothing_published(&fx).await;
}

async fn an_entity_of_another_queue_is_wrong_queue(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let (q2, ..) = next(&q, &r, &b, "wrong");
    let other = request(&queue_b(), 1);
    let writes = vec![update_queue(&q2, 1), EntityWrite::CreateRequest(other)];
    let err = refused(&s, writes, "wrong").await;
    assert!(matches!(err, StoreError::WrongQueue { .. }), "got {err:?}");
    assert_eq!(rows(&s, &r, &b).await, (q, r, b));
    nothing_published(&fx).await;
}

/// The one writer of `tasks` (each answering its number) that succeeded;
/// every other must have lost with `VersionMismatch`.
async fn the_one_winner(tasks: Vec<JoinHandle<Result<i64, StoreError>>>) -> i64 {
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(writer) => winners.push(writer),
            Err(StoreError::VersionMismatch { .. }) => {}
            Err(other) => panic!("a losing writer must see VersionMismatch, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    winners[0]
}

/// Eight writers of the queue row and the request from version 1, half of
/// them listing the request first: one wins, with both its rows; the others
/// see `VersionMismatch` (never a deadlock or another error).
async fn concurrent_joint_writes_of_one_version_have_one_winner(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let joint = Arc::clone(&s.joint);
            let (mut q2, r2, _) = next(&q, &r, &b, &format!("writer {i}"));
            q2.updated_at = Timestamp(T0.0 + i);
            let mut writes = vec![update_queue(&q2, 1), update_request(&r2, 1)];
            if i % 2 == 1 {
                writes.reverse();
            }
            tokio::spawn(async move { joint.write_all(writes, Outbox::none()).await.map(|()| i) })
        })
        .collect();
    let winner = the_one_winner(tasks).await;
    let (q_now, r_now, _) = rows(&s, &r, &b).await;
    assert_eq!(
        q_now.updated_at,
        Timestamp(T0.0 + winner),
        "the winner's queue row"
    );
    assert_eq!(
        r_now.failure_reason.as_deref(),
        Some(format!("writer {winner}").as_str()),
        "the winner's request"
    );
}

/// A joint write and single writes of the same request from one version:
/// one of them wins.
async fn joint_and_single_writes_of_one_row_have_one_winner(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let (q, r, b) = stored(&s).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let stores = s.clone();
            let (q2, r2, b2) = next(&q, &r, &b, &format!("writer {i}"));
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let writes = vec![
                        update_build(&b2, 1),
                        update_request(&r2, 1),
                        update_queue(&q2, 1),
                    ];
                    stores.joint.write_all(writes, Outbox::none()).await
                } else {
                    stores.requests.update(&r2, 1, Outbox::none()).await
                }
                .map(|()| i)
            })
        })
        .collect();
    let winner = the_one_winner(tasks).await;
    let (q_now, r_now, b_now) = rows(&s, &r, &b).await;
    assert_eq!(
        r_now.failure_reason.as_deref(),
        Some(format!("writer {winner}").as_str())
    );
    let joint_won = winner % 2 == 0;
    assert_eq!(q_now.version, if joint_won { 2 } else { 1 });
    assert_eq!(b_now.version, if joint_won { 2 } else { 1 });
}
