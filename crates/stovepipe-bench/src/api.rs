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
//! asks the database.

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

use crate::support::{
    PgbenchRun, ScratchDb, median, ms, percentile, pgbench, pgbench_init, progress,
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

/// One measured endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub what: String,
    pub rounds_per_second: Vec<f64>,
    pub median_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiRun {
    pub workers: usize,
    pub pgbench_select: PgbenchRun,
    pub endpoints: Vec<Endpoint>,
}

/// `WORKERS` keep-alive clients send `request` for `duration`, `rounds`
/// times.
async fn measure<F>(
    what: &str,
    rounds: usize,
    duration: Duration,
    request: F,
) -> anyhow::Result<Endpoint>
where
    F: Fn() -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let mut rates = Vec::new();
    let mut latencies = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        let deadline = started + duration;
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..WORKERS {
            let request = request.clone();
            workers.spawn(async move {
                let mut samples = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let resp = request().send().await?;
                    let status = resp.status();
                    let body = resp.bytes().await?;
                    if !status.is_success() {
                        bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
                    }
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
        progress!("{what}: round {round}/{rounds}: {rate:.0} requests/s");
        rates.push(rate);
    }
    Ok(Endpoint {
        what: what.to_owned(),
        median_per_second: median(&rates),
        rounds_per_second: rates,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        requests: latencies.len(),
    })
}

/// A greenness read of the commit named by `key` (`rev` or `uri`).
fn greenness(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &'static str,
    value: String,
) -> impl Fn() -> reqwest::RequestBuilder + Send + Sync + 'static {
    let (http, url, token) = (http.clone(), format!("{base}/greenness"), token.to_owned());
    move || {
        http.get(&url)
            .query(&[(key, value.as_str())])
            .bearer_auth(&token)
    }
}

/// An ingest of the queue's head (`rev` `None`, as a poller sends it) or
/// of the commit `rev` names (as a push webhook does).
fn ingest(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    rev: Option<&str>,
) -> impl Fn() -> reqwest::RequestBuilder + Send + Sync + 'static {
    let (http, url, token) = (http.clone(), format!("{base}/ingest"), token.to_owned());
    let body = serde_json::json!({ "rev": rev });
    move || http.post(&url).bearer_auth(&token).json(&body)
}

/// The body of a successful greenness read.
async fn read_greenness(request: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
    Ok(request.send().await?.error_for_status()?.json().await?)
}

pub async fn run(
    rounds: usize,
    duration: Duration,
    pgbench_seconds: u32,
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
[auth]
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
    ))
    .map_err(|e| anyhow::anyhow!("api bench settings: {e}"))?;
    let running = start(settings, Arc::new(SystemClock::default())).await?;
    let base = format!("http://{}/v1/queues/{QUEUE}", running.addr);
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
    let http = reqwest::Client::new();

    // Validate the head once, so reads find a fact and re-ingests dedup.
    let first: serde_json::Value = ingest(&http, &base, &token, None)()
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let uri = first["uri"]
        .as_str()
        .context("ingest answered without a uri")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_mins(1);
    let by_commit = greenness(&http, &base, &token, "rev", sha.clone());
    loop {
        let g = read_greenness(by_commit()).await?;
        if g["status"] == "green" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the head never turned green: {g}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The baseline, on the same database, while the server idles.
    pgbench_init(&db.url, 10)?;
    progress!("pgbench -S for {pgbench_seconds} s");
    let pgbench_select = pgbench(&db.url, "-S", pgbench_seconds)?;

    let mut endpoints = Vec::new();
    endpoints.push(
        measure(
            "greenness by commit (GET …/greenness?rev=<sha>)",
            rounds,
            duration,
            by_commit,
        )
        .await?,
    );
    endpoints.push(
        measure(
            "greenness by URI (GET …/greenness?uri=<uri>)",
            rounds,
            duration,
            greenness(&http, &base, &token, "uri", uri),
        )
        .await?,
    );
    endpoints.push(
        measure(
            "ingest, unchanged head (POST …/ingest, dedup hit)",
            rounds,
            duration,
            ingest(&http, &base, &token, None),
        )
        .await?,
    );
    endpoints.push(
        measure(
            "ingest, a named commit (POST …/ingest {rev: <sha>}, dedup hit)",
            rounds,
            duration,
            ingest(&http, &base, &token, Some(&sha)),
        )
        .await?,
    );
    {
        // Pushed after the ingest measurement, so nothing ingests it.
        std::fs::write(repo.join("README"), "bench, unvalidated\n")?;
        git(&repo, &["commit", "-q", "-a", "-m", "unvalidated"])?;
        let unvalidated = git(&repo, &["rev-parse", "HEAD"])?;
        let read = greenness(&http, &base, &token, "rev", unvalidated);
        let g = read_greenness(read()).await?;
        if g["status"] != "not_validated" {
            bail!("the unvalidated commit reads as {g}, not not_validated");
        }
        endpoints.push(
            measure(
                "greenness of an unvalidated commit (no fact: the database on every read)",
                rounds,
                duration,
                read,
            )
            .await?,
        );
    }
    running.stop().await?;
    drop(db);
    Ok(ApiRun {
        workers: WORKERS,
        pgbench_select,
        endpoints,
    })
}
