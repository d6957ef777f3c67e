//! Behaviour specific to the SQL backend, on SQLite and (when configured)
//! Postgres: several replicas on one database (leases, hook minting, wake-ups
//! and the change-feed tail across processes), bad input refused whole,
//! errors classified as retryable where they should be, and per-queue
//! numbering that does not read the history it follows.

// The checks are plain async fns run by the generated tests: an unmet
// expectation must panic naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Kind, TestDb};
use futures::{FutureExt, StreamExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stovepipe_adapter_sql::{DEFAULT_WRITE_LANES, MAX_TEXT_BYTES, SqlBackend};
use stovepipe_entity::{
    Build, BuildId, ChangeEvent, ChangeKind, EventType, HookContract, HookName, HookReleaseSpec,
    NewChange, Origin, ProjectName, QueueName, Request, RequestId, Timestamp, Uri,
};
use stovepipe_ports::{
    ChangeFeed, ChangeStream, Classify, HookRegistry, MessageQueue, MqError, Outbox,
    OutgoingMessage, StoreError, StoreFactory, Topic,
};

/// Postgres: the change-log number of a transaction's first row, as the
/// adapter gives it (its transaction id shifted left by 20 bits), for rows
/// a test writes as another replica would.
const FIRST_SEQ_OF_TRANSACTION: &str = "(pg_current_xact_id()::text::bigint << 20)";

/// Runs `$check(db)` on a fresh SQLite database and on Postgres.
macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = super::TestDb::open(super::Kind::Sqlite).await.unwrap();
                    super::$check(&db).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = super::TestDb::open(super::Kind::Postgres).await else {
                        return;
                    };
                    super::$check(&db).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_both!(
    identical_releases_from_two_replicas_mint_one_version,
    distinct_releases_from_two_replicas_mint_versions_without_gaps,
    consumers_on_two_replicas_never_hold_the_same_partition,
    expired_lease_is_taken_over_by_another_replica,
    a_publish_on_one_replica_wakes_a_waiter_on_another,
    an_ack_on_one_replica_wakes_a_waiter_on_another,
    the_feed_tail_sees_another_replicas_commits,
    a_tail_sees_every_event_once_in_order_while_two_replicas_append,
    a_transaction_that_commits_late_is_not_skipped_by_the_tail,
    a_transaction_open_in_another_database_does_not_hold_the_feed_back,
    a_held_back_feed_does_not_hold_back_a_write_s_hop,
    a_feed_held_back_costs_one_write_its_wait_not_every_write,
    a_tail_behind_rows_appended_elsewhere_reads_them_before_its_own,
    nul_bytes_and_oversized_values_are_refused_whole,
    outbox_messages_are_deduplicated_like_publishes,
    a_write_s_changes_are_in_the_live_stream_when_it_returns,
    the_live_stream_carries_what_the_log_holds_of_writes_here_and_elsewhere,
    a_closed_backend_is_unavailable_and_retryable,
    a_long_history_is_not_read_to_number_the_next_build_or_hook_run,
    write_lanes_are_the_option_on_postgres_and_one_on_sqlite,
);

/// `SqlOptions::write_lanes` is how many batches of writes a Postgres
/// backend runs at once (the server's `database.write_lanes`); SQLite's
/// one writer runs one whatever it says. A backend of one lane writes.
async fn write_lanes_are_the_option_on_postgres_and_one_on_sqlite(db: &TestDb) {
    let expected = |lanes| if db.backend.is_postgres() { lanes } else { 1 };
    assert_eq!(db.backend.write_lanes(), expected(DEFAULT_WRITE_LANES));
    let three = db.replica_with_lanes(3).await;
    assert_eq!(three.write_lanes(), expected(3));
    three.close().await;
    let one = db.replica_with_lanes(1).await;
    assert_eq!(one.write_lanes(), 1);
    let written = request(1);
    let writes = (1..=3).map(|n| {
        let one = one.clone();
        async move {
            one.for_queue(&queue())
                .requests
                .create(&request(n), Outbox::none())
                .await
        }
    });
    for created in futures::future::join_all(writes).await {
        created.unwrap();
    }
    assert_eq!(
        db.backend
            .for_queue(&queue())
            .requests
            .get(&written.id)
            .await
            .unwrap(),
        Some(written),
        "written through the one lane"
    );
    one.close().await;
}

fn queue() -> QueueName {
    QueueName::new("sql/main").unwrap()
}

fn request(n: u64) -> Request {
    Request::accepted(
        RequestId::new(&queue(), n).unwrap(),
        queue(),
        Uri::new(format!("git://r/main/c{n}")).unwrap(),
        Origin::Ingest,
        Timestamp(1),
    )
}

fn spec(url: &str) -> HookReleaseSpec {
    HookReleaseSpec {
        url: url.to_owned(),
        secret: None,
        headers: BTreeMap::new(),
        timeout_ms: 1000,
        max_attempts: 3,
    }
}

async fn hook_on(db: &TestDb) -> HookName {
    let name = HookName::new("notify").unwrap();
    let contract = HookContract::new([EventType::ValidationRecorded].into(), [].into()).unwrap();
    let hooks: Arc<dyn HookRegistry> = db.backend.clone();
    hooks
        .upsert_hook(&name, &contract, Timestamp(1))
        .await
        .unwrap();
    name
}

/// Two handles per replica, alternating, so both processes race.
async fn replicas(db: &TestDb) -> [Arc<SqlBackend>; 2] {
    [db.backend.clone(), db.replica().await]
}

/// The tail's next event, within 10 s.
async fn next_event(live: &mut ChangeStream) -> Arc<ChangeEvent> {
    tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("the tail's next event within 10 s")
        .expect("the tail is open")
        .expect("the tail did not lag")
}

/// The tail's next events are of these subjects, in this order.
async fn expect_subjects(live: &mut ChangeStream, subjects: &[&str]) {
    for expected in subjects {
        assert_eq!(next_event(live).await.subject, *expected);
    }
}

/// A `request.changed` change of the test queue named `subject`.
fn request_changed(subject: &str) -> NewChange {
    NewChange::new(&queue(), ChangeKind::RequestChanged, subject, json!({}))
}

async fn identical_releases_from_two_replicas_mint_one_version(db: &TestDb) {
    let name = hook_on(db).await;
    let both = replicas(db).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let hooks: Arc<dyn HookRegistry> = both[i % 2].clone();
            let name = name.clone();
            tokio::spawn(async move {
                hooks
                    .create_release(&name, &spec("http://same/"), "ops", Timestamp(2))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let outcome = t.await.unwrap().expect("identical releases never fail");
        assert_eq!(outcome.release.version, 1);
        created += usize::from(outcome.created);
    }
    assert_eq!(created, 1, "one of 16 identical releases is created");
}

async fn distinct_releases_from_two_replicas_mint_versions_without_gaps(db: &TestDb) {
    let name = hook_on(db).await;
    let both = replicas(db).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let hooks: Arc<dyn HookRegistry> = both[i % 2].clone();
            let name = name.clone();
            tokio::spawn(async move {
                hooks
                    .create_release(&name, &spec(&format!("http://d/{i}")), "ops", Timestamp(2))
                    .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        let outcome = t.await.unwrap().expect("distinct releases never fail");
        assert!(outcome.created);
        versions.push(outcome.release.version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u32>>());
    let hooks: Arc<dyn HookRegistry> = db.backend.clone();
    assert_eq!(
        hooks.get(&name).await.unwrap().unwrap().live_version,
        Some(16)
    );
}

async fn consumers_on_two_replicas_never_hold_the_same_partition(db: &TestDb) {
    const PARTITIONS: usize = 4;
    const PER_PARTITION: usize = 6;
    let topic = Topic::new("contended");
    let mq: Arc<dyn MessageQueue> = db.backend.clone();
    for i in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            let m = OutgoingMessage::new(topic.clone(), format!("p{p}"), format!("m{i}"), json!(i));
            assert!(mq.publish(m).await.unwrap());
        }
    }
    let both = replicas(db).await;
    let active = Arc::new(Mutex::new(HashSet::<String>::new()));
    let acked = Arc::new(Mutex::new(HashMap::<String, Vec<String>>::new()));
    let total = PARTITIONS * PER_PARTITION;
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    let consumers: Vec<_> = (0..6)
        .map(|c| {
            let mq: Arc<dyn MessageQueue> = both[c % 2].clone();
            let (topic, active, acked) = (topic.clone(), active.clone(), acked.clone());
            tokio::spawn(async move {
                loop {
                    let done: usize = acked.lock().unwrap().values().map(Vec::len).sum();
                    if done >= total {
                        return;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "consumers starved");
                    let ds = mq
                        .receive(&topic, &format!("c{c}"), 2, Duration::from_mins(1))
                        .await
                        .unwrap();
                    for d in &ds {
                        let fresh = active.lock().unwrap().insert(d.partition_key.clone());
                        assert!(fresh, "two consumers hold {} at once", d.partition_key);
                    }
                    tokio::task::yield_now().await;
                    for d in ds {
                        active.lock().unwrap().remove(&d.partition_key);
                        acked
                            .lock()
                            .unwrap()
                            .entry(d.partition_key.clone())
                            .or_default()
                            .push(d.message_id.clone());
                        mq.ack(&d).await.unwrap();
                    }
                    if done < total {
                        mq.wait(&topic, Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for c in consumers {
        c.await.unwrap();
    }
    let in_order: Vec<String> = (0..PER_PARTITION).map(|i| format!("m{i}")).collect();
    for (p, got) in acked.lock().unwrap().iter() {
        assert_eq!(got, &in_order, "partition {p}: each message once, in order");
    }
}

async fn expired_lease_is_taken_over_by_another_replica(db: &TestDb) {
    let topic = Topic::new("work");
    let a: Arc<dyn MessageQueue> = db.backend.clone();
    let b: Arc<dyn MessageQueue> = db.replica().await;
    a.publish(OutgoingMessage::new(topic.clone(), "p", "m1", json!({})))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let first = a.receive(&topic, "a", 1, lease).await.unwrap().remove(0);
    assert!(b.receive(&topic, "b", 1, lease).await.unwrap().is_empty());
    db.clock.advance(lease);
    let taken = b.receive(&topic, "b", 1, lease).await.unwrap();
    assert_eq!(taken.len(), 1, "the expired lease is taken over");
    assert_eq!((taken[0].message_id.as_str(), taken[0].attempt), ("m1", 2));
    assert!(matches!(a.ack(&first).await, Err(MqError::LeaseLost(_))));
    b.ack(&taken[0]).await.unwrap();
    assert_eq!(a.next_visible_at(&topic).await.unwrap(), None);
}

async fn a_publish_on_one_replica_wakes_a_waiter_on_another(db: &TestDb) {
    if !db.backend.is_postgres() {
        // SQLite replicas are processes on one file with no channel between
        // them; they poll (`next_visible_at`), which the port allows.
        return;
    }
    let topic = Topic::new("wakeful");
    let a: Arc<dyn MessageQueue> = db.backend.clone();
    let b: Arc<dyn MessageQueue> = db.replica().await;
    let waiter = {
        let (b, topic) = (b.clone(), topic.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            b.wait(&topic, Duration::from_mins(1)).await;
            started.elapsed()
        })
    };
    let mut n = 0;
    while !waiter.is_finished() {
        assert!(n < 250, "the other replica's waiter never woke");
        a.publish(OutgoingMessage::new(
            topic.clone(),
            "p",
            format!("m{n}"),
            json!({}),
        ))
        .await
        .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(waiter.await.unwrap() < Duration::from_secs(10));
}

/// An ack makes the partition's next message deliverable: consumers on
/// other replicas hear of it (the ack is one statement carrying its NOTIFY).
async fn an_ack_on_one_replica_wakes_a_waiter_on_another(db: &TestDb) {
    if !db.backend.is_postgres() {
        return;
    }
    let topic = Topic::new("acked");
    let a: Arc<dyn MessageQueue> = db.backend.clone();
    let b: Arc<dyn MessageQueue> = db.replica().await;
    for attempt in 0..5 {
        let partition = format!("p{attempt}");
        for id in ["m0", "m1"] {
            let m = OutgoingMessage::new(topic.clone(), partition.as_str(), id, json!({}));
            a.publish(m).await.unwrap();
        }
        let leased = a
            .receive(&topic, "a", 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(leased.len(), 1, "the partition's head only");
        // The other replica hears of the publishes, and, as a consumer
        // does, receives (nothing: the head is leased): the wake-ups so far
        // are no longer news to it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let none = b
            .receive(&topic, "b", 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(none.is_empty(), "the head is leased to a");
        let waiter = {
            let (b, topic) = (b.clone(), topic.clone());
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                b.wait(&topic, Duration::from_secs(5)).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        if waiter.is_finished() {
            // A late wake-up of the publishes: try again.
            continue;
        }
        a.ack(&leased[0]).await.unwrap();
        let elapsed = waiter.await.unwrap();
        assert!(
            elapsed < Duration::from_secs(4),
            "the ack did not wake the other replica (waited {elapsed:?})"
        );
        let next = b
            .receive(&topic, "b", 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(next[0].message_id, "m1");
        return;
    }
    panic!("the other replica never settled into waiting");
}

async fn the_feed_tail_sees_another_replicas_commits(db: &TestDb) {
    if !db.backend.is_postgres() {
        return;
    }
    let [a, b] = replicas(db).await;
    let mut live = b.subscribe();
    a.append(vec![request_changed("one"), request_changed("two")])
        .await
        .unwrap();
    expect_subjects(&mut live, &["one", "two"]).await;
}

/// Both replicas append rows and read the log, each its tail's rounds,
/// and a tail catches up from the log after its own replica's rounds and
/// after each round the other replica announces. With appends interleaved
/// on both, a tail must see every event once, in seq order, without a gap.
async fn a_tail_sees_every_event_once_in_order_while_two_replicas_append(db: &TestDb) {
    if !db.backend.is_postgres() {
        return;
    }
    let [a, b] = replicas(db).await;
    let mut live = a.subscribe();
    let start = a.last_seq().await.unwrap();
    let rounds = 25;
    // Read while writing: the test tail's buffer holds only a few events.
    let tail = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < rounds * 3 {
            let e = next_event(&mut live).await;
            seen.push(e);
        }
        seen
    });
    for i in 0..rounds {
        let (from_a, from_b) = tokio::join!(
            a.append(vec![request_changed(&format!("a{i}"))]),
            b.append(vec![
                request_changed(&format!("b{i}")),
                request_changed(&format!("b{i}'"))
            ])
        );
        from_a.unwrap();
        from_b.unwrap();
    }
    let seen = tail.await.unwrap();
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "a repeat or a reordering: {seqs:?}"
    );
    let subjects: HashSet<&str> = seen.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects.len(), rounds * 3);
    // What the tail broadcast is what the log holds: no gap.
    let logged = a.read_after(start, rounds * 3 + 1).await.unwrap();
    let seen: Vec<ChangeEvent> = seen.into_iter().map(Arc::unwrap_or_clone).collect();
    assert_eq!(logged, seen);
}

/// Postgres: a transaction of the test's database, begun and given a
/// transaction id, so that it holds the change log's readers back until it
/// ends; and the connection it runs on.
async fn open_write_transaction(
    db: &TestDb,
) -> (sea_orm::DatabaseConnection, sea_orm::DatabaseTransaction) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let raw = db.raw_connection().await;
    let early = raw.begin().await.unwrap();
    early
        .execute_unprepared("SELECT txid_current()")
        .await
        .unwrap();
    (raw, early)
}

/// A write's local wake-up waits for its change rows to reach the feed
/// (so the writer's bookkeeping is done when its hop is handled), but not
/// for long: an older transaction holding the feed's numbering back does
/// not hold back the hop, though the write itself waits for the numbering.
async fn a_held_back_feed_does_not_hold_back_a_write_s_hop(db: &TestDb) {
    if !db.backend.is_postgres() {
        return;
    }
    let (_raw, early) = open_write_transaction(db).await;

    let topic = Topic::new("next-stage");
    let mq: Arc<dyn MessageQueue> = db.backend.clone();
    let waiter = {
        let (mq, topic) = (mq.clone(), topic.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            mq.wait(&topic, Duration::from_secs(30)).await;
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stores = db.backend.for_queue(&queue());
    let outbox = Outbox::none()
        .change(request_changed("held"))
        .publish(OutgoingMessage::new(topic.clone(), "p", "hop", json!({})));
    let started = tokio::time::Instant::now();
    let writer = tokio::spawn(async move { stores.requests.create(&request(1), outbox).await });
    let woken_after = waiter.await.unwrap();
    assert!(
        woken_after < Duration::from_secs(1),
        "the hop waited {woken_after:?} for a feed held back"
    );
    assert!(
        !writer.is_finished(),
        "the write waits for its rows to reach the feed"
    );
    early.commit().await.unwrap();
    writer.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A transaction of this database left open holds the feed back. The
/// first write then waits its while for the feed, but the writes after it
/// do not wait again while the feed stands still (each would, and every
/// handler of the pipeline would make one write per wait), and every row
/// follows in order once the transaction ends.
async fn a_feed_held_back_costs_one_write_its_wait_not_every_write(db: &TestDb) {
    if !db.backend.is_postgres() {
        return;
    }
    let (raw, early) = open_write_transaction(db).await;
    let feed: Arc<dyn ChangeFeed> = db.backend.clone();
    let mut live = feed.subscribe();
    let stores = db.backend.for_queue(&queue());
    let write = |n: u64, subject: &str| {
        let outbox = Outbox::none().change(request_changed(subject));
        let stores = stores.clone();
        async move {
            let started = tokio::time::Instant::now();
            stores.requests.create(&request(n), outbox).await.unwrap();
            started.elapsed()
        }
    };
    let first = write(1, "first").await;
    assert!(
        first >= Duration::from_millis(1500),
        "the first write waited for the feed: {first:?}"
    );
    for n in 2..=4 {
        let took = write(n, &format!("w{n}")).await;
        assert!(
            took < Duration::from_secs(1),
            "write {n} waited {took:?} for a feed that stands still"
        );
    }
    assert!(
        live.next().now_or_never().is_none(),
        "nothing is readable while the transaction is open"
    );
    early.commit().await.unwrap();
    expect_subjects(&mut live, &["first", "w2", "w3", "w4"]).await;
    raw.close().await.unwrap();
}

/// A round of the tail reads every readable row after the last one it
/// broadcast, not only its own replica's. Rows appended elsewhere, whose
/// announcement this replica did not hear (here a row written as another
/// replica writes it, without a NOTIFY), come first: no gap.
async fn a_tail_behind_rows_appended_elsewhere_reads_them_before_its_own(db: &TestDb) {
    use sea_orm::ConnectionTrait;
    if !db.backend.is_postgres() {
        return;
    }
    let mut live = db.backend.subscribe();
    let raw = db.raw_connection().await;
    raw.execute_unprepared(&format!(
        "INSERT INTO change_log (queue, kind, subject, data, created_at, seq) \
         VALUES ('sql/main', 'request.changed', 'elsewhere', '{{}}', 0, {FIRST_SEQ_OF_TRANSACTION})"
    ))
    .await
    .unwrap();
    let own = db
        .backend
        .append(vec![request_changed("own")])
        .await
        .unwrap();
    let elsewhere = next_event(&mut live).await;
    assert_eq!(elsewhere.subject, "elsewhere");
    let e = next_event(&mut live).await;
    assert_eq!((e.seq, e.subject.as_str()), (own[0].seq, "own"));
    assert!(elsewhere.seq < own[0].seq);
}

async fn a_transaction_that_commits_late_is_not_skipped_by_the_tail(db: &TestDb) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    if !db.backend.is_postgres() {
        return;
    }
    let feed: Arc<dyn ChangeFeed> = db.backend.clone();
    let mut live = feed.subscribe();
    let raw = db.raw_connection().await;
    let early = raw.begin().await.unwrap();
    early
        .execute_unprepared(&format!(
            "INSERT INTO change_log (queue, kind, subject, data, created_at, seq) \
             VALUES ('monorepo/main', 'request.changed', 'early', '{{}}', 0, \
             {FIRST_SEQ_OF_TRANSACTION})"
        ))
        .await
        .unwrap();

    // A later transaction commits while the early one is still open: its
    // store write commits its rows, but no reader may see them yet, since
    // the early transaction's row would come before them.
    let stores = db.backend.for_queue(&queue());
    let late = request(1);
    let outbox = Outbox::none().change(request_changed("late"));
    let writer = tokio::spawn(async move { stores.requests.create(&late, outbox).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        feed.read_after(0, 10).await.unwrap().is_empty(),
        "no row is readable while an older transaction is open"
    );
    assert_eq!(feed.last_seq().await.unwrap(), 0);

    early.commit().await.unwrap();
    writer.await.unwrap().unwrap();
    let logged = feed.read_after(0, 10).await.unwrap();
    let subjects: Vec<&str> = logged.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["early", "late"], "in transaction order");
    assert!(logged[0].seq < logged[1].seq);
    expect_subjects(&mut live, &["early", "late"]).await;
    raw.close().await.unwrap();
}

/// A transaction left open in another database of the cluster (another
/// service's, on a shared server) can never append to this log, so it does
/// not hold the feed back: a write's event reaches the live stream while
/// that transaction stays open, and every read of the log sees it. One
/// left open in this database still does (the test above).
async fn a_transaction_open_in_another_database_does_not_hold_the_feed_back(db: &TestDb) {
    use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
    use sea_orm::sqlx::{self, Connection};
    if !db.backend.is_postgres() {
        return;
    }
    let ours: PgConnectOptions = common::postgres_url().unwrap().parse().unwrap();
    let other = if ours.get_database() == Some("postgres") {
        "template1"
    } else {
        "postgres"
    };
    let mut elsewhere = PgConnection::connect_with(&ours.clone().database(other))
        .await
        .unwrap();
    // Its transaction id is older than any the write below takes.
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id()")
        .execute(&mut elsewhere)
        .await
        .unwrap();

    let feed: Arc<dyn ChangeFeed> = db.backend.clone();
    let mut live = feed.subscribe();
    let stores = db.backend.for_queue(&queue());
    let outbox = Outbox::none().change(request_changed("while-open-elsewhere"));
    stores.requests.create(&request(1), outbox).await.unwrap();
    expect_subjects(&mut live, &["while-open-elsewhere"]).await;
    let logged = feed.read_after(0, 10).await.unwrap();
    assert_eq!(
        logged.len(),
        1,
        "readable while the other database's transaction is open"
    );
    assert_eq!(feed.last_seq().await.unwrap(), logged[0].seq);

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut elsewhere)
        .await
        .unwrap();
    elsewhere.close().await.unwrap();
}

async fn nul_bytes_and_oversized_values_are_refused_whole(db: &TestDb) {
    let stores = db.backend.for_queue(&queue());
    let feed: Arc<dyn ChangeFeed> = db.backend.clone();
    let mq: Arc<dyn MessageQueue> = db.backend.clone();
    let invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Invalid(_)));

    let mut nul = request(1);
    nul.failure_reason = Some("bad\0reason".into());
    assert!(invalid(stores.requests.create(&nul, Outbox::none()).await));
    let mut huge = request(1);
    huge.failure_reason = Some("x".repeat(MAX_TEXT_BYTES + 1));
    assert!(invalid(stores.requests.create(&huge, Outbox::none()).await));

    // A valid row with a bad outbox writes nothing at all.
    let bad_message = OutgoingMessage::new(Topic::new("t"), "p", "m", json!({"k": "\u{0}"}));
    let ok_change = NewChange::new(&queue(), ChangeKind::RequestCreated, "r1", json!({}));
    let outbox = Outbox::none().change(ok_change).publish(bad_message);
    assert!(invalid(stores.requests.create(&request(1), outbox).await));
    assert_eq!(stores.requests.get(&request(1).id).await.unwrap(), None);
    assert!(feed.read_after(0, 10).await.unwrap().is_empty());

    let mut build = Build::accepted(
        BuildId::new("b1").unwrap(),
        queue(),
        request(1).id,
        ProjectName::whole_repo(),
        Timestamp(1),
    );
    build.metadata.insert("k\0".into(), "v".into());
    assert!(invalid(stores.builds.create(&build, Outbox::none()).await));

    let nul_key = OutgoingMessage::new(Topic::new("t"), "p\0", "m", json!({}));
    assert!(matches!(
        mq.publish(nul_key).await,
        Err(MqError::Invalid(_))
    ));
    let long_id = OutgoingMessage::new(Topic::new("t"), "p", "m".repeat(5000), json!({}));
    assert!(matches!(
        mq.publish(long_id).await,
        Err(MqError::Invalid(_))
    ));
    let bad_change = NewChange::new(&queue(), ChangeKind::RequestCreated, "s\0", json!({}));
    assert!(matches!(
        feed.append(vec![bad_change]).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(mq.next_visible_at(&Topic::new("t")).await.unwrap(), None);

    // A handler's error text is diagnostic: kept (cleaned), never refused.
    mq.publish(OutgoingMessage::new(Topic::new("t"), "p", "m", json!({})))
        .await
        .unwrap();
    let d = mq
        .receive(&Topic::new("t"), "c", 1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    mq.retry(&d, Duration::ZERO, "boom\0").await.unwrap();
    let again = mq
        .receive(&Topic::new("t"), "c", 1, Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.last_error.as_deref(), Some("boom\u{fffd}"));
}

async fn outbox_messages_are_deduplicated_like_publishes(db: &TestDb) {
    let stores = db.backend.for_queue(&queue());
    let mq: Arc<dyn MessageQueue> = db.backend.clone();
    let topic = Topic::new("process");
    let hop = OutgoingMessage::new(topic.clone(), "sql/main", "request/sql/main/1", json!({}));
    assert!(mq.publish(hop.clone()).await.unwrap());
    let outbox = Outbox::none().publish(hop.clone()).publish(hop);
    stores.requests.create(&request(1), outbox).await.unwrap();
    let got = mq
        .receive(&topic, "c", 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    mq.ack(&got[0]).await.unwrap();
    assert_eq!(
        mq.next_visible_at(&topic).await.unwrap(),
        None,
        "one copy only"
    );
}

/// The feed's promise to a writer: the change rows of a store write are
/// in every subscriber's buffer when the write returns (the adapter
/// broadcasts up to the highest row the write appended), whichever row
/// of a list is the last.
async fn a_write_s_changes_are_in_the_live_stream_when_it_returns(db: &TestDb) {
    let stores = db.backend.for_queue(&queue());
    let mut live = db.backend.subscribe();
    for (n, subjects) in [
        (1, vec!["one"]),
        (2, vec!["two", "three"]),
        (3, vec!["four"]),
    ] {
        let outbox = subjects
            .iter()
            .fold(Outbox::none(), |o, s| o.change(request_changed(s)));
        stores.requests.create(&request(n), outbox).await.unwrap();
        for subject in subjects {
            let event = live
                .next()
                .now_or_never()
                .unwrap_or_else(|| {
                    panic!("{subject} was not in the buffer when its write returned")
                })
                .expect("the stream is open")
                .expect("no lag");
            assert_eq!(event.subject, subject);
        }
    }
}

/// What the live stream carries of store writes is what the log holds,
/// field for field and in order, the writes here and (on Postgres) on
/// another replica. Writes that run at once share batches (several
/// writes' rows in one transaction), and the data is more than a flat
/// object. Waves of four writes of one or two changes each stay within the
/// stream's buffer of eight.
async fn the_live_stream_carries_what_the_log_holds_of_writes_here_and_elsewhere(db: &TestDb) {
    let [here, elsewhere] = replicas(db).await;
    // SQLite's stream carries another process's rows only after a write
    // of its own (the `feed` module): the writes are all here.
    let elsewhere = if db.backend.is_postgres() {
        elsewhere
    } else {
        here.clone()
    };
    let change = |n: u64, k: u64| {
        NewChange::new(
            &queue(),
            ChangeKind::RequestChanged,
            format!("r{n}.{k}"),
            json!({"n": n, "k": k, "ratio": 0.25, "nested": {"list": [1, "two", null, true]},
                   "text": "grüße ✓ \"quoted\""}),
        )
    };
    let mut live = here.subscribe();
    let mut start = ChangeFeed::last_seq(here.as_ref()).await.unwrap();
    for wave in 0..3 {
        let writes = (1..=4).map(|i| {
            let n = wave * 4 + i;
            let backend = if n % 3 == 0 { &elsewhere } else { &here };
            let stores = backend.for_queue(&queue());
            let outbox = (0..=n % 2).fold(Outbox::none(), |o, k| o.change(change(n, k)));
            async move { stores.requests.create(&request(n), outbox).await }
        });
        for written in futures::future::join_all(writes).await {
            written.unwrap();
        }
        let logged = here.read_after(start, 100).await.unwrap();
        assert_eq!(logged.len(), 6, "wave {wave}: one or two rows a write");
        let mut streamed = Vec::new();
        while streamed.len() < logged.len() {
            streamed.push(Arc::unwrap_or_clone(next_event(&mut live).await));
        }
        assert_eq!(streamed, logged, "wave {wave}");
        start = logged[5].seq;
    }
}

async fn a_closed_backend_is_unavailable_and_retryable(db: &TestDb) {
    let other = db.replica().await;
    other.close().await;
    let err = other
        .for_queue(&queue())
        .request_uris
        .mint(&request(1).uri)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.is_retryable(),
        "got {err:?}"
    );
    let mq: Arc<dyn MessageQueue> = other;
    let err = mq
        .publish(OutgoingMessage::new(Topic::new("t"), "p", "m", json!({})))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "got {err:?}");
}

/// Rows of history a numbering test seeds: enough that reading them all
/// shows in the plan's buffers, few enough to seed in a blink.
const HISTORY: u32 = 20_000;

/// Runs `insert`, an `INSERT … SELECT … FROM n`, with `n(i)` counting
/// from 1 to [`HISTORY`] (a recursive CTE: both backends have it).
async fn seed_history(raw: &sea_orm::DatabaseConnection, insert: &str) {
    use sea_orm::ConnectionTrait;
    raw.execute_unprepared(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {HISTORY}) \
         {insert}"
    ))
    .await
    .unwrap();
}

/// How `sql` is executed on `raw`: Postgres's `EXPLAIN (ANALYZE, BUFFERS)`
/// text, SQLite's `EXPLAIN QUERY PLAN` details, one line per node.
async fn plan_of(raw: &sea_orm::DatabaseConnection, postgres: bool, sql: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let (explain, column) = if postgres {
        ("EXPLAIN (ANALYZE, BUFFERS)", "QUERY PLAN")
    } else {
        ("EXPLAIN QUERY PLAN", "detail")
    };
    let rows = raw
        .query_all(Statement::from_string(
            raw.get_database_backend(),
            format!("{explain} {sql}"),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", column).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that `lookup` reads the last entry of `index` rather than the
/// history before it: on Postgres by the buffers the whole lookup touched.
async fn assert_reads_last_entry_of(
    raw: &sea_orm::DatabaseConnection,
    postgres: bool,
    lookup: &str,
    index: &str,
) {
    let plan = plan_of(raw, postgres, lookup).await;
    assert!(
        plan.contains(index),
        "{lookup} does not use {index}:\n{plan}"
    );
    if postgres {
        let touched: u32 = plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Buffers: shared hit="))
            .and_then(|n| n.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no buffer count in:\n{plan}"));
        assert!(
            touched < 16,
            "{lookup} touched {touched} buffers for {HISTORY} rows of history:\n{plan}"
        );
    }
}

/// A queue's next build and a hook's next run are numbered after the
/// largest number so far; a long history must not make that a read of
/// the whole history (each insert would cost more than the one before).
async fn a_long_history_is_not_read_to_number_the_next_build_or_hook_run(db: &TestDb) {
    use sea_orm::ConnectionTrait;
    let postgres = db.backend.is_postgres();
    let raw = db.raw_connection().await;
    let hook = hook_on(db).await;
    seed_history(
        &raw,
        &format!(
            "INSERT INTO builds (queue, build_id, request_number, version, request_id, \
               project, status, url, metadata, targets, reason, created_at, updated_at, \
               inserted) \
             SELECT '{q}', 'seeded-' || i, i, 1, '{q}/' || i, '', 'succeeded', NULL, '{{}}', \
               '[]', NULL, 1, 1, i FROM n",
            q = queue()
        ),
    )
    .await;
    seed_history(
        &raw,
        &format!(
            "INSERT INTO hook_runs (id, hook, release_version, event_id, status, attempts, \
               last_http_status, started_at, finished_at, recorded) \
             SELECT 'seeded-' || i, '{hook}', 1, 'e' || i, 'delivered', 1, 200, i, i, i FROM n"
        ),
    )
    .await;
    raw.execute_unprepared("ANALYZE").await.unwrap();

    assert_reads_last_entry_of(
        &raw,
        postgres,
        &format!(
            "SELECT COALESCE(MAX(inserted), 0) + 1 FROM builds WHERE queue = '{}'",
            queue()
        ),
        "builds_queue_inserted",
    )
    .await;
    assert_reads_last_entry_of(
        &raw,
        postgres,
        &format!("SELECT COALESCE(MAX(recorded), 0) + 1 FROM hook_runs WHERE hook = '{hook}'"),
        "hook_runs_hook_recorded",
    )
    .await;

    // And the next build is numbered after the history, through the port.
    let next = Build::accepted(
        BuildId::new("after-history").unwrap(),
        queue(),
        RequestId::new(&queue(), u64::from(HISTORY) + 1).unwrap(),
        ProjectName::whole_repo(),
        Timestamp(2),
    );
    db.backend
        .for_queue(&queue())
        .builds
        .create(&next, Outbox::none())
        .await
        .unwrap();
    let row = raw
        .query_one(sea_orm::Statement::from_string(
            raw.get_database_backend(),
            "SELECT inserted FROM builds WHERE build_id = 'after-history'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<i64>("", "inserted").unwrap(),
        i64::from(HISTORY) + 1
    );
}

/// Heartbeat of the presence test's backends: short, so that being alone
/// (three heartbeats unheard) takes a fraction of a second.
const BEAT: Duration = Duration::from_millis(100);

/// Publishes `id` to `topic` on `mq`; true when `listener` heard of it
/// within a few heartbeats.
async fn publish_is_notified(
    mq: &Arc<dyn MessageQueue>,
    listener: &mut sea_orm::sqlx::postgres::PgListener,
    topic: &Topic,
    id: &str,
) -> bool {
    mq.publish(OutgoingMessage::new(topic.clone(), "p", id, json!({})))
        .await
        .unwrap();
    let ours = format!("{topic}@");
    let deadline = tokio::time::Instant::now() + BEAT * 3;
    loop {
        match tokio::time::timeout_at(deadline, listener.recv()).await {
            Ok(Ok(n)) if n.payload().starts_with(&ours) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("listener failed: {e}"),
            Err(_) => return false,
        }
    }
}

/// A Postgres backend alone in its installation stops sending NOTIFYs once
/// it has gone three heartbeats without hearing another replica — and its
/// writes, acks and feed rounds still work without them — sends them again
/// once a replica announces itself, and stops three heartbeats after that
/// replica is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_sent_only_while_another_replica_listens() {
    let Some(db) = TestDb::open_with_heartbeat(Kind::Postgres, BEAT).await else {
        return;
    };
    let mut listener = db.listen("stovepipe_mq").await;
    let topic = Topic::new(format!("presence-{}", uuid::Uuid::new_v4().simple()));
    let mq: Arc<dyn MessageQueue> = db.backend.clone();
    assert!(
        publish_is_notified(&mq, &mut listener, &topic, "young").await,
        "a young backend notifies: it cannot know yet whether it is alone"
    );
    // Writes without an outbox, made again below when alone: the statement
    // each connection prepared must serve both.
    let stores = db.backend.for_queue(&queue());
    let change = |subject: &str| {
        Outbox::none().change(NewChange::new(
            &queue(),
            ChangeKind::RequestCreated,
            subject,
            json!({}),
        ))
    };
    // Concurrent, so that every connection of the pool prepares them.
    let create_all = |numbers: std::ops::Range<u64>| {
        let stores = stores.clone();
        futures::future::join_all(numbers.map(move |n| {
            let (stores, r) = (stores.clone(), request(n));
            async move { stores.requests.create(&r, Outbox::none()).await }
        }))
    };
    for written in create_all(10..26).await {
        written.unwrap();
    }

    tokio::time::sleep(BEAT * 4).await;
    assert!(
        !publish_is_notified(&mq, &mut listener, &topic, "alone").await,
        "a backend alone notified a publish"
    );
    // Every statement that would notify runs without it: writes, one with
    // an outbox, the feed round numbering its change, an ack.
    for written in create_all(30..46).await {
        written.unwrap();
    }
    let outbox = change("r1").publish(OutgoingMessage::new(topic.clone(), "q", "hop", json!({})));
    stores.requests.create(&request(1), outbox).await.unwrap();
    let feed: Arc<dyn ChangeFeed> = db.backend.clone();
    let numbered = feed.read_after(0, 100).await.unwrap();
    assert_eq!(numbered.len(), 1, "the change was numbered: {numbered:?}");
    let leased = mq
        .receive(&topic, "presence", 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(leased.len(), 2, "the heads of p and q: {leased:?}");
    for delivery in &leased {
        mq.ack(delivery).await.unwrap();
    }
    assert!(
        mq.receive(&topic, "presence", 10, Duration::from_secs(30))
            .await
            .unwrap()
            .iter()
            .all(|d| d.message_id != "young" && d.message_id != "hop"),
        "acked messages are gone"
    );

    let replica = db.replica().await;
    let mut heard = false;
    for attempt in 0..20 {
        if publish_is_notified(&mq, &mut listener, &topic, &format!("replica-{attempt}")).await {
            heard = true;
            break;
        }
    }
    assert!(heard, "a replica announced itself and was never notified");

    replica.close().await;
    tokio::time::sleep(BEAT * 4).await;
    assert!(
        !publish_is_notified(&mq, &mut listener, &topic, "gone").await,
        "a replica gone for three heartbeats was still notified"
    );
    db.finish().await;
}

/// Operators see a feed held back: the tail's gauge tells how long
/// committed rows have waited behind an open transaction, and falls back
/// to 0 once it ends. One thread, so that the tail's task records into
/// this test's recorder.
#[tokio::test]
async fn the_held_back_gauge_tells_how_long_the_feed_has_waited() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let Some(db) = TestDb::open(Kind::Postgres).await else {
        return;
    };
    let held_back = || -> f64 {
        let text = scrape.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("stovepipe_feed_held_back_seconds "))
            .unwrap_or_else(|| panic!("the gauge is exposed:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (raw, early) = open_write_transaction(&db).await;
    let stores = db.backend.for_queue(&queue());
    let outbox = Outbox::none().change(request_changed("held"));
    // Returns once its wait for the feed (2 s) runs out.
    stores.requests.create(&request(1), outbox).await.unwrap();
    let waited = held_back();
    assert!(
        waited >= 1.0,
        "held back for about 2 s, the gauge says {waited}"
    );

    early.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held_back() > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gauge falls back to 0 once the transaction ends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    raw.close().await.unwrap();
    db.finish().await;
}

/// `sqlite::memory:` is one private database on the single writer
/// connection, which serves reads too.
#[tokio::test]
async fn in_memory_sqlite_works_end_to_end() {
    let backend = SqlBackend::connect("sqlite::memory:").await.unwrap();
    backend.migrate().await.unwrap();
    let stores = backend.for_queue(&queue());
    assert_eq!(
        stores.request_uris.mint(&request(1).uri).await.unwrap(),
        (request(1).id, true)
    );
    let change = NewChange::new(&queue(), ChangeKind::RequestCreated, "r1", json!({}));
    stores
        .requests
        .create(&request(1), Outbox::none().change(change))
        .await
        .unwrap();
    assert_eq!(
        stores.requests.get(&request(1).id).await.unwrap(),
        Some(request(1))
    );
    let feed: Arc<dyn ChangeFeed> = backend.clone();
    assert_eq!(feed.last_seq().await.unwrap(), 1);
    assert!(!backend.is_postgres());
}
