//! Contract of `MessageQueue`: dedup, strict per-partition order with one
//! delivery at a time, leases and takeover, hold as a barrier, retries,
//! dead-lettering (with the `<topic>_dlq` copy), dead-letter admin,
//! wake-ups and `next_visible_at`.
//!
//! Time: holds, retries and leases are measured by the adapter's clock,
//! which the fixture's `advance` moves; no case sleeps for them. Only
//! `wait` is measured in real time.
//!
//! Does not own: the consumer runtime's policies (backoff, when to give
//! up); those are the app's.

use crate::fixtures::{MqFixture, message};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stovepipe_ports::{Delivery, MessageQueue, MqError, Topic};

crate::suite!($, message_queue, message_queue_tests, MqFixture, [
    publish_then_receive_delivers_attempt_one,
    duplicate_publish_is_deduplicated,
    same_id_in_another_partition_or_topic_is_distinct,
    partition_delivers_in_order_one_at_a_time,
    partitions_are_independent,
    receive_respects_max,
    hold_is_a_barrier_and_does_not_count_an_attempt,
    retry_counts_attempts_and_keeps_the_last_error,
    reject_dead_letters_and_copies_to_the_dlq_topic,
    reject_from_a_dlq_topic_only_parks_it,
    dead_letters_are_oldest_first_and_filter_by_topic,
    requeue_dead_letter_publishes_again_with_attempts_reset,
    purge_dead_letter_deletes_it,
    expired_lease_is_taken_over_and_the_old_holder_loses,
    expired_lease_counts_an_attempt_even_without_takeover,
    renew_extends_the_lease,
    concurrent_consumers_never_share_a_partition_head,
    concurrent_acks_each_get_their_own_answer,
    wake_makes_a_held_head_visible_now,
    wait_returns_promptly_after_a_publish,
    next_visible_at_reports_the_earliest_head,
]);

const LEASE: Duration = Duration::from_secs(30);

fn topic() -> Topic {
    Topic::new("work")
}

async fn publish(mq: &Arc<dyn MessageQueue>, t: &Topic, key: &str, id: &str) -> bool {
    mq.publish(message(t, key, id)).await.unwrap()
}

async fn recv(mq: &Arc<dyn MessageQueue>, t: &Topic, consumer: &str, max: usize) -> Vec<Delivery> {
    mq.receive(t, consumer, max, LEASE).await.unwrap()
}

/// The single delivery `receive` must return now.
async fn recv_one(mq: &Arc<dyn MessageQueue>, t: &Topic, consumer: &str) -> Delivery {
    let mut got = recv(mq, t, consumer, 10).await;
    assert_eq!(
        got.len(),
        1,
        "expected exactly one deliverable message on {t}, got {:?}",
        ids(&got)
    );
    got.remove(0)
}

fn ids(ds: &[Delivery]) -> Vec<String> {
    let mut ids: Vec<_> = ds.iter().map(|d| d.message_id.clone()).collect();
    ids.sort();
    ids
}

fn lease_lost<T: std::fmt::Debug>(r: &Result<T, MqError>, what: &str) {
    assert!(
        matches!(r, Err(MqError::LeaseLost(_))),
        "{what} by a holder whose lease was lost must be LeaseLost, got {r:?}"
    );
}

async fn publish_then_receive_delivers_attempt_one(fx: MqFixture) {
    let mq = &fx.queue;
    assert!(
        publish(mq, &topic(), "p", "m1").await,
        "a new message is published"
    );
    let d = recv_one(mq, &topic(), "c1").await;
    assert_eq!(d.topic, topic());
    assert_eq!(d.partition_key, "p");
    assert_eq!(d.message_id, "m1");
    assert_eq!(d.payload, serde_json::json!({ "id": "m1" }));
    assert_eq!(d.attempt, 1, "the first delivery is attempt 1");
    assert_eq!(d.last_error, None);
    assert!(
        recv(mq, &topic(), "c2", 10).await.is_empty(),
        "a leased head is not delivered again"
    );
    mq.ack(&d).await.unwrap();
    assert!(
        recv(mq, &topic(), "c1", 10).await.is_empty(),
        "an acked message is gone"
    );
}

async fn duplicate_publish_is_deduplicated(fx: MqFixture) {
    let mq = &fx.queue;
    assert!(publish(mq, &topic(), "p", "m1").await);
    assert!(
        !publish(mq, &topic(), "p", "m1").await,
        "a duplicate publish returns false"
    );
    let d = recv_one(mq, &topic(), "c1").await;
    assert!(
        !publish(mq, &topic(), "p", "m1").await,
        "a duplicate of a leased message is still deduplicated"
    );
    mq.ack(&d).await.unwrap();
    assert!(
        recv(mq, &topic(), "c1", 10).await.is_empty(),
        "the duplicates wrote nothing"
    );
}

async fn same_id_in_another_partition_or_topic_is_distinct(fx: MqFixture) {
    let mq = &fx.queue;
    let other = Topic::new("other");
    assert!(publish(mq, &topic(), "p", "m1").await);
    assert!(
        publish(mq, &topic(), "q", "m1").await,
        "dedup is per partition"
    );
    assert!(publish(mq, &other, "p", "m1").await, "dedup is per topic");
    assert_eq!(recv(mq, &topic(), "c", 10).await.len(), 2);
    assert_eq!(recv(mq, &other, "c", 10).await.len(), 1);
}

async fn partition_delivers_in_order_one_at_a_time(fx: MqFixture) {
    let mq = &fx.queue;
    for id in ["m1", "m2", "m3"] {
        publish(mq, &topic(), "p", id).await;
    }
    for id in ["m1", "m2", "m3"] {
        let d = recv_one(mq, &topic(), "c").await;
        assert_eq!(d.message_id, id, "publish order within a partition");
        assert!(
            recv(mq, &topic(), "c-other", 10).await.is_empty(),
            "the next message waits while the head {id} is leased"
        );
        mq.ack(&d).await.unwrap();
    }
}

async fn partitions_are_independent(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p1", "a1").await;
    publish(mq, &topic(), "p1", "a2").await;
    publish(mq, &topic(), "p2", "b1").await;
    let first = recv(mq, &topic(), "c", 10).await;
    assert_eq!(
        ids(&first),
        ["a1", "b1"],
        "each partition's head, in parallel"
    );
    let b1 = first.iter().find(|d| d.message_id == "b1").unwrap();
    mq.ack(b1).await.unwrap();
    assert!(
        recv(mq, &topic(), "c", 10).await.is_empty(),
        "acking p2 does not release p1's next message"
    );
}

async fn receive_respects_max(fx: MqFixture) {
    let mq = &fx.queue;
    for p in 0..5 {
        publish(mq, &topic(), &format!("p{p}"), "m").await;
    }
    assert_eq!(recv(mq, &topic(), "c", 2).await.len(), 2);
    assert_eq!(recv(mq, &topic(), "c", 10).await.len(), 3);
    assert!(recv(mq, &topic(), "c", 10).await.is_empty());
}

async fn hold_is_a_barrier_and_does_not_count_an_attempt(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    publish(mq, &topic(), "p", "m2").await;
    let d = recv_one(mq, &topic(), "c").await;
    mq.hold(&d, Duration::from_secs(10)).await.unwrap();
    assert!(
        recv(mq, &topic(), "c", 10).await.is_empty(),
        "a held head blocks its partition: m2 must not be delivered past it"
    );
    (fx.advance)(Duration::from_secs(9));
    assert!(
        recv(mq, &topic(), "c", 10).await.is_empty(),
        "still held after 9 of 10 s"
    );
    (fx.advance)(Duration::from_secs(1));
    let again = recv_one(mq, &topic(), "c").await;
    assert_eq!(again.message_id, "m1", "the held message is still the head");
    assert_eq!(again.attempt, 1, "a hold does not count an attempt");
    assert_eq!(again.last_error, None);
    lease_lost(&mq.ack(&d).await, "ack of the delivery that was held");
    mq.ack(&again).await.unwrap();
    assert_eq!(recv_one(mq, &topic(), "c").await.message_id, "m2");
}

async fn retry_counts_attempts_and_keeps_the_last_error(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    publish(mq, &topic(), "p", "m2").await;
    let d = recv_one(mq, &topic(), "c").await;
    mq.retry(&d, Duration::from_secs(5), "boom").await.unwrap();
    assert!(
        recv(mq, &topic(), "c", 10).await.is_empty(),
        "postponed, and still the head"
    );
    (fx.advance)(Duration::from_secs(5));
    let d2 = recv_one(mq, &topic(), "c").await;
    assert_eq!((d2.message_id.as_str(), d2.attempt), ("m1", 2));
    assert_eq!(d2.last_error.as_deref(), Some("boom"));
    mq.retry(&d2, Duration::ZERO, "bang").await.unwrap();
    let d3 = recv_one(mq, &topic(), "c").await;
    assert_eq!(d3.attempt, 3);
    assert_eq!(
        d3.last_error.as_deref(),
        Some("bang"),
        "the last error is kept"
    );
}

async fn reject_dead_letters_and_copies_to_the_dlq_topic(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    publish(mq, &topic(), "p", "m2").await;
    let d = recv_one(mq, &topic(), "c").await;
    mq.retry(&d, Duration::ZERO, "first").await.unwrap();
    let d = recv_one(mq, &topic(), "c").await;
    let dead = mq.reject(&d, "fatal").await.unwrap();
    assert_eq!(dead.topic, topic());
    assert_eq!(dead.partition_key, "p");
    assert_eq!(dead.message_id, "m1");
    assert_eq!(dead.payload, serde_json::json!({ "id": "m1" }));
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.last_error, "fatal");
    assert_eq!(
        mq.dead_letters(None, 10).await.unwrap(),
        std::slice::from_ref(&dead)
    );
    assert_eq!(
        recv_one(mq, &topic(), "c").await.message_id,
        "m2",
        "the rejected head left its partition"
    );
    let copy = recv_one(mq, &topic().dlq(), "reconciler").await;
    assert_eq!(copy.topic, Topic::new("work_dlq"));
    assert_eq!(
        (copy.partition_key.as_str(), copy.message_id.as_str()),
        ("p", "m1")
    );
    assert_eq!(copy.payload, dead.payload);
    assert_eq!(copy.last_error.as_deref(), Some("fatal"));
}

async fn reject_from_a_dlq_topic_only_parks_it(fx: MqFixture) {
    let mq = &fx.queue;
    let dlq = topic().dlq();
    publish(mq, &dlq, "p", "m1").await;
    let d = recv_one(mq, &dlq, "reconciler").await;
    let dead = mq.reject(&d, "still broken").await.unwrap();
    assert_eq!(dead.topic, dlq);
    assert_eq!(
        mq.dead_letters(Some(dlq.clone()), 10).await.unwrap(),
        [dead]
    );
    assert!(recv(mq, &dlq, "c", 10).await.is_empty());
    assert!(
        recv(mq, &dlq.dlq(), "c", 10).await.is_empty(),
        "a dead-letter topic's rejects are not copied to another dlq"
    );
}

async fn dead_letters_are_oldest_first_and_filter_by_topic(fx: MqFixture) {
    let mq = &fx.queue;
    let (x, y) = (Topic::new("x"), Topic::new("y"));
    for (t, id) in [(&x, "x1"), (&y, "y1"), (&x, "x2")] {
        publish(mq, t, id, id).await;
        let d = recv_one(mq, t, "c").await;
        mq.reject(&d, "no").await.unwrap();
    }
    let all: Vec<_> = mq
        .dead_letters(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    assert_eq!(all, ["x1", "y1", "x2"], "oldest first");
    let only_x: Vec<_> = mq
        .dead_letters(Some(x.clone()), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.message_id)
        .collect();
    assert_eq!(only_x, ["x1", "x2"]);
    assert_eq!(mq.dead_letters(None, 1).await.unwrap().len(), 1, "limit");
}

async fn requeue_dead_letter_publishes_again_with_attempts_reset(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    let d = recv_one(mq, &topic(), "c").await;
    mq.retry(&d, Duration::ZERO, "e1").await.unwrap();
    let d = recv_one(mq, &topic(), "c").await;
    let dead = mq.reject(&d, "e2").await.unwrap();
    mq.requeue_dead_letter(dead.id).await.unwrap();
    assert!(
        mq.dead_letters(None, 10).await.unwrap().is_empty(),
        "requeue removes it"
    );
    let again = recv_one(mq, &topic(), "c").await;
    assert_eq!(again.message_id, "m1");
    assert_eq!(again.partition_key, "p");
    assert_eq!(again.attempt, 1, "attempts start again");
    assert_eq!(
        again.last_error.as_deref(),
        Some("e2"),
        "the reason it died stays visible"
    );
    assert!(!again.is_first(), "a requeued dead letter was had before");
    let unknown = mq.requeue_dead_letter(dead.id).await;
    assert!(
        matches!(unknown, Err(MqError::NotFound(_))),
        "got {unknown:?}"
    );
    let unknown = mq.requeue_dead_letter(987_654).await;
    assert!(
        matches!(unknown, Err(MqError::NotFound(_))),
        "got {unknown:?}"
    );
}

async fn purge_dead_letter_deletes_it(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    let d = recv_one(mq, &topic(), "c").await;
    let dead = mq.reject(&d, "no").await.unwrap();
    mq.purge_dead_letter(dead.id).await.unwrap();
    assert!(mq.dead_letters(None, 10).await.unwrap().is_empty());
    let again = mq.purge_dead_letter(dead.id).await;
    assert!(matches!(again, Err(MqError::NotFound(_))), "got {again:?}");
    assert!(
        recv(mq, &topic(), "c", 10).await.is_empty(),
        "purge does not requeue"
    );
}

async fn expired_lease_is_taken_over_and_the_old_holder_loses(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    let old = recv_one(mq, &topic(), "c1").await;
    (fx.advance)(LEASE);
    let new = recv_one(mq, &topic(), "c2").await;
    assert_eq!(new.message_id, "m1");
    assert_eq!(new.attempt, 2, "an expired lease counts as an attempt");
    assert_ne!(
        new.delivery_id, old.delivery_id,
        "a new lease has a new delivery id"
    );
    lease_lost(&mq.ack(&old).await, "ack");
    lease_lost(&mq.hold(&old, Duration::ZERO).await, "hold");
    lease_lost(&mq.retry(&old, Duration::ZERO, "x").await, "retry");
    lease_lost(&mq.reject(&old, "x").await, "reject");
    lease_lost(&mq.renew(&old, LEASE).await, "renew");
    assert!(mq.dead_letters(None, 10).await.unwrap().is_empty());
    mq.ack(&new).await.unwrap();
    assert!(recv(mq, &topic(), "c1", 10).await.is_empty());
}

async fn expired_lease_counts_an_attempt_even_without_takeover(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    let old = recv_one(mq, &topic(), "c1").await;
    (fx.advance)(LEASE + Duration::from_secs(1));
    lease_lost(&mq.ack(&old).await, "ack after the lease expired");
    let again = recv_one(mq, &topic(), "c1").await;
    assert_eq!((again.message_id.as_str(), again.attempt), ("m1", 2));
}

async fn renew_extends_the_lease(fx: MqFixture) {
    let mq = &fx.queue;
    publish(mq, &topic(), "p", "m1").await;
    let d = mq
        .receive(&topic(), "c1", 1, Duration::from_secs(10))
        .await
        .unwrap();
    let d = d.into_iter().next().expect("one delivery");
    (fx.advance)(Duration::from_secs(8));
    mq.renew(&d, Duration::from_secs(10)).await.unwrap();
    (fx.advance)(Duration::from_secs(8));
    assert!(
        recv(mq, &topic(), "c2", 10).await.is_empty(),
        "a renewed lease is still held 16 s after a 10 s lease began"
    );
    mq.ack(&d).await.unwrap();
}

async fn concurrent_consumers_never_share_a_partition_head(fx: MqFixture) {
    const PARTITIONS: usize = 4;
    const PER_PARTITION: usize = 5;
    const CONSUMERS: usize = 6;
    let t = Topic::new("contended");
    for i in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            publish(&fx.queue, &t, &format!("p{p}"), &format!("m{i}")).await;
        }
    }
    let active = Arc::new(Mutex::new(HashSet::<String>::new()));
    let acked = Arc::new(Mutex::new(HashMap::<String, Vec<String>>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let total = PARTITIONS * PER_PARTITION;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let (mq, t) = (fx.queue.clone(), t.clone());
            let (active, acked, done) = (active.clone(), acked.clone(), done.clone());
            tokio::spawn(async move {
                let name = format!("consumer-{c}");
                while done.load(Ordering::SeqCst) < total {
                    assert!(tokio::time::Instant::now() < deadline, "consumers starved");
                    let ds = mq.receive(&t, &name, 2, LEASE).await.unwrap();
                    for d in &ds {
                        let fresh = active.lock().unwrap().insert(d.partition_key.clone());
                        assert!(
                            fresh,
                            "two consumers hold the head of {} at once",
                            d.partition_key
                        );
                    }
                    // Let the other consumers try to grab the same heads.
                    tokio::task::yield_now().await;
                    for d in ds {
                        // Leave `active` before the ack: after it the next
                        // message may legitimately go to someone else.
                        active.lock().unwrap().remove(&d.partition_key);
                        acked
                            .lock()
                            .unwrap()
                            .entry(d.partition_key.clone())
                            .or_default()
                            .push(d.message_id.clone());
                        mq.ack(&d).await.unwrap();
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for c in consumers {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap();
    let in_order: Vec<String> = (0..PER_PARTITION).map(|i| format!("m{i}")).collect();
    for p in 0..PARTITIONS {
        assert_eq!(
            acked.get(&format!("p{p}")),
            Some(&in_order),
            "partition p{p} was handled once each, in order"
        );
    }
}

/// Acks of many holders at once (which an adapter may write together)
/// settle exactly the deliveries whose lease is still held, each answered
/// for itself, a second ack of one delivery included.
async fn concurrent_acks_each_get_their_own_answer(fx: MqFixture) {
    const HALF: usize = 12;
    let t = Topic::new("acked");
    for p in 0..2 * HALF {
        publish(&fx.queue, &t, &format!("p{p:02}"), "m").await;
    }
    let short = Duration::from_secs(5);
    let expiring = fx.queue.receive(&t, "c1", HALF, short).await.unwrap();
    let held = recv(&fx.queue, &t, "c2", HALF).await;
    assert_eq!((expiring.len(), held.len()), (HALF, HALF));
    (fx.advance)(short + Duration::from_secs(1));
    let twice = held[0].clone();
    let acks: Vec<_> = expiring
        .iter()
        .chain(&held)
        .chain(std::iter::once(&twice))
        .cloned()
        .map(|d| {
            let mq = fx.queue.clone();
            tokio::spawn(async move { (d.partition_key.clone(), mq.ack(&d).await) })
        })
        .collect();
    let mut ok = HashMap::<String, usize>::new();
    for ack in acks {
        let (partition, result) = ack.await.unwrap();
        match result {
            Ok(()) => *ok.entry(partition).or_default() += 1,
            Err(MqError::LeaseLost(_)) => {}
            Err(e) => panic!("ack of {partition}: {e}"),
        }
    }
    let expected: HashMap<String, usize> =
        held.iter().map(|d| (d.partition_key.clone(), 1)).collect();
    assert_eq!(
        ok, expected,
        "exactly the held deliveries were acked, the one acked twice once"
    );
    let again = recv(&fx.queue, &t, "c3", 4 * HALF).await;
    let mut redelivered: Vec<_> = again.iter().map(|d| d.partition_key.clone()).collect();
    redelivered.sort();
    let mut lost: Vec<_> = expiring.iter().map(|d| d.partition_key.clone()).collect();
    lost.sort();
    assert_eq!(
        redelivered, lost,
        "only the expired leases' messages remain"
    );
}

async fn wake_makes_a_held_head_visible_now(fx: MqFixture) {
    let mq = &fx.queue;
    assert!(
        !mq.wake(&topic(), "p").await.unwrap(),
        "nothing to wake in an empty partition"
    );
    publish(mq, &topic(), "p", "m1").await;
    let d = recv_one(mq, &topic(), "c").await;
    assert!(
        !mq.wake(&topic(), "p").await.unwrap(),
        "a leased head is not held"
    );
    mq.hold(&d, Duration::from_hours(1)).await.unwrap();
    assert!(recv(mq, &topic(), "c", 10).await.is_empty());
    assert!(
        mq.wake(&topic(), "p").await.unwrap(),
        "a held head is woken"
    );
    let again = recv_one(mq, &topic(), "c").await;
    assert_eq!((again.message_id.as_str(), again.attempt), ("m1", 1));
}

async fn wait_returns_promptly_after_a_publish(fx: MqFixture) {
    let quiet = Topic::new("quiet");
    let started = tokio::time::Instant::now();
    fx.queue.wait(&quiet, Duration::from_millis(50)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "wait honours its timeout"
    );

    let mq = fx.queue.clone();
    let waiter = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        mq.wait(&topic(), Duration::from_mins(1)).await;
        started.elapsed()
    });
    // Publish until the waiter returns: it may not have started waiting
    // before the first publish; the contract is that a publish wakes it.
    let mut n = 0;
    while !waiter.is_finished() {
        assert!(
            n < 250,
            "wait did not return within 5 s of repeated publishes"
        );
        publish(&fx.queue, &topic(), "p", &format!("m{n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let blocked_for = waiter.await.unwrap();
    assert!(
        blocked_for < Duration::from_secs(10),
        "waited {blocked_for:?} for a 1 min timeout"
    );
}

async fn next_visible_at_reports_the_earliest_head(fx: MqFixture) {
    let mq = &fx.queue;
    assert_eq!(
        mq.next_visible_at(&topic()).await.unwrap(),
        None,
        "nothing pending"
    );
    publish(mq, &topic(), "p1", "m1").await;
    let d = recv_one(mq, &topic(), "c").await;
    let t0 = d.published_at;
    assert_eq!(
        mq.next_visible_at(&topic()).await.unwrap(),
        Some(t0.saturating_add(LEASE)),
        "a leased head counts at its lease expiry"
    );
    mq.hold(&d, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        mq.next_visible_at(&topic()).await.unwrap(),
        Some(t0.saturating_add(Duration::from_secs(10))),
        "a held head counts at the end of its hold"
    );
    publish(mq, &topic(), "p2", "m2").await;
    assert_eq!(
        mq.next_visible_at(&topic()).await.unwrap(),
        Some(t0),
        "a fresh message is visible now"
    );
}
