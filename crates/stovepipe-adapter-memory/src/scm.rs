//! A scripted repository: a commit graph per queue behind `SourceControl`.
//!
//! Owns: the commit graph a test builds (`commit`, `push`, `set_head`), the
//! branch head, the promotion ref and other refs, URI minting
//! (`mem://<queue>/<commit>`), and scripted failures. Reachability is
//! computed from the head, so a force-push is `set_head` to a commit that
//! does not descend from the old head, and the old commits drop off the
//! branch. `checkout` writes a commit's scripted files (its first parent's,
//! then its own) and a `STOVEPIPE_COMMIT` file holding its id. Does not
//! own: real git (see `stovepipe-adapter-git`).

use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use stovepipe_entity::{InvalidValue, QueueConfig, QueueName, Timestamp, Uri};
use stovepipe_ports::{
    ChangeInfo, HistoryPage, PromoteOutcome, ScmError, SourceControl, SourceControlFactory,
};

/// The promotion ref of a repository used directly (not through
/// [`ScriptedScmFactory`], which takes it from the queue configuration).
pub const DEFAULT_PROMOTION_REF: &str = "refs/heads/verified";

const CURSOR_PREFIX: &str = "mem-cursor:";

/// Optional details of a scripted commit. Empty fields get defaults: the
/// author `"Scripted Author"`, the commit id as title, and a commit time
/// of `1000 × n` ms for the n-th commit of the repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitSpec {
    pub author: Option<String>,
    pub title: Option<String>,
    pub created_at: Option<Timestamp>,
    /// Paths this commit changes (for `changed_paths`).
    pub paths: Vec<String>,
    /// Files this commit writes, `(path, content)`, on top of its first
    /// parent's files: `checkout` writes the result. Their paths count as
    /// changed too.
    pub files: Vec<(String, String)>,
}

impl CommitSpec {
    /// A commit that changes `paths`.
    pub fn paths(paths: &[&str]) -> Self {
        Self {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// A commit that writes `files` (`(path, content)`).
    pub fn files(files: &[(&str, &str)]) -> Self {
        Self {
            files: files
                .iter()
                .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
                .collect(),
            ..Self::default()
        }
    }
}

#[derive(Debug)]
struct Commit {
    parents: Vec<String>,
    author: String,
    title: String,
    created_at: Timestamp,
    paths: Vec<String>,
    /// Every file of the commit's tree: the first parent's, then its own.
    tree: BTreeMap<String, String>,
}

#[derive(Debug)]
struct RepoState {
    commits: HashMap<String, Commit>,
    head: Option<String>,
    promotion_ref: Option<String>,
    promoted: Option<String>,
    refs: BTreeMap<String, String>,
    latest_error: Option<ScmError>,
    fail_all: Option<ScmError>,
}

/// A cloneable handle on one queue's scripted repository; clones share it.
/// It implements `SourceControl` itself (promotion ref
/// [`DEFAULT_PROMOTION_REF`]); [`ScriptedScmFactory`] hands it out per queue.
///
/// The scripting methods panic on a script error (unknown parent, duplicate
/// commit id): they are test set-up, and a silent fallback would hide it.
#[derive(Debug, Clone)]
pub struct ScriptedRepo {
    queue: QueueName,
    /// Keeps checkouts of repositories with the same queue name apart.
    instance: u64,
    state: Arc<Mutex<RepoState>>,
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl ScriptedRepo {
    pub fn new(queue: QueueName) -> Self {
        Self {
            queue,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            state: Arc::new(Mutex::new(RepoState {
                commits: HashMap::new(),
                head: None,
                promotion_ref: Some(DEFAULT_PROMOTION_REF.to_owned()),
                promoted: None,
                refs: BTreeMap::new(),
                latest_error: None,
                fail_all: None,
            })),
        }
    }

    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    fn lock(&self) -> MutexGuard<'_, RepoState> {
        // Scripting panics only before mutating; the graph stays valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The URI of commit `id` of this queue (whether or not it exists).
    ///
    /// # Panics
    /// When `id` contains whitespace or control characters.
    pub fn uri(&self, id: &str) -> Uri {
        match Uri::new(format!("mem://{}/{id}", self.queue)) {
            Ok(uri) => uri,
            Err(e) => panic!("scripted commit id {id:?} makes no URI: {e}"),
        }
    }

    fn id_of(&self, uri: &Uri) -> Option<String> {
        uri.as_str()
            .strip_prefix("mem://")?
            .strip_prefix(self.queue.as_str())?
            .strip_prefix('/')
            .map(str::to_owned)
    }

    /// Adds commit `id` with `parents` to the graph (the head does not move).
    ///
    /// # Panics
    /// On a duplicate id or an unknown parent.
    pub fn commit(&self, id: &str, parents: &[&str]) -> Uri {
        self.commit_with(id, parents, CommitSpec::default())
    }

    /// As [`commit`](Self::commit), with details.
    ///
    /// # Panics
    /// On a duplicate id or an unknown parent.
    pub fn commit_with(&self, id: &str, parents: &[&str], spec: CommitSpec) -> Uri {
        let uri = self.uri(id);
        let mut st = self.lock();
        assert!(
            !st.commits.contains_key(id),
            "scripted repo {}: commit {id:?} already exists",
            self.queue
        );
        for p in parents {
            assert!(
                st.commits.contains_key(*p),
                "scripted repo {}: parent {p:?} of {id:?} is unknown",
                self.queue
            );
        }
        let ordinal = st.commits.len() as i64 + 1;
        let mut tree = parents
            .first()
            .and_then(|p| st.commits.get(*p))
            .map(|c| c.tree.clone())
            .unwrap_or_default();
        let mut paths = spec.paths;
        for (path, content) in spec.files {
            assert!(
                !path.is_empty()
                    && !std::path::Path::new(&path).is_absolute()
                    && !path.split('/').any(|part| part == ".." || part.is_empty()),
                "scripted repo {}: file path {path:?} of {id:?} must be relative and plain",
                self.queue
            );
            if !paths.contains(&path) {
                paths.push(path.clone());
            }
            tree.insert(path, content);
        }
        st.commits.insert(
            id.to_owned(),
            Commit {
                parents: parents.iter().map(|p| (*p).to_owned()).collect(),
                author: spec.author.unwrap_or_else(|| "Scripted Author".to_owned()),
                title: spec.title.unwrap_or_else(|| id.to_owned()),
                created_at: spec.created_at.unwrap_or(Timestamp(1000 * ordinal)),
                paths,
                tree,
            },
        );
        uri
    }

    /// Commits `id` on top of the head (a root commit when there is none)
    /// and moves the head to it: an ordinary push.
    pub fn push(&self, id: &str) -> Uri {
        self.push_with(id, CommitSpec::default())
    }

    /// As [`push`](Self::push), with details.
    pub fn push_with(&self, id: &str, spec: CommitSpec) -> Uri {
        let head = self.lock().head.clone();
        let parents: Vec<&str> = head.iter().map(String::as_str).collect();
        let uri = self.commit_with(id, &parents, spec);
        self.set_head(id);
        uri
    }

    /// Moves the branch head to `id` (any commit: a force-push when it does
    /// not descend from the old head).
    ///
    /// # Panics
    /// When `id` is unknown.
    pub fn set_head(&self, id: &str) {
        let mut st = self.lock();
        assert!(
            st.commits.contains_key(id),
            "scripted repo {}: cannot set head to unknown commit {id:?}",
            self.queue
        );
        st.head = Some(id.to_owned());
    }

    /// The branch head.
    pub fn head(&self) -> Option<Uri> {
        self.lock().head.clone().map(|id| self.uri(&id))
    }

    /// Where the promotion ref points.
    pub fn promoted(&self) -> Option<Uri> {
        self.lock().promoted.clone().map(|id| self.uri(&id))
    }

    /// Where an arbitrary ref moved by `promote_to` points.
    pub fn ref_target(&self, reference: &str) -> Option<Uri> {
        self.lock()
            .refs
            .get(reference)
            .cloned()
            .map(|id| self.uri(&id))
    }

    /// Sets (or, with `None`, removes) the promotion ref; without one,
    /// `promote` answers `NotConfigured`.
    pub fn set_promotion_ref(&self, reference: Option<String>) {
        self.lock().promotion_ref = reference;
    }

    /// Makes `latest` fail with `error` until cleared.
    pub fn set_latest_error(&self, error: ScmError) {
        self.lock().latest_error = Some(error);
    }

    pub fn clear_latest_error(&self) {
        self.lock().latest_error = None;
    }

    /// Makes every `SourceControl` call fail with `error` until cleared
    /// (an unreachable remote).
    pub fn fail_all_with(&self, error: ScmError) {
        self.lock().fail_all = Some(error);
    }

    pub fn clear_failures(&self) {
        let mut st = self.lock();
        st.fail_all = None;
        st.latest_error = None;
    }

    /// Locks the state after applying the scripted blanket failure.
    fn serve(&self) -> Result<MutexGuard<'_, RepoState>, ScmError> {
        let st = self.lock();
        match &st.fail_all {
            Some(e) => Err(e.clone()),
            None => Ok(st),
        }
    }

    fn known(&self, st: &RepoState, uri: &Uri) -> Result<String, ScmError> {
        self.id_of(uri)
            .filter(|id| st.commits.contains_key(id))
            .ok_or_else(|| ScmError::NotFound(uri.to_string()))
    }

    fn change_info_of(&self, st: &RepoState, id: &str) -> Option<ChangeInfo> {
        let c = st.commits.get(id)?;
        Some(ChangeInfo {
            uri: self.uri(id),
            commit: id.to_owned(),
            author: c.author.clone(),
            title: c.title.clone(),
            created_at: c.created_at,
        })
    }

    /// Moves the promotion ref (`reference` = None) or a named ref.
    fn promote_ref(&self, uri: &Uri, reference: Option<&str>) -> Result<PromoteOutcome, ScmError> {
        let mut st = self.serve()?;
        let id = self.known(&st, uri)?;
        // Only a commit still on the branch may be promoted.
        if !on_branch(&st, &id) {
            return Err(ScmError::NotFound(format!("{uri} is not on the branch")));
        }
        let current = match reference {
            None => st.promoted.as_deref(),
            Some(r) => st.refs.get(r).map(String::as_str),
        };
        if current == Some(id.as_str()) {
            return Ok(PromoteOutcome::AlreadyThere);
        }
        match reference {
            None => st.promoted = Some(id),
            Some(r) => {
                st.refs.insert(r.to_owned(), id);
            }
        }
        Ok(PromoteOutcome::Moved)
    }
}

fn on_branch(st: &RepoState, id: &str) -> bool {
    st.head.as_deref().is_some_and(|head| reaches(st, head, id))
}

/// Whether `target` is `from` or an ancestor of it. The walk stops at
/// `target`: the pipeline asks about the last green commit, a few commits
/// behind the head, and a walk of the whole history on every ask was 6 %
/// of the pipeline benchmark's own CPU (docs/benchmarks.md, 2026-12-06,
/// fifth session).
fn reaches(st: &RepoState, from: &str, target: &str) -> bool {
    walk(st, from, |id| id == target).1
}

/// `from` and every ancestor of it.
fn ancestors<'a>(st: &'a RepoState, from: &'a str) -> HashSet<&'a str> {
    walk(st, from, |_| false).0
}

/// Walks `from` and its ancestors, each once, until `stop` holds for one:
/// the commits walked, and whether it stopped.
fn walk<'a>(
    st: &'a RepoState,
    from: &'a str,
    stop: impl Fn(&str) -> bool,
) -> (HashSet<&'a str>, bool) {
    let mut seen = HashSet::new();
    let mut stack = vec![from];
    while let Some(id) = stack.pop() {
        if stop(id) {
            return (seen, true);
        }
        if seen.insert(id)
            && let Some(c) = st.commits.get(id)
        {
            stack.extend(c.parents.iter().map(String::as_str));
        }
    }
    (seen, false)
}

/// Every commit reachable from `head`, newest first: each commit comes
/// before its parents, and the first-parent line comes before merged side
/// lines (reversed depth-first post-order, first parent visited last).
fn topo_order<'a>(st: &'a RepoState, head: &'a str) -> Vec<&'a str> {
    let mut post = Vec::new();
    let mut seen = HashSet::new();
    // (commit, number of its parents already pushed), iteratively so deep
    // histories do not overflow the stack.
    let mut stack: Vec<(&str, usize)> = vec![(head, 0)];
    seen.insert(head);
    while let Some((id, done)) = stack.pop() {
        let parents = st.commits.get(id).map_or(&[][..], |c| c.parents.as_slice());
        if done < parents.len() {
            stack.push((id, done + 1));
            // Last parent first, so the first parent finishes last.
            let p = parents[parents.len() - 1 - done].as_str();
            if seen.insert(p) {
                stack.push((p, 0));
            }
        } else {
            post.push(id);
        }
    }
    post.reverse();
    post
}

fn invalid_cursor(cursor: &str) -> ScmError {
    ScmError::Invalid(InvalidValue {
        kind: "history cursor",
        value: cursor.chars().take(120).collect(),
        expected: "a cursor returned by history".to_owned(),
    })
}

#[async_trait]
impl SourceControl for ScriptedRepo {
    async fn latest(&self) -> Result<Uri, ScmError> {
        let st = self.serve()?;
        if let Some(e) = &st.latest_error {
            return Err(e.clone());
        }
        st.head
            .as_deref()
            .map(|id| self.uri(id))
            .ok_or_else(|| ScmError::NotFound(format!("queue {} has no head yet", self.queue)))
    }

    async fn resolve(&self, rev: &str) -> Result<Uri, ScmError> {
        let st = self.serve()?;
        let not_found = || ScmError::NotFound(rev.to_owned());
        let by_ref = match rev {
            "HEAD" => st.head.clone(),
            _ if st.promotion_ref.as_deref() == Some(rev) => st.promoted.clone(),
            _ => st.refs.get(rev).cloned(),
        };
        if let Some(id) = by_ref {
            return Ok(self.uri(&id));
        }
        // A commit id or URI names a commit on the branch (as git's does:
        // a commit a force-push dropped is no longer found).
        let on_the_branch = |id: &str| {
            on_branch(&st, id)
                .then(|| self.uri(id))
                .ok_or_else(not_found)
        };
        if let Some(id) = Uri::new(rev).ok().and_then(|u| self.id_of(&u)) {
            return on_the_branch(&id);
        }
        if st.commits.contains_key(rev) {
            return on_the_branch(rev);
        }
        // An abbreviated id must be unambiguous.
        let mut matches = st.commits.keys().filter(|id| id.starts_with(rev));
        match (matches.next(), matches.next()) {
            (Some(id), None) if !rev.is_empty() => on_the_branch(id),
            _ => Err(not_found()),
        }
    }

    async fn is_ancestor(&self, ancestor: &Uri, descendant: &Uri) -> Result<bool, ScmError> {
        let st = self.serve()?;
        let a = self.known(&st, ancestor)?;
        let d = self.known(&st, descendant)?;
        Ok(reaches(&st, &d, &a))
    }

    async fn history(&self, cursor: Option<String>, limit: usize) -> Result<HistoryPage, ScmError> {
        let st = self.serve()?;
        let Some(head) = st.head.as_deref() else {
            return Ok(HistoryPage {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        let order = topo_order(&st, head);
        let start = match &cursor {
            None => 0,
            Some(c) => {
                let id = c
                    .strip_prefix(CURSOR_PREFIX)
                    .ok_or_else(|| invalid_cursor(c))?;
                order.iter().position(|x| *x == id).ok_or_else(|| {
                    ScmError::NotFound(format!("history cursor {c}: commit left the branch"))
                })?
            }
        };
        let limit = limit.max(1);
        let end = (start + limit).min(order.len());
        let items = order[start..end]
            .iter()
            .filter_map(|id| self.change_info_of(&st, id))
            .collect();
        let next_cursor = order.get(end).map(|id| format!("{CURSOR_PREFIX}{id}"));
        Ok(HistoryPage { items, next_cursor })
    }

    async fn history_between(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<Uri>, ScmError> {
        let st = self.serve()?;
        let head = self.known(&st, head)?;
        let excluded = match &base {
            Some(base) => {
                let base = self.known(&st, base)?;
                ancestors(&st, &base)
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            }
            None => HashSet::new(),
        };
        Ok(topo_order(&st, &head)
            .into_iter()
            .filter(|id| !excluded.contains(*id))
            .map(|id| self.uri(id))
            .collect())
    }

    async fn change_info(&self, uri: &Uri) -> Result<ChangeInfo, ScmError> {
        let st = self.serve()?;
        let id = self.known(&st, uri)?;
        self.change_info_of(&st, &id)
            .ok_or_else(|| ScmError::NotFound(uri.to_string()))
    }

    async fn changed_paths(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<String>, ScmError> {
        let commits = self.history_between(base, head).await?;
        let st = self.serve()?;
        let mut paths = BTreeSet::new();
        for uri in &commits {
            if let Some(c) = self.id_of(uri).and_then(|id| st.commits.get(&id)) {
                paths.extend(c.paths.iter().cloned());
            }
        }
        Ok(paths.into_iter().collect())
    }

    async fn promote(&self, uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        if self.serve()?.promotion_ref.is_none() {
            return Ok(PromoteOutcome::NotConfigured);
        }
        self.promote_ref(uri, None)
    }

    async fn promote_to(&self, reference: &str, uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        self.promote_ref(uri, Some(reference))
    }

    async fn checkout(&self, uri: &Uri, slot: u32) -> Result<PathBuf, ScmError> {
        let (id, tree) = {
            let st = self.serve()?;
            let id = self.known(&st, uri)?;
            let tree = st
                .commits
                .get(&id)
                .map(|c| c.tree.clone())
                .unwrap_or_default();
            (id, tree)
        };
        let queue_dir: String = self
            .queue
            .as_str()
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        let dir = std::env::temp_dir()
            .join(format!("stovepipe-memory-{}", std::process::id()))
            .join(format!("{queue_dir}-{}", self.instance))
            .join(slot.to_string());
        let io =
            |e: std::io::Error| ScmError::Backend(format!("checkout into {}: {e}", dir.display()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::write(dir.join("STOVEPIPE_COMMIT"), &id).map_err(io)?;
        for (path, content) in &tree {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(file, content).map_err(io)?;
        }
        Ok(dir)
    }
}

/// Hands out the scripted repository of each queue.
#[derive(Debug, Clone, Default)]
pub struct ScriptedScmFactory {
    repos: Arc<Mutex<HashMap<QueueName, ScriptedRepo>>>,
}

impl ScriptedScmFactory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `repo` for its queue (replacing an earlier one).
    pub fn add(&self, repo: ScriptedRepo) {
        self.repos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(repo.queue().clone(), repo);
    }

    /// Builder form of [`add`](Self::add).
    #[must_use]
    pub fn with(self, repo: ScriptedRepo) -> Self {
        self.add(repo);
        self
    }

    pub fn repo(&self, queue: &QueueName) -> Option<ScriptedRepo> {
        self.repos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .cloned()
    }
}

#[async_trait]
impl SourceControlFactory for ScriptedScmFactory {
    /// The queue's repository, with the promotion ref of `config` (none:
    /// `promote` answers `NotConfigured`). `Invalid` for an unknown queue.
    async fn for_queue(&self, config: &QueueConfig) -> Result<Arc<dyn SourceControl>, ScmError> {
        let repo = self.repo(&config.name).ok_or_else(|| {
            ScmError::Invalid(InvalidValue {
                kind: "queue",
                value: config.name.to_string(),
                expected: "a queue with a scripted repository".to_owned(),
            })
        })?;
        repo.set_promotion_ref(config.promotion_ref.clone());
        Ok(Arc::new(repo))
    }
}
