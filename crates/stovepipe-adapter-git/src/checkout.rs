//! Clean working trees for runners that build locally.
//!
//! One directory per queue and slot, `<data_dir>/checkouts/<queue>/<slot>`
//! (the queue name with `/` written `%2F`, which queue names cannot contain
//! otherwise). Each is a small git repository whose object store borrows the
//! queue's repository through `objects/info/alternates`, so a checkout copies
//! no objects and a reused directory is brought to the next commit by a
//! forced checkout that also deletes untracked and ignored files: unchanged
//! files are not rewritten, nothing is recloned.
//!
//! Concurrency: different queues and slots use different directories. The
//! same directory is guarded by an exclusive lock on `<slot>.lock` (an OS
//! file lock, so it also holds across processes); a checkout that finds the
//! lock held answers `Unavailable` rather than waiting, since the caller's
//! slot discipline says this should not happen and a retry is cheap. The lock
//! covers the checkout only: exclusive use of the tree during a build is the
//! slot's job.

use crate::error::ctx;
use git2::build::CheckoutBuilder;
use git2::{Oid, Repository};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use stovepipe_entity::QueueName;
use stovepipe_ports::ScmError;

/// `<data_dir>/checkouts/<queue-sanitised>/<slot>`.
pub(crate) fn slot_dir(data_dir: &Path, queue: &QueueName, slot: u32) -> PathBuf {
    data_dir
        .join("checkouts")
        .join(queue.as_str().replace('/', "%2F"))
        .join(slot.to_string())
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ScmError {
    let what = format!("{what} {}", path.display());
    move |e| ScmError::Backend(format!("{what}: {e}"))
}

/// Makes `dir` a clean tree of commit `oid`, whose objects live in
/// `objects` (the source repository's object directory).
pub(crate) fn checkout(objects: &Path, dir: &Path, oid: Oid) -> Result<(), ScmError> {
    let parent = dir.parent().ok_or_else(|| {
        ScmError::Backend(format!("checkout dir {} has no parent", dir.display()))
    })?;
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let lock_path = dir.with_extension("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open lock", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(ScmError::Unavailable(format!(
                "checkout {} is locked by another checkout",
                dir.display()
            )));
        }
        Err(TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
    }
    let result = checkout_locked(objects, dir, oid);
    // Dropping the file releases the lock; say so explicitly for readers.
    drop(lock);
    result
}

fn checkout_locked(objects: &Path, dir: &Path, oid: Oid) -> Result<(), ScmError> {
    let repo = open_or_init(objects, dir)?;
    let commit = repo
        .find_commit(oid)
        .map_err(ctx(format_args!("checkout commit {oid}")))?;
    let mut how = CheckoutBuilder::new();
    how.force().remove_untracked(true).remove_ignored(true);
    repo.checkout_tree(commit.as_object(), Some(&mut how))
        .map_err(ctx(format_args!("checkout {oid} into {}", dir.display())))?;
    repo.set_head_detached(oid)
        .map_err(ctx(format_args!("detach HEAD at {oid}")))?;
    Ok(())
}

/// The slot's repository, created (or recreated, when something else
/// occupies the directory) with its alternates pointing at `objects`.
fn open_or_init(objects: &Path, dir: &Path) -> Result<Repository, ScmError> {
    let alternates = dir
        .join(".git")
        .join("objects")
        .join("info")
        .join("alternates");
    let wanted = format!("{}\n", objects.display());
    if let Ok(repo) = Repository::open(dir) {
        let current = std::fs::read_to_string(&alternates).unwrap_or_default();
        if current == wanted && same_dir(repo.workdir(), dir) {
            return Ok(repo);
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove stale checkout", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    Repository::init(dir).map_err(ctx(format_args!("init checkout {}", dir.display())))?;
    std::fs::write(&alternates, wanted).map_err(io("write", &alternates))?;
    // Reopen so the object database reads the alternates just written.
    Repository::open(dir).map_err(ctx(format_args!("open checkout {}", dir.display())))
}

/// Whether a repository's workdir is `dir` (git2 reports it with a trailing
/// slash and possibly canonicalised).
fn same_dir(workdir: Option<&Path>, dir: &Path) -> bool {
    let Some(workdir) = workdir else {
        return false;
    };
    match (workdir.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
