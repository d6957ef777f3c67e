//! A scripted build runner.
//!
//! Owns: minting build ids (`<prefix><n>`, default prefix `build-`), the
//! record of every trigger and cancel, and the outcome a test dictates per
//! head URI (a final status after some polls, or never finishing).
//! Does not own: running anything (see `stovepipe-adapter-ci`).

use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use stovepipe_entity::{
    BuildId, BuildReport, BuildStatus, QueueConfig, QueueName, TargetResult, Uri,
};
use stovepipe_ports::{BuildRunner, BuildRunnerFactory, RunnerError, TriggerRequest};

/// What a build of some head does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Finish(BuildStatus),
    NeverFinishes,
}

#[derive(Debug)]
struct Triggered {
    request: TriggerRequest,
    polls: u32,
    cancelled: bool,
    /// Write-once, like a real CI's final state.
    finished: Option<BuildStatus>,
}

#[derive(Debug)]
struct RunnerState {
    prefix: String,
    next: u64,
    builds: HashMap<BuildId, Triggered>,
    triggers: Vec<TriggerRequest>,
    cancels: Vec<BuildId>,
    default_outcome: Outcome,
    outcomes: HashMap<Uri, Outcome>,
    targets: HashMap<Uri, Vec<TargetResult>>,
    polls_before_finish: u32,
    reports_via_api: bool,
    trigger_errors: VecDeque<RunnerError>,
    status_errors: VecDeque<RunnerError>,
}

/// A cloneable handle on one scripted runner; clones share it.
///
/// Outcomes are decided when a build is polled, so a test may script them
/// after the trigger: a per-head override ([`set_outcome`](Self::set_outcome),
/// [`set_never_finishes`](Self::set_never_finishes)) or the default
/// (`Succeeded` unless changed). `status` answers `Running` for the first
/// [`polls_before_finish`](Self::set_polls_before_finish) polls (default 0:
/// the first poll is terminal), then the final status, forever. A cancelled
/// build reports `Cancelled`. A runner that `reports_via_api` answers every
/// poll with `status: None`.
///
/// Ids are unique per runner; give runners that serve different queues of
/// one installation distinct prefixes ([`with_prefix`](Self::with_prefix)),
/// or share one runner (the factory's default).
#[derive(Debug, Clone)]
pub struct ScriptedBuildRunner {
    state: Arc<Mutex<RunnerState>>,
}

impl Default for ScriptedBuildRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedBuildRunner {
    pub fn new() -> Self {
        Self::with_prefix("build-")
    }

    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            state: Arc::new(Mutex::new(RunnerState {
                prefix: prefix.to_owned(),
                next: 0,
                builds: HashMap::new(),
                triggers: Vec::new(),
                cancels: Vec::new(),
                default_outcome: Outcome::Finish(BuildStatus::Succeeded),
                outcomes: HashMap::new(),
                targets: HashMap::new(),
                polls_before_finish: 0,
                reports_via_api: false,
                trigger_errors: VecDeque::new(),
                status_errors: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RunnerState> {
        // No method panics while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The final status of builds without a per-head override.
    pub fn set_default_outcome(&self, status: BuildStatus) {
        self.lock().default_outcome = Outcome::Finish(status);
    }

    /// Builds without a per-head override stay `Running` forever.
    pub fn set_default_never_finishes(&self) {
        self.lock().default_outcome = Outcome::NeverFinishes;
    }

    /// The final status of builds whose head is `head`.
    pub fn set_outcome(&self, head: &Uri, status: BuildStatus) {
        self.lock()
            .outcomes
            .insert(head.clone(), Outcome::Finish(status));
    }

    /// Builds whose head is `head` stay `Running` forever.
    pub fn set_never_finishes(&self, head: &Uri) {
        self.lock()
            .outcomes
            .insert(head.clone(), Outcome::NeverFinishes);
    }

    /// Target results reported with the final status of builds of `head`.
    pub fn set_targets(&self, head: &Uri, targets: Vec<TargetResult>) {
        self.lock().targets.insert(head.clone(), targets);
    }

    /// How many `status` polls answer `Running` before the final status.
    pub fn set_polls_before_finish(&self, polls: u32) {
        self.lock().polls_before_finish = polls;
    }

    /// Emulates a runner that is told statuses through the API.
    pub fn set_reports_via_api(&self, yes: bool) {
        self.lock().reports_via_api = yes;
    }

    /// The next `trigger` call fails with `error` (queue several to fail
    /// several calls).
    pub fn fail_trigger_with(&self, error: RunnerError) {
        self.lock().trigger_errors.push_back(error);
    }

    /// The next `status` call fails with `error` (queue several to fail
    /// several calls).
    pub fn fail_status_with(&self, error: RunnerError) {
        self.lock().status_errors.push_back(error);
    }

    /// Every successful trigger, in order.
    pub fn triggers(&self) -> Vec<TriggerRequest> {
        self.lock().triggers.clone()
    }

    /// Every cancel call, in order (repeats included).
    pub fn cancels(&self) -> Vec<BuildId> {
        self.lock().cancels.clone()
    }

    /// How often `status` was called for `id`.
    pub fn polls(&self, id: &BuildId) -> u32 {
        self.lock().builds.get(id).map_or(0, |b| b.polls)
    }

    /// The trigger request of build `id`.
    pub fn trigger_of(&self, id: &BuildId) -> Option<TriggerRequest> {
        self.lock().builds.get(id).map(|b| b.request.clone())
    }
}

#[async_trait]
impl BuildRunner for ScriptedBuildRunner {
    async fn trigger(&self, request: &TriggerRequest) -> Result<BuildId, RunnerError> {
        let mut st = self.lock();
        if let Some(e) = st.trigger_errors.pop_front() {
            return Err(e);
        }
        st.next += 1;
        let id = BuildId::new(format!("{}{}", st.prefix, st.next))?;
        st.triggers.push(request.clone());
        st.builds.insert(
            id.clone(),
            Triggered {
                request: request.clone(),
                polls: 0,
                cancelled: false,
                finished: None,
            },
        );
        Ok(id)
    }

    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError> {
        let mut st = self.lock();
        if let Some(e) = st.status_errors.pop_front() {
            return Err(e);
        }
        let polls_before_finish = st.polls_before_finish;
        let reports_via_api = st.reports_via_api;
        let default_outcome = st.default_outcome;
        let RunnerState {
            builds,
            outcomes,
            targets,
            ..
        } = &mut *st;
        let build = builds
            .get_mut(id)
            .ok_or_else(|| RunnerError::NotFound(id.to_string()))?;
        build.polls += 1;
        let url = Some(format!("mem://builds/{id}"));
        let mut metadata = BTreeMap::new();
        metadata.insert("queue".to_owned(), build.request.queue.to_string());
        if reports_via_api {
            return Ok(BuildReport {
                status: None,
                url,
                metadata,
                ..BuildReport::default()
            });
        }
        if build.finished.is_none() {
            if build.cancelled {
                build.finished = Some(BuildStatus::Cancelled);
            } else if build.polls > polls_before_finish {
                let outcome = outcomes
                    .get(&build.request.head)
                    .copied()
                    .unwrap_or(default_outcome);
                if let Outcome::Finish(status) = outcome {
                    build.finished = Some(status);
                }
            }
        }
        Ok(match build.finished {
            Some(status) => BuildReport {
                status: Some(status),
                url,
                metadata,
                targets: targets
                    .get(&build.request.head)
                    .cloned()
                    .unwrap_or_default(),
                reason: None,
            },
            None => BuildReport {
                status: Some(BuildStatus::Running),
                url,
                metadata,
                ..BuildReport::default()
            },
        })
    }

    async fn cancel(&self, id: &BuildId) -> Result<(), RunnerError> {
        let mut st = self.lock();
        st.cancels.push(id.clone());
        let build = st
            .builds
            .get_mut(id)
            .ok_or_else(|| RunnerError::NotFound(id.to_string()))?;
        // Cancelling a finished build is a no-op.
        build.cancelled = true;
        Ok(())
    }

    fn reports_via_api(&self) -> bool {
        self.lock().reports_via_api
    }
}

/// Hands out scripted runners: one shared default runner for every queue,
/// unless a queue has its own.
#[derive(Debug, Clone, Default)]
pub struct ScriptedRunnerFactory {
    default: ScriptedBuildRunner,
    per_queue: Arc<Mutex<HashMap<QueueName, ScriptedBuildRunner>>>,
}

impl ScriptedRunnerFactory {
    /// A factory whose every queue uses `runner`.
    pub fn new(runner: ScriptedBuildRunner) -> Self {
        Self {
            default: runner,
            per_queue: Arc::default(),
        }
    }

    /// Gives `queue` its own runner.
    pub fn set_runner(&self, queue: QueueName, runner: ScriptedBuildRunner) {
        self.per_queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue, runner);
    }

    /// The runner `queue` gets.
    pub fn runner(&self, queue: &QueueName) -> ScriptedBuildRunner {
        self.per_queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .cloned()
            .unwrap_or_else(|| self.default.clone())
    }
}

#[async_trait]
impl BuildRunnerFactory for ScriptedRunnerFactory {
    async fn for_queue(&self, config: &QueueConfig) -> Result<Arc<dyn BuildRunner>, RunnerError> {
        Ok(Arc::new(self.runner(&config.name)))
    }
}
