//! The API benchmark: the real HTTP server (`serve::start`, Postgres, a
//! real git repository and the command runner) driven by concurrent
//! keep-alive clients, beside `pgbench -S` on the same database.
//!
//! Owns the `api` measurement: ingest of an unchanged head, unnamed (as a
//! poller sends it) and by its commit id (as a push webhook does), each a
//! dedup hit, and greenness reads, requests per second and latency
//! percentiles. Reads of the validated head (by commit and by URI) find
//! its fact, which the server keeps after the first read (facts never
//! change); reads of a commit nobody ingested find no fact, so every one
//! asks the database: of one commit from every client, and of a commit
//! per client. Each round of an endpoint is paired with a `pgbench -S` run
//! of the same length right after it, on the idle server, and states the
//! endpoint's throughput in the baseline of its own moment: a machine
//! whose pgbench -S moves by a fifth within minutes (docs/benchmarks.md)
//! moves both halves of a pair alike. Each endpoint's CPU per request
//! (this process, its clients included, and Postgres) is set beside a
//! pgbench -S transaction's of its pairs (pgbench and Postgres): the work
//! behind each figure, which tells a change in it from a change in the
//! machine's idle time.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use stovepipe_ports::SystemClock;
use stovepipe_server::auth::{Scope, mint_token};
use stovepipe_server::config::Settings;
use stovepipe_server::serve::start;

use crate::cpu::{CpuMeter, CpuUse};
use crate::http1::{Call, Connection};
use crate::support::{
    PgbenchRun, ScratchDb, median, ms, percentile, pgbench_init, pgbench_measured, pgbench_seconds,
    postgres_admin_url, progress, ratio, write_lanes_setting,
};

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789";
const QUEUE: &str = "bench%2Fapi";

/// Concurrent client workers.
pub const WORKERS: usize = 8;

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One round of an endpoint and the `pgbench -S` run paired with it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PairedRound {
    pub requests_per_second: f64,
    pub pgbench_tps: f64,
}

impl PairedRound {
    /// The endpoint's throughput over pgbench -S's, both of this moment.
    pub fn ratio(&self) -> f64 {
        ratio(self.requests_per_second, self.pgbench_tps)
    }
}

/// One measured endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub what: String,
    pub rounds: Vec<PairedRound>,
    pub median_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: usize,
    /// CPU over its rounds (not its pgbench runs): this process (the
    /// server and its clients) and Postgres.
    pub cpu: CpuUse,
    /// The pgbench -S runs paired with its rounds.
    pub pgbench: PgbenchCpu,
}

/// Microseconds in `ms` milliseconds.
fn us(ms: f64) -> f64 {
    ms * 1e3
}

impl Endpoint {
    /// Each round's throughput over its paired pgbench -S run's.
    pub fn ratios(&self) -> Vec<f64> {
        self.rounds.iter().map(PairedRound::ratio).collect()
    }

    /// The median of [`Self::ratios`]: the endpoint's figure against the
    /// target.
    pub fn ratio(&self) -> f64 {
        median(&self.ratios())
    }

    /// This process's CPU per request, in microseconds.
    pub fn bench_us_per_request(&self) -> Option<f64> {
        self.cpu.this_process_ms_per(self.requests as u64).map(us)
    }

    /// Postgres's CPU per request, in microseconds.
    pub fn postgres_us_per_request(&self) -> Option<f64> {
        self.cpu.server_ms_per(self.requests as u64).map(us)
    }

    /// The CPU of a request (this process's and Postgres's) over the CPU
    /// of a pgbench -S transaction of its pairs (pgbench's own and
    /// Postgres's): the share of pgbench's throughput the endpoint would
    /// reach on a machine both kept busy.
    pub fn cpu_ratio(&self) -> Option<f64> {
        self.cpu.ratio_to_baseline(
            self.requests as u64,
            &self.pgbench.cpu,
            self.pgbench.transactions(),
        )
    }
}

/// `pgbench -S` runs and the CPU they took.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchCpu {
    pub runs: Vec<PgbenchRun>,
    /// Postgres's, and pgbench's own (a child this process waited for).
    pub cpu: CpuUse,
}

impl PgbenchCpu {
    /// Several stretches of runs as one.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a PgbenchCpu>) -> PgbenchCpu {
        let parts: Vec<_> = parts.into_iter().collect();
        PgbenchCpu {
            runs: parts.iter().flat_map(|p| p.runs.iter().cloned()).collect(),
            cpu: CpuUse::sum(parts.iter().map(|p| &p.cpu)),
        }
    }

    pub fn transactions(&self) -> u64 {
        self.runs.iter().map(|r| r.transactions).sum()
    }

    /// The median of the runs' TPS.
    pub fn median_tps(&self) -> f64 {
        median(&self.runs.iter().map(|r| r.tps).collect::<Vec<_>>())
    }

    pub fn pgbench_us_per_transaction(&self) -> Option<f64> {
        self.cpu.reaped_children_ms_per(self.transactions()).map(us)
    }

    pub fn postgres_us_per_transaction(&self) -> Option<f64> {
        self.cpu.server_ms_per(self.transactions()).map(us)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiRun {
    pub workers: usize,
    /// The server's `database.write_lanes` as set (`--write-lanes`); `None`:
    /// its default.
    pub write_lanes: Option<usize>,
    /// Every endpoint's paired pgbench -S runs together.
    pub pgbench_select: PgbenchCpu,
    pub endpoints: Vec<Endpoint>,
}

/// How every endpoint is measured: `rounds` rounds of `duration` against
/// `server`, each followed by `pgbench -S` for `pgbench_seconds` on
/// `pgbench_url`, the CPU read by `meter`.
struct Rounds<'a> {
    rounds: usize,
    duration: Duration,
    pgbench_seconds: u32,
    pgbench_url: &'a str,
    meter: &'a CpuMeter,
    server: &'a Server,
}

impl Rounds<'_> {
    /// `WORKERS` keep-alive clients (`http1`) send their call (client n
    /// `calls[n]`, or the one call when there is one) for each round; the
    /// round's pgbench -S run follows it.
    async fn measure(&self, what: &str, calls: Vec<Call>) -> anyhow::Result<Endpoint> {
        let calls = Arc::new(calls);
        let mut rounds = Vec::new();
        let mut latencies = Vec::new();
        let mut cpu = Vec::new();
        let mut pgbench_runs = Vec::new();
        for round in 1..=self.rounds {
            // Connected before the round's clock and CPU start.
            let mut connections = Vec::with_capacity(WORKERS);
            for _ in 0..WORKERS {
                connections.push(self.server.connect().await?);
            }
            let cpu_before = self.meter.sample();
            let started = Instant::now();
            let deadline = started + self.duration;
            let mut workers = tokio::task::JoinSet::new();
            for (worker, mut connection) in connections.into_iter().enumerate() {
                let calls = calls.clone();
                workers.spawn(async move {
                    let call = &calls[worker % calls.len()];
                    let mut samples = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        connection.send(call).await?;
                        samples.push(ms(t.elapsed()));
                    }
                    anyhow::Ok(samples)
                });
            }
            let mut count = 0;
            while let Some(joined) = workers.join_next().await {
                let samples = joined??;
                count += samples.len();
                latencies.extend(samples);
            }
            let rate = count as f64 / started.elapsed().as_secs_f64();
            cpu.push(cpu_before.until(&self.meter.sample()));
            let pgbench = self.pgbench_select().await?;
            let paired = PairedRound {
                requests_per_second: rate,
                pgbench_tps: pgbench.median_tps(),
            };
            progress!(
                "{what}: round {round}/{}: {rate:.0} requests/s beside pgbench -S at {:.0} tps: {:.3} ×",
                self.rounds,
                paired.pgbench_tps,
                paired.ratio()
            );
            rounds.push(paired);
            pgbench_runs.push(pgbench);
        }
        Ok(Endpoint {
            what: what.to_owned(),
            median_per_second: median(
                &rounds
                    .iter()
                    .map(|r| r.requests_per_second)
                    .collect::<Vec<_>>(),
            ),
            rounds,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            requests: latencies.len(),
            cpu: CpuUse::sum(&cpu),
            pgbench: PgbenchCpu::sum(&pgbench_runs),
        })
    }

    /// One `pgbench -S` run on the idle server, and the CPU it took.
    async fn pgbench_select(&self) -> anyhow::Result<PgbenchCpu> {
        let (run, cpu) =
            pgbench_measured(self.meter, self.pgbench_url, "-S", self.pgbench_seconds).await?;
        Ok(PgbenchCpu {
            runs: vec![run],
            cpu,
        })
    }
}

/// The server under test: where it listens and the token its clients send.
struct Server {
    addr: SocketAddr,
    token: String,
}

impl Server {
    async fn connect(&self) -> anyhow::Result<Connection> {
        Connection::open(self.addr, &self.token).await
    }

    /// The greenness reads of the commits `key` (`rev` or `uri`) names:
    /// one call per value.
    fn greenness(key: &str, values: &[String]) -> Vec<Call> {
        values
            .iter()
            .map(|value| {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair(key, value)
                    .finish();
                Call::get(format!("/v1/queues/{QUEUE}/greenness?{query}"))
            })
            .collect()
    }

    /// An ingest of the queue's head (`rev` `None`, as a poller sends it)
    /// or of the commit `rev` names (as a push webhook does).
    fn ingest(rev: Option<&str>) -> Vec<Call> {
        vec![Call::post(
            format!("/v1/queues/{QUEUE}/ingest"),
            &serde_json::json!({ "rev": rev }),
        )]
    }
}

/// `rounds` rounds of `duration` per endpoint, each paired with a pgbench
/// -S run as long (in whole seconds, at least one), the server's
/// `database.write_lanes` `write_lanes` (its default when `None`).
pub async fn run(
    rounds: usize,
    duration: Duration,
    write_lanes: Option<usize>,
) -> anyhow::Result<ApiRun> {
    let db = ScratchDb::create("api")?;
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join("README"), "bench\n")?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "initial"])?;
    let sha = git(&repo, &["rev-parse", "HEAD"])?;

    let settings = Settings::from_toml(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data}"
drain_timeout = "5s"
[database]
url = "{url}"
{lanes}[auth]
hs256_secret = "{SECRET}"
[[queue]]
name = "bench/api"
repo = "{repo}"
poll_interval = "0s"
gate_wait_delay = "50ms"
poll_delay_accepted = "50ms"
poll_delay_running = "50ms"
[queue.build]
runner = "command"
command = "true"
timeout = "1m"
"#,
        data = dir.path().join("data").display(),
        url = db.url,
        repo = repo.display(),
        lanes = write_lanes_setting(write_lanes),
    ))
    .map_err(|e| anyhow::anyhow!("api bench settings: {e}"))?;
    let running = start(settings, Arc::new(SystemClock::default())).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let token = mint_token(
        SECRET,
        "stovepipe",
        "bench",
        &[Scope::Read, Scope::Ingest],
        Duration::from_mins(30),
        now,
    )
    .map_err(|e| anyhow::anyhow!("minting a token: {e}"))?;
    let server = Server {
        addr: running.addr,
        token,
    };
    let mut setup = server.connect().await?;

    // Validate the head once, so reads find a fact and re-ingests dedup.
    let first = setup.json(&Server::ingest(None)[0]).await?;
    let uri = first["uri"]
        .as_str()
        .context("ingest answered without a uri")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_mins(1);
    let by_commit = Server::greenness("rev", std::slice::from_ref(&sha));
    loop {
        let g = setup.json(&by_commit[0]).await?;
        if g["status"] == "green" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the head never turned green: {g}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The baseline's tables, on the same database.
    pgbench_init(&db.url, 10)?;
    let meter = CpuMeter::new(&postgres_admin_url());
    let rounds = Rounds {
        rounds,
        duration,
        pgbench_seconds: pgbench_seconds(duration),
        pgbench_url: &db.url,
        meter: &meter,
        server: &server,
    };
    let mut endpoints = Vec::new();
    for (what, calls) in [
        ("greenness by commit (GET …/greenness?rev=<sha>)", by_commit),
        (
            "greenness by URI (GET …/greenness?uri=<uri>)",
            Server::greenness("uri", &[uri]),
        ),
        (
            "ingest, unchanged head (POST …/ingest, dedup hit)",
            Server::ingest(None),
        ),
        (
            "ingest, a named commit (POST …/ingest {rev: <sha>}, dedup hit)",
            Server::ingest(Some(&sha)),
        ),
    ] {
        endpoints.push(rounds.measure(what, calls).await?);
    }
    // Pushed after the ingests were measured, so nothing ingests them: one
    // commit per client.
    let mut unvalidated = Vec::new();
    for n in 0..WORKERS {
        std::fs::write(repo.join("README"), format!("bench, unvalidated {n}\n"))?;
        git(&repo, &["commit", "-q", "-a", "-m", "unvalidated"])?;
        unvalidated.push(git(&repo, &["rev-parse", "HEAD"])?);
    }
    let each = Server::greenness("rev", &unvalidated);
    for call in &each {
        let g = setup.json(call).await?;
        if g["status"] != "not_validated" {
            bail!("an unvalidated commit reads as {g}, not not_validated");
        }
    }
    let newest = unvalidated.pop().context("no unvalidated commit")?;
    for (what, calls) in [
        (
            "greenness of an unvalidated commit (no fact: the database on every read)",
            Server::greenness("rev", &[newest]),
        ),
        (
            "greenness of unvalidated commits, a different one per client",
            each,
        ),
    ] {
        endpoints.push(rounds.measure(what, calls).await?);
    }
    running.stop().await?;
    drop(db);
    Ok(ApiRun {
        workers: WORKERS,
        write_lanes,
        pgbench_select: PgbenchCpu::sum(endpoints.iter().map(|e| &e.pgbench)),
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(postgres: Option<f64>, this_process: f64, children: f64) -> CpuUse {
        CpuUse {
            postgres_seconds: postgres,
            this_process_seconds: this_process,
            reaped_children_seconds: children,
            machine_busy_share: 0.9,
        }
    }

    fn endpoint(
        cpu: CpuUse,
        requests: usize,
        rounds: Vec<PairedRound>,
        pgbench: PgbenchCpu,
    ) -> Endpoint {
        Endpoint {
            what: "a read".into(),
            rounds,
            median_per_second: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            requests,
            cpu,
            pgbench,
        }
    }

    fn pgbench_s(cpu: CpuUse, tps: f64, transactions: u64) -> PgbenchCpu {
        PgbenchCpu {
            runs: vec![PgbenchRun {
                args: "pgbench -S -c 8 -j 2 -T 5 -P 1".into(),
                tps,
                transactions,
                median_tps_per_second: tps,
                mean_latency_ms: 0.0,
            }],
            cpu,
        }
    }

    fn round(requests_per_second: f64, pgbench_tps: f64) -> PairedRound {
        PairedRound {
            requests_per_second,
            pgbench_tps,
        }
    }

    #[test]
    fn the_cpu_ratio_sets_a_transaction_s_cpu_over_a_request_s() {
        // pgbench 10 µs + Postgres 40 µs a transaction; a request 60 + 40.
        let baseline = pgbench_s(cpu(Some(4.0), 0.0, 1.0), 0.0, 100_000);
        assert!((baseline.pgbench_us_per_transaction().unwrap() - 10.0).abs() < 1e-9);
        let read = endpoint(cpu(Some(2.0), 3.0, 0.0), 50_000, vec![], baseline);
        assert!((read.bench_us_per_request().unwrap() - 60.0).abs() < 1e-9);
        assert!((read.postgres_us_per_request().unwrap() - 40.0).abs() < 1e-9);
        assert!((read.cpu_ratio().unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn no_cpu_ratio_without_postgres_s_figure_or_a_count() {
        let baseline = || pgbench_s(cpu(Some(4.0), 0.0, 1.0), 0.0, 100_000);
        let read = |postgres, requests, pgbench| {
            endpoint(cpu(postgres, 3.0, 0.0), requests, vec![], pgbench)
        };
        assert_eq!(read(None, 50_000, baseline()).cpu_ratio(), None);
        assert_eq!(read(Some(2.0), 0, baseline()).cpu_ratio(), None);
        let unmeasured = pgbench_s(cpu(None, 0.0, 1.0), 0.0, 100_000);
        assert_eq!(read(Some(2.0), 50_000, unmeasured).cpu_ratio(), None);
    }

    #[test]
    fn each_round_is_stated_in_the_pgbench_run_paired_with_it() {
        // The machine halves its speed between the first two rounds: both
        // halves of a pair move, and both rounds read 0.5; the endpoint
        // reads the median of its rounds.
        let baseline = pgbench_s(cpu(Some(4.0), 0.0, 1.0), 20_000.0, 100_000);
        let read = endpoint(
            cpu(Some(2.0), 3.0, 0.0),
            50_000,
            vec![
                round(10_000.0, 20_000.0),
                round(5_000.0, 10_000.0),
                round(12_000.0, 20_000.0),
            ],
            baseline,
        );
        assert_eq!(read.ratios(), vec![0.5, 0.5, 0.6]);
        assert!(
            (read.ratio() - 0.5).abs() < 1e-9,
            "the median of the rounds"
        );
    }

    #[test]
    fn paired_runs_sum_their_transactions_and_cpu() {
        let a = pgbench_s(cpu(Some(2.0), 0.0, 0.5), 20_000.0, 100_000);
        let b = pgbench_s(cpu(Some(3.0), 0.0, 1.0), 30_000.0, 150_000);
        let c = pgbench_s(cpu(Some(1.0), 0.0, 0.5), 10_000.0, 50_000);
        let all = PgbenchCpu::sum([&a, &b, &c]);
        assert_eq!(all.transactions(), 300_000);
        assert!((all.median_tps() - 20_000.0).abs() < 1e-9);
        // 6 s of Postgres and 2 s of pgbench over 300 000 transactions.
        assert!((all.postgres_us_per_transaction().unwrap() - 20.0).abs() < 1e-9);
        assert!((all.pgbench_us_per_transaction().unwrap() - 20.0 / 3.0).abs() < 1e-9);
    }
}
