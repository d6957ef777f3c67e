//! The ancestry benchmark on a 200 000-commit linear repository (generated
//! once with `git fast-import` and cached in the system temp dir): the
//! adapter beside `git merge-base --is-ancestor` and `git log`, medians and
//! ratios from one run.
//!
//! `cargo run --release -p stovepipe-adapter-git --example ancestry [commits]`

// The measurement code is the test's: a benchmark tool may panic on a
// broken fixture, as a test does.
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/common/bench.rs"]
mod bench;
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/common/fast_import.rs"]
mod fast_import;

#[tokio::main]
async fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let started = std::time::Instant::now();
    let repo = fast_import::linear_repo(n);
    println!(
        "repository {} ready in {:.1} s",
        repo.display(),
        started.elapsed().as_secs_f64()
    );
    let rows = bench::measure(&repo, 5).await;
    bench::print(n, &rows);
}
