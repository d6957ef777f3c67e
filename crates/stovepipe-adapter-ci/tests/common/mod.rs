//! Test doubles shared by the runner tests: a tiny `SourceControl` that
//! knows two commits and checks out into a temp dir, and polling helpers.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(clippy::unwrap_used)] // test helpers: a panic is the right failure

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stovepipe_entity::{
    BuildId, BuildReport, ProjectName, QueueConfig, QueueName, RequestId, RunnerKind, Timestamp,
    Uri,
};
use stovepipe_ports::{
    BuildRunner, ChangeInfo, HistoryPage, PromoteOutcome, ScmError, SourceControl,
    SourceControlFactory, TriggerRequest,
};

pub const HEAD_URI: &str = "fake://repo/head";
pub const BASE_URI: &str = "fake://repo/base";
pub const HEAD_SHA: &str = "1111111111111111111111111111111111111111";
pub const BASE_SHA: &str = "2222222222222222222222222222222222222222";

/// Knows `HEAD_URI` and `BASE_URI`; `checkout` hands out
/// `<root>/<slot>` with a `marker.txt` in it.
pub struct FakeScm {
    pub root: PathBuf,
    pub checkouts: Mutex<Vec<u32>>,
}

impl FakeScm {
    pub fn new(root: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            root: root.into(),
            checkouts: Mutex::new(Vec::new()),
        })
    }
}

fn unused<T>() -> Result<T, ScmError> {
    Err(ScmError::Backend("not used by runners".into()))
}

#[async_trait]
impl SourceControl for FakeScm {
    async fn latest(&self) -> Result<Uri, ScmError> {
        unused()
    }
    async fn resolve(&self, _rev: &str) -> Result<Uri, ScmError> {
        unused()
    }
    async fn is_ancestor(&self, _a: &Uri, _d: &Uri) -> Result<bool, ScmError> {
        unused()
    }
    async fn history(&self, _c: Option<String>, _l: usize) -> Result<HistoryPage, ScmError> {
        unused()
    }
    async fn history_between(&self, _b: Option<Uri>, _h: &Uri) -> Result<Vec<Uri>, ScmError> {
        unused()
    }
    async fn change_info(&self, uri: &Uri) -> Result<ChangeInfo, ScmError> {
        let commit = match uri.as_str() {
            HEAD_URI => HEAD_SHA,
            BASE_URI => BASE_SHA,
            other => return Err(ScmError::NotFound(other.to_owned())),
        };
        Ok(ChangeInfo {
            uri: uri.clone(),
            commit: commit.to_owned(),
            author: "a".into(),
            title: "t".into(),
            created_at: Timestamp(1),
        })
    }
    async fn changed_paths(&self, _b: Option<Uri>, _h: &Uri) -> Result<Vec<String>, ScmError> {
        unused()
    }
    async fn promote(&self, _uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        unused()
    }
    async fn promote_to(&self, _r: &str, _uri: &Uri) -> Result<PromoteOutcome, ScmError> {
        unused()
    }
    async fn checkout(&self, uri: &Uri, slot: u32) -> Result<PathBuf, ScmError> {
        if uri.as_str() != HEAD_URI && uri.as_str() != BASE_URI {
            return Err(ScmError::NotFound(uri.to_string()));
        }
        let dir = self.root.join(slot.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| ScmError::Backend(e.to_string()))?;
        std::fs::write(dir.join("marker.txt"), format!("checkout of {uri}"))
            .map_err(|e| ScmError::Backend(e.to_string()))?;
        self.checkouts.lock().unwrap().push(slot);
        Ok(dir)
    }
}

/// Hands out one `FakeScm` per queue, each checking out under its own dir.
pub struct FakeScmFactory {
    pub root: PathBuf,
}

#[async_trait]
impl SourceControlFactory for FakeScmFactory {
    async fn for_queue(&self, config: &QueueConfig) -> Result<Arc<dyn SourceControl>, ScmError> {
        Ok(FakeScm::new(
            self.root.join(config.name.as_str().replace('/', "_")),
        ))
    }
}

pub fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

pub fn config(name: &str, runner: RunnerKind) -> QueueConfig {
    let mut c = QueueConfig::new(queue(name), "/srv/repo", "main");
    c.build.runner = runner;
    c
}

pub fn command_config(name: &str, command: &str, timeout: Duration) -> QueueConfig {
    let mut c = config(name, RunnerKind::Command);
    c.build.command = Some(command.to_owned());
    c.build.timeout = timeout;
    c
}

pub fn request(queue_name: &str, base: bool) -> TriggerRequest {
    let q = queue(queue_name);
    TriggerRequest {
        queue: q.clone(),
        request_id: RequestId::new(&q, 7).unwrap(),
        project: ProjectName::whole_repo(),
        base: base.then(|| Uri::new(BASE_URI).unwrap()),
        head: Uri::new(HEAD_URI).unwrap(),
        metadata: BTreeMap::new(),
    }
}

/// Polls `status` until the build is terminal (30 s deadline).
pub async fn wait_terminal(runner: &dyn BuildRunner, id: &BuildId) -> BuildReport {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = runner.status(id).await.unwrap();
        if report
            .status
            .is_some_and(stovepipe_entity::BuildStatus::is_terminal)
        {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "build {id} still {:?} after 30 s",
            report.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it is true (10 s deadline).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
