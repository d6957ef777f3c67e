//! The ancestry measurement, shared by the test (small repository, with
//! assertions) and `examples/ancestry.rs` (200 000 commits, a table):
//! the adapter beside the git CLI on the same repository in the same run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use stovepipe_adapter_git::GitSourceControl;
use stovepipe_entity::{QueueConfig, QueueName, Uri};
use stovepipe_ports::SourceControl;

/// One measured operation: our median, and the git CLI's for the same
/// question (process start included: that is what a caller of the CLI pays).
#[derive(Debug, Clone)]
pub struct Row {
    pub what: &'static str,
    pub ours: Duration,
    pub git: Duration,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.ours.as_secs_f64() / self.git.as_secs_f64()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn git(repo: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    )
}

fn git_median(repo: &Path, args: &[&str], runs: usize, expect_success: bool) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                let (ok, _) = git(repo, args);
                let took = start.elapsed();
                assert_eq!(ok, expect_success, "git {args:?}");
                took
            })
            .collect(),
    )
}

async fn ours_median<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        samples.push(start.elapsed());
    }
    median(samples)
}

/// Measures `repo` (a linear `main`); `git_runs` CLI runs per question.
pub async fn measure(repo: &Path, git_runs: usize) -> Vec<Row> {
    let data = tempfile::tempdir().unwrap();
    let config = QueueConfig::new(
        QueueName::new("bench/main").unwrap(),
        repo.to_str().unwrap(),
        "main",
    );
    let scm = GitSourceControl::open(&config, data.path()).unwrap();
    let (_, root) = git(repo, &["rev-list", "--max-parents=0", "main"]);
    let (_, near) = git(repo, &["rev-parse", "main~100"]);
    let head = scm.latest().await.unwrap();
    let head_sha = head.as_str().rsplit('/').next().unwrap().to_owned();
    // Built by hand (no resolve) so the first is_ancestor below is the
    // adapter's very first look at the history.
    let uri_of = |sha: &str| {
        Uri::new(format!(
            "{}{sha}",
            &head.as_str()[..head.as_str().len() - 40]
        ))
        .unwrap()
    };
    let (root_uri, near_uri) = (uri_of(&root), uri_of(&near));

    let mut rows = Vec::new();
    let git_far = git_median(
        repo,
        &["merge-base", "--is-ancestor", &root, &head_sha],
        git_runs,
        true,
    );
    let start = Instant::now();
    assert!(scm.is_ancestor(&root_uri, &head).await.unwrap());
    rows.push(Row {
        what: "is_ancestor(root, head), first call (builds the index)",
        ours: start.elapsed(),
        git: git_far,
    });
    // A restarted process: a new adapter on the same data directory starts
    // from the saved first-parent index.
    let restarted = GitSourceControl::open(&config, data.path()).unwrap();
    let start = Instant::now();
    assert!(restarted.is_ancestor(&root_uri, &head).await.unwrap());
    rows.push(Row {
        what: "is_ancestor(root, head), first call after a restart (saved index)",
        ours: start.elapsed(),
        git: git_far,
    });
    rows.push(Row {
        what: "is_ancestor(root, head), warm",
        ours: ours_median(101, || async {
            assert!(scm.is_ancestor(&root_uri, &head).await.unwrap());
        })
        .await,
        git: git_far,
    });
    rows.push(Row {
        what: "is_ancestor(head~100, head), warm",
        ours: ours_median(101, || async {
            assert!(scm.is_ancestor(&near_uri, &head).await.unwrap());
        })
        .await,
        git: git_median(
            repo,
            &["merge-base", "--is-ancestor", &near, &head_sha],
            git_runs,
            true,
        ),
    });
    rows.push(Row {
        what: "is_ancestor(head, root) = false, warm",
        ours: ours_median(101, || async {
            assert!(!scm.is_ancestor(&head, &root_uri).await.unwrap());
        })
        .await,
        git: git_median(
            repo,
            &["merge-base", "--is-ancestor", &head_sha, &root],
            git_runs,
            false,
        ),
    });
    rows.push(Row {
        what: "history first page (50 commits)",
        ours: ours_median(21, || async {
            assert_eq!(scm.history(None, 50).await.unwrap().items.len(), 50);
        })
        .await,
        git: git_median(
            repo,
            &["log", "-n", "50", "--format=%H %an %ct %s", "main"],
            git_runs,
            true,
        ),
    });
    rows
}

pub fn print(n: usize, rows: &[Row]) {
    println!("ancestry on a {n}-commit linear repository (medians; git includes process start)");
    println!("| operation | stovepipe-adapter-git | git CLI | ratio (ours / git) |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.3} ms | {:.3} ms | {:.2e} |",
            r.what,
            r.ours.as_secs_f64() * 1e3,
            r.git.as_secs_f64() * 1e3,
            r.ratio()
        );
    }
}
