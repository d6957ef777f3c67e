//! Ancestry speed on a 20 000-commit linear repository (the 200 000 version
//! is `cargo run --release -p stovepipe-adapter-git --example ancestry`):
//! `is_ancestor(root, head)` no slower than `git merge-base --is-ancestor`
//! on the same repository, and a near-ancestor check under a millisecond.

// Fixtures panic on a broken setup, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

#[tokio::test]
async fn ancestry_is_as_fast_as_git_and_near_checks_are_sub_millisecond() {
    let n = 20_000;
    let repo = common::fast_import::linear_repo(n);
    let rows = common::bench::measure(&repo, 5).await;
    common::bench::print(n, &rows);
    let restarted = &rows[1];
    let warm_far = &rows[2];
    let near = &rows[3];
    assert!(
        restarted.ours <= restarted.git,
        "first is_ancestor(root, head) after a restart {:?} slower than git {:?}",
        restarted.ours,
        restarted.git
    );
    assert!(
        warm_far.ours <= warm_far.git,
        "is_ancestor(root, head) {:?} slower than git {:?}",
        warm_far.ours,
        warm_far.git
    );
    assert!(
        near.ours < Duration::from_millis(1),
        "near check took {:?}",
        near.ours
    );
}
