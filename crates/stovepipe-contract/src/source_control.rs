//! Contract of `SourceControl`: the head, revisions and minted URIs,
//! ancestry (also across a force-push), paginated newest-first history
//! (also through merges), commits between two points, change details,
//! changed paths, promotion (idempotent, never to a commit that left the
//! branch), other refs, and clean checkouts.
//!
//! The fixture scripts the repository (see [`ScmFixture`]); cases name
//! commits and ask the fixture for their ids. Does not own: URI formats,
//! remotes and mirrors (each adapter's own tests).

use crate::fixtures::ScmFixture;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use stovepipe_entity::Uri;
use stovepipe_ports::{PromoteOutcome, ScmError, SourceControl};

/// The suite runs against a scriptable repository.
pub type Fixture = Arc<dyn ScmFixture>;

crate::suite!($, source_control, source_control_tests, Fixture, [
    latest_is_the_branch_head,
    resolve_full_id_and_minted_uri,
    resolve_abbreviated_id,
    resolve_unknown_is_not_found,
    is_ancestor_of_ancestor_and_of_itself,
    is_ancestor_is_false_after_a_force_push_rewrite,
    is_ancestor_of_unknown_is_not_found,
    history_is_newest_first,
    history_pages_visit_every_commit_once,
    malformed_history_cursor_is_invalid,
    history_through_a_merge_includes_both_parents,
    history_between_excludes_what_base_reaches,
    history_between_through_a_merge,
    change_info_has_time_title_and_author,
    change_info_of_unknown_is_not_found,
    resolve_info_is_resolve_then_change_info,
    resolving_a_commit_a_force_push_dropped_is_not_found,
    changed_paths_lists_exactly_the_changed_paths,
    promote_moves_the_ref_and_is_idempotent,
    promote_of_a_commit_that_left_the_branch_is_not_found,
    promote_to_moves_another_ref,
    checkout_gives_the_commit_s_files,
    checkout_of_unknown_is_not_found,
]);

/// A ref other than the promotion ref, for `promote_to`.
const OTHER_REF: &str = "refs/heads/contract-project";

/// A URI no adapter mints for the fixture's queue.
fn foreign_uri() -> Uri {
    Uri::new("contract://elsewhere/no-such-commit").expect("valid uri")
}

/// Commits `names` in a chain on top of `parent` (each writing
/// `<name>.txt`), and moves the head to the last one.
async fn chain(fx: &Fixture, parent: Option<&str>, names: &[&str]) {
    let mut parent = parent;
    for name in names {
        let parents: Vec<&str> = parent.into_iter().collect();
        let file = format!("{name}.txt");
        fx.commit(name, &parents, &[(file.as_str(), name)]).await;
        parent = Some(name);
    }
    fx.set_head(names.last().expect("a non-empty chain")).await;
}

/// The URI the adapter mints for commit `name` (resolved by its full id).
async fn uri_of(fx: &Fixture, scm: &Arc<dyn SourceControl>, name: &str) -> Uri {
    let id = fx.id(name);
    scm.resolve(&id)
        .await
        .unwrap_or_else(|e| panic!("resolve the full id {id} of commit {name}: {e}"))
}

/// URIs of `names`, and a map back from URI text to name.
async fn uris_of(
    fx: &Fixture,
    scm: &Arc<dyn SourceControl>,
    names: &[&str],
) -> (Vec<Uri>, BTreeMap<String, String>) {
    let mut uris = Vec::new();
    let mut back = BTreeMap::new();
    for name in names {
        let uri = uri_of(fx, scm, name).await;
        back.insert(uri.as_str().to_owned(), (*name).to_owned());
        uris.push(uri);
    }
    (uris, back)
}

/// Names of `uris` (panics on a URI of no known commit).
fn names_of(uris: &[Uri], back: &BTreeMap<String, String>) -> Vec<String> {
    uris.iter()
        .map(|u| {
            back.get(u.as_str())
                .unwrap_or_else(|| panic!("{u} is none of the scripted commits"))
                .clone()
        })
        .collect()
}

/// Names of commits by their ids (as in `ChangeInfo::commit`).
fn names_by_id(fx: &Fixture, names: &[&str]) -> BTreeMap<String, String> {
    names.iter().map(|n| (fx.id(n), (*n).to_owned())).collect()
}

/// Asserts `order` lists each commit before all of its parents.
fn assert_children_first(order: &[String], parents: &[(&str, &[&str])], what: &str) {
    let pos = |n: &str| order.iter().position(|x| x == n);
    for (child, ps) in parents {
        let Some(c) = pos(child) else { continue };
        for p in *ps {
            if let Some(p_pos) = pos(p) {
                assert!(
                    c < p_pos,
                    "{what}: {child} must come before its parent {p} (newest first), got {order:?}"
                );
            }
        }
    }
}

fn is_not_found<T: std::fmt::Debug>(r: &Result<T, ScmError>) -> bool {
    matches!(r, Err(ScmError::NotFound(_)))
}

async fn latest_is_the_branch_head(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    assert_eq!(scm.latest().await.unwrap(), uri_of(&fx, &scm, "b").await);
    fx.commit("c", &["b"], &[("c.txt", "c")]).await;
    fx.set_head("c").await;
    let latest = scm.latest().await.unwrap();
    assert_eq!(
        latest,
        uri_of(&fx, &scm, "c").await,
        "latest must follow the branch"
    );
    assert_eq!(scm.change_info(&latest).await.unwrap().commit, fx.id("c"));
}

async fn resolve_full_id_and_minted_uri(fx: Fixture) {
    chain(&fx, None, &["a", "b", "c"]).await;
    let scm = fx.source_control().await;
    for name in ["a", "b", "c"] {
        let uri = uri_of(&fx, &scm, name).await;
        assert_eq!(
            scm.change_info(&uri).await.unwrap().commit,
            fx.id(name),
            "resolve({}) must name commit {name}",
            fx.id(name)
        );
        assert_eq!(
            scm.resolve(uri.as_str()).await.unwrap(),
            uri,
            "a minted URI resolves to itself"
        );
    }
    assert_ne!(uri_of(&fx, &scm, "a").await, uri_of(&fx, &scm, "b").await);
}

async fn resolve_abbreviated_id(fx: Fixture) {
    if !fx.capabilities().abbreviated_ids {
        return;
    }
    chain(&fx, None, &["abbreviation-root", "zz-target", "qq-other"]).await;
    let scm = fx.source_control().await;
    let id = fx.id("zz-target");
    let short: String = id.chars().take(7.min(id.len() - 1)).collect();
    assert!(short.len() < id.len());
    assert_eq!(
        scm.resolve(&short).await.unwrap(),
        uri_of(&fx, &scm, "zz-target").await,
        "resolve({short:?}) must be commit {id}"
    );
}

async fn resolve_unknown_is_not_found(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    for rev in [
        "no-such-revision",
        "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
        "refs/heads/no-such-branch",
        foreign_uri().as_str(),
    ] {
        let got = scm.resolve(rev).await;
        assert!(
            is_not_found(&got),
            "resolve({rev:?}) must be NotFound, got {got:?}"
        );
    }
}

async fn is_ancestor_of_ancestor_and_of_itself(fx: Fixture) {
    chain(&fx, None, &["a", "b", "c"]).await;
    let scm = fx.source_control().await;
    let (u, _) = uris_of(&fx, &scm, &["a", "b", "c"]).await;
    assert!(scm.is_ancestor(&u[0], &u[2]).await.unwrap(), "a ≤ c");
    assert!(scm.is_ancestor(&u[1], &u[2]).await.unwrap(), "b ≤ c");
    assert!(
        scm.is_ancestor(&u[1], &u[1]).await.unwrap(),
        "a commit is its own ancestor"
    );
    assert!(!scm.is_ancestor(&u[2], &u[0]).await.unwrap(), "c ≰ a");
    assert!(!scm.is_ancestor(&u[2], &u[1]).await.unwrap(), "c ≰ b");
}

async fn is_ancestor_is_false_after_a_force_push_rewrite(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    let (old, _) = uris_of(&fx, &scm, &["a", "b"]).await;
    // Rewrite: b is replaced by x.
    fx.commit("x", &["a"], &[("x.txt", "x")]).await;
    fx.set_head("x").await;
    let x = uri_of(&fx, &scm, "x").await;
    assert_eq!(scm.latest().await.unwrap(), x);
    assert!(
        !scm.is_ancestor(&old[1], &x).await.unwrap(),
        "the rewritten-away b is no ancestor of the new head"
    );
    assert!(!scm.is_ancestor(&x, &old[1]).await.unwrap());
    assert!(
        scm.is_ancestor(&old[0], &x).await.unwrap(),
        "the common root stays an ancestor"
    );
}

async fn is_ancestor_of_unknown_is_not_found(fx: Fixture) {
    chain(&fx, None, &["a"]).await;
    let scm = fx.source_control().await;
    let a = uri_of(&fx, &scm, "a").await;
    let got = scm.is_ancestor(&foreign_uri(), &a).await;
    assert!(is_not_found(&got), "unknown ancestor: got {got:?}");
    let got = scm.is_ancestor(&a, &foreign_uri()).await;
    assert!(is_not_found(&got), "unknown descendant: got {got:?}");
}

const LINEAR: [&str; 7] = ["l1", "l2", "l3", "l4", "l5", "l6", "l7"];

async fn history_is_newest_first(fx: Fixture) {
    chain(&fx, None, &LINEAR).await;
    let scm = fx.source_control().await;
    let page = scm.history(None, 100).await.unwrap();
    let by_id = names_by_id(&fx, &LINEAR);
    let got: Vec<&str> = page
        .items
        .iter()
        .map(|i| by_id.get(&i.commit).map_or("?", String::as_str))
        .collect();
    let want: Vec<&str> = LINEAR.iter().rev().copied().collect();
    assert_eq!(got, want, "history must list the branch newest first");
    assert_eq!(page.next_cursor, None, "one page holds everything");
    for item in &page.items {
        assert_eq!(
            scm.change_info(&item.uri).await.unwrap(),
            *item,
            "history items are the commits' change info"
        );
    }
}

async fn history_pages_visit_every_commit_once(fx: Fixture) {
    chain(&fx, None, &LINEAR).await;
    let scm = fx.source_control().await;
    let by_id = names_by_id(&fx, &LINEAR);
    let want: Vec<String> = LINEAR.iter().rev().map(|s| (*s).to_owned()).collect();
    for limit in [1, 2, 3, 6, 7, 50] {
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..=LINEAR.len() {
            let page = scm.history(cursor.clone(), limit).await.unwrap();
            assert!(
                page.items.len() <= limit,
                "a page of limit {limit} held {} items",
                page.items.len()
            );
            seen.extend(
                page.items
                    .iter()
                    .map(|i| by_id.get(&i.commit).cloned().unwrap_or_default()),
            );
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
            assert!(
                !page.items.is_empty(),
                "a page with a next cursor must hold items (limit {limit})"
            );
        }
        assert_eq!(cursor, None, "paging with limit {limit} never ended");
        assert_eq!(
            seen, want,
            "paging with limit {limit} must visit every commit once, newest first"
        );
    }
}

async fn malformed_history_cursor_is_invalid(fx: Fixture) {
    chain(&fx, None, &["a", "b", "c"]).await;
    let scm = fx.source_control().await;
    for cursor in ["", "not a cursor", "%%%", "\u{1}"] {
        let got = scm.history(Some(cursor.to_owned()), 2).await;
        assert!(
            matches!(got, Err(ScmError::Invalid(_))),
            "cursor {cursor:?} must be Invalid, got {got:?}"
        );
    }
}

/// root ← m1 ← merge ← m2 on the first-parent line; root ← s1 ← s2 merged
/// in as the second parent. Head at m2.
const MERGE_GRAPH: [(&str, &[&str]); 6] = [
    ("root", &[]),
    ("m1", &["root"]),
    ("s1", &["root"]),
    ("s2", &["s1"]),
    ("merge", &["m1", "s2"]),
    ("m2", &["merge"]),
];

async fn merge_graph(fx: &Fixture) {
    for (name, parents) in MERGE_GRAPH {
        let file = format!("{name}.txt");
        fx.commit(name, parents, &[(file.as_str(), name)]).await;
    }
    fx.set_head("m2").await;
}

async fn history_through_a_merge_includes_both_parents(fx: Fixture) {
    merge_graph(&fx).await;
    let scm = fx.source_control().await;
    let names: Vec<&str> = MERGE_GRAPH.iter().map(|(n, _)| *n).collect();
    let by_id = names_by_id(&fx, &names);
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..=names.len() {
        let page = scm.history(cursor.clone(), 2).await.unwrap();
        seen.extend(
            page.items
                .iter()
                .map(|i| by_id.get(&i.commit).cloned().unwrap_or_default()),
        );
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(cursor, None, "paging never ended");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a commit was listed twice: {seen:?}"
    );
    let want: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "history through a merge lists both parents' commits"
    );
    assert_eq!(seen.first().map(String::as_str), Some("m2"));
    assert_children_first(&seen, &MERGE_GRAPH, "history");
}

async fn history_between_excludes_what_base_reaches(fx: Fixture) {
    chain(&fx, None, &["a", "b", "c", "d", "e"]).await;
    let scm = fx.source_control().await;
    let (u, back) = uris_of(&fx, &scm, &["a", "b", "c", "d", "e"]).await;
    let between = |base: Option<usize>, head: usize| {
        let scm = Arc::clone(&scm);
        let base = base.map(|i| u[i].clone());
        let head = u[head].clone();
        let back = back.clone();
        async move { names_of(&scm.history_between(base, &head).await.unwrap(), &back) }
    };
    assert_eq!(between(Some(1), 4).await, ["e", "d", "c"]);
    assert_eq!(between(Some(3), 4).await, ["e"]);
    assert!(between(Some(4), 4).await.is_empty(), "base = head: nothing");
    assert!(
        between(Some(4), 2).await.is_empty(),
        "base after head: nothing"
    );
    assert_eq!(
        between(None, 4).await,
        ["e", "d", "c", "b", "a"],
        "without base: everything, newest first"
    );
    assert_eq!(between(None, 1).await, ["b", "a"]);
}

async fn history_between_through_a_merge(fx: Fixture) {
    merge_graph(&fx).await;
    let scm = fx.source_control().await;
    let names: Vec<&str> = MERGE_GRAPH.iter().map(|(n, _)| *n).collect();
    let (_, back) = uris_of(&fx, &scm, &names).await;
    let uri = |n: &str| {
        back.iter()
            .find(|(_, name)| name.as_str() == n)
            .map(|(u, _)| Uri::new(u.clone()).unwrap())
            .unwrap()
    };
    let cases: [(Option<&str>, &[&str]); 3] = [
        (Some("m1"), &["m2", "merge", "s2", "s1"]),
        (Some("s2"), &["m2", "merge", "m1"]),
        (None, &["m2", "merge", "m1", "s2", "s1", "root"]),
    ];
    for (base, want) in cases {
        let got = names_of(
            &scm.history_between(base.map(uri), &uri("m2"))
                .await
                .unwrap(),
            &back,
        );
        assert_eq!(
            got.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            want.iter().copied().collect::<BTreeSet<_>>(),
            "history_between({base:?}, m2): reachable from m2 and not from base; got {got:?}"
        );
        assert_eq!(got.len(), want.len(), "each commit once: {got:?}");
        assert_children_first(&got, &MERGE_GRAPH, "history_between");
    }
}

async fn change_info_has_time_title_and_author(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    for name in ["a", "b"] {
        let uri = uri_of(&fx, &scm, name).await;
        let info = scm.change_info(&uri).await.unwrap();
        assert_eq!(info.uri, uri);
        assert_eq!(info.commit, fx.id(name));
        assert!(info.created_at.0 > 0, "created_at must be > 0: {info:?}");
        assert!(!info.title.is_empty(), "a title: {info:?}");
        assert!(!info.author.is_empty(), "an author: {info:?}");
    }
}

async fn change_info_of_unknown_is_not_found(fx: Fixture) {
    chain(&fx, None, &["a"]).await;
    let scm = fx.source_control().await;
    let got = scm.change_info(&foreign_uri()).await;
    assert!(is_not_found(&got), "got {got:?}");
}

async fn resolve_info_is_resolve_then_change_info(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    let a = uri_of(&fx, &scm, "a").await;
    for rev in [fx.id("a"), fx.id("b"), a.as_str().to_owned()] {
        let uri = scm.resolve(&rev).await.unwrap();
        assert_eq!(
            scm.resolve_info(&rev).await.unwrap(),
            scm.change_info(&uri).await.unwrap(),
            "resolve_info({rev:?})"
        );
    }
    for rev in ["no-such-revision", foreign_uri().as_str()] {
        let got = scm.resolve_info(rev).await;
        assert!(
            is_not_found(&got),
            "resolve_info({rev:?}) must be NotFound, got {got:?}"
        );
    }
}

/// Asked again and again (a read side's or a webhook's hot path, which an
/// adapter may answer from what it has indexed), `resolve_info` and
/// `resolve` still follow the branch: a commit a force-push dropped is
/// `NotFound` at once.
async fn resolving_a_commit_a_force_push_dropped_is_not_found(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    let (u, _) = uris_of(&fx, &scm, &["a", "b"]).await;
    for rev in [fx.id("b"), u[1].as_str().to_owned()] {
        for _ in 0..3 {
            assert_eq!(scm.resolve_info(&rev).await.unwrap().uri, u[1], "{rev}");
            assert_eq!(scm.resolve(&rev).await.unwrap(), u[1], "{rev}");
        }
    }
    // Rewrite: b is replaced by x.
    fx.commit("x", &["a"], &[("x.txt", "x")]).await;
    fx.set_head("x").await;
    let x = uri_of(&fx, &scm, "x").await;
    assert_eq!(scm.latest().await.unwrap(), x);
    for rev in [fx.id("b"), u[1].as_str().to_owned()] {
        for _ in 0..3 {
            let got = scm.resolve_info(&rev).await;
            assert!(
                is_not_found(&got),
                "resolve_info({rev:?}) of a dropped commit must be NotFound, got {got:?}"
            );
            let got = scm.resolve(&rev).await;
            assert!(
                is_not_found(&got),
                "resolve({rev:?}) of a dropped commit must be NotFound, got {got:?}"
            );
        }
    }
    assert_eq!(scm.resolve_info(&fx.id("a")).await.unwrap().uri, u[0]);
    assert_eq!(scm.resolve_info(&fx.id("x")).await.unwrap().uri, x);
}

async fn changed_paths_lists_exactly_the_changed_paths(fx: Fixture) {
    fx.commit(
        "a",
        &[],
        &[("README.md", "hello\n"), ("src/lib.rs", "fn a() {}\n")],
    )
    .await;
    fx.commit("b", &["a"], &[("src/lib.rs", "fn b() {}\n")])
        .await;
    fx.commit("c", &["b"], &[("docs/guide.md", "guide\n")])
        .await;
    fx.set_head("c").await;
    let scm = fx.source_control().await;
    let (u, _) = uris_of(&fx, &scm, &["a", "b", "c"]).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(scm.changed_paths(Some(u[0].clone()), &u[2]).await.unwrap()),
        ["docs/guide.md", "src/lib.rs"]
    );
    assert_eq!(
        sorted(scm.changed_paths(Some(u[1].clone()), &u[2]).await.unwrap()),
        ["docs/guide.md"]
    );
    assert_eq!(
        sorted(scm.changed_paths(Some(u[0].clone()), &u[1]).await.unwrap()),
        ["src/lib.rs"]
    );
    assert_eq!(
        sorted(scm.changed_paths(None, &u[2]).await.unwrap()),
        ["README.md", "docs/guide.md", "src/lib.rs"],
        "without base: every path of head"
    );
}

async fn promote_moves_the_ref_and_is_idempotent(fx: Fixture) {
    chain(&fx, None, &["a", "b", "c"]).await;
    let scm = fx.source_control().await;
    let (u, _) = uris_of(&fx, &scm, &["a", "b", "c"]).await;
    assert_eq!(fx.promotion_target().await, None);
    assert_eq!(scm.promote(&u[1]).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(fx.promotion_target().await.as_deref(), Some("b"));
    assert_eq!(
        scm.promote(&u[1]).await.unwrap(),
        PromoteOutcome::AlreadyThere
    );
    assert_eq!(fx.promotion_target().await.as_deref(), Some("b"));
    assert_eq!(scm.promote(&u[2]).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(fx.promotion_target().await.as_deref(), Some("c"));
    // The port moves the ref wherever it is told on the branch; never
    // moving backwards is the pipeline's rule.
    assert_eq!(scm.promote(&u[0]).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(fx.promotion_target().await.as_deref(), Some("a"));
}

async fn promote_of_a_commit_that_left_the_branch_is_not_found(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    let (u, _) = uris_of(&fx, &scm, &["a", "b"]).await;
    assert_eq!(scm.promote(&u[0]).await.unwrap(), PromoteOutcome::Moved);
    fx.commit("x", &["a"], &[("x.txt", "x")]).await;
    fx.set_head("x").await;
    let got = scm.promote(&u[1]).await;
    assert!(
        is_not_found(&got),
        "promoting a commit a force-push dropped must be NotFound, got {got:?}"
    );
    assert_eq!(
        fx.promotion_target().await.as_deref(),
        Some("a"),
        "a refused promotion moves nothing"
    );
    let got = scm.promote(&foreign_uri()).await;
    assert!(is_not_found(&got), "unknown commit: got {got:?}");
}

async fn promote_to_moves_another_ref(fx: Fixture) {
    chain(&fx, None, &["a", "b"]).await;
    let scm = fx.source_control().await;
    let (u, _) = uris_of(&fx, &scm, &["a", "b"]).await;
    assert_eq!(
        scm.promote_to(OTHER_REF, &u[0]).await.unwrap(),
        PromoteOutcome::Moved
    );
    assert_eq!(fx.ref_target(OTHER_REF).await.as_deref(), Some("a"));
    assert_eq!(
        scm.promote_to(OTHER_REF, &u[0]).await.unwrap(),
        PromoteOutcome::AlreadyThere
    );
    assert_eq!(
        scm.promote_to(OTHER_REF, &u[1]).await.unwrap(),
        PromoteOutcome::Moved
    );
    assert_eq!(fx.ref_target(OTHER_REF).await.as_deref(), Some("b"));
    assert_eq!(
        fx.promotion_target().await,
        None,
        "promote_to leaves the promotion ref alone"
    );
}

fn read(dir: &std::path::Path, path: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(path)).ok()
}

async fn checkout_gives_the_commit_s_files(fx: Fixture) {
    fx.commit(
        "a",
        &[],
        &[("README.md", "one\n"), ("src/lib.rs", "fn a() {}\n")],
    )
    .await;
    fx.commit(
        "b",
        &["a"],
        &[("src/lib.rs", "fn b() {}\n"), ("extra/new.txt", "new\n")],
    )
    .await;
    fx.set_head("b").await;
    let scm = fx.source_control().await;
    let (u, _) = uris_of(&fx, &scm, &["a", "b"]).await;

    let dir = scm.checkout(&u[1], 0).await.unwrap();
    assert_eq!(read(&dir, "README.md").as_deref(), Some("one\n"));
    assert_eq!(read(&dir, "src/lib.rs").as_deref(), Some("fn b() {}\n"));
    assert_eq!(read(&dir, "extra/new.txt").as_deref(), Some("new\n"));

    // The same slot, brought back to a: a clean tree of a.
    let dir = scm.checkout(&u[0], 0).await.unwrap();
    assert_eq!(read(&dir, "README.md").as_deref(), Some("one\n"));
    assert_eq!(read(&dir, "src/lib.rs").as_deref(), Some("fn a() {}\n"));
    assert_eq!(
        read(&dir, "extra/new.txt"),
        None,
        "a file of b left in a's checkout"
    );

    // Another slot holds its own tree.
    let other = scm.checkout(&u[1], 1).await.unwrap();
    assert_ne!(other, dir, "slots must not share a directory");
    assert_eq!(read(&other, "src/lib.rs").as_deref(), Some("fn b() {}\n"));
    assert_eq!(read(&dir, "src/lib.rs").as_deref(), Some("fn a() {}\n"));
}

async fn checkout_of_unknown_is_not_found(fx: Fixture) {
    chain(&fx, None, &["a"]).await;
    let scm = fx.source_control().await;
    let got = scm.checkout(&foreign_uri(), 0).await;
    assert!(is_not_found(&got), "got {got:?}");
}
