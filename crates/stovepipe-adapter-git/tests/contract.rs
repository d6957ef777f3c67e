//! Runs the `source_control` contract suite against the git adapter, on
//! real repositories built with git2 in temp dirs (one per case); where the
//! promotion ref and other refs point is read back with the git CLI.

// Fixture set-up panics on a broken setup, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Oid, Repository, Signature, Time};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use stovepipe_adapter_git::{GitScmFactory, GitSourceControl};
use stovepipe_contract::{ScmFixture, fixtures};
use stovepipe_entity::QueueConfig;
use stovepipe_ports::{SourceControl, SourceControlFactory};
use tempfile::TempDir;

const BRANCH: &str = "main";
const PROMOTION_REF: &str = "refs/heads/verified";

/// How the adapter under test is built.
#[derive(Clone, Copy)]
enum Open {
    Factory,
    Direct,
}

struct Scripted {
    repo: Repository,
    names: HashMap<String, Oid>,
    /// Seconds since the epoch of the last commit.
    clock: i64,
}

/// A bare repository scripted commit by commit, and the adapter reading it.
struct GitRepo {
    dir: TempDir,
    data: TempDir,
    open: Open,
    factory: GitScmFactory,
    state: Mutex<Scripted>,
}

impl GitRepo {
    fn new(open: Open) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let factory = GitScmFactory::new(data.path().to_owned());
        Self {
            dir,
            data,
            open,
            factory,
            state: Mutex::new(Scripted {
                repo,
                names: HashMap::new(),
                clock: 1_700_000_000,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Scripted> {
        self.state.lock().unwrap()
    }

    fn config(&self) -> QueueConfig {
        let mut config = QueueConfig::new(
            fixtures::queue_a(),
            self.dir.path().to_str().unwrap(),
            BRANCH,
        );
        config.promotion_ref = Some(PROMOTION_REF.to_owned());
        config
    }

    /// The name of the commit `reference` points at, per `git rev-parse`.
    fn target_of(&self, reference: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{reference}^{{commit}}"))
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        let sha = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let state = self.lock();
        let name = state
            .names
            .iter()
            .find(|(_, oid)| oid.to_string() == sha)
            .map(|(name, _)| name.clone());
        Some(name.unwrap_or_else(|| panic!("{reference} points at unscripted commit {sha}")))
    }
}

#[async_trait]
impl ScmFixture for GitRepo {
    async fn commit(&self, name: &str, parents: &[&str], files: &[(&str, &str)]) {
        let mut guard = self.lock();
        let st = &mut *guard;
        assert!(!st.names.contains_key(name), "commit {name} scripted twice");
        let parents: Vec<git2::Commit<'_>> = parents
            .iter()
            .map(|p| {
                let oid = st
                    .names
                    .get(*p)
                    .unwrap_or_else(|| panic!("unknown parent {p}"));
                st.repo.find_commit(*oid).unwrap()
            })
            .collect();
        let base = if let Some(p) = parents.first() {
            p.tree().unwrap()
        } else {
            let empty = st.repo.treebuilder(None).unwrap().write().unwrap();
            st.repo.find_tree(empty).unwrap()
        };
        let mut update = TreeUpdateBuilder::new();
        for (path, content) in files {
            let blob = st.repo.blob(content.as_bytes()).unwrap();
            update.upsert(*path, blob, FileMode::Blob);
        }
        let tree = update.create_updated(&st.repo, &base).unwrap();
        let tree = st.repo.find_tree(tree).unwrap();
        st.clock += 60;
        let sig = Signature::new(
            "Contract Author",
            "contract@example.com",
            &Time::new(st.clock, 0),
        )
        .unwrap();
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let oid = st
            .repo
            .commit(
                None,
                &sig,
                &sig,
                &format!("commit {name}\n\nScripted by the contract suite."),
                &tree,
                &parent_refs,
            )
            .unwrap();
        drop(parent_refs);
        drop(parents);
        st.names.insert(name.to_owned(), oid);
    }

    async fn set_head(&self, name: &str) {
        let st = self.lock();
        let oid = *st
            .names
            .get(name)
            .unwrap_or_else(|| panic!("unknown {name}"));
        st.repo
            .reference(&format!("refs/heads/{BRANCH}"), oid, true, "contract: push")
            .unwrap();
    }

    fn id(&self, name: &str) -> String {
        self.lock()
            .names
            .get(name)
            .unwrap_or_else(|| panic!("unknown {name}"))
            .to_string()
    }

    async fn source_control(&self) -> Arc<dyn SourceControl> {
        match self.open {
            Open::Factory => self.factory.for_queue(&self.config()).await.unwrap(),
            Open::Direct => {
                let config = self.config();
                let data = self.data.path().join("direct");
                let scm =
                    tokio::task::spawn_blocking(move || GitSourceControl::open(&config, &data))
                        .await
                        .unwrap()
                        .unwrap();
                Arc::new(scm)
            }
        }
    }

    async fn promotion_target(&self) -> Option<String> {
        self.target_of(PROMOTION_REF)
    }

    async fn ref_target(&self, reference: &str) -> Option<String> {
        self.target_of(reference)
    }
}

async fn through_factory() -> Arc<dyn ScmFixture> {
    Arc::new(GitRepo::new(Open::Factory))
}

async fn opened_directly() -> Arc<dyn ScmFixture> {
    Arc::new(GitRepo::new(Open::Direct))
}

mod factory {
    use super::through_factory;
    stovepipe_contract::contract_tests!(source_control, through_factory);
}

mod direct {
    use super::opened_directly;
    stovepipe_contract::contract_tests!(source_control, opened_directly);
}
