//! The consumer runtime under real time: consumers pick work up through
//! wake-ups, renew leases while a slow handler runs, and drain on shutdown.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stovepipe_adapter_memory::{
    ManualClock, MemoryBackend, ScriptedBuildRunner, ScriptedRepo, ScriptedRunnerFactory,
    ScriptedScmFactory,
};
use stovepipe_app::runtime::run_consumer;
use stovepipe_app::{ConsumerSettings, Deps, Handler, Outcome, Pipeline, RetryPolicy, StageError};
use stovepipe_entity::{ProjectName, QueueConfig, QueueName, Timestamp};
use stovepipe_ports::{
    Delivery, MessageQueue, OutgoingMessage, QueueConfigStore, StoreFactory, Stores, SystemClock,
    Topic,
};
use tokio_util::sync::CancellationToken;

fn fast_settings(id: &str) -> ConsumerSettings {
    let mut s = ConsumerSettings::new(id);
    s.idle_poll = Duration::from_millis(50);
    s.lease = Duration::from_millis(300);
    s.drain_timeout = Duration::from_secs(5);
    s
}

/// Runs `handler`'s consumer on `mq` with the default retry policy until
/// `cancel`.
fn spawn_consumer(
    handler: Arc<dyn Handler>,
    mq: &Arc<dyn MessageQueue>,
    settings: ConsumerSettings,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_consumer(
        handler,
        mq.clone(),
        Arc::new(SystemClock::default()),
        RetryPolicy::default(),
        settings,
        cancel.clone(),
    ))
}

/// Waits until `head` of `repo` has its whole-repo fact.
async fn recorded(stores: &Stores, repo: &ScriptedRepo, head: &str) {
    eventually(&format!("{} {head} recorded", repo.queue()), async || {
        stores
            .facts
            .get(&repo.uri(head), &ProjectName::whole_repo())
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

/// Retries that wait an hour: a test that needs one times out.
fn no_retry_in_time() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_hours(1),
        max_backoff: Duration::from_hours(1),
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A pipeline on the memory backend under the system clock: queue `q`,
/// whose builds finish after `polls` status polls, with 20 ms delays.
struct RealTime {
    backend: Arc<MemoryBackend>,
    queue: QueueName,
    repo: ScriptedRepo,
    pipeline: Pipeline,
}

async fn real_time(polls: u32) -> RealTime {
    let clock = Arc::new(SystemClock::default());
    let backend = MemoryBackend::new(clock.clone());
    let queue = QueueName::new("q").unwrap();
    let repo = ScriptedRepo::new(queue.clone());
    let runner = ScriptedBuildRunner::new();
    runner.set_polls_before_finish(polls);
    let mut config = QueueConfig::new(queue.clone(), "mem", "main");
    config.poll_delay_accepted = Duration::from_millis(20);
    config.poll_delay_running = Duration::from_millis(20);
    config.gate_wait_delay = Duration::from_millis(20);
    backend.upsert(&config).await.unwrap();
    let pipeline = Pipeline::new(Deps {
        stores: backend.clone(),
        configs: backend.clone(),
        read: backend.clone(),
        scm: Arc::new(ScriptedScmFactory::new().with(repo.clone())),
        runners: Arc::new(ScriptedRunnerFactory::new(runner)),
        mq: backend.clone(),
        feed: backend.clone(),
        clock,
        hooks: backend.clone(),
        sink: Arc::new(stovepipe_adapter_memory::RecordingHookSink::new()),
    });
    RealTime {
        backend,
        queue,
        repo,
        pipeline,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_run_the_pipeline_and_drain_on_shutdown() {
    let RealTime {
        backend,
        queue,
        repo,
        pipeline,
    } = real_time(2).await;
    let cancel = CancellationToken::new();
    let mut consumers =
        pipeline.spawn_consumers(&RetryPolicy::default(), &fast_settings("t"), &cancel);

    for c in ["A", "B", "C"] {
        repo.push(c);
        pipeline.ingest().ingest("q", None).await.unwrap();
    }
    let stores = backend.for_queue(&queue);
    recorded(&stores, &repo, "C").await;
    // The queue row that moves the bookmark and releases the slot is
    // written just after the fact.
    eventually("bookmark at C and no slot held", async || {
        let q = stores.queues.get().await.unwrap().unwrap();
        q.last_green.as_ref().map(|g| &g.uri) == Some(&repo.uri("C")) && q.in_flight_count() == 0
    })
    .await;

    cancel.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while consumers.join_next().await.is_some() {}
    })
    .await;
    assert!(drained.is_ok(), "every consumer stops after cancel");
}

/// Each stage's hop can reach the next stage before the write that
/// published it has returned to its writer. The pipeline keeps the rows
/// its stages write (`CachedStores`): the next stage must read the row as
/// written, never as it was before, or it would take the row for "not yet"
/// and retry. With a retry backoff of an hour, any such retry stalls a
/// request past the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_stage_reads_a_row_as_its_hop_s_write_left_it() {
    let RealTime {
        backend,
        queue,
        repo,
        pipeline,
    } = real_time(0).await;
    let cancel = CancellationToken::new();
    let mut consumers = pipeline.spawn_consumers(&no_retry_in_time(), &fast_settings("t"), &cancel);
    let stores = backend.for_queue(&queue);
    for n in 0..20 {
        let head = format!("c{n}");
        repo.push(&head);
        pipeline.ingest().ingest("q", None).await.unwrap();
        recorded(&stores, &repo, &head).await;
    }
    cancel.cancel();
    while consumers.join_next().await.is_some() {}
}

/// Two replicas, each a pipeline with its own kept rows (`CachedStores`),
/// share one store and message queue, and ingest through either. A row one
/// replica keeps can be behind the other's write by up to `ROW_STALENESS`:
/// a stage that finds its row behind what its hop proves reads it again
/// from the store, a closed gate is checked on the stored row, and a write
/// from a stale row loses its compare-and-swap and reloads. So no delivery
/// waits for a retry (the backoff here is an hour), and nothing is
/// dead-lettered or left holding a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_their_own_kept_rows_validate_every_head() {
    let clock = Arc::new(SystemClock::default());
    let backend = MemoryBackend::new(clock.clone());
    let runner = ScriptedBuildRunner::new();
    runner.set_polls_before_finish(1);
    let mut scm = ScriptedScmFactory::new();
    let mut repos = Vec::new();
    for q in ["q1", "q2", "q3"] {
        let queue = QueueName::new(q).unwrap();
        let repo = ScriptedRepo::new(queue.clone());
        scm = scm.with(repo.clone());
        let mut config = QueueConfig::new(queue, "mem", "main");
        config.poll_delay_accepted = Duration::from_millis(20);
        config.poll_delay_running = Duration::from_millis(20);
        config.gate_wait_delay = Duration::from_millis(20);
        backend.upsert(&config).await.unwrap();
        repos.push(repo);
    }
    let scm = Arc::new(scm);
    let replica = || {
        Pipeline::new(Deps {
            stores: backend.clone(),
            configs: backend.clone(),
            read: backend.clone(),
            scm: scm.clone(),
            runners: Arc::new(ScriptedRunnerFactory::new(runner.clone())),
            mq: backend.clone(),
            feed: backend.clone(),
            clock: clock.clone(),
            hooks: backend.clone(),
            sink: Arc::new(stovepipe_adapter_memory::RecordingHookSink::new()),
        })
    };
    let replicas = [replica(), replica()];
    let cancel = CancellationToken::new();
    let mut consumers = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let settings = fast_settings(&format!("replica{i}"));
        consumers.push(r.spawn_consumers(&no_retry_in_time(), &settings, &cancel));
    }

    let heads = 8;
    // One closed loop per queue, all at once: push, ingest through the
    // replicas in turn, wait for the fact.
    let drive = async |repo: &ScriptedRepo| {
        let stores = backend.for_queue(repo.queue());
        for n in 0..heads {
            let head = format!("c{n}");
            repo.push(&head);
            let through = &replicas[n % 2];
            through
                .ingest()
                .ingest(repo.queue().as_str(), None)
                .await
                .unwrap();
            recorded(&stores, repo, &head).await;
        }
    };
    futures::future::join_all(repos.iter().map(drive)).await;
    // Record writes the fact before the queue row that moves the bookmark
    // and releases the slot: the row settles just after the last fact.
    for repo in &repos {
        let last = repo.uri(&format!("c{}", heads - 1));
        let what = format!(
            "{}: bookmark at the last head and no slot left held",
            repo.queue()
        );
        eventually(&what, async || {
            let row = backend
                .for_queue(repo.queue())
                .queues
                .get()
                .await
                .unwrap()
                .unwrap();
            row.in_flight_count() == 0 && row.last_green.as_ref().map(|g| &g.uri) == Some(&last)
        })
        .await;
    }
    let mq: Arc<dyn MessageQueue> = backend.clone();
    assert!(
        mq.dead_letters(None, 10).await.unwrap().is_empty(),
        "no dead letters"
    );
    cancel.cancel();
    for mut set in consumers {
        while set.join_next().await.is_some() {}
    }
}

/// Takes `nap` over every delivery of its topic, then acknowledges it,
/// counting the deliveries it started, finished and had at once.
struct Sleeper {
    topic: &'static str,
    nap: Duration,
    started: AtomicUsize,
    now: AtomicUsize,
    most: AtomicUsize,
    done: AtomicUsize,
}

impl Sleeper {
    fn new(topic: &'static str, nap: Duration) -> Arc<Self> {
        Arc::new(Self {
            topic,
            nap,
            started: AtomicUsize::new(0),
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        })
    }

    /// Slower than `fast_settings`' 300 ms lease.
    fn slow() -> Arc<Self> {
        Self::new("slow", Duration::from_millis(1200))
    }
}

#[async_trait]
impl Handler for Sleeper {
    fn topic(&self) -> Topic {
        Topic::new(self.topic)
    }
    async fn handle(&self, _: &Delivery) -> Result<Outcome, StageError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.nap).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::Ack)
    }
}

/// A handler slower than the lease: renewal keeps the partition with its
/// consumer, so a second consumer never handles the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_a_slow_handler_runs() {
    let backend = MemoryBackend::new(Arc::new(SystemClock::default()));
    let mq: Arc<dyn MessageQueue> = backend.clone();
    let slow = Sleeper::slow();
    let cancel = CancellationToken::new();
    let a = spawn_consumer(slow.clone(), &mq, fast_settings("a"), &cancel);
    let b = spawn_consumer(slow.clone(), &mq, fast_settings("b"), &cancel);
    mq.publish(OutgoingMessage::new(
        Topic::new("slow"),
        "p",
        "m1",
        serde_json::json!({}),
    ))
    .await
    .unwrap();
    eventually("the message is acked", async || {
        backend.pending_messages(&Topic::new("slow")) == 0
    })
    .await;
    assert_eq!(
        slow.started.load(Ordering::SeqCst),
        1,
        "handled exactly once despite a 300 ms lease"
    );
    cancel.cancel();
    a.await.unwrap();
    b.await.unwrap();
}

/// A consumer handles up to `max_in_flight` partitions' deliveries at
/// once, and never more, and tells operators when it is full. (One
/// thread: the metrics recorder is the test's own.)
#[tokio::test]
async fn max_in_flight_bounds_the_deliveries_handled_at_once() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let backend = MemoryBackend::new(Arc::new(SystemClock::default()));
    let mq: Arc<dyn MessageQueue> = backend.clone();
    publish_one_per_partition(&mq, "wide", 10).await;
    let handler = Sleeper::new("wide", Duration::from_millis(100));
    let mut settings = fast_settings("a");
    settings.max_in_flight = 4;
    let cancel = CancellationToken::new();
    let consumer = spawn_consumer(handler.clone(), &mq, settings, &cancel);
    eventually("every delivery is handled", async || {
        handler.done.load(Ordering::SeqCst) == 10
    })
    .await;
    cancel.cancel();
    consumer.await.unwrap();
    assert_eq!(handler.most.load(Ordering::SeqCst), 4);
    let text = scrape.render();
    // The last count the loop saw, never above the bound.
    let in_flight = scraped(&text, r#"stovepipe_consumer_in_flight{topic="wide"}"#);
    assert!(in_flight.is_some_and(|n| n <= 4.0), "{text}");
    // Ten deliveries through four slots: full at least twice.
    let full = scraped(&text, r#"stovepipe_consumer_full_total{topic="wide"}"#);
    assert!(full.is_some_and(|n| n >= 2.0), "{text}");
}

/// Each topic's deliveries are timed for operators: how long a message
/// waited from its publish to its handler, and how long the handler took.
/// (One thread: the metrics recorder is the test's own.)
#[tokio::test]
async fn each_delivery_s_wait_and_handling_are_timed_by_topic() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000)));
    let backend = MemoryBackend::new(clock.clone());
    let mq: Arc<dyn MessageQueue> = backend.clone();
    publish_one_per_partition(&mq, "timed", 3).await;
    // Two seconds pass before a consumer takes them.
    clock.advance(Duration::from_secs(2));
    let handler = Sleeper::new("timed", Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        handler.clone(),
        mq.clone(),
        clock.clone(),
        RetryPolicy::default(),
        fast_settings("a"),
        cancel.clone(),
    ));
    eventually("every delivery is handled", async || {
        handler.done.load(Ordering::SeqCst) == 3
    })
    .await;
    cancel.cancel();
    consumer.await.unwrap();
    let text = scrape.render();
    let timed =
        |metric: &str, part: &str| scraped(&text, &format!("{metric}_{part}{{topic=\"timed\"}}"));
    assert_eq!(
        timed("stovepipe_stage_wait_seconds", "count"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        timed("stovepipe_stage_wait_seconds", "sum"),
        Some(6.0),
        "each waited the two seconds: {text}"
    );
    assert_eq!(
        timed("stovepipe_stage_handle_seconds", "count"),
        Some(3.0),
        "{text}"
    );
    let handling = timed("stovepipe_stage_handle_seconds", "sum").unwrap();
    assert!(
        (0.3..3.0).contains(&handling),
        "three handlings of 100 ms each: {handling} s"
    );
}

/// Publishes one message to each of `partitions` partitions of `topic`.
async fn publish_one_per_partition(mq: &Arc<dyn MessageQueue>, topic: &str, partitions: usize) {
    for partition in 0..partitions {
        mq.publish(OutgoingMessage::new(
            Topic::new(topic),
            format!("p{partition}"),
            "m",
            serde_json::json!({}),
        ))
        .await
        .unwrap();
    }
}

/// The value of the series `series` (name and labels) in a Prometheus
/// scrape.
fn scraped(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|n| n.parse().ok())
}

/// Shutdown waits for an in-flight delivery to finish and settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_deliveries() {
    let backend = MemoryBackend::new(Arc::new(SystemClock::default()));
    let mq: Arc<dyn MessageQueue> = backend.clone();
    let slow = Sleeper::slow();
    let cancel = CancellationToken::new();
    let consumer = spawn_consumer(slow.clone(), &mq, fast_settings("a"), &cancel);
    mq.publish(OutgoingMessage::new(
        Topic::new("slow"),
        "p",
        "m1",
        serde_json::json!({}),
    ))
    .await
    .unwrap();
    eventually("the handler started", async || {
        slow.started.load(Ordering::SeqCst) == 1
    })
    .await;
    cancel.cancel();
    consumer.await.unwrap();
    assert_eq!(
        backend.pending_messages(&Topic::new("slow")),
        0,
        "the in-flight delivery was acked before the consumer stopped"
    );
}

/// Holds each message once for 30 ms, then acknowledges it.
struct HoldsOnce {
    handled: AtomicUsize,
}

#[async_trait]
impl Handler for HoldsOnce {
    fn topic(&self) -> Topic {
        Topic::new("held")
    }

    async fn handle(&self, d: &Delivery) -> Result<Outcome, StageError> {
        if self.handled.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = d;
            return Ok(Outcome::Hold(Duration::from_millis(30)));
        }
        Ok(Outcome::Ack)
    }
}

/// A held message comes due without any publish or ack waking the topic:
/// the consumer that held it must take it up again when it is due, not at
/// its (here very long) idle poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_is_taken_up_when_due_not_at_the_idle_poll() {
    let backend = MemoryBackend::new(Arc::new(SystemClock::default()));
    let mq: Arc<dyn MessageQueue> = backend.clone();
    let handler = Arc::new(HoldsOnce {
        handled: AtomicUsize::new(0),
    });
    let mut settings = fast_settings("held");
    settings.idle_poll = Duration::from_secs(30);
    let cancel = CancellationToken::new();
    let consumer = spawn_consumer(handler.clone(), &mq, settings, &cancel);
    let started = Instant::now();
    mq.publish(OutgoingMessage::new(
        Topic::new("held"),
        "p",
        "m",
        serde_json::json!({}),
    ))
    .await
    .unwrap();
    eventually("the held message handled again", async || {
        handler.handled.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "taken up after {:?}, not when due",
        started.elapsed()
    );
    cancel.cancel();
    consumer.await.unwrap();
}
