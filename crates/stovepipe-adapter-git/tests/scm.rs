//! The adapter against real repositories: linear history, merges, a
//! force-push rewrite, revisions of every accepted form, history and its
//! pagination (cross-checked with `git rev-list`), promotion (checked with
//! `git rev-parse`) and the factory's configuration errors.

// Fixtures panic on a broken setup, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestRepo, data_dir, queue, sha};
use git2::Oid;
use std::sync::Arc;
use stovepipe_adapter_git::{GitScmFactory, GitSourceControl};
use stovepipe_entity::Uri;
use stovepipe_ports::{PromoteOutcome, ScmError, SourceControl, SourceControlFactory};

fn open(repo: &TestRepo, promotion: Option<&str>) -> (GitSourceControl, tempfile::TempDir) {
    let data = data_dir();
    let scm = GitSourceControl::open(
        &queue("mono/main", &repo.path_string(), "main", promotion),
        data.path(),
    )
    .unwrap();
    (scm, data)
}

async fn uri(scm: &GitSourceControl, oid: Oid) -> Uri {
    scm.resolve(&oid.to_string()).await.unwrap()
}

fn shas(uris: &[Uri]) -> Vec<String> {
    uris.iter().map(sha).collect()
}

fn rev_list(repo: &TestRepo, args: &[&str]) -> Vec<String> {
    let mut all = vec!["rev-list"];
    all.extend_from_slice(args);
    repo.git(&all)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn linear_history_latest_ancestry_and_uri_format() {
    let repo = TestRepo::new();
    let c = repo.linear("main", 4);
    let (scm, _data) = open(&repo, None);

    let latest = scm.latest().await.unwrap();
    assert_eq!(
        latest.as_str(),
        format!("git://{}/main/{}", repo.path_string(), c[3])
    );
    assert_eq!(sha(&latest), repo.git(&["rev-parse", "main"]));

    let u: Vec<Uri> = {
        let mut v = Vec::new();
        for oid in &c {
            v.push(uri(&scm, *oid).await);
        }
        v
    };
    assert!(scm.is_ancestor(&u[0], &u[3]).await.unwrap());
    assert!(scm.is_ancestor(&u[1], &u[2]).await.unwrap());
    assert!(
        scm.is_ancestor(&u[2], &u[2]).await.unwrap(),
        "equal is an ancestor"
    );
    assert!(!scm.is_ancestor(&u[3], &u[0]).await.unwrap());

    let between = scm
        .history_between(Some(u[0].clone()), &u[3])
        .await
        .unwrap();
    assert_eq!(
        shas(&between),
        rev_list(&repo, &[&format!("{}..{}", c[0], c[3])])
    );
    let all = scm.history_between(None, &u[3]).await.unwrap();
    assert_eq!(shas(&all), rev_list(&repo, &["main"]));
    assert!(
        scm.history_between(Some(u[3].clone()), &u[3])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn change_info_and_changed_paths() {
    let repo = TestRepo::new();
    let a = repo.commit_on(
        "main",
        &[("README", Some("hi\n")), ("src/lib.rs", Some("x\n"))],
        "init\n",
    );
    let b = repo.commit_by(
        "Bob Builder",
        &[a],
        &[
            ("src/lib.rs", Some("y\n")),
            ("docs/a.md", Some("a\n")),
            ("README", None),
        ],
        "Change lib and docs\n\nLonger body.\nMore.",
    );
    repo.set_branch("main", b);
    let (scm, _data) = open(&repo, None);
    let (ua, ub) = (uri(&scm, a).await, uri(&scm, b).await);

    let info = scm.change_info(&ub).await.unwrap();
    assert_eq!(info.uri, ub);
    assert_eq!(info.commit, b.to_string());
    assert_eq!(info.author, "Bob Builder");
    assert_eq!(info.title, "Change lib and docs");
    let secs: i64 = repo
        .git(&["show", "-s", "--format=%ct", &b.to_string()])
        .parse()
        .unwrap();
    assert_eq!(info.created_at.as_millis(), secs * 1000);
    assert!(info.created_at.as_millis() > 0);

    let changed = scm.changed_paths(Some(ua.clone()), &ub).await.unwrap();
    assert_eq!(changed, ["README", "docs/a.md", "src/lib.rs"]);
    let git_changed: Vec<String> = repo
        .git(&["diff", "--name-only", &a.to_string(), &b.to_string()])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(changed, git_changed);

    let every = scm.changed_paths(None, &ub).await.unwrap();
    let git_every: Vec<String> = repo
        .git(&["ls-tree", "-r", "--name-only", &b.to_string()])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(every, git_every);
    assert_eq!(every, ["docs/a.md", "src/lib.rs"]);
}

/// `resolve_info` describes a commit from what it kept the first time,
/// not from the commit's object: with the object gone, `change_info`
/// (which reads it) fails, and `resolve_info` by id and by URI still
/// answers as before. It still checks the branch on every call (the
/// contract's `resolving_a_commit_a_force_push_dropped_is_not_found`).
#[tokio::test]
async fn resolve_info_describes_a_commit_from_what_it_kept() {
    let repo = TestRepo::new();
    repo.commit_on("main", &[("a", Some("a\n"))], "a\n");
    let b = repo.commit_on("main", &[("b", Some("b\n"))], "Add b\n");
    let (scm, _data) = open(&repo, None);
    let ub = uri(&scm, b).await;
    let hex = b.to_string();
    let first = scm.resolve_info(&hex).await.unwrap();
    assert_eq!(
        (first.uri.clone(), first.title.as_str()),
        (ub.clone(), "Add b")
    );

    std::fs::remove_file(repo.path().join("objects").join(&hex[..2]).join(&hex[2..])).unwrap();
    let read = scm.change_info(&ub).await;
    assert!(
        read.is_err(),
        "the object is gone, yet change_info read {read:?}"
    );
    for rev in [hex.clone(), ub.as_str().to_owned()] {
        assert_eq!(scm.resolve_info(&rev).await.unwrap(), first, "{rev}");
    }
}

/// `latest`, `resolve` and `resolve_info` read the branch head from its
/// loose ref file when there is one; a packed branch ref (after `git
/// pack-refs`, no loose file) is read through git2, and the branch is
/// followed either way.
#[tokio::test]
async fn latest_and_resolve_follow_a_packed_branch_ref() {
    let repo = TestRepo::new();
    let a = repo.commit_on("main", &[("a", Some("a\n"))], "a\n");
    let b = repo.commit_on("main", &[("b", Some("b\n"))], "b\n");
    let (scm, _data) = open(&repo, None);
    let ub = uri(&scm, b).await;
    let loose = repo.path().join("refs/heads/main");
    assert!(loose.exists(), "the test needs a loose ref to start with");

    repo.git(&["pack-refs", "--all"]);
    assert!(!loose.exists(), "pack-refs left {}", loose.display());
    for _ in 0..3 {
        assert_eq!(scm.latest().await.unwrap(), ub);
        assert_eq!(scm.resolve(&b.to_string()).await.unwrap(), ub);
        assert_eq!(scm.resolve_info(&b.to_string()).await.unwrap().uri, ub);
    }
    // Rewind the packed ref: b leaves the branch.
    repo.git(&[
        "update-ref",
        "--no-deref",
        "refs/heads/main",
        &a.to_string(),
    ]);
    repo.git(&["pack-refs", "--all"]);
    assert!(!loose.exists());
    let ua = uri(&scm, a).await;
    for _ in 0..3 {
        assert_eq!(scm.latest().await.unwrap(), ua);
        let got = scm.resolve_info(&b.to_string()).await;
        assert!(
            matches!(got, Err(ScmError::NotFound(_))),
            "b left the packed branch, yet resolve_info answered {got:?}"
        );
        let got = scm.resolve(&b.to_string()).await;
        assert!(
            matches!(got, Err(ScmError::NotFound(_))),
            "b left the packed branch, yet resolve answered {got:?}"
        );
    }
    assert_eq!(
        scm.resolve_info(&a.to_string()).await.unwrap().commit,
        a.to_string()
    );
}

#[tokio::test]
async fn resolve_accepts_every_form_and_refuses_the_rest() {
    let repo = TestRepo::new();
    let c = repo.linear("main", 3);
    // A feature branch off the first commit: in the repository, not on main.
    let feature = repo.commit(&[c[0]], &[("f.txt", Some("f\n"))], "feature\n");
    repo.set_branch("feature", feature);
    repo.git(&["tag", "v1", &c[1].to_string()]);
    let (scm, _data) = open(&repo, None);
    let head = scm.latest().await.unwrap();

    let full = c[1].to_string();
    let by_full = scm.resolve(&full).await.unwrap();
    assert_eq!(sha(&by_full), full);
    assert_eq!(
        scm.resolve(&full[..7]).await.unwrap(),
        by_full,
        "abbreviated"
    );
    assert_eq!(scm.resolve("v1").await.unwrap(), by_full, "tag");
    assert_eq!(scm.resolve("main").await.unwrap(), head, "branch name");
    assert_eq!(
        scm.resolve("refs/heads/main").await.unwrap(),
        head,
        "full ref"
    );
    assert_eq!(scm.resolve(head.as_str()).await.unwrap(), head, "own URI");

    let not_found = |r: Result<Uri, ScmError>, what: &str| match r {
        Err(ScmError::NotFound(m)) => m,
        other => panic!("{what}: expected NotFound, got {other:?}"),
    };
    not_found(
        scm.resolve("0123456789abcdef0123456789abcdef01234567")
            .await,
        "unknown sha",
    );
    not_found(scm.resolve("deadbeef").await, "unknown short sha");
    not_found(scm.resolve("no-such-branch").await, "unknown ref");
    not_found(scm.resolve("").await, "empty");
    not_found(scm.resolve("main..feature").await, "range");
    not_found(scm.resolve("has space").await, "whitespace");
    let m = not_found(
        scm.resolve(&feature.to_string()).await,
        "commit off the branch",
    );
    assert!(m.contains("not on branch main"), "{m}");
    not_found(scm.resolve("feature").await, "another branch");

    // URIs of another repository or branch name who they belong to.
    let foreign = format!("git:///elsewhere/main/{}", c[1]);
    let m = not_found(scm.resolve(&foreign).await, "other repo");
    assert!(m.contains("/elsewhere") && m.contains("mono/main"), "{m}");
    let other_branch = format!("git://{}/feature/{}", repo.path_string(), c[1]);
    let m = not_found(scm.resolve(&other_branch).await, "other branch");
    assert!(m.contains("branch feature"), "{m}");
    not_found(scm.resolve("git://nonsense").await, "malformed URI");

    // The same foreign URIs are unknown to every URI-taking call.
    let foreign = Uri::new(foreign).unwrap();
    assert!(matches!(
        scm.is_ancestor(&foreign, &head).await,
        Err(ScmError::NotFound(_))
    ));
    assert!(matches!(
        scm.is_ancestor(&head, &foreign).await,
        Err(ScmError::NotFound(_))
    ));
    assert!(matches!(
        scm.change_info(&foreign).await,
        Err(ScmError::NotFound(_))
    ));
    let unknown = Uri::new(format!(
        "git://{}/main/{}",
        repo.path_string(),
        "ab".repeat(20)
    ))
    .unwrap();
    assert!(matches!(
        scm.change_info(&unknown).await,
        Err(ScmError::NotFound(_))
    ));
    assert!(matches!(
        scm.is_ancestor(&unknown, &head).await,
        Err(ScmError::NotFound(_))
    ));
    assert!(matches!(
        scm.changed_paths(None, &unknown).await,
        Err(ScmError::NotFound(_))
    ));
    assert!(matches!(
        scm.history_between(None, &unknown).await,
        Err(ScmError::NotFound(_))
    ));
}

#[tokio::test]
async fn ambiguous_abbreviation_is_invalid() {
    let repo = TestRepo::new();
    // Enough commits that two share a 4-hex prefix (birthday bound).
    let commits = repo.linear("main", 600);
    let mut seen = std::collections::HashSet::new();
    let prefix = commits.iter().find_map(|c| {
        let p = c.to_string()[..4].to_owned();
        (!seen.insert(p.clone())).then_some(p)
    });
    // Commit times and contents are fixed, so the ids (and this collision)
    // are the same on every run.
    let prefix = prefix.expect("two of 600 commits share a 4-hex prefix");
    let (scm, _data) = open(&repo, None);
    assert!(matches!(
        scm.resolve(&prefix).await,
        Err(ScmError::Invalid(_))
    ));
}

/// main: a - b ------ m - n
///        \         /
///         f1 - f2 -
#[tokio::test]
#[allow(clippy::many_single_char_names)] // the names of the diagram
async fn merges_are_walked_through_the_second_parent() {
    let repo = TestRepo::new();
    let a = repo.commit_on("main", &[("a", Some("a"))], "a\n");
    let f1 = repo.commit(&[a], &[("f", Some("1"))], "f1\n");
    let b = repo.commit_on("main", &[("b", Some("b"))], "b\n");
    let f2 = repo.commit(&[f1], &[("f", Some("2"))], "f2\n");
    let m = repo.commit(&[b, f2], &[("f", Some("2"))], "merge feature\n");
    repo.set_branch("main", m);
    let n = repo.commit_on("main", &[("n", Some("n"))], "n\n");
    let (scm, _data) = open(&repo, None);
    let u = |o: Oid| {
        let scm = &scm;
        async move { uri(scm, o).await }
    };
    let (ua, ub, uf1, uf2, um, un) = (
        u(a).await,
        u(b).await,
        u(f1).await,
        u(f2).await,
        u(m).await,
        u(n).await,
    );

    assert!(
        scm.is_ancestor(&uf1, &um).await.unwrap(),
        "through the second parent"
    );
    assert!(scm.is_ancestor(&uf2, &un).await.unwrap());
    assert!(
        scm.is_ancestor(&ua, &uf2).await.unwrap(),
        "both off the first-parent chain"
    );
    assert!(!scm.is_ancestor(&uf1, &ub).await.unwrap());
    assert!(!scm.is_ancestor(&ub, &uf2).await.unwrap());
    assert!(!scm.is_ancestor(&un, &uf1).await.unwrap());
    // Side commits are on the branch: reachable from its head.
    assert_eq!(scm.resolve(&f1.to_string()).await.unwrap(), uf1);

    let between = scm.history_between(Some(ub.clone()), &un).await.unwrap();
    assert_eq!(shas(&between), rev_list(&repo, &[&format!("{b}..{n}")]));
    assert_eq!(shas(&between).len(), 4, "n, m, f2, f1");
    let all = scm.history_between(None, &un).await.unwrap();
    assert_eq!(shas(&all), rev_list(&repo, &["main"]));

    let page = scm.history(None, 100).await.unwrap();
    assert!(page.next_cursor.is_none());
    let listed: Vec<String> = page.items.iter().map(|i| i.commit.clone()).collect();
    assert_eq!(listed, rev_list(&repo, &["main"]));
    let changed = scm.changed_paths(Some(ub), &um).await.unwrap();
    assert_eq!(changed, ["f"]);
}

#[tokio::test]
async fn force_push_rewrite() {
    let repo = TestRepo::new();
    let c = repo.linear("main", 3);
    let (scm, _data) = open(&repo, Some("verified-main"));
    let old_head = scm.latest().await.unwrap();
    assert_eq!(scm.promote(&old_head).await.unwrap(), PromoteOutcome::Moved);

    // Rewrite: drop c[2], put another commit on c[1].
    let rewritten = repo.commit(&[c[1]], &[("other", Some("x"))], "rewritten\n");
    repo.set_branch("main", rewritten);
    let new_head = scm.latest().await.unwrap();
    assert_eq!(sha(&new_head), rewritten.to_string());

    assert!(!scm.is_ancestor(&old_head, &new_head).await.unwrap());
    assert!(!scm.is_ancestor(&new_head, &old_head).await.unwrap());
    let shared = scm.resolve(&c[1].to_string()).await.unwrap();
    assert!(scm.is_ancestor(&shared, &new_head).await.unwrap());
    assert!(scm.is_ancestor(&shared, &old_head).await.unwrap());

    // The old head is no longer on the branch: not resolvable, not
    // promotable, but still describable (its URI is stored somewhere).
    assert!(matches!(
        scm.promote(&old_head).await,
        Err(ScmError::NotFound(_))
    ));
    assert!(matches!(
        scm.resolve(&c[2].to_string()).await,
        Err(ScmError::NotFound(_))
    ));
    assert!(matches!(
        scm.resolve(old_head.as_str()).await,
        Err(ScmError::NotFound(_))
    ));
    assert_eq!(
        scm.change_info(&old_head).await.unwrap().commit,
        c[2].to_string()
    );
    assert_eq!(repo.git(&["rev-parse", "verified-main"]), c[2].to_string());

    // Back and forth: the index follows a head that returns.
    repo.set_branch("main", c[2]);
    assert!(scm.is_ancestor(&shared, &old_head).await.unwrap());
    assert!(!scm.is_ancestor(&new_head, &old_head).await.unwrap());
    assert_eq!(
        scm.promote(&old_head).await.unwrap(),
        PromoteOutcome::AlreadyThere
    );
}

#[tokio::test]
async fn pagination_visits_every_commit_once_in_rev_list_order() {
    let repo = TestRepo::new();
    // A history with merges: main grows; every 5th commit merges a
    // two-commit side branch started 3 commits back.
    let mut main = Vec::new();
    for i in 0..60 {
        let head = repo.commit_on(
            "main",
            &[(&format!("m{i}"), Some("x"))],
            &format!("main {i}\n"),
        );
        main.push(head);
        if i % 5 == 4 && i >= 5 {
            let s1 = repo.commit(
                &[main[i - 3]],
                &[(&format!("s{i}a"), Some("y"))],
                "side a\n",
            );
            let s2 = repo.commit(&[s1], &[(&format!("s{i}b"), Some("y"))], "side b\n");
            let m = repo.commit(&[head, s2], &[(&format!("s{i}b"), Some("y"))], "merge\n");
            repo.set_branch("main", m);
            main.push(m);
        }
    }
    let expected = rev_list(&repo, &["main"]);
    assert!(expected.len() > 80);
    let (scm, _data) = open(&repo, None);

    for limit in [1, 2, 3, 7, 10, 50, expected.len(), expected.len() + 5] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = scm.history(cursor.clone(), limit).await.unwrap();
            assert!(page.items.len() <= limit);
            assert!(!page.items.is_empty(), "no empty pages (limit {limit})");
            seen.extend(page.items.into_iter().map(|i| i.commit));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
    }

    // Re-reading a page (a retried request) gives the same page.
    let first = scm.history(None, 10).await.unwrap();
    let second_a = scm.history(first.next_cursor.clone(), 10).await.unwrap();
    let second_b = scm.history(first.next_cursor.clone(), 10).await.unwrap();
    assert_eq!(second_a, second_b);
    // A cold adapter (another process) reads the same pages from a cursor.
    let (other, _d) = open(&repo, None);
    assert_eq!(
        other.history(first.next_cursor.clone(), 10).await.unwrap(),
        second_a
    );

    // The branch moving while a reader pages: the reader keeps the history
    // of its first page; a new first page sees the new head.
    let first = scm.history(None, 20).await.unwrap();
    let newer = repo.commit_on("main", &[("late", Some("z"))], "late\n");
    let mut seen: Vec<String> = first.items.into_iter().map(|i| i.commit).collect();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let page = scm.history(Some(c), 20).await.unwrap();
        seen.extend(page.items.into_iter().map(|i| i.commit));
        cursor = page.next_cursor;
    }
    assert_eq!(seen, expected);
    let fresh = scm.history(None, 1).await.unwrap();
    assert_eq!(fresh.items[0].commit, newer.to_string());

    for bad in ["garbage", "", "1234.5"] {
        assert!(
            matches!(
                scm.history(Some(bad.to_owned()), 5).await,
                Err(ScmError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        scm.history(None, 0).await,
        Err(ScmError::Invalid(_))
    ));
    let vanished = format!("{}.3", "ab".repeat(20));
    assert!(matches!(
        scm.history(Some(vanished), 5).await,
        Err(ScmError::NotFound(_))
    ));
}

#[tokio::test]
async fn promotion_moves_is_idempotent_and_may_go_back() {
    let repo = TestRepo::new();
    let c = repo.linear("main", 3);
    let feature = repo.commit(&[c[0]], &[("f", Some("f"))], "feature\n");
    let (scm, _data) = open(&repo, Some("verified-main"));
    let u: Vec<Uri> = vec![
        uri(&scm, c[0]).await,
        uri(&scm, c[1]).await,
        uri(&scm, c[2]).await,
    ];

    assert_eq!(scm.promote(&u[1]).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(repo.git(&["rev-parse", "verified-main"]), c[1].to_string());
    assert_eq!(
        scm.promote(&u[1]).await.unwrap(),
        PromoteOutcome::AlreadyThere
    );
    assert_eq!(scm.promote(&u[2]).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(repo.git(&["rev-parse", "verified-main"]), c[2].to_string());
    // Backwards is allowed: monotonicity is the pipeline's guarantee.
    assert_eq!(scm.promote(&u[0]).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(
        repo.git(&["rev-parse", "refs/heads/verified-main"]),
        c[0].to_string()
    );
    // The branch itself never moves.
    assert_eq!(repo.git(&["rev-parse", "main"]), c[2].to_string());

    // A commit of the repository that is not on the branch.
    let feature_uri = Uri::new(format!("git://{}/main/{feature}", repo.path_string())).unwrap();
    assert!(matches!(
        scm.promote(&feature_uri).await,
        Err(ScmError::NotFound(_))
    ));
    assert_eq!(repo.git(&["rev-parse", "verified-main"]), c[0].to_string());

    // Per-project refs.
    assert_eq!(
        scm.promote_to("verified/payments", &u[2]).await.unwrap(),
        PromoteOutcome::Moved
    );
    assert_eq!(
        scm.promote_to("refs/heads/verified/payments", &u[2])
            .await
            .unwrap(),
        PromoteOutcome::AlreadyThere
    );
    assert_eq!(
        repo.git(&["rev-parse", "verified/payments"]),
        c[2].to_string()
    );
    for bad in ["main", "refs/heads/main", "bad..name", "", "with space"] {
        assert!(
            matches!(scm.promote_to(bad, &u[1]).await, Err(ScmError::Invalid(_))),
            "{bad:?}"
        );
    }

    let (unconfigured, _d) = open(&repo, None);
    assert_eq!(
        unconfigured.promote(&u[1]).await.unwrap(),
        PromoteOutcome::NotConfigured
    );
    assert_eq!(repo.git(&["rev-parse", "verified-main"]), c[0].to_string());
}

#[tokio::test]
async fn factory_caches_per_queue_and_names_bad_configuration() {
    let repo = TestRepo::new();
    repo.linear("main", 2);
    let data = data_dir();
    let factory = GitScmFactory::new(data.path().to_owned());
    let cfg = queue(
        "mono/main",
        &repo.path_string(),
        "main",
        Some("verified-main"),
    );
    let a = factory.git_for_queue(&cfg).await.unwrap();
    let b = factory.git_for_queue(&cfg).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b), "one adapter per queue");
    let dynamic = factory.for_queue(&cfg).await.unwrap();
    assert_eq!(dynamic.latest().await.unwrap(), a.latest().await.unwrap());

    let invalid = |cfg: stovepipe_entity::QueueConfig, needle: &str| {
        let factory = &factory;
        let needle = needle.to_owned();
        async move {
            match factory.for_queue(&cfg).await {
                Err(e @ ScmError::Invalid(_)) => {
                    assert!(e.to_string().contains(&needle), "{e} should name {needle}");
                }
                Err(e) => panic!("expected Invalid naming {needle}, got {e}"),
                Ok(_) => panic!("expected Invalid naming {needle}, got an adapter"),
            }
        }
    };
    invalid(
        queue("q/a", "/no/such/repository", "main", None),
        "/no/such/repository",
    )
    .await;
    invalid(
        queue("q/b", &repo.path_string(), "no-such-branch", None),
        "no-such-branch",
    )
    .await;
    invalid(
        queue("q/c", &repo.path_string(), "bad..branch", None),
        "bad..branch",
    )
    .await;
    invalid(
        queue("q/d", &repo.path_string(), "main", Some("main")),
        "main",
    )
    .await;
    invalid(
        queue("q/e", &repo.path_string(), "main", Some("bad ref")),
        "bad ref",
    )
    .await;
    invalid(
        queue("q/f", "https://github.com/o/r.git", "main", None),
        "https",
    )
    .await;
    invalid(
        queue("q/g", "git@github.com:o/r.git", "main", None),
        "git@github.com:o/r.git",
    )
    .await;
}

#[tokio::test]
async fn a_locked_ref_is_unavailable_and_a_retry_succeeds() {
    let repo = TestRepo::new();
    let c = repo.linear("main", 2);
    let (scm, _data) = open(&repo, Some("verified-main"));
    let head = uri(&scm, c[1]).await;
    // Another git process is updating the ref (it holds the lock file).
    let lock = repo.path().join("refs/heads/verified-main.lock");
    std::fs::write(&lock, "").unwrap();
    let err = scm.promote(&head).await.unwrap_err();
    assert!(matches!(err, ScmError::Unavailable(_)), "{err}");
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(scm.promote(&head).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(repo.git(&["rev-parse", "verified-main"]), c[1].to_string());
}
