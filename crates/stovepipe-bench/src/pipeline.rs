//! The pipeline harness: the production wiring (`stovepipe_server::wiring`,
//! SQL backend, migrations, `spawn_consumers` with production settings)
//! with two adapters swapped for instant ones — scripted repositories
//! (`ScriptedRepo`) and an in-process runner that finishes on its first
//! poll — plus a change-feed watcher that timestamps each request's fact.
//!
//! Owns the `pipeline` (throughput, many queues) and `latency` (one queue,
//! sequential) measurements; `memory` reuses the throughput run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use futures::StreamExt as _;
use serde::Serialize;
use stovepipe_adapter_memory::{DEFAULT_PROMOTION_REF, ScriptedRepo, ScriptedScmFactory};
use stovepipe_app::{ConsumerSettings, Deps, IngestService, Pipeline, RetryPolicy};
use stovepipe_entity::{
    BuildId, BuildReport, BuildStatus, ChangeEvent, ChangeKind, QueueConfig, QueueName, Uri,
};
use stovepipe_ports::{
    BuildRunner, BuildRunnerFactory, ChangeFeed, RunnerError, SystemClock, TriggerRequest,
};
use stovepipe_server::config::Settings;
use stovepipe_server::wiring::{Backend, Wired, wire};
use tokio::sync::{RwLock, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cpu::{CpuMeter, CpuUse};
use crate::recorder::{self, ReadsPerFact, StageTime};
use crate::support::{
    PgbenchRun, Rss, in_units, median, ms, per, percentile, pgbench_measured, progress, ratio,
    wal_position, write_lanes_setting,
};

/// How long a paired round lets the loops restart before its window
/// counts facts (a few ingest-to-fact latencies).
const SETTLE: Duration = Duration::from_millis(500);

/// How long one ingest may wait for its fact before the run is declared
/// broken.
const FACT_TIMEOUT: Duration = Duration::from_mins(1);

/// Every tenth commit breaks the build: the runner "succeeds or fails by
/// rule", so both verdicts go through `record`.
fn breaks(head: &Uri) -> bool {
    head.as_str()
        .rsplit('/')
        .next()
        .and_then(|id| id.strip_prefix('c'))
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n % 10 == 0)
}

/// A build runner that keeps nothing: the verdict is part of the build id
/// and the first status poll is terminal.
#[derive(Debug, Default)]
struct InstantRunner {
    next: AtomicU64,
}

#[async_trait]
impl BuildRunner for InstantRunner {
    async fn trigger(&self, request: &TriggerRequest) -> Result<BuildId, RunnerError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let verdict = if breaks(&request.head) { "red" } else { "ok" };
        Ok(BuildId::new(format!("instant-{n}-{verdict}"))?)
    }

    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError> {
        Ok(BuildReport::with_status(if id.as_str().ends_with("-red") {
            BuildStatus::Failed
        } else {
            BuildStatus::Succeeded
        }))
    }

    async fn cancel(&self, _id: &BuildId) -> Result<(), RunnerError> {
        Ok(())
    }
}

#[derive(Debug)]
struct InstantRunnerFactory(Arc<InstantRunner>);

#[async_trait]
impl BuildRunnerFactory for InstantRunnerFactory {
    async fn for_queue(&self, _config: &QueueConfig) -> Result<Arc<dyn BuildRunner>, RunnerError> {
        Ok(self.0.clone())
    }
}

/// How a request ended, as the change feed told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Green,
    Broken,
    /// `validation.error`: failed closed, no fact.
    Error,
}

#[derive(Debug)]
enum Slot {
    Waiting(oneshot::Sender<Verdict>),
    Arrived(Verdict),
}

/// Tails the change feed and hands each request's verdict to its waiter.
#[derive(Debug, Default)]
struct FactWatcher {
    slots: Mutex<HashMap<String, Slot>>,
}

impl FactWatcher {
    fn observe(&self, event: &ChangeEvent) {
        let verdict = match event.kind {
            ChangeKind::ValidationRecorded => {
                if event.data.get("green").and_then(serde_json::Value::as_bool) == Some(true) {
                    Verdict::Green
                } else {
                    Verdict::Broken
                }
            }
            ChangeKind::ValidationError => Verdict::Error,
            _ => return,
        };
        let Some(request) = event
            .data
            .get("request_id")
            .and_then(serde_json::Value::as_str)
        else {
            return;
        };
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.remove(request) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(verdict);
            }
            _ => {
                slots.insert(request.to_owned(), Slot::Arrived(verdict));
            }
        }
    }

    async fn wait(&self, request: &str) -> anyhow::Result<Verdict> {
        let rx = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(Slot::Arrived(v)) = slots.get(request) {
                let v = *v;
                slots.remove(request);
                return Ok(v);
            }
            let (tx, rx) = oneshot::channel();
            slots.insert(request.to_owned(), Slot::Waiting(tx));
            rx
        };
        tokio::time::timeout(FACT_TIMEOUT, rx)
            .await
            .with_context(|| format!("no fact for {request} within {FACT_TIMEOUT:?}"))?
            .context("the change-feed watcher stopped")
    }

    /// Subscribes, catches up with `read_after`, then follows the live
    /// stream; a lagged stream resubscribes and replays.
    async fn run(self: Arc<Self>, feed: Arc<dyn ChangeFeed>, cancel: CancellationToken) {
        let mut last = feed.last_seq().await.unwrap_or(0);
        while !cancel.is_cancelled() {
            let mut stream = feed.subscribe();
            loop {
                match feed.read_after(last, 1000).await {
                    Ok(events) if !events.is_empty() => {
                        for e in &events {
                            self.observe(e);
                            last = e.seq;
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        eprintln!("warning: change feed read failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    next = stream.next() => next,
                };
                match next {
                    Some(Ok(e)) if e.seq > last => {
                        self.observe(&e);
                        last = e.seq;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        }
    }
}

/// What a pipeline run drives, and how its database is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Scripted queues, each a closed loop of one request in flight.
    pub queues: usize,
    /// `database.write_lanes` (`--write-lanes`): how many batches of writes
    /// Postgres runs at once; `None` for the server's default. SQLite has
    /// one writer whatever it says.
    pub write_lanes: Option<usize>,
}

impl Load {
    /// One queue on the server's defaults (the latency benchmark).
    pub const ONE_QUEUE: Self = Self {
        queues: 1,
        write_lanes: None,
    };
}

/// A wired pipeline on one database with `load.queues` scripted queues.
pub struct Harness {
    pub wired: Wired,
    pub pipeline: Pipeline,
    repos: Vec<ScriptedRepo>,
    watcher: Arc<FactWatcher>,
    cancel: CancellationToken,
    consumers: JoinSet<()>,
    watch_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("queues", &self.repos.len())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// `database_url`: `None` for a SQLite file in a temp dir.
    pub async fn start(database_url: Option<&str>, load: Load) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = database_url.map_or_else(
            || format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()),
            str::to_owned,
        );
        let lanes = write_lanes_setting(load.write_lanes);
        let settings = Settings::from_toml(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[database]\nurl = \"{url}\"\n{lanes}",
            dir.path().join("data").display()
        ))
        .map_err(|e| anyhow::anyhow!("bench settings: {e}"))?;
        let wired = wire(&settings, Arc::new(SystemClock::default())).await?;

        let scm = ScriptedScmFactory::new();
        let mut repos = Vec::with_capacity(load.queues);
        for i in 0..load.queues {
            let name = QueueName::new(format!("bench/q{i:02}"))?;
            let repo = ScriptedRepo::new(name.clone());
            repo.push("c0");
            scm.add(repo.clone());
            let mut config = QueueConfig::new(name, format!("mem://bench/q{i:02}"), "main");
            config.promotion_ref = Some(DEFAULT_PROMOTION_REF.to_owned());
            config.poll_interval = Duration::ZERO;
            // The runner is instant: a poll never finds a running build,
            // and the closed loop never meets a closed gate. Small delays
            // keep an unexpected hold from dominating.
            config.gate_wait_delay = Duration::from_millis(10);
            config.poll_delay_accepted = Duration::from_millis(10);
            config.poll_delay_running = Duration::from_millis(10);
            wired.pipeline.deps().configs.upsert(&config).await?;
            repos.push(repo);
        }
        // Everything else (stores, message queue, feed, hooks) is the
        // server's own wiring.
        let deps = Deps {
            scm: Arc::new(scm),
            runners: Arc::new(InstantRunnerFactory(Arc::new(InstantRunner::default()))),
            ..(**wired.pipeline.deps()).clone()
        };
        let pipeline = Pipeline::new(deps);

        let cancel = CancellationToken::new();
        let watcher = Arc::new(FactWatcher::default());
        let watch_task = tokio::spawn(
            watcher
                .clone()
                .run(pipeline.deps().feed.clone(), cancel.clone()),
        );
        let consumers = pipeline.spawn_consumers(
            &RetryPolicy::default(),
            &ConsumerSettings::new("bench"),
            &cancel,
        );
        Ok(Self {
            wired,
            pipeline,
            repos,
            watcher,
            cancel,
            consumers,
            watch_task,
            _dir: dir,
        })
    }

    /// Stops the consumers (draining) and closes the pools.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        while self.consumers.join_next().await.is_some() {}
        let _ = self.watch_task.await;
        self.wired.backend.close().await;
    }
}

/// One queue's closed loop: push a commit, ingest the head, wait for its
/// fact; repeat until `stop`. Each iteration holds `gate` for reading, so a
/// writer of `gate` pauses every loop once the requests in flight have
/// their facts.
#[allow(clippy::too_many_arguments)]
async fn drive(
    ingest: IngestService,
    repo: ScriptedRepo,
    watcher: Arc<FactWatcher>,
    gate: Arc<RwLock<()>>,
    stop: CancellationToken,
    done: Arc<AtomicU64>,
    limit: Option<usize>,
    first_commit: u64,
) -> anyhow::Result<(Vec<f64>, [u64; 3])> {
    let queue = repo.queue().to_string();
    let mut latencies = Vec::new();
    let mut verdicts = [0u64; 3];
    let mut k = first_commit;
    while !stop.is_cancelled() && limit.is_none_or(|l| latencies.len() < l) {
        let _running = gate.read().await;
        k += 1;
        repo.push(&format!("c{k}"));
        let started = Instant::now();
        let outcome = ingest
            .ingest(&queue, None)
            .await
            .with_context(|| format!("ingest {queue}"))?;
        if !outcome.created {
            bail!("ingest of a new head of {queue} was deduplicated");
        }
        let verdict = watcher.wait(outcome.request_id.as_str()).await?;
        latencies.push(ms(started.elapsed()));
        verdicts[verdict as usize] += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok((latencies, verdicts))
}

/// Facts per second of one backend, in windows after a warm-up.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub backend: String,
    pub queues: usize,
    /// The batches of writes the database ran at once (the backend's own
    /// count: 1 on SQLite).
    pub write_lanes: usize,
    pub window_seconds: f64,
    pub windows_per_second: Vec<f64>,
    pub median_per_second: f64,
    pub facts: u64,
    pub green: u64,
    pub broken: u64,
    pub errors: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// Postgres: committed and rolled-back transactions of the database
    /// over the measured windows (`pg_stat_database`, which backends flush
    /// about once a second), per recorded fact.
    pub db_transactions_per_fact: Option<f64>,
    /// Postgres: bytes of WAL written over the measured windows (rows,
    /// index entries, commits) per recorded fact: the volume of the writes.
    pub wal_bytes_per_fact: Option<f64>,
    /// CPU over the measured windows: the Postgres server's (absent for
    /// SQLite, or when the server is not on this machine), this process's,
    /// and how busy the machine was.
    pub cpu: CpuUse,
    /// The pipeline's row-cache reads over the measured windows (counted
    /// from the same instants as `db_transactions_per_fact`), per recorded
    /// fact, by where they were served from (`recorder`).
    pub row_cache_reads_per_fact: Option<ReadsPerFact>,
    /// Where a request's time went over the measured windows, stage by
    /// stage: the wait for each stage to take its hop and its handling
    /// (`recorder`). On Postgres the windows' spans include the pauses
    /// for pgbench, in which nothing is delivered.
    pub stage_times: Vec<StageTime>,
    /// `cpu`'s server and process time per recorded fact, in ms.
    pub postgres_cpu_ms_per_fact: Option<f64>,
    pub bench_cpu_ms_per_fact: Option<f64>,
    pub rss_end: Rss,
    /// With a baseline: each window and the baseline run after it.
    pub rounds: Vec<PairedRound>,
}

/// A baseline run between the pipeline's windows, on the same server: the
/// loops pause (the requests in flight finish), `pgbench <mode>` runs for
/// `seconds`, the loops go on. Whatever else the machine is doing (a busy
/// neighbour, a slower CPU for a while) then weighs on a window and its
/// baseline alike, and each round gives its own ratio.
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    pub url: &'a str,
    pub mode: &'a str,
    pub seconds: u32,
}

/// One window of the pipeline and the baseline run right after it.
#[derive(Debug, Clone, Serialize)]
pub struct PairedRound {
    /// Facts per second over the window, which starts [`SETTLE`] after
    /// the loops resume.
    pub pipeline_per_second: f64,
    /// Facts recorded from the loops' resuming until they were paused
    /// again with nothing in flight, and the server's CPU and the WAL
    /// written over that span: the whole work of those requests.
    pub pipeline_facts: u64,
    pub pipeline_cpu: CpuUse,
    pub pipeline_wal_bytes: u64,
    pub baseline: PgbenchRun,
    pub baseline_cpu: CpuUse,
    pub baseline_wal_bytes: u64,
}

impl PairedRound {
    /// The pipeline's facts per second over the baseline's transactions
    /// per second.
    pub fn ratio(&self) -> f64 {
        ratio(self.pipeline_per_second, self.baseline.tps)
    }

    /// The server's CPU per fact, in milliseconds.
    pub fn server_ms_per_fact(&self) -> Option<f64> {
        self.pipeline_cpu.server_ms_per(self.pipeline_facts)
    }

    /// The server's CPU per baseline transaction, in milliseconds.
    pub fn server_ms_per_transaction(&self) -> Option<f64> {
        self.baseline_cpu.server_ms_per(self.baseline.transactions)
    }

    pub fn wal_bytes_per_fact(&self) -> Option<f64> {
        per(self.pipeline_wal_bytes as f64, self.pipeline_facts)
    }

    pub fn wal_bytes_per_transaction(&self) -> Option<f64> {
        per(self.baseline_wal_bytes as f64, self.baseline.transactions)
    }

    /// The server's CPU per fact, in the baseline's CPU per transaction.
    pub fn work(&self) -> Option<f64> {
        in_units(self.server_ms_per_fact(), self.server_ms_per_transaction())
    }

    /// The WAL per fact, in the baseline's WAL per transaction.
    pub fn wal(&self) -> Option<f64> {
        in_units(self.wal_bytes_per_fact(), self.wal_bytes_per_transaction())
    }

    /// A baseline transaction's CPU (pgbench's and the server's) over a
    /// request's (this process's, the loops and the pipeline, and the
    /// server's): the ratio the round would read with the machine as busy
    /// under the pipeline as under pgbench.
    pub fn cpu_ratio(&self) -> Option<f64> {
        self.pipeline_cpu.ratio_to_baseline(
            self.pipeline_facts,
            &self.baseline_cpu,
            self.baseline.transactions,
        )
    }

    /// How busy the machine was under the pipeline over under pgbench: the
    /// other factor of [`Self::ratio`], about `cpu_ratio × busy_ratio`.
    pub fn busy_ratio(&self) -> f64 {
        ratio(
            self.pipeline_cpu.machine_busy_share,
            self.baseline_cpu.machine_busy_share,
        )
    }

    /// The round in one line, for the progress of a run.
    pub fn summary(&self) -> String {
        let work = self
            .work()
            .map_or_else(String::new, |w| format!(", work {w:.1}"));
        format!(
            "{:.0} requests/s beside `{}` at {:.0} tps: {:.3} ×{work}",
            self.pipeline_per_second,
            self.baseline.args,
            self.baseline.tps,
            self.ratio()
        )
    }
}

/// Postgres: gathers the planner's statistics of the bench's database,
/// whose tables filled during the warm-up. A database in service has them:
/// autovacuum analyses a table within about a minute (its nap time) of 50
/// rows and a tenth of it changing, and `pgbench -i` analyses the
/// baseline's tables. Without them the planner sees seconds-old tables as
/// a page or so, prices every index alike, and its generic plans, kept on
/// the held connections until statistics arrive, looked a request up by
/// `number` through the `(queue, uri)` index and a build by `build_id`
/// through `(queue, inserted)`, reading the queue's whole history each
/// time.
fn analyze(database_url: Option<&str>) -> anyhow::Result<()> {
    if let Some(url) = database_url {
        crate::support::psql(url, "ANALYZE")?;
    }
    Ok(())
}

/// Transactions the database has finished so far (Postgres).
fn db_transactions(database_url: Option<&str>) -> anyhow::Result<Option<u64>> {
    let Some(url) = database_url else {
        return Ok(None);
    };
    let n = crate::support::psql(
        url,
        "SELECT xact_commit + xact_rollback FROM pg_stat_database \
         WHERE datname = current_database()",
    )?;
    Ok(Some(
        n.parse().context("pg_stat_database transaction count")?,
    ))
}

/// What one measured stretch used: facts done, CPU, and WAL written (with
/// a database URL).
struct Span {
    facts: u64,
    cpu: CpuUse,
    wal_bytes: Option<u64>,
}

/// Samples the counters a [`Span`] is made of.
struct SpanStart<'a> {
    done: &'a AtomicU64,
    meter: &'a CpuMeter,
    url: Option<&'a str>,
    facts: u64,
    cpu: crate::cpu::CpuSample,
    wal: Option<u64>,
}

impl<'a> SpanStart<'a> {
    fn now(done: &'a AtomicU64, meter: &'a CpuMeter, url: Option<&'a str>) -> anyhow::Result<Self> {
        Ok(Self {
            done,
            meter,
            url,
            facts: done.load(Ordering::Relaxed),
            cpu: meter.sample(),
            wal: url.map(wal_position).transpose()?,
        })
    }

    fn end(self) -> anyhow::Result<Span> {
        let cpu = self.cpu.until(&self.meter.sample());
        let wal_after = self.url.map(wal_position).transpose()?;
        Ok(Span {
            facts: self.done.load(Ordering::Relaxed) - self.facts,
            cpu,
            wal_bytes: self
                .wal
                .zip(wal_after)
                .map(|(before, after)| after.saturating_sub(before)),
        })
    }
}

/// Facts recorded per second over one `window` from now.
async fn facts_per_second(done: &AtomicU64, window: Duration) -> f64 {
    let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(window).await;
    (done.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64()
}

#[allow(clippy::too_many_arguments)]
pub async fn throughput(
    backend: &str,
    database_url: Option<&str>,
    meter: &CpuMeter,
    load: Load,
    warmup: Duration,
    windows: usize,
    window: Duration,
    baseline: Option<Baseline<'_>>,
) -> anyhow::Result<Throughput> {
    let harness = Harness::start(database_url, load).await?;
    let write_lanes = match &harness.wired.backend {
        Backend::Sql(sql) => sql.write_lanes(),
        Backend::Memory(_) => 1,
    };
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(RwLock::new(()));
    let mut drivers = JoinSet::new();
    for repo in &harness.repos {
        drivers.spawn(drive(
            harness.pipeline.ingest(),
            repo.clone(),
            harness.watcher.clone(),
            gate.clone(),
            stop.clone(),
            done.clone(),
            None,
            0,
        ));
    }
    progress!(
        "{backend}: {} queues, warming up for {warmup:?}",
        load.queues
    );
    tokio::time::sleep(warmup).await;
    analyze(database_url)?;
    let xacts_before = db_transactions(database_url)?;
    let reads_before = recorder::counts();
    let timings_before = recorder::stage_timings();
    let mut rates = Vec::with_capacity(windows);
    let mut rounds = Vec::new();
    let mut spans = Vec::with_capacity(windows);
    match baseline {
        None => {
            let span = SpanStart::now(&done, meter, database_url)?;
            for i in 1..=windows {
                let rate = facts_per_second(&done, window).await;
                progress!("{backend}: window {i}/{windows}: {rate:.0} requests/s");
                rates.push(rate);
            }
            spans.push(span.end()?);
        }
        Some(baseline) => {
            if database_url.is_none() {
                bail!("a baseline runs beside the pipeline on Postgres, not SQLite");
            }
            let mut paused = Some(gate.write().await);
            for i in 1..=windows {
                let span = SpanStart::now(&done, meter, database_url)?;
                drop(paused.take());
                tokio::time::sleep(SETTLE).await;
                let rate = facts_per_second(&done, window).await;
                rates.push(rate);
                paused = Some(gate.write().await);
                let pipeline = span.end()?;
                let wal = wal_position(baseline.url)?;
                let (run, baseline_cpu) =
                    pgbench_measured(meter, baseline.url, baseline.mode, baseline.seconds).await?;
                let baseline_wal_bytes = wal_position(baseline.url)?.saturating_sub(wal);
                let round = PairedRound {
                    pipeline_per_second: rate,
                    pipeline_facts: pipeline.facts,
                    pipeline_cpu: pipeline.cpu,
                    pipeline_wal_bytes: pipeline.wal_bytes.unwrap_or(0),
                    baseline: run,
                    baseline_cpu,
                    baseline_wal_bytes,
                };
                progress!("{backend}: round {i}/{windows}: {}", round.summary());
                rounds.push(round);
                spans.push(pipeline);
            }
            drop(paused);
        }
    }
    let rss_end = Rss::this_process()?;
    let facts_measured: u64 = spans.iter().map(|s| s.facts).sum();
    let cpu = CpuUse::sum(spans.iter().map(|s| &s.cpu));
    let per_fact = |amount: f64| per(amount, facts_measured);
    let wal_bytes_per_fact = spans
        .iter()
        .map(|s| s.wal_bytes)
        .sum::<Option<u64>>()
        .and_then(|bytes| per_fact(bytes as f64));
    // Only the pipeline's database is counted, so the baseline's
    // transactions between the windows are not among them.
    let db_transactions_per_fact = xacts_before
        .zip(db_transactions(database_url)?)
        .and_then(|(before, after)| per_fact(after.saturating_sub(before) as f64));
    let row_cache_reads_per_fact = recorder::counts().per_fact_since(reads_before, facts_measured);
    let stage_times = recorder::stage_timings().per_fact_since(&timings_before, facts_measured);
    // The server's CPU is measured on both runs; only Postgres's is ours.
    let postgres_cpu_ms_per_fact = database_url.and(cpu.server_ms_per(facts_measured));
    let bench_cpu_ms_per_fact = cpu.this_process_ms_per(facts_measured);
    stop.cancel();
    let mut latencies = Vec::new();
    let mut verdicts = [0u64; 3];
    while let Some(joined) = drivers.join_next().await {
        let (l, v) = joined??;
        latencies.extend(l);
        for (total, n) in verdicts.iter_mut().zip(v) {
            *total += n;
        }
    }
    harness.stop().await;
    Ok(Throughput {
        backend: backend.to_owned(),
        queues: load.queues,
        write_lanes,
        window_seconds: window.as_secs_f64(),
        median_per_second: median(&rates),
        windows_per_second: rates,
        facts: verdicts[0] + verdicts[1],
        green: verdicts[Verdict::Green as usize],
        broken: verdicts[Verdict::Broken as usize],
        errors: verdicts[Verdict::Error as usize],
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p99_ms: percentile(&latencies, 0.99),
        db_transactions_per_fact,
        wal_bytes_per_fact,
        row_cache_reads_per_fact,
        stage_times,
        cpu,
        postgres_cpu_ms_per_fact,
        bench_cpu_ms_per_fact,
        rss_end,
        rounds,
    })
}

/// Ingest-to-fact latency of one queue, one ingest at a time.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub backend: String,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Where a request's time went, stage by stage (`recorder`).
    pub stage_times: Vec<StageTime>,
}

pub async fn latency(
    backend: &str,
    database_url: Option<&str>,
    warmup: usize,
    samples: usize,
) -> anyhow::Result<Latency> {
    progress!("{backend}: {warmup} ingests to warm up, then {samples} measured, one at a time");
    let harness = Harness::start(database_url, Load::ONE_QUEUE).await?;
    let repo = harness.repos[0].clone();
    let run = |n, first_commit| {
        drive(
            harness.pipeline.ingest(),
            repo.clone(),
            harness.watcher.clone(),
            Arc::new(RwLock::new(())),
            CancellationToken::new(),
            Arc::new(AtomicU64::new(0)),
            Some(n),
            first_commit,
        )
    };
    run(warmup, 0).await?;
    let timings_before = recorder::stage_timings();
    let (latencies, _) = run(samples, 1_000_000).await?;
    let stage_times =
        recorder::stage_timings().per_fact_since(&timings_before, latencies.len() as u64);
    harness.stop().await;
    Ok(Latency {
        backend: backend.to_owned(),
        samples: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: percentile(&latencies, 1.0),
        stage_times,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(server_pipeline: Option<f64>, server_pgbench: Option<f64>) -> PairedRound {
        let cpu = |server| CpuUse {
            postgres_seconds: server,
            this_process_seconds: 0.0,
            reaped_children_seconds: 0.0,
            machine_busy_share: 0.9,
        };
        PairedRound {
            pipeline_per_second: 300.0,
            pipeline_facts: 1_000,
            pipeline_cpu: cpu(server_pipeline),
            pipeline_wal_bytes: 14_000_000,
            baseline: PgbenchRun {
                args: "pgbench -N -c 8 -j 2 -T 3 -P 1".into(),
                tps: 5_000.0,
                transactions: 15_000,
                median_tps_per_second: 5_000.0,
                mean_latency_ms: 1.6,
            },
            baseline_cpu: cpu(server_pgbench),
            baseline_wal_bytes: 4_500_000,
        }
    }

    #[test]
    fn a_round_states_the_pipeline_in_its_own_baseline() {
        // 4 ms of server CPU per request against 0.25 ms per transaction.
        let r = round(Some(4.0), Some(3.75));
        assert!((r.ratio() - 0.06).abs() < 1e-9);
        assert!((r.work().unwrap() - 16.0).abs() < 1e-9);
        // 14 000 bytes per request against 300 per transaction.
        assert!((r.wal().unwrap() - 14_000.0 / 300.0).abs() < 1e-9);
    }

    #[test]
    fn a_round_sums_itself_up_in_one_line() {
        assert_eq!(
            round(Some(4.0), Some(3.75)).summary(),
            "300 requests/s beside `pgbench -N -c 8 -j 2 -T 3 -P 1` at 5000 tps: 0.060 ×, work 16.0"
        );
        assert_eq!(
            round(None, Some(3.75)).summary(),
            "300 requests/s beside `pgbench -N -c 8 -j 2 -T 3 -P 1` at 5000 tps: 0.060 ×"
        );
    }

    #[test]
    fn a_round_s_ratio_is_its_cpu_ratio_times_its_busy_ratio() {
        // A request: 1.5 ms of the server and 0.5 ms of this process; a
        // transaction 0.4 ms of the server and 0.1 ms of pgbench.
        let mut r = round(Some(1.5), Some(6.0));
        r.pipeline_cpu.this_process_seconds = 0.5;
        r.pipeline_cpu.machine_busy_share = 0.75;
        r.baseline_cpu.reaped_children_seconds = 1.5;
        assert!((r.cpu_ratio().unwrap() - 0.25).abs() < 1e-9);
        assert!((r.busy_ratio() - 0.75 / 0.9).abs() < 1e-9);
        assert_eq!(round(None, Some(6.0)).cpu_ratio(), None);
    }

    #[test]
    fn a_round_without_the_server_s_cpu_gives_no_work_figure() {
        assert_eq!(round(None, Some(3.75)).work(), None);
        assert_eq!(round(Some(4.0), None).work(), None);
        assert_eq!(round(Some(4.0), Some(0.0)).work(), None);
    }
}
