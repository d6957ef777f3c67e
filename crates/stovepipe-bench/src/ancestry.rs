//! The ancestry benchmark: the git adapter's own measurement
//! (`stovepipe-adapter-git/tests/common/bench.rs`, also behind its
//! `examples/ancestry.rs`) on a generated 200 000-commit linear repository,
//! `is_ancestor` and `history` beside `git merge-base --is-ancestor` and
//! `git log` on the same repository in the same run.

use serde::Serialize;

use crate::support::progress;

// The measurement code is the git adapter's test support, shared rather
// than copied; like a test, it may panic on a broken fixture.
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#[path = "../../stovepipe-adapter-git/tests/common/bench.rs"]
mod bench;
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#[path = "../../stovepipe-adapter-git/tests/common/fast_import.rs"]
mod fast_import;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub what: String,
    pub ours_ms: f64,
    pub git_ms: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AncestryRun {
    pub commits: usize,
    pub repository_ready_seconds: f64,
    pub rows: Vec<Row>,
}

pub async fn run(commits: usize) -> AncestryRun {
    let started = std::time::Instant::now();
    progress!("a linear repository of {commits} commits (generated once, then cached)");
    let repo = fast_import::linear_repo(commits);
    let ready = started.elapsed().as_secs_f64();
    progress!("ready after {ready:.1} s; measuring the git adapter beside the git CLI");
    let rows = bench::measure(&repo, 5).await;
    bench::print(commits, &rows);
    AncestryRun {
        commits,
        repository_ready_seconds: ready,
        rows: rows
            .iter()
            .map(|r| Row {
                what: r.what.to_owned(),
                ours_ms: r.ours.as_secs_f64() * 1e3,
                git_ms: r.git.as_secs_f64() * 1e3,
                ratio: r.ratio(),
            })
            .collect(),
    }
}
