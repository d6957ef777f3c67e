//! Contract of `RequestStore`: create/get, duplicates, conditional updates
//! (a stale version and a missing row are both `VersionMismatch`), the
//! transactional outbox, and queue binding.
//!
//! Does not own: listing requests (see `read_model`).

use crate::fixtures::{
    StoreFixture, T0, change, counted_commit_hook, deliverable_ids, logged_subjects, message,
    outbox_topic, queue_a, queue_b, release_spec, request, request_for, uri,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stovepipe_entity::{EventType, HookContract, HookName, Timestamp};
use stovepipe_ports::{CommitHook, Outbox, StoreError, Topic};

crate::suite!($, request_store, request_store_tests, StoreFixture, [
    create_then_get_round_trips,
    get_unknown_is_none,
    duplicate_create_is_already_exists_and_keeps_the_first,
    update_with_expected_version_replaces_the_row,
    update_with_stale_version_is_mismatch_and_changes_nothing,
    update_of_missing_row_is_mismatch,
    successful_writes_commit_their_outbox,
    one_write_publishes_every_message_in_partition_order,
    failed_writes_commit_no_outbox,
    the_commit_hook_runs_once_at_commit_and_only_for_a_committed_write,
    hook_events_are_published_only_while_a_hook_is_live,
    entity_of_another_queue_is_wrong_queue,
    queues_are_isolated,
    concurrent_updates_from_one_version_have_one_winner,
]);

fn outbox(subject: &str) -> Outbox {
    Outbox::none()
        .change(change(&queue_a(), subject))
        .publish(message(&outbox_topic(), "p", subject))
}

async fn create_then_get_round_trips(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let r = request(&queue_a(), 1);
    s.requests.create(&r, Outbox::none()).await.unwrap();
    assert_eq!(s.requests.get(&r.id).await.unwrap(), Some(r));
}

async fn get_unknown_is_none(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    assert_eq!(
        s.requests.get(&request(&queue_a(), 7).id).await.unwrap(),
        None
    );
}

async fn duplicate_create_is_already_exists_and_keeps_the_first(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let first = request(&queue_a(), 1);
    s.requests.create(&first, Outbox::none()).await.unwrap();
    let second = request_for(&queue_a(), 1, &uri("other"));
    let err = s
        .requests
        .create(&second, Outbox::none())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { .. }),
        "duplicate create must be AlreadyExists, got {err:?}"
    );
    assert_eq!(s.requests.get(&first.id).await.unwrap(), Some(first));
}

async fn update_with_expected_version_replaces_the_row(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let mut r = request(&queue_a(), 1);
    s.requests.create(&r, Outbox::none()).await.unwrap();
    r.supersede(Timestamp(5)).unwrap();
    s.requests.update(&r, 1, Outbox::none()).await.unwrap();
    assert_eq!(s.requests.get(&r.id).await.unwrap(), Some(r.clone()));
    // And again from the new version.
    let mut again = r.clone();
    again.failure_reason = Some("second write".into());
    again.version = 3;
    s.requests.update(&again, 2, Outbox::none()).await.unwrap();
    assert_eq!(s.requests.get(&r.id).await.unwrap(), Some(again));
}

async fn update_with_stale_version_is_mismatch_and_changes_nothing(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let original = request(&queue_a(), 1);
    s.requests.create(&original, Outbox::none()).await.unwrap();
    let mut moved = original.clone();
    moved.supersede(Timestamp(5)).unwrap();
    // A CAS that ignores the expected version would accept this.
    for stale in [0, 2, 7] {
        let err = s
            .requests
            .update(&moved, stale, Outbox::none())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::VersionMismatch { expected, .. } if expected == stale),
            "update expecting version {stale} of a row at version 1 must be VersionMismatch, got {err:?}"
        );
    }
    assert_eq!(s.requests.get(&original.id).await.unwrap(), Some(original));
}

async fn update_of_missing_row_is_mismatch(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let mut r = request(&queue_a(), 3);
    r.supersede(Timestamp(5)).unwrap();
    let err = s.requests.update(&r, 1, outbox("ghost")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::VersionMismatch { .. }),
        "update of a never-created request must be VersionMismatch, got {err:?}"
    );
    assert_eq!(
        s.requests.get(&r.id).await.unwrap(),
        None,
        "update must not upsert"
    );
    assert!(logged_subjects(&fx.feed).await.is_empty());
}

async fn successful_writes_commit_their_outbox(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let mut r = request(&queue_a(), 1);
    s.requests.create(&r, outbox("created")).await.unwrap();
    r.supersede(Timestamp(5)).unwrap();
    let two_changes = outbox("updated").change(change(&queue_a(), "updated-2"));
    s.requests.update(&r, 1, two_changes).await.unwrap();
    assert_eq!(
        logged_subjects(&fx.feed).await,
        ["created", "updated", "updated-2"],
        "change rows are appended with the write, in order"
    );
    assert_eq!(
        deliverable_ids(&fx.messages, &outbox_topic()).await,
        ["created"],
        "the partition head is the first outbox message"
    );
}

/// One outbox with several messages to several partitions, interleaved:
/// every message is published, and each partition delivers its messages in
/// the outbox's order.
async fn one_write_publishes_every_message_in_partition_order(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let topic = outbox_topic();
    let outbox = Outbox::none()
        .publish(message(&topic, "p2", "b1"))
        .publish(message(&topic, "p1", "a1"))
        .publish(message(&topic, "p2", "b2"))
        .publish(message(&topic, "p1", "a2"))
        .change(change(&queue_a(), "one"))
        .change(change(&queue_a(), "two"));
    s.requests
        .create(&request(&queue_a(), 1), outbox)
        .await
        .unwrap();
    assert_eq!(logged_subjects(&fx.feed).await, ["one", "two"]);
    let mut delivered = Vec::new();
    for _ in 0..3 {
        let heads = fx
            .messages
            .receive(&topic, "contract-observer", 10, Duration::from_mins(1))
            .await
            .unwrap();
        let mut ids: Vec<String> = heads.iter().map(|d| d.message_id.clone()).collect();
        ids.sort();
        delivered.push(ids);
        for d in &heads {
            fx.messages.ack(d).await.unwrap();
        }
    }
    assert_eq!(
        delivered,
        [vec!["a1", "b1"], vec!["a2", "b2"], vec![]],
        "each partition's head first, then its next message"
    );
}

async fn failed_writes_commit_no_outbox(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let r = request(&queue_a(), 1);
    s.requests.create(&r, Outbox::none()).await.unwrap();
    s.requests
        .create(&r, outbox("dup-create"))
        .await
        .unwrap_err();
    s.requests
        .update(&r, 9, outbox("stale-update"))
        .await
        .unwrap_err();
    assert!(
        logged_subjects(&fx.feed).await.is_empty(),
        "a failed write must not append its changes"
    );
    assert!(
        deliverable_ids(&fx.messages, &outbox_topic())
            .await
            .is_empty(),
        "a failed write must not publish its messages"
    );
}

/// A write's commit hook runs once, by the time the call returns, and
/// before a consumer of this process waiting for the write's message is
/// woken (that is what lets the pipeline's next stage find the rows the
/// writer kept); a refused write never runs it.
async fn the_commit_hook_runs_once_at_commit_and_only_for_a_committed_write(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let mut r = request(&queue_a(), 1);
    let (hook, runs) = counted_commit_hook();
    s.requests
        .create(&r, outbox("created").on_commit(hook.clone()))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "ran once, by the return");
    hook.run();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a hook runs at most once");

    let (hook, runs) = counted_commit_hook();
    let dup = s.requests.create(&r, outbox("dup").on_commit(hook.clone()));
    dup.await.unwrap_err();
    let stale = s.requests.update(&r, 9, outbox("stale").on_commit(hook));
    stale.await.unwrap_err();
    assert_eq!(runs.load(Ordering::SeqCst), 0, "refused writes run no hook");

    // A topic nothing was published to, so that only this write wakes it.
    let topic = Topic::new("commit-hook");
    let ran = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (messages, ran, topic) = (fx.messages.clone(), ran.clone(), topic.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            messages.wait(&topic, Duration::from_secs(30)).await;
            (ran.load(Ordering::SeqCst), began.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.supersede(Timestamp(5)).unwrap();
    let hook = {
        let ran = ran.clone();
        CommitHook::new(move || ran.store(true, Ordering::SeqCst))
    };
    let outbox = Outbox::none()
        .publish(message(&topic, "p", "updated"))
        .on_commit(hook);
    let update = s.requests.update(&r, 1, outbox);
    update.await.unwrap();
    let (ran_when_woken, woken_after) = waiter.await.unwrap();
    assert!(
        woken_after < Duration::from_secs(30),
        "the waiter was woken by the write"
    );
    assert!(ran_when_woken, "the hook ran before the consumer was woken");
}

/// An outbox's hook events reach topic `hook` only when, at commit, some
/// hook has a live release; its messages and changes commit either way,
/// also when the hook events are all it publishes.
async fn hook_events_are_published_only_while_a_hook_is_live(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let hook_topic = Topic::hook();
    let hook_only = |subject: &str| {
        Outbox::none()
            .change(change(&queue_a(), subject))
            .publish_hook_event(message(&hook_topic, subject, subject))
    };
    let write =
        |subject: &str| hook_only(subject).publish(message(&outbox_topic(), subject, subject));
    s.requests
        .create(&request(&queue_a(), 1), write("no-hook"))
        .await
        .unwrap();
    s.requests
        .create(&request(&queue_a(), 4), hook_only("quiet"))
        .await
        .unwrap();

    let hook = HookName::new("contract-hook").unwrap();
    let recorded =
        HookContract::new([EventType::ValidationRecorded].into(), BTreeSet::new()).unwrap();
    fx.hooks.upsert_hook(&hook, &recorded, T0).await.unwrap();
    s.requests
        .create(&request(&queue_a(), 2), write("no-release"))
        .await
        .unwrap();

    fx.hooks
        .create_release(&hook, &release_spec("http://hooks.example/"), "ops", T0)
        .await
        .unwrap();
    s.requests
        .create(&request(&queue_a(), 3), write("live"))
        .await
        .unwrap();
    s.requests
        .create(&request(&queue_a(), 5), hook_only("loud"))
        .await
        .unwrap();

    assert_eq!(
        logged_subjects(&fx.feed).await,
        ["no-hook", "quiet", "no-release", "live", "loud"],
        "every write's changes committed"
    );
    assert_eq!(
        deliverable_ids(&fx.messages, &outbox_topic()).await,
        ["live", "no-hook", "no-release"],
        "every write's messages were published"
    );
    assert_eq!(
        deliverable_ids(&fx.messages, &hook_topic).await,
        ["live", "loud"],
        "hook events only once a hook had a live release"
    );
}

async fn entity_of_another_queue_is_wrong_queue(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let of_b = request(&queue_b(), 1);
    let wrong = |r: Result<_, StoreError>| matches!(r, Err(StoreError::WrongQueue { .. }));
    assert!(wrong(a.requests.create(&of_b, outbox("x")).await));
    assert!(wrong(a.requests.get(&of_b.id).await.map(|_| ())));
    assert!(wrong(a.requests.update(&of_b, 1, outbox("y")).await));
    // A request whose queue field and id disagree is refused too.
    let mut mixed = request(&queue_a(), 2);
    mixed.queue = queue_b();
    assert!(wrong(a.requests.create(&mixed, Outbox::none()).await));
    assert!(logged_subjects(&fx.feed).await.is_empty());
}

async fn queues_are_isolated(fx: StoreFixture) {
    let a = fx.stores.for_queue(&queue_a());
    let b = fx.stores.for_queue(&queue_b());
    let ra = request_for(&queue_a(), 1, &uri("same"));
    let rb = request_for(&queue_b(), 1, &uri("same"));
    a.requests.create(&ra, Outbox::none()).await.unwrap();
    // Same number in another queue is another request.
    b.requests.create(&rb, Outbox::none()).await.unwrap();
    assert_eq!(a.requests.get(&ra.id).await.unwrap(), Some(ra));
    assert_eq!(b.requests.get(&rb.id).await.unwrap(), Some(rb));
}

async fn concurrent_updates_from_one_version_have_one_winner(fx: StoreFixture) {
    let s = fx.stores.for_queue(&queue_a());
    let r = request(&queue_a(), 1);
    s.requests.create(&r, Outbox::none()).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&s.requests);
            let mut mine = r.clone();
            mine.failure_reason = Some(format!("writer {i}"));
            mine.version = 2;
            tokio::spawn(async move { store.update(&mine, 1, Outbox::none()).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => wins += 1,
            Err(StoreError::VersionMismatch { .. }) => {}
            Err(e) => panic!("a losing writer must see VersionMismatch, got {e:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one of 8 concurrent CAS writers wins");
}
