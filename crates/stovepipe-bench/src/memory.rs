//! The memory benchmark: resident set size of an idle `stovepipe serve`
//! process (the release binary, started with its pools, on Postgres and on
//! SQLite) and of this process at the end of a pipeline run on Postgres.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::cpu::CpuMeter;
use crate::pipeline::{self, Load};
use crate::support::{Rss, ScratchDb, postgres_admin_url};

#[derive(Debug, Clone, Serialize)]
pub struct IdleServer {
    pub backend: String,
    pub rss: Rss,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryRun {
    pub idle: Vec<IdleServer>,
    pub pipeline_queues: usize,
    pub pipeline_facts_per_second: f64,
    pub bench_process_before_pipeline: Rss,
    pub bench_process_end_of_pipeline: Rss,
}

/// The `stovepipe` binary built beside this one (`cargo xtask bench
/// memory` builds both in release).
fn server_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("bench binary has no directory")?
        .join("stovepipe");
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p stovepipe-server --bin stovepipe` (cargo xtask bench memory does)",
            bin.display()
        );
    }
    Ok(bin)
}

async fn idle_server(
    bin: &Path,
    backend: &str,
    url: &str,
    settle: Duration,
) -> anyhow::Result<Rss> {
    let dir = tempfile::tempdir()?;
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo)?;
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-c", "user.name=B", "-c", "user.email=b@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["commit", "-q", "--allow-empty", "-m", "initial"])?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.path().join("stovepipe.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n[database]\nurl = \"{url}\"\n\
             [[queue]]\nname = \"bench/idle\"\nrepo = \"{repo}\"\npoll_interval = \"0s\"\n\
             [queue.build]\nrunner = \"command\"\ncommand = \"true\"\n",
            data = dir.path().join("data").display(),
            repo = repo.display(),
        ),
    )?;
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().to_string();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            break true;
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rss = if ready {
        tokio::time::sleep(settle).await;
        Rss::of(&pid)
    } else {
        Err(anyhow::anyhow!("the {backend} server did not become ready"))
    };
    // Our own child, by its id: a graceful stop.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
    println!(
        "idle server ({backend}): VmRSS {:.1} MB",
        rss.as_ref().map_or(0.0, Rss::rss_mb)
    );
    rss
}

pub async fn run(
    load: Load,
    warmup: Duration,
    windows: usize,
    window: Duration,
) -> anyhow::Result<MemoryRun> {
    let bin = server_binary()?;
    let mut idle = Vec::new();
    {
        let db = ScratchDb::create("memidle")?;
        idle.push(IdleServer {
            backend: "postgres".into(),
            rss: idle_server(&bin, "postgres", &db.url, Duration::from_secs(3)).await?,
        });
    }
    let sqlite_dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}/idle.db?mode=rwc", sqlite_dir.path().display());
    idle.push(IdleServer {
        backend: "sqlite".into(),
        rss: idle_server(&bin, "sqlite", &sqlite, Duration::from_secs(3)).await?,
    });

    let db = ScratchDb::create("mempipe")?;
    let before = Rss::this_process()?;
    let t = pipeline::throughput(
        "postgres",
        Some(&db.url),
        &CpuMeter::new(&postgres_admin_url()),
        load,
        warmup,
        windows,
        window,
        None,
    )
    .await?;
    println!(
        "bench process: VmRSS {:.1} MB before the pipeline, {:.1} MB at its end (peak {:.1} MB), {:.0} facts/s",
        before.rss_mb(),
        t.rss_end.rss_mb(),
        t.rss_end.hwm_mb(),
        t.median_per_second
    );
    Ok(MemoryRun {
        idle,
        pipeline_queues: load.queues,
        pipeline_facts_per_second: t.median_per_second,
        bench_process_before_pipeline: before,
        bench_process_end_of_pipeline: t.rss_end,
    })
}
