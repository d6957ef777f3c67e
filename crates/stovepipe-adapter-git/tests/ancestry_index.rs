//! The saved first-parent index is only a cache: a restarted adapter reuses
//! it, and a stale (rewritten branch), corrupt or foreign file never changes
//! an answer.

// Fixtures panic on a broken setup, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{git_in, queue};
use git2::{Repository, Signature, Time};
use stovepipe_adapter_git::GitSourceControl;
use stovepipe_entity::Uri;
use stovepipe_ports::{ScmError, SourceControl};

#[tokio::test]
async fn saved_index_survives_restarts_and_never_lies() {
    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo.git");
    common::fast_import::generate(&repo_path, 1500);
    let data = tempfile::tempdir().unwrap();
    let cfg = queue("mono/main", repo_path.to_str().unwrap(), "main", None);
    let uri = |sha: &str| Uri::new(format!("git://{}/main/{sha}", repo_path.display())).unwrap();
    let root = git_in(&repo_path, &["rev-list", "--max-parents=0", "main"]);
    let old_head = git_in(&repo_path, &["rev-parse", "main"]);
    let base = git_in(&repo_path, &["rev-parse", "main~10"]);

    let first = GitSourceControl::open(&cfg, data.path()).unwrap();
    assert!(
        first
            .is_ancestor(&uri(&root), &uri(&old_head))
            .await
            .unwrap()
    );
    let saved = data.path().join("ancestry").join("mono%2Fmain.fpi");
    let size = std::fs::metadata(&saved).unwrap().len();
    assert!(size > 1500 * 20, "the chain was saved ({size} bytes)");

    // Rewrite the branch: drop the last 10 commits, add another one.
    let rewritten = {
        let repo = Repository::open_bare(&repo_path).unwrap();
        let parent = repo
            .find_commit(git2::Oid::from_str(&base).unwrap())
            .unwrap();
        let sig = Signature::new("Eve", "eve@example.com", &Time::new(1_700_000_000, 0)).unwrap();
        let oid = repo
            .commit(
                None,
                &sig,
                &sig,
                "rewritten\n",
                &parent.tree().unwrap(),
                &[&parent],
            )
            .unwrap();
        repo.reference("refs/heads/main", oid, true, "force push")
            .unwrap();
        oid.to_string()
    };

    // A restarted adapter starts from the saved (now stale) chain.
    let second = GitSourceControl::open(&cfg, data.path()).unwrap();
    check_rewritten(&second, &uri, &root, &old_head, &base, &rewritten).await;

    // A corrupt file, and a file naming a commit this repository lacks.
    for junk in [
        b"garbage".to_vec(),
        [b"stovepipe first-parent index v1\n".as_slice(), &[7u8; 20]].concat(),
    ] {
        std::fs::write(&saved, junk).unwrap();
        let third = GitSourceControl::open(&cfg, data.path()).unwrap();
        check_rewritten(&third, &uri, &root, &old_head, &base, &rewritten).await;
    }
}

async fn check_rewritten(
    scm: &GitSourceControl,
    uri: &impl Fn(&str) -> Uri,
    root: &str,
    old_head: &str,
    base: &str,
    rewritten: &str,
) {
    assert!(scm.is_ancestor(&uri(root), &uri(rewritten)).await.unwrap());
    assert!(scm.is_ancestor(&uri(base), &uri(rewritten)).await.unwrap());
    assert!(
        !scm.is_ancestor(&uri(old_head), &uri(rewritten))
            .await
            .unwrap()
    );
    assert!(
        !scm.is_ancestor(&uri(rewritten), &uri(old_head))
            .await
            .unwrap()
    );
    assert!(scm.is_ancestor(&uri(root), &uri(old_head)).await.unwrap());
    assert!(matches!(
        scm.resolve(old_head).await,
        Err(ScmError::NotFound(_))
    ));
    assert_eq!(scm.resolve(rewritten).await.unwrap(), uri(rewritten));
}
