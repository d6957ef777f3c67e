//! [`GitSourceControl`]: one queue's view of a repository branch, the
//! `SourceControl` port over git2.
//!
//! Which commits a queue answers about:
//! - `latest`, `history`, `resolve`, `promote` and `promote_to` are about the
//!   branch: `resolve` answers `NotFound` for a commit that is not reachable
//!   from the branch head (a feature-branch commit, a commit dropped by a
//!   force push), and a promotion never moves to such a commit;
//! - `is_ancestor`, `change_info`, `changed_paths`, `history_between` and
//!   `checkout` take URIs this queue minted, which the pipeline stores and
//!   which outlive a force push: they answer for any commit still in the
//!   repository, so a rewrite makes `is_ancestor(old_green, new_head)` false
//!   (a full build) rather than an error.
//!
//! Threading: git2's `Repository` is `Send` but not `Sync`, so each queue
//! keeps one handle, with its ancestry index and suspended history walks,
//! behind a `std::sync::Mutex`, and every call runs on tokio's blocking pool.
//! A checkout locks it only to look the commit up; the tree is written with
//! the slot's own repository.
//!
//! Remote repositories (see `location`) are fetched before `latest`, before
//! `promote`, and when `resolve` does not know a revision yet.
//!
//! libgit2 process options ([`libgit2_options`], set once by the first
//! `open`), both for the one walk of every commit of a branch that builds
//! the ancestry index (the git CLI does neither):
//! - objects read are not hashed again to verify their id. That re-hash
//!   (SHA-1 with collision detection) was a third of the walk; a corrupt
//!   object still fails zlib's checksum;
//! - libgit2's object cache is off. It kept every commit of the walk (up
//!   to 256 MiB) and its bookkeeping was the other third; our own caches
//!   (the index, suspended history walks, the commits `resolve_info`
//!   answered about) hold what is read again. A warm history page re-reads
//!   its 50 commits (0.07 → 0.7 ms).

use crate::ancestry::FirstParentIndex;
use crate::checkout;
use crate::error::{ctx, git, invalid};
use crate::history::{Cursor, Walk, WalkCache};
use crate::location::Location;
use crate::uri::{Foreign, UriScheme};
use async_trait::async_trait;
use git2::{ErrorCode, Oid, Repository, Sort};
use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use stovepipe_entity::{QueueConfig, QueueName, Timestamp, Uri};
use stovepipe_ports::{ChangeInfo, HistoryPage, PromoteOutcome, ScmError, SourceControl};

/// Sets the process-wide libgit2 options this adapter relies on (see the
/// module), once.
fn libgit2_options() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        git2::opts::strict_hash_verification(false);
        git2::opts::enable_caching(false);
    });
}

/// Hex digits of a full (SHA-1) commit id.
const COMMIT_ID_HEX_LEN: usize = 40;

/// Settings of the adapter that a queue's configuration does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GitOptions {
    /// Push the promotion ref to the remote after moving it in the mirror
    /// (remote repositories only; a local repository's ref is written in
    /// place). Off by default: the mirror's ref is the promotion.
    pub push_promotions: bool,
}

/// The `SourceControl` of one queue. Cheap to clone (shared state).
#[derive(Clone)]
pub struct GitSourceControl {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GitSourceControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSourceControl")
            .field("queue", &self.inner.queue)
            .field("repo", &self.inner.repo_setting)
            .field("branch", &self.inner.branch)
            .field("promotion_ref", &self.inner.promotion_ref)
            .finish_non_exhaustive()
    }
}

struct Inner {
    queue: QueueName,
    /// The configured repository string, for messages and URIs.
    repo_setting: String,
    branch: String,
    /// `refs/heads/<branch>`.
    branch_ref: String,
    /// Where `branch_ref` is when git keeps it as a loose file.
    loose_branch_ref: PathBuf,
    /// Full name of the promotion ref, when configured.
    promotion_ref: Option<String>,
    location: Location,
    scheme: UriScheme,
    data_dir: PathBuf,
    options: GitOptions,
    state: Mutex<State>,
}

struct State {
    repo: Repository,
    ancestry: FirstParentIndex,
    walks: WalkCache,
    described: DescribedCommits,
}

/// What `resolve_info` answered about a commit, by commit id: a commit's
/// author, title and time never change, so an entry never goes stale.
/// Whether the commit is still on the branch is asked on every call; only
/// the object read is saved. With libgit2's object cache off, that read was
/// a loose object's `access`, `stat`, `open` and inflate on every greenness
/// read, twice on the pool's path (docs/benchmarks.md, eighteenth session).
///
/// Bounded to [`DescribedCommits::CAPACITY`] entries, dropped all at once
/// when full: what is asked about again (the head a deploy gate polls) is
/// back after one read, and the bound stays one number per queue.
#[derive(Default)]
struct DescribedCommits(HashMap<Oid, ChangeInfo>);

impl DescribedCommits {
    const CAPACITY: usize = 256;

    fn get(&self, oid: Oid) -> Option<ChangeInfo> {
        self.0.get(&oid).cloned()
    }

    fn keep(&mut self, oid: Oid, info: &ChangeInfo) {
        if self.0.len() >= Self::CAPACITY {
            self.0.clear();
        }
        self.0.insert(oid, info.clone());
    }
}

/// `refs/heads/<name>` unless `name` is already a full ref name.
fn full_ref(name: &str) -> String {
    if name.starts_with("refs/") {
        name.to_owned()
    } else {
        format!("refs/heads/{name}")
    }
}

impl GitSourceControl {
    /// Opens the queue's repository (cloning the mirror of a remote one under
    /// `data_dir` and fetching its branch). Blocking: call it from a blocking
    /// context (the factory does).
    ///
    /// `Invalid`, naming the value, for a missing repository, an unsupported
    /// URL, a bad or unknown branch, or a bad promotion ref.
    pub fn open(config: &QueueConfig, data_dir: &Path) -> Result<Self, ScmError> {
        Self::open_with(config, data_dir, GitOptions::default())
    }

    /// [`open`](Self::open) with adapter options.
    pub fn open_with(
        config: &QueueConfig,
        data_dir: &Path,
        options: GitOptions,
    ) -> Result<Self, ScmError> {
        libgit2_options();
        let branch = config.branch.clone();
        let branch_ref = format!("refs/heads/{branch}");
        if branch.is_empty() || !git2::Reference::is_valid_name(&branch_ref) {
            return Err(invalid("branch", &branch, "a valid git branch name"));
        }
        let promotion_ref = match &config.promotion_ref {
            None => None,
            Some(name) => {
                let full = full_ref(name);
                if name.is_empty() || !git2::Reference::is_valid_name(&full) {
                    return Err(invalid("promotion ref", name, "a valid git ref name"));
                }
                if full == branch_ref {
                    return Err(invalid(
                        "promotion ref",
                        name,
                        "a ref other than the queue's branch",
                    ));
                }
                Some(full)
            }
        };
        let scheme = UriScheme::new(&config.repo, &branch).map_err(ScmError::Invalid)?;
        let location = Location::classify(&config.repo, data_dir)?;
        let repo = location.open(&config.repo)?;
        match location.fetch(&repo, &branch) {
            Err(ScmError::NotFound(_)) => {
                return Err(invalid(
                    "branch",
                    &branch,
                    format!("a branch of repository {}", config.repo),
                ));
            }
            other => other?,
        }
        if let Err(e) = repo.refname_to_id(&branch_ref) {
            return Err(match e.code() {
                ErrorCode::NotFound => invalid(
                    "branch",
                    &branch,
                    format!("a branch of repository {}", config.repo),
                ),
                _ => git(format_args!("read {branch_ref}"), &e),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                queue: config.name.clone(),
                repo_setting: config.repo.clone(),
                branch,
                loose_branch_ref: repo.commondir().join(&branch_ref),
                branch_ref,
                promotion_ref,
                location,
                scheme,
                data_dir: data_dir.to_owned(),
                options,
                state: Mutex::new(State {
                    repo,
                    ancestry: FirstParentIndex::saved_in(
                        data_dir
                            .join("ancestry")
                            .join(format!("{}.fpi", config.name.as_str().replace('/', "%2F"))),
                    ),
                    walks: WalkCache::default(),
                    described: DescribedCommits::default(),
                }),
            }),
        })
    }

    /// The directory `checkout(_, slot)` fills.
    pub fn checkout_dir(&self, slot: u32) -> PathBuf {
        checkout::slot_dir(&self.inner.data_dir, &self.inner.queue, slot)
    }

    /// Runs `f` on the blocking pool with the queue's repository locked.
    async fn with_state<T, F>(&self, f: F) -> Result<T, ScmError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut State) -> Result<T, ScmError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut state = inner.lock();
            f(&inner, &mut state)
        })
        .await
        .map_err(|e| ScmError::Backend(format!("git task failed: {e}")))?
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the repository handle
        // half-written; the caches are rebuilt from the repository anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `resolve_oid` without the blocking pool, for the hot paths (a
    /// greenness read's `resolve_info`, an ingest of a named commit): when
    /// nobody holds the repository, `rev` is a full commit id or a URI of
    /// this queue, and the first-parent index is already at the branch head
    /// and holds the commit, the answer is a ref read and map lookups, as
    /// `resolve_oid` would find it, with the repository still held for what
    /// the caller reads next. A hand-off to the pool costs more than that
    /// (two thread wake-ups): it was a quarter of a greenness read's time.
    /// `None`: anything else, which may need a walk, an index update or a
    /// fetch, goes to the pool.
    ///
    /// The ref is read before the lock is taken ([`Self::loose_branch_head`]),
    /// so the lock is held for map lookups only: with the ref read inside
    /// it, concurrent reads found it taken and up to two fifths of them went
    /// to the pool (docs/benchmarks.md, eighteenth session).
    fn quick_resolve(&self, rev: &str) -> Option<(Oid, MutexGuard<'_, State>)> {
        let oid = if rev.starts_with("git://") {
            self.scheme.parse(rev).ok()?
        } else if rev.len() == COMMIT_ID_HEX_LEN {
            Oid::from_str(rev).ok()?
        } else {
            return None;
        };
        let loose_head = self.loose_branch_head();
        let state = self.state.try_lock().ok()?;
        let head = match loose_head {
            Some(head) => head,
            None => self.branch_head(&state.repo).ok()?,
        };
        if state.ancestry.head() != Some(head) || state.ancestry.position(oid).is_none() {
            return None;
        }
        Some((oid, state))
    }

    /// [`Self::change_info`] of a commit `resolve_info` found, kept (see
    /// [`DescribedCommits`]).
    fn described_info(&self, state: &mut State, oid: Oid) -> Result<ChangeInfo, ScmError> {
        if let Some(info) = state.described.get(oid) {
            return Ok(info);
        }
        let info = self.change_info(&state.repo, oid)?;
        state.described.keep(oid, &info);
        Ok(info)
    }

    /// The branch head as its loose ref file names it, read without the
    /// repository handle. git replaces a ref file whole (a lock file renamed
    /// over it), so a read sees the old head or the new one, and a loose
    /// ref wins over a packed one as in git. `None` when the file is not
    /// one full commit id and a newline (a packed or symbolic ref, a
    /// missing file): [`Self::branch_head`] reads it through git2.
    fn loose_branch_head(&self) -> Option<Oid> {
        let mut file = std::fs::File::open(&self.loose_branch_ref).ok()?;
        let mut text = [0u8; 2 * COMMIT_ID_HEX_LEN];
        let mut len = 0;
        loop {
            match file.read(&mut text[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(_) => return None,
            }
            if len == text.len() {
                return None;
            }
        }
        // `Oid::from_str` rejects what is not hex, but takes a shorter id
        // as a prefix.
        let id = text[..len].strip_suffix(b"\n")?;
        if id.len() != COMMIT_ID_HEX_LEN {
            return None;
        }
        Oid::from_str(std::str::from_utf8(id).ok()?).ok()
    }

    fn mint(&self, oid: Oid) -> Result<Uri, ScmError> {
        self.scheme.mint(oid).map_err(ScmError::Invalid)
    }

    fn branch_head(&self, repo: &Repository) -> Result<Oid, ScmError> {
        repo.refname_to_id(&self.branch_ref)
            .map_err(|e| match e.code() {
                ErrorCode::NotFound => ScmError::NotFound(format!(
                    "branch {} not found in repository {}",
                    self.branch, self.repo_setting
                )),
                _ => git(format_args!("read {}", self.branch_ref), &e),
            })
    }

    /// The commit of a URI of this queue that exists in the repository.
    fn commit_of(&self, repo: &Repository, uri: &Uri) -> Result<Oid, ScmError> {
        let oid = self.scheme.parse(uri.as_str()).map_err(|why| match why {
            Foreign::Malformed => ScmError::NotFound(format!(
                "{uri} is not a git URI of queue {} (git://<repo>/<branch>/<sha>)",
                self.queue
            )),
            Foreign::Other { repo: r, branch } => ScmError::NotFound(format!(
                "{uri} belongs to repository {r} branch {branch}, not to queue {} \
                 (repository {} branch {})",
                self.queue, self.repo_setting, self.branch
            )),
        })?;
        repo.find_commit(oid)
            .map_err(ctx(format_args!("commit {oid} of {uri}")))?;
        Ok(oid)
    }

    /// Whether `oid` is reachable from the branch head.
    fn on_branch(&self, state: &mut State, oid: Oid) -> Result<bool, ScmError> {
        let head = self.branch_head(&state.repo)?;
        state
            .ancestry
            .update(&state.repo, head)
            .map_err(ctx(format_args!("index first parents of {head}")))?;
        if state.ancestry.position(oid).is_some() {
            return Ok(true);
        }
        Ok(oid == head
            || state
                .repo
                .graph_descendant_of(head, oid)
                .map_err(ctx(format_args!("is {oid} on {}", self.branch)))?)
    }

    fn is_ancestor(
        &self,
        state: &mut State,
        ancestor: Oid,
        descendant: Oid,
    ) -> Result<bool, ScmError> {
        if ancestor == descendant {
            return Ok(true);
        }
        // The index follows the branch head; without a head (branch deleted)
        // every question goes to git2.
        if let Ok(head) = self.branch_head(&state.repo) {
            state
                .ancestry
                .update(&state.repo, head)
                .map_err(ctx(format_args!("index first parents of {head}")))?;
            if let Some(answer) = state.ancestry.is_ancestor(ancestor, descendant) {
                return Ok(answer);
            }
        }
        state
            .repo
            .graph_descendant_of(descendant, ancestor)
            .map_err(ctx(format_args!(
                "is {ancestor} an ancestor of {descendant}"
            )))
    }

    fn change_info(&self, repo: &Repository, oid: Oid) -> Result<ChangeInfo, ScmError> {
        let commit = repo
            .find_commit(oid)
            .map_err(ctx(format_args!("commit {oid}")))?;
        let author = String::from_utf8_lossy(commit.author().name_bytes()).into_owned();
        let message = String::from_utf8_lossy(commit.message_bytes());
        let title = message
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        // Commit times are seconds; a commit dated at or before the epoch
        // still gets a positive time, as the port promises.
        let millis = commit.time().seconds().saturating_mul(1000).max(1);
        Ok(ChangeInfo {
            uri: self.mint(oid)?,
            commit: oid.to_string(),
            author,
            title,
            created_at: Timestamp::from_millis(millis),
        })
    }

    /// Resolves a revision (sha, abbreviated sha, ref name) or a URI of this
    /// queue to a commit of the repository, without the branch check.
    fn lookup(&self, repo: &Repository, rev: &str) -> Result<Oid, ScmError> {
        if rev.starts_with("git://") {
            let uri = Uri::new(rev).map_err(|_| {
                ScmError::NotFound(format!("{rev:?} is not a URI of queue {}", self.queue))
            })?;
            return self.commit_of(repo, &uri);
        }
        // Only single revisions: no ranges, no whitespace, no option-like
        // input that revparse would read as something else.
        if rev.is_empty()
            || rev.starts_with('-')
            || rev.contains("..")
            || rev.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ScmError::NotFound(format!(
                "revision {rev:?}: not a commit id, ref name or URI of queue {}",
                self.queue
            )));
        }
        let object = repo.revparse_single(rev).map_err(|e| match e.code() {
            ErrorCode::Ambiguous => git(rev, &e),
            _ => ScmError::NotFound(format!(
                "revision {rev:?} not found in repository {}: {}",
                self.repo_setting,
                e.message()
            )),
        })?;
        let commit = object
            .peel_to_commit()
            .map_err(|_| ScmError::NotFound(format!("revision {rev:?} does not name a commit")))?;
        Ok(commit.id())
    }

    fn resolve(&self, state: &mut State, rev: &str) -> Result<Uri, ScmError> {
        let oid = self.resolve_oid(state, rev)?;
        self.mint(oid)
    }

    /// The commit `rev` names on the branch (see [`Self::resolve`]).
    fn resolve_oid(&self, state: &mut State, rev: &str) -> Result<Oid, ScmError> {
        let oid = match self.lookup(&state.repo, rev) {
            Err(ScmError::NotFound(_)) if matches!(self.location, Location::Mirror { .. }) => {
                // A webhook may name a commit pushed after our last fetch.
                self.location.fetch(&state.repo, &self.branch)?;
                self.lookup(&state.repo, rev)?
            }
            other => other?,
        };
        if !self.on_branch(state, oid)? {
            return Err(ScmError::NotFound(format!(
                "revision {rev:?} ({oid}) is not on branch {} of {}",
                self.branch, self.repo_setting
            )));
        }
        Ok(oid)
    }

    fn history(
        &self,
        state: &mut State,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, ScmError> {
        if limit == 0 {
            return Err(invalid("history limit", "0", "a limit of at least 1"));
        }
        let (head, mut walk) = if let Some(text) = cursor {
            let cursor = Cursor::parse(text)?;
            (cursor.head, state.walks.resume(&state.repo, cursor)?)
        } else {
            let head = self.branch_head(&state.repo)?;
            (head, Walk::new(&state.repo, head)?)
        };
        let mut items = Vec::with_capacity(limit.min(1024));
        while items.len() < limit {
            match walk.next(&state.repo)? {
                Some(oid) => items.push(self.change_info(&state.repo, oid)?),
                None => break,
            }
        }
        let next_cursor = if walk.is_done() {
            None
        } else {
            let next = Cursor {
                head,
                offset: WalkCache::emitted(&walk),
            };
            state.walks.suspend(next, walk);
            Some(next.render())
        };
        Ok(HistoryPage { items, next_cursor })
    }

    fn history_between(
        &self,
        repo: &Repository,
        base: Option<&Uri>,
        head: &Uri,
    ) -> Result<Vec<Uri>, ScmError> {
        let head = self.commit_of(repo, head)?;
        let base = base.map(|b| self.commit_of(repo, b)).transpose()?;
        let mut walk = repo.revwalk().map_err(ctx("revwalk"))?;
        walk.set_sorting(Sort::TIME).map_err(ctx("revwalk"))?;
        walk.push(head)
            .map_err(ctx(format_args!("walk from {head}")))?;
        if let Some(base) = base {
            walk.hide(base).map_err(ctx(format_args!("hide {base}")))?;
        }
        walk.map(|oid| {
            oid.map_err(ctx(format_args!("walk {head}")))
                .and_then(|oid| self.mint(oid))
        })
        .collect()
    }

    fn changed_paths(
        &self,
        repo: &Repository,
        base: Option<&Uri>,
        head: &Uri,
    ) -> Result<Vec<String>, ScmError> {
        let head = self.commit_of(repo, head)?;
        let base = base.map(|b| self.commit_of(repo, b)).transpose()?;
        let tree_of = |oid: Oid| {
            repo.find_commit(oid)
                .and_then(|c| c.tree())
                .map_err(ctx(format_args!("tree of {oid}")))
        };
        let head_tree = tree_of(head)?;
        let mut paths = BTreeSet::new();
        match base {
            Some(base) => {
                let base_tree = tree_of(base)?;
                let diff = repo
                    .diff_tree_to_tree(Some(&base_tree), Some(&head_tree), None)
                    .map_err(ctx(format_args!("diff {base}..{head}")))?;
                for delta in diff.deltas() {
                    // A deletion names the old path, an addition the new one;
                    // both, for a type change or a rename.
                    for file in [delta.old_file(), delta.new_file()] {
                        if let Some(path) = file.path() {
                            paths.insert(path.to_string_lossy().into_owned());
                        }
                    }
                }
            }
            None => {
                head_tree
                    .walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                        if entry.kind() != Some(git2::ObjectType::Tree) {
                            let name = String::from_utf8_lossy(entry.name_bytes());
                            paths.insert(format!("{dir}{name}"));
                        }
                        git2::TreeWalkResult::Ok
                    })
                    .map_err(ctx(format_args!("list tree of {head}")))?;
            }
        }
        Ok(paths.into_iter().collect())
    }

    /// Moves `reference` (full name) to the commit of `uri`, which must be on
    /// the branch.
    fn promote_to(
        &self,
        state: &mut State,
        reference: &str,
        uri: &Uri,
    ) -> Result<PromoteOutcome, ScmError> {
        // A remote branch may have been rewritten since the last fetch:
        // decide "on the branch" against the freshest head.
        self.location.fetch(&state.repo, &self.branch)?;
        let oid = self.commit_of(&state.repo, uri)?;
        if !self.on_branch(state, oid)? {
            return Err(ScmError::NotFound(format!(
                "{uri} is no longer on branch {} of {}",
                self.branch, self.repo_setting
            )));
        }
        let repo = &state.repo;
        let current = match repo.find_reference(reference) {
            Ok(r) => Some(r.target().ok_or_else(|| {
                invalid(
                    "reference",
                    reference,
                    "a direct ref (this one is symbolic)",
                )
            })?),
            Err(e) if e.code() == ErrorCode::NotFound => None,
            Err(e) => return Err(git(format_args!("read {reference}"), &e)),
        };
        let message = format!("stovepipe: promote {oid} of queue {}", self.queue);
        let outcome = match current {
            Some(at) if at == oid => PromoteOutcome::AlreadyThere,
            // Conditional writes: a concurrent mover makes ours fail
            // (`Modified`/`Exists`, classified retryable) instead of being
            // silently overwritten.
            Some(at) => {
                repo.reference_matching(reference, oid, true, at, &message)
                    .map_err(ctx(format_args!("move {reference} from {at} to {oid}")))?;
                PromoteOutcome::Moved
            }
            None => {
                repo.reference(reference, oid, false, &message)
                    .map_err(ctx(format_args!("create {reference} at {oid}")))?;
                PromoteOutcome::Moved
            }
        };
        // Pushed even when already there locally, so a retry after a failed
        // push heals the remote.
        if self.options.push_promotions {
            self.location.push(repo, reference)?;
        }
        tracing::info!(queue = %self.queue, reference, commit = %oid, ?outcome, "promotion");
        Ok(outcome)
    }
}

#[async_trait]
impl SourceControl for GitSourceControl {
    /// A local repository's loose branch ref is read on the caller's task
    /// (see [`Inner::loose_branch_head`]): nothing to fetch, no lock, no
    /// hand-off to the pool, which was about two fifths of an ingest's dedup
    /// hit (×1.7 without it, docs/benchmarks.md, eighteenth session).
    /// Anything else (a mirror to fetch, a packed ref) goes to the pool.
    async fn latest(&self) -> Result<Uri, ScmError> {
        if matches!(self.inner.location, Location::Local { .. })
            && let Some(head) = self.inner.loose_branch_head()
        {
            return self.inner.mint(head);
        }
        self.with_state(|inner, state| {
            inner.location.fetch(&state.repo, &inner.branch)?;
            let head = inner.branch_head(&state.repo)?;
            inner.mint(head)
        })
        .await
    }

    /// On the caller's task when that is quick (see [`Inner::quick_resolve`]),
    /// else one trip to the blocking pool.
    async fn resolve(&self, rev: &str) -> Result<Uri, ScmError> {
        // The repository is not needed to mint: let it go at once.
        if let Some(oid) = self.inner.quick_resolve(rev).map(|(oid, _)| oid) {
            return self.inner.mint(oid);
        }
        let rev = rev.to_owned();
        self.with_state(move |inner, state| inner.resolve(state, &rev))
            .await
    }

    async fn is_ancestor(&self, ancestor: &Uri, descendant: &Uri) -> Result<bool, ScmError> {
        let (ancestor, descendant) = (ancestor.clone(), descendant.clone());
        self.with_state(move |inner, state| {
            let a = inner.commit_of(&state.repo, &ancestor)?;
            let d = inner.commit_of(&state.repo, &descendant)?;
            inner.is_ancestor(state, a, d)
        })
        .await
    }

    async fn history(&self, cursor: Option<String>, limit: usize) -> Result<HistoryPage, ScmError> {
        self.with_state(move |inner, state| inner.history(state, cursor.as_deref(), limit))
            .await
    }

    async fn history_between(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<Uri>, ScmError> {
        let head = head.clone();
        self.with_state(move |inner, state| {
            inner.history_between(&state.repo, base.as_ref(), &head)
        })
        .await
    }

    async fn change_info(&self, uri: &Uri) -> Result<ChangeInfo, ScmError> {
        let uri = uri.clone();
        self.with_state(move |inner, state| {
            let oid = inner.commit_of(&state.repo, &uri)?;
            inner.change_info(&state.repo, oid)
        })
        .await
    }

    /// On the caller's task when that is quick (see
    /// [`Inner::quick_resolve`]; the commit's description kept or read
    /// there, one object), else one trip to the blocking pool.
    async fn resolve_info(&self, rev: &str) -> Result<ChangeInfo, ScmError> {
        if let Some((oid, mut state)) = self.inner.quick_resolve(rev) {
            return self.inner.described_info(&mut state, oid);
        }
        let rev = rev.to_owned();
        self.with_state(move |inner, state| {
            let oid = inner.resolve_oid(state, &rev)?;
            inner.described_info(state, oid)
        })
        .await
    }

    async fn changed_paths(&self, base: Option<Uri>, head: &Uri) -> Result<Vec<String>, ScmError> {
        let head = head.clone();
        self.with_state(move |inner, state| inner.changed_paths(&state.repo, base.as_ref(), &head))
            .await
    }

    async fn promote(&self, uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        let Some(reference) = self.inner.promotion_ref.clone() else {
            return Ok(PromoteOutcome::NotConfigured);
        };
        let uri = uri.clone();
        self.with_state(move |inner, state| inner.promote_to(state, &reference, &uri))
            .await
    }

    async fn promote_to(&self, reference: &str, uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        let full = full_ref(reference);
        if reference.is_empty() || !git2::Reference::is_valid_name(&full) {
            return Err(invalid("reference", reference, "a valid git ref name"));
        }
        if full == self.inner.branch_ref {
            return Err(invalid(
                "reference",
                reference,
                "a ref other than the queue's own branch",
            ));
        }
        let uri = uri.clone();
        self.with_state(move |inner, state| inner.promote_to(state, &full, &uri))
            .await
    }

    async fn checkout(&self, uri: &Uri, slot: u32) -> Result<PathBuf, ScmError> {
        let uri = uri.clone();
        let dir = self.checkout_dir(slot);
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let (oid, objects) = {
                let state = inner.lock();
                let oid = inner.commit_of(&state.repo, &uri)?;
                (oid, state.repo.commondir().join("objects"))
            };
            let objects = objects.canonicalize().map_err(|e| {
                ScmError::Backend(format!("objects of {}: {e}", inner.repo_setting))
            })?;
            checkout::checkout(&objects, &dir, oid)?;
            Ok(dir)
        })
        .await
        .map_err(|e| ScmError::Backend(format!("git task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(n: usize) -> (Oid, ChangeInfo) {
        let oid = Oid::from_str(&format!("{n:040x}")).unwrap();
        let info = ChangeInfo {
            uri: Uri::new(format!("git://r/main/{oid}")).unwrap(),
            commit: oid.to_string(),
            author: "A".into(),
            title: format!("commit {n}"),
            created_at: Timestamp::from_millis(1),
        };
        (oid, info)
    }

    #[test]
    fn described_commits_stay_within_their_capacity_and_keep_the_newest() {
        let mut described = DescribedCommits::default();
        for n in 0..=DescribedCommits::CAPACITY * 2 {
            let (oid, info) = info(n);
            described.keep(oid, &info);
            assert!(described.0.len() <= DescribedCommits::CAPACITY, "after {n}");
            assert_eq!(described.get(oid), Some(info), "just kept {n}");
        }
        let (first, _) = info(0);
        assert_eq!(described.get(first), None, "the first was crowded out");
    }
}
