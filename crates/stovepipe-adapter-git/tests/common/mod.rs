//! Test fixtures: repositories built with git2 in temp dirs, and the git
//! CLI for cross-checks.
#![allow(dead_code)]

pub mod bench;
pub mod fast_import;

use git2::{Oid, Repository, Signature, Time};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use stovepipe_entity::{QueueConfig, QueueName, Uri};
use tempfile::TempDir;

/// A bare repository whose commits get distinct, increasing times (one
/// minute apart), so newest-first orders are unambiguous.
pub struct TestRepo {
    pub dir: TempDir,
    pub repo: Repository,
    clock: Cell<i64>,
}

impl TestRepo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        Self {
            dir,
            repo,
            clock: Cell::new(1_700_000_000),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn path_string(&self) -> String {
        self.dir.path().to_str().unwrap().to_owned()
    }

    /// A commit with `parents` whose tree is the first parent's with
    /// `changes` applied (`None` deletes). Moves no ref.
    pub fn commit(&self, parents: &[Oid], changes: &[(&str, Option<&str>)], message: &str) -> Oid {
        self.commit_by("Alice", parents, changes, message)
    }

    pub fn commit_by(
        &self,
        author: &str,
        parents: &[Oid],
        changes: &[(&str, Option<&str>)],
        message: &str,
    ) -> Oid {
        let mut tree = parents
            .first()
            .map(|p| self.repo.find_commit(*p).unwrap().tree_id());
        for (path, content) in changes {
            let parts: Vec<&str> = path.split('/').collect();
            tree = put(&self.repo, tree, &parts, *content);
        }
        let tree = tree.unwrap_or_else(|| self.repo.treebuilder(None).unwrap().write().unwrap());
        let tree = self.repo.find_tree(tree).unwrap();
        let now = self.clock.get() + 60;
        self.clock.set(now);
        let sig = Signature::new(author, "dev@example.com", &Time::new(now, 0)).unwrap();
        let parents: Vec<_> = parents
            .iter()
            .map(|p| self.repo.find_commit(*p).unwrap())
            .collect();
        let parents: Vec<_> = parents.iter().collect();
        self.repo
            .commit(None, &sig, &sig, message, &tree, &parents)
            .unwrap()
    }

    /// Commits on top of `branch` (or as a root) and moves it.
    pub fn commit_on(&self, branch: &str, changes: &[(&str, Option<&str>)], message: &str) -> Oid {
        let parent = self.head(branch);
        let oid = self.commit(parent.as_slice(), changes, message);
        self.set_branch(branch, oid);
        oid
    }

    /// `n` commits on `branch`, each changing `file<i>.txt`.
    pub fn linear(&self, branch: &str, n: usize) -> Vec<Oid> {
        (0..n)
            .map(|i| {
                let path = format!("file{i}.txt");
                self.commit_on(
                    branch,
                    &[(&path, Some(&format!("content {i}\n")))],
                    &format!("commit {i}\n\nbody {i}"),
                )
            })
            .collect()
    }

    pub fn head(&self, branch: &str) -> Option<Oid> {
        self.repo
            .refname_to_id(&format!("refs/heads/{branch}"))
            .ok()
    }

    /// Force-moves `branch` (a push --force).
    pub fn set_branch(&self, branch: &str, oid: Oid) {
        self.repo
            .reference(&format!("refs/heads/{branch}"), oid, true, "test")
            .unwrap();
    }

    /// Runs the git CLI in the repository; asserts success; trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(self.path(), args)
    }
}

pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn git_output(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// Writes `content` at `path` (split in components) into `tree`.
fn put(repo: &Repository, tree: Option<Oid>, path: &[&str], content: Option<&str>) -> Option<Oid> {
    let existing = tree.map(|t| repo.find_tree(t).unwrap());
    let mut builder = repo.treebuilder(existing.as_ref()).unwrap();
    let (name, rest) = path.split_first().unwrap();
    if rest.is_empty() {
        match content {
            Some(c) => {
                let blob = repo.blob(c.as_bytes()).unwrap();
                builder.insert(name, blob, 0o100_644).unwrap();
            }
            None => {
                let _ = builder.remove(name);
            }
        }
    } else {
        let sub = builder
            .get(name)
            .unwrap()
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .map(|e| e.id());
        match put(repo, sub, rest, content) {
            Some(t) => {
                builder.insert(name, t, 0o040_000).unwrap();
            }
            None => {
                let _ = builder.remove(name);
            }
        }
    }
    if builder.is_empty() {
        None
    } else {
        Some(builder.write().unwrap())
    }
}

pub fn queue(name: &str, repo: &str, branch: &str, promotion: Option<&str>) -> QueueConfig {
    let mut c = QueueConfig::new(QueueName::new(name).unwrap(), repo, branch);
    c.promotion_ref = promotion.map(str::to_owned);
    c
}

/// The sha a URI ends with (tests may peek; production code may not).
pub fn sha(uri: &Uri) -> String {
    uri.as_str().rsplit('/').next().unwrap().to_owned()
}

pub fn data_dir() -> TempDir {
    tempfile::tempdir().unwrap()
}

pub fn paths_of(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_name() == ".git" {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    out.sort();
    out
}
