//! `stovepipe demo`: the first-run experience.
//!
//! Makes a throw-away git repository with a realistic history (two projects,
//! green commits, a breaking commit, a fix), serves it with the local
//! command runner, pushes commits the way a team would while the pipeline
//! works (so some heads are coalesced away), shows progress, and prints a
//! per-commit table and the last green commit, checking the promotion ref
//! with git itself.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use stovepipe_app::CommitStatus;
use stovepipe_app::query::CommitView;
use stovepipe_ports::SystemClock;

use crate::config::Settings;
use crate::serve;

const QUEUE: &str = "demo/main";
/// The walk-through must finish well within a minute on a small machine.
const DEADLINE: Duration = Duration::from_secs(55);

/// One scripted push: the title and the files it writes.
struct Push {
    title: &'static str,
    files: &'static [(&'static str, &'static str)],
    /// Push the next commit right away (before this one is validated), as a
    /// busy team does: the pipeline coalesces to the newest head.
    rush: bool,
}

const CI_SCRIPT: &str = "#!/bin/sh\n# Each project's tests; a project is broken when its status file says so.\nset -e\nsleep 0.3\nfor project in services/*; do\n  echo \"testing $project\"\n  grep -qx ok \"$project/status\"\ndone\necho all green\n";

const HISTORY: &[Push] = &[
    Push {
        title: "Initial import: payments and search services",
        files: &[
            ("ci.sh", CI_SCRIPT),
            ("services/payments/status", "ok\n"),
            ("services/search/status", "ok\n"),
        ],
        rush: false,
    },
    // Three pushes in a row: the first builds, the second is skipped while
    // it runs, the third is built next (coalescing to the newest head).
    Push {
        title: "search: tune ranking weights",
        files: &[("services/search/weights", "0.7\n")],
        rush: true,
    },
    Push {
        title: "payments: add refunds endpoint",
        files: &[("services/payments/refunds", "v1\n")],
        rush: true,
    },
    Push {
        title: "payments: switch currency rounding",
        files: &[("services/payments/status", "broken: rounding\n")],
        rush: false,
    },
    Push {
        title: "search: add synonyms",
        files: &[("services/search/synonyms", "car=auto\n")],
        rush: true,
    },
    Push {
        title: "payments: fix rounding regression",
        files: &[("services/payments/status", "ok\n")],
        rush: true,
    },
    Push {
        title: "docs: describe the services",
        files: &[("README", "two services\n")],
        rush: false,
    },
];

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Demo Dev",
            "-c",
            "user.email=dev@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .with_context(|| format!("running git {args:?} (is git installed?)"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn commit(repo: &Path, push: &Push) -> anyhow::Result<String> {
    for (path, content) in push.files {
        let file = repo.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&file, content)?;
    }
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", push.title])?;
    git(repo, &["rev-parse", "HEAD"])
}

fn settings(dir: &Path, repo: &Path, listen: SocketAddr) -> anyhow::Result<Settings> {
    let toml = format!(
        r#"
[server]
listen = "{listen}"
data_dir = "{data}"
drain_timeout = "5s"
reconcile_interval = "5s"

[database]
url = "sqlite://{db}?mode=rwc"

[[queue]]
name = "{QUEUE}"
repo = "{repo}"
branch = "main"
promotion_ref = "verified-main"
poll_interval = "0s"
gate_wait_delay = "100ms"
poll_delay_accepted = "100ms"
poll_delay_running = "100ms"
max_validation = "5m"

[queue.build]
runner = "command"
command = "sh ci.sh"
timeout = "1m"

[[queue.project]]
name = "payments"
paths = ["services/payments/**"]

[[queue.project]]
name = "search"
paths = ["services/search/**"]
"#,
        data = dir.join("data").display(),
        db = dir.join("stovepipe.db").display(),
        repo = repo.display(),
    );
    Ok(Settings::from_toml(&toml)?)
}

fn tally(commits: &[CommitView]) -> (usize, usize, usize, usize) {
    let count = |s: CommitStatus| commits.iter().filter(|c| c.status == s).count();
    (
        count(CommitStatus::Green),
        count(CommitStatus::Broken),
        count(CommitStatus::Skipped),
        count(CommitStatus::Pending),
    )
}

/// Runs the walk-through; with `keep_running`, serves until Ctrl-C.
pub async fn run(listen: SocketAddr, keep_running: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    println!(
        "Stovepipe demo: a throw-away repository at {}",
        repo.display()
    );

    let running = serve::start(
        settings(dir.path(), &repo, listen)?,
        Arc::new(SystemClock::default()),
    )
    .await?;
    let pipeline = running.wired.pipeline.clone();
    println!(
        "Serving on http://{} (queue {QUEUE}, command runner `sh ci.sh`)\n",
        running.addr
    );

    let bar = ProgressBar::new(HISTORY.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} settled  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));

    let query = pipeline.query();
    let wait_settled = |want: usize| {
        let query = query.clone();
        let bar = bar.clone();
        async move {
            loop {
                let page = query.commits(QUEUE, None, 50).await?;
                let (green, broken, skipped, pending) = tally(&page.items);
                let settled = page.items.len()
                    - pending
                    - page
                        .items
                        .iter()
                        .filter(|c| c.status == CommitStatus::NotValidated)
                        .count();
                bar.set_position(settled as u64);
                bar.set_message(format!(
                    "{green} green, {broken} broken, {skipped} skipped, {pending} in flight"
                ));
                if settled >= want && pending == 0 {
                    return anyhow::Ok(page.items);
                }
                if started.elapsed() > DEADLINE {
                    bail!("the demo did not settle within {}s", DEADLINE.as_secs());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    for (i, push) in HISTORY.iter().enumerate() {
        let sha = commit(&repo, push)?;
        bar.println(format!("  pushed {}  {}", &sha[..10], push.title));
        pipeline.ingest().ingest(QUEUE, None).await?;
        if !push.rush {
            wait_settled(i + 1).await?;
        }
    }
    let commits = wait_settled(HISTORY.len()).await?;
    bar.finish_and_clear();

    println!("\n{:<12} {:<9} TITLE", "COMMIT", "STATUS");
    for c in commits.iter().rev() {
        println!(
            "{:<12} {:<9} {}",
            &c.commit[..c.commit.len().min(10)],
            c.status.as_str(),
            c.title
        );
    }
    let last = query.last_green(QUEUE, None).await?;
    let promoted = git(&repo, &["rev-parse", "verified-main"]).unwrap_or_default();
    let title = commits
        .iter()
        .find(|c| c.uri == last.uri)
        .map_or("", |c| c.title.as_str());
    println!(
        "\nLast green: {}  {title}",
        &last.commit[..last.commit.len().min(10)]
    );
    println!(
        "verified-main → {} ({})",
        &promoted[..promoted.len().min(10)],
        if promoted == last.commit {
            "moved by Stovepipe, checked with git"
        } else {
            "MISMATCH"
        }
    );
    println!("Done in {:.1}s.", started.elapsed().as_secs_f64());
    if promoted != last.commit {
        bail!("the promotion ref does not point at the last green commit");
    }

    if keep_running {
        let base = format!("http://{}", running.addr);
        println!(
            "\nStill serving. Try:\n  curl {base}/v1/queues/demo%2Fmain/last-green\n  open {base}/docs\nCtrl-C to stop."
        );
        serve::shutdown_signal().await;
    }
    running.stop().await
}
