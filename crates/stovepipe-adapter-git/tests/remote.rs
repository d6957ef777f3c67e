//! Remote repositories: a `file://` URL mirrored under the data directory,
//! fetched before `latest`, promotion pushed only when configured, and URLs
//! this build cannot serve refused clearly.

// Fixtures panic on a broken setup, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestRepo, data_dir, git_output, queue, sha};
use stovepipe_adapter_git::{GitOptions, GitScmFactory, GitSourceControl};
use stovepipe_ports::{PromoteOutcome, ScmError, SourceControl};

fn url(repo: &TestRepo) -> String {
    format!("file://{}", repo.path_string())
}

#[tokio::test]
async fn mirror_is_fetched_before_latest() {
    let upstream = TestRepo::new();
    let c = upstream.linear("main", 2);
    let data = data_dir();
    let cfg = queue("mono/main", &url(&upstream), "main", Some("verified-main"));
    let scm = GitSourceControl::open(&cfg, data.path()).unwrap();

    let mirrors: Vec<_> = std::fs::read_dir(data.path().join("mirrors"))
        .unwrap()
        .collect();
    assert_eq!(mirrors.len(), 1, "one bare mirror under <data>/mirrors");
    let mirror = mirrors.into_iter().next().unwrap().unwrap().path();
    assert!(
        mirror.join("HEAD").exists() && !mirror.join(".git").exists(),
        "bare"
    );

    let head = scm.latest().await.unwrap();
    assert_eq!(
        head.as_str(),
        format!("git://{}/main/{}", url(&upstream), c[1])
    );

    // Upstream moves; latest fetches first.
    let newer = upstream.commit_on("main", &[("n", Some("n"))], "newer\n");
    assert_eq!(sha(&scm.latest().await.unwrap()), newer.to_string());
    assert_eq!(
        common::git_in(&mirror, &["rev-parse", "main"]),
        newer.to_string()
    );

    // A webhook naming a commit pushed after the last fetch: resolve fetches.
    let newest = upstream.commit_on("main", &[("m", Some("m"))], "newest\n");
    assert_eq!(
        sha(&scm.resolve(&newest.to_string()).await.unwrap()),
        newest.to_string()
    );

    // Promotion lives in the mirror; nothing is pushed unless configured.
    let u = scm.resolve(&newer.to_string()).await.unwrap();
    assert_eq!(scm.promote(&u).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(
        common::git_in(&mirror, &["rev-parse", "verified-main"]),
        newer.to_string()
    );
    assert!(
        !git_output(upstream.path(), &["rev-parse", "--verify", "verified-main"])
            .status
            .success()
    );
    // A later fetch does not clobber the mirror's promotion ref.
    scm.latest().await.unwrap();
    assert_eq!(
        common::git_in(&mirror, &["rev-parse", "verified-main"]),
        newer.to_string()
    );

    // Upstream force-push: the next promotion of a dropped commit is NotFound.
    let dropped = scm.latest().await.unwrap();
    let rewritten = upstream.commit(&[c[1]], &[("r", Some("r"))], "rewritten\n");
    upstream.set_branch("main", rewritten);
    assert!(matches!(
        scm.promote(&dropped).await,
        Err(ScmError::NotFound(_))
    ));
    assert_eq!(sha(&scm.latest().await.unwrap()), rewritten.to_string());
}

#[tokio::test]
async fn promotion_is_pushed_when_configured() {
    let upstream = TestRepo::new();
    let c = upstream.linear("main", 3);
    let data = data_dir();
    let factory = GitScmFactory::with_options(
        data.path().to_owned(),
        GitOptions {
            push_promotions: true,
        },
    );
    let scm = factory
        .git_for_queue(&queue(
            "mono/main",
            &url(&upstream),
            "main",
            Some("verified-main"),
        ))
        .await
        .unwrap();
    let u1 = scm.resolve(&c[1].to_string()).await.unwrap();
    let u0 = scm.resolve(&c[0].to_string()).await.unwrap();
    assert_eq!(scm.promote(&u1).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(
        upstream.git(&["rev-parse", "verified-main"]),
        c[1].to_string()
    );
    assert_eq!(
        scm.promote(&u1).await.unwrap(),
        PromoteOutcome::AlreadyThere
    );
    // Backwards needs a forced push; it is allowed.
    assert_eq!(scm.promote(&u0).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(
        upstream.git(&["rev-parse", "verified-main"]),
        c[0].to_string()
    );
    assert_eq!(upstream.git(&["rev-parse", "main"]), c[2].to_string());
}

#[tokio::test]
async fn unusable_remotes_are_invalid() {
    let upstream = TestRepo::new();
    upstream.linear("main", 1);
    let data = data_dir();
    for (repo, branch, needle) in [
        ("https://example.com/r.git".to_owned(), "main", "https"),
        (
            "ssh://git@example.com/r.git".to_owned(),
            "main",
            "https/ssh",
        ),
        (
            "file:///no/such/upstream".to_owned(),
            "main",
            "/no/such/upstream",
        ),
        (url(&upstream), "no-such-branch", "no-such-branch"),
    ] {
        let err =
            GitSourceControl::open(&queue("q/r", &repo, branch, None), data.path()).unwrap_err();
        assert!(matches!(err, ScmError::Invalid(_)), "{repo}: {err}");
        assert!(
            err.to_string().contains(needle),
            "{err} should name {needle}"
        );
    }
}

#[tokio::test]
async fn vanished_upstream_makes_latest_unavailable() {
    let upstream = TestRepo::new();
    upstream.linear("main", 1);
    let data = data_dir();
    let scm =
        GitSourceControl::open(&queue("q/r", &url(&upstream), "main", None), data.path()).unwrap();
    let path = upstream.path().to_owned();
    let moved = path.with_extension("moved");
    std::fs::rename(&path, &moved).unwrap();
    let err = scm.latest().await.unwrap_err();
    std::fs::rename(&moved, &path).unwrap();
    assert!(matches!(err, ScmError::Unavailable(_)), "{err}");
    assert!(scm.latest().await.is_ok(), "heals once the remote is back");
}
