//! The local command runner: `sh -c <command>` in a clean checkout of the
//! head, on this machine.
//!
//! Owns: the child process (its own process group, killed as a whole on
//! timeout, cancel, and when the command exits so no stray background job
//! outlives its build), the bounded build log, the targets report of a
//! finished build, and the on-disk state that lets a restarted server answer
//! for builds it started earlier.
//!
//! On disk, under `<data dir>/command-runner/<build id>/`:
//! - `state.json`: [`BuildState`], written atomically (temp file + rename)
//!   when the build starts and when it ends;
//! - `log`: the last [`DEFAULT_LOG_LIMIT`] bytes (configurable) of stdout and
//!   stderr interleaved, written when the build ends; a running build's log is
//!   served from memory.
//!
//! A terminal state is written only after the log and targets report, so a
//! reader that sees `succeeded` can read the whole log at once.
//!
//! One server process per data directory: a runner treats a queue's running
//! builds that no task of *this* process owns as lost.
//!
//! Does not own: checkouts (the queue's `SourceControl`), what an exit code
//! means for greenness beyond succeeded/failed (the pipeline).

use crate::scm::{base_commit_of, commit_of, runner_error};
use crate::targets::parse_targets_report;
use async_trait::async_trait;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stovepipe_entity::{BuildId, BuildReport, BuildStatus, QueueConfig, QueueName, TargetResult};
use stovepipe_ports::{BuildRunner, RunnerError, SourceControl, TriggerRequest};
use tokio::sync::Notify;

/// Default bound of a build log: the last 1 MiB of output is kept.
pub const DEFAULT_LOG_LIMIT: usize = 1 << 20;

/// Reason of a build that was running when its runner went away.
pub const LOST_REASON: &str = "lost: the runner restarted while the build was running";

/// Prefix of every command-runner build id.
const ID_PREFIX: &str = "cmd-";

/// How long to keep reading output after the process group was killed: a
/// process that left the group (`setsid`) may hold the pipe open forever.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// A command build as persisted in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BuildState {
    id: String,
    queue: String,
    request_id: String,
    project: String,
    status: BuildStatus,
    /// The `sh` process; also the process group id (it leads its group).
    pid: Option<u32>,
    /// Milliseconds since the Unix epoch.
    started_at: u64,
    finished_at: Option<u64>,
    exit_code: Option<i32>,
    reason: Option<String>,
    #[serde(default)]
    targets: Vec<TargetResult>,
}

impl BuildState {
    fn report(&self) -> BuildReport {
        let mut metadata = BTreeMap::new();
        if let Some(code) = self.exit_code {
            metadata.insert("exit_code".to_owned(), code.to_string());
        }
        BuildReport {
            status: Some(self.status),
            url: None,
            metadata,
            targets: self.targets.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// Builds running in this process, whichever `CommandRunner` started them.
///
/// Process-wide on purpose: children belong to the process, and a runner
/// rebuilt after a configuration change must neither declare its
/// predecessor's builds lost nor lose the ability to cancel them.
static ACTIVE: Mutex<BTreeMap<String, Arc<Active>>> = Mutex::new(BTreeMap::new());

fn active() -> MutexGuard<'static, BTreeMap<String, Arc<Active>>> {
    // A panic while holding the lock leaves a consistent map (single
    // insert/remove calls), so a poisoned lock is still usable.
    ACTIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running build's in-memory side.
struct Active {
    cancel: Notify,
    /// Set by `cancel`, which also kills the process group itself: the
    /// build ends cancelled however its process ended meanwhile.
    cancelled: AtomicBool,
    log: Mutex<TailBuffer>,
}

impl Active {
    fn log(&self) -> MutexGuard<'_, TailBuffer> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The last `limit` bytes of a stream, and how many came before them.
#[derive(Debug)]
struct TailBuffer {
    limit: usize,
    bytes: VecDeque<u8>,
    dropped: u64,
}

impl TailBuffer {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: VecDeque::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.limit {
            let skip = data.len() - self.limit;
            self.dropped += skip as u64;
            &data[skip..]
        } else {
            data
        };
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.dropped += overflow as u64;
        self.bytes.extend(data);
    }

    /// The kept bytes, behind a marker line when earlier output was dropped.
    fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 100);
        if self.dropped > 0 {
            out.extend_from_slice(
                format!(
                    "[stovepipe: {} earlier bytes of output were dropped; the last {} bytes follow]\n",
                    self.dropped,
                    self.bytes.len()
                )
                .as_bytes(),
            );
        }
        out.extend(self.bytes.iter());
        out
    }
}

/// Checkout slots of one queue in use by running builds: concurrent builds
/// of the same queue must not share a working tree.
#[derive(Debug, Default)]
struct Slots(Mutex<BTreeSet<u32>>);

impl Slots {
    fn take(self: &Arc<Self>) -> SlotGuard {
        let mut used = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // The lowest free slot: at most `used.len()` are taken, so one of
        // 0..=len is free.
        let slot = (0..=used.len() as u32)
            .find(|s| !used.contains(s))
            .unwrap_or(0);
        used.insert(slot);
        SlotGuard {
            slots: Arc::clone(self),
            slot,
        }
    }
}

/// Frees its slot when the build ends (or its start fails).
struct SlotGuard {
    slots: Arc<Slots>,
    slot: u32,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.slot);
    }
}

/// Runs a queue's `build.command` locally. See the module documentation.
pub struct CommandRunner {
    inner: Arc<Inner>,
}

struct Inner {
    queue: QueueName,
    command: String,
    timeout: Duration,
    targets_report: Option<String>,
    scm: Arc<dyn SourceControl>,
    /// `<data dir>/command-runner`.
    root: PathBuf,
    log_limit: usize,
    slots: Arc<Slots>,
}

impl std::fmt::Debug for CommandRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRunner")
            .field("queue", &self.inner.queue)
            .field("command", &self.inner.command)
            .field("timeout", &self.inner.timeout)
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

/// Where command builds live under a data directory.
fn builds_root(data_dir: &Path) -> PathBuf {
    data_dir.join("command-runner")
}

impl CommandRunner {
    /// The runner of `config`'s queue, keeping logs and state under
    /// `data_dir`.
    ///
    /// Recovers the queue's builds a previous process left running: their
    /// process is killed if it is still there, and they end `cancelled` with
    /// [`LOST_REASON`] (nobody is left to collect their result, and an
    /// interrupted build says nothing about the code: the pipeline records
    /// no fact and shows the commit as `error`).
    pub fn new(
        config: &QueueConfig,
        scm: Arc<dyn SourceControl>,
        data_dir: impl AsRef<Path>,
    ) -> Result<Self, RunnerError> {
        let command = config
            .build
            .command
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                RunnerError::Config(format!(
                    "queue {}: missing queue.build.command (required by the command runner)",
                    config.name
                ))
            })?
            .to_owned();
        if config.build.timeout.is_zero() {
            return Err(RunnerError::Config(format!(
                "queue {}: queue.build.timeout must be greater than zero",
                config.name
            )));
        }
        let root = builds_root(data_dir.as_ref());
        std::fs::create_dir_all(&root).map_err(|e| {
            RunnerError::Config(format!(
                "queue {}: cannot create the build directory {}: {e}",
                config.name,
                root.display()
            ))
        })?;
        let runner = Self {
            inner: Arc::new(Inner {
                queue: config.name.clone(),
                command,
                timeout: config.build.timeout,
                targets_report: config
                    .build
                    .targets_report
                    .clone()
                    .filter(|r| !r.trim().is_empty()),
                scm,
                root,
                log_limit: DEFAULT_LOG_LIMIT,
                slots: Arc::default(),
            }),
        };
        runner.recover();
        Ok(runner)
    }

    /// Keeps the last `bytes` bytes of each build's output (default
    /// [`DEFAULT_LOG_LIMIT`]). Call before the first trigger.
    #[must_use]
    pub fn with_log_limit(mut self, bytes: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.log_limit = bytes.max(1);
        }
        self
    }

    /// The build's log: the tail of its interleaved stdout and stderr, live
    /// while it runs. `NotFound` for an id this runner never minted.
    pub async fn log(&self, id: &BuildId) -> Result<String, RunnerError> {
        read_log(&self.inner.root, id).await
    }

    /// Marks this queue's builds that no live task owns as lost.
    fn recover(&self) {
        let Ok(entries) = std::fs::read_dir(&self.inner.root) else {
            return;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(mut state) = read_state_sync(&dir.join("state.json")) else {
                continue;
            };
            if state.queue != self.inner.queue.as_str()
                || state.status.is_terminal()
                || active().contains_key(&state.id)
            {
                continue;
            }
            if let Some(pid) = state.pid {
                kill_if_ours(pid, &state.id);
            }
            tracing::warn!(build = %state.id, queue = %state.queue, "command build lost by a restart");
            // Cancelled, not failed: the code was never judged, so the
            // commit must show as `error`, never as broken.
            state.status = BuildStatus::Cancelled;
            state.reason = Some(LOST_REASON.to_owned());
            state.finished_at = Some(now_ms());
            if let Err(e) = write_state_sync(&dir, &state) {
                tracing::error!(build = %state.id, error = %e, "cannot record a lost build");
            }
        }
    }
}

/// Reads a command build's log from `<data_dir>` (for callers that hold no
/// runner, such as the API serving `GET /v1/builds/{id}/log`).
pub(crate) async fn read_log_in(data_dir: &Path, id: &BuildId) -> Result<String, RunnerError> {
    read_log(&builds_root(data_dir), id).await
}

async fn read_log(root: &Path, id: &BuildId) -> Result<String, RunnerError> {
    let dir = build_dir(root, id)?;
    if let Some(active) = active().get(id.as_str()).cloned() {
        return Ok(String::from_utf8_lossy(&active.log().render()).into_owned());
    }
    match tokio::fs::read(dir.join("log")).await {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Known build without a log file: it was lost before it ended.
            if tokio::fs::try_exists(dir.join("state.json"))
                .await
                .unwrap_or(false)
            {
                Ok(String::new())
            } else {
                Err(RunnerError::NotFound(id.to_string()))
            }
        }
        Err(e) => Err(RunnerError::Unavailable(format!(
            "reading the log of build {id}: {e}"
        ))),
    }
}

/// The directory of a build id; ids that this runner could not have minted
/// are `NotFound` (and never become paths outside the root).
fn build_dir(root: &Path, id: &BuildId) -> Result<PathBuf, RunnerError> {
    let valid = id.as_str().strip_prefix(ID_PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    });
    if valid {
        Ok(root.join(id.as_str()))
    } else {
        Err(RunnerError::NotFound(id.to_string()))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn read_state_sync(path: &Path) -> std::io::Result<BuildState> {
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// Atomic replace, so a crash never leaves half a state file.
fn write_state_sync(dir: &Path, state: &BuildState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, dir.join("state.json"))
}

async fn write_state(dir: &Path, state: &BuildState) -> std::io::Result<()> {
    let dir = dir.to_owned();
    let state = state.clone();
    tokio::task::spawn_blocking(move || write_state_sync(&dir, &state))
        .await
        .map_err(std::io::Error::other)?
}

/// SIGKILL to the whole process group led by `pgid`. Errors mean the group
/// is already gone.
fn kill_group(pgid: u32) {
    if let Ok(raw) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
}

/// Kills a build's process group left over from an earlier server process,
/// but only when the pid still runs *that* build: pids are reused, and the
/// build id in the process environment is the proof of identity.
fn kill_if_ours(pid: u32, id: &str) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if kill(Pid::from_raw(raw), None).is_err() {
        return; // gone
    }
    let marker = format!("STOVEPIPE_BUILD_ID={id}");
    let ours = std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()));
    if ours {
        kill_group(pid);
    }
}

fn io_unavailable(what: &str, e: &std::io::Error) -> RunnerError {
    RunnerError::Unavailable(format!("{what}: {e}"))
}

/// How the command ended.
enum Outcome {
    Exited(ExitStatus),
    TimedOut,
    Cancelled,
}

#[async_trait]
impl BuildRunner for CommandRunner {
    /// Checks out the head (a failed checkout is an error, never a failed
    /// build: red must mean the code), starts the command and returns; the
    /// build runs in a spawned task.
    async fn trigger(&self, request: &TriggerRequest) -> Result<BuildId, RunnerError> {
        let inner = &self.inner;
        let scm = inner.scm.as_ref();
        let head_commit = commit_of(scm, &request.head).await?;
        let base_commit = base_commit_of(scm, request.base.as_ref()).await?;
        let slot = inner.slots.take();
        let workdir = scm
            .checkout(&request.head, slot.slot)
            .await
            .map_err(|e| runner_error(&format!("checking out {}", request.head), e))?;

        let id_text = format!("{ID_PREFIX}{}", uuid::Uuid::new_v4());
        let id = BuildId::new(id_text.clone())?;
        let dir = inner.root.join(&id_text);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_unavailable("creating the build directory", &e))?;

        // One pipe for both streams keeps stdout and stderr in the order the
        // command wrote them.
        let (reader, writer) =
            std::io::pipe().map_err(|e| io_unavailable("creating the output pipe", &e))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| io_unavailable("creating the output pipe", &e))?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&inner.command)
            .current_dir(&workdir)
            .env("STOVEPIPE_QUEUE", inner.queue.as_str())
            .env("STOVEPIPE_HEAD_URI", request.head.as_str())
            .env("STOVEPIPE_HEAD_COMMIT", &head_commit)
            .env(
                "STOVEPIPE_BASE_URI",
                request.base.as_ref().map_or("", |b| b.as_str()),
            )
            .env("STOVEPIPE_BASE_COMMIT", &base_commit)
            .env("STOVEPIPE_PROJECT", request.project.as_str())
            .env("STOVEPIPE_REQUEST_ID", request.request_id.as_str())
            .env("STOVEPIPE_BUILD_ID", &id_text)
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2))
            // Its own group, so a timeout or cancel kills every descendant.
            .process_group(0)
            .kill_on_drop(false);
        let spawned = cmd.spawn();
        // The command holds our copies of the pipe's write end: drop it, or
        // the reader would never see end-of-file.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                return Err(RunnerError::Config(format!(
                    "queue {}: cannot start `sh -c {}`: {e}",
                    inner.queue, inner.command
                )));
            }
        };
        let pid = child.id();
        let mut state = BuildState {
            id: id_text.clone(),
            queue: inner.queue.to_string(),
            request_id: request.request_id.to_string(),
            project: request.project.to_string(),
            status: BuildStatus::Running,
            pid,
            started_at: now_ms(),
            finished_at: None,
            exit_code: None,
            reason: None,
            targets: Vec::new(),
        };
        if let Err(e) = write_state(&dir, &state).await {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.wait().await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(io_unavailable("recording the build state", &e));
        }

        let build = Arc::new(Active {
            cancel: Notify::new(),
            cancelled: AtomicBool::new(false),
            log: Mutex::new(TailBuffer::new(inner.log_limit)),
        });
        active().insert(id_text.clone(), Arc::clone(&build));
        let output = {
            let build = Arc::clone(&build);
            tokio::task::spawn_blocking(move || drain(reader, &build))
        };
        tracing::info!(build = %id_text, queue = %inner.queue, ?pid, "command build started");

        let inner = Arc::clone(inner);
        tokio::spawn(async move {
            let outcome = tokio::select! {
                status = child.wait() => match status {
                    Ok(status) => Outcome::Exited(status),
                    // Waiting failed: the child is beyond our control; treat
                    // like a timeout so the group is killed and the build ends.
                    Err(_) => Outcome::TimedOut,
                },
                () = tokio::time::sleep(inner.timeout) => Outcome::TimedOut,
                () = build.cancel.notified() => Outcome::Cancelled,
            };
            let outcome = if build.cancelled.load(Ordering::SeqCst) {
                Outcome::Cancelled
            } else {
                outcome
            };
            // Always: leftover background jobs die with their build.
            if let Some(pid) = pid {
                kill_group(pid);
            }
            if !matches!(outcome, Outcome::Exited(_)) {
                let _ = child.wait().await;
            }
            let _ = tokio::time::timeout(OUTPUT_DRAIN, output).await;
            finish(&inner, &dir, &mut state, outcome, &build, workdir).await;
            active().remove(&state.id);
            drop(slot);
        });
        Ok(id)
    }

    async fn status(&self, id: &BuildId) -> Result<BuildReport, RunnerError> {
        let dir = build_dir(&self.inner.root, id)?;
        let state = read_state(&dir, id).await?;
        if state.queue != self.inner.queue.as_str() {
            return Err(RunnerError::NotFound(id.to_string()));
        }
        Ok(state.report())
    }

    /// Kills the build's process group; the build ends `cancelled`.
    async fn cancel(&self, id: &BuildId) -> Result<(), RunnerError> {
        let dir = build_dir(&self.inner.root, id)?;
        let state = read_state(&dir, id).await?;
        if state.queue != self.inner.queue.as_str() {
            return Err(RunnerError::NotFound(id.to_string()));
        }
        if let Some(build) = active().get(id.as_str()) {
            build.cancelled.store(true, Ordering::SeqCst);
            // Killed here, not only when the build's task next runs: the
            // caller may stop right after (a test's runtime, a server
            // shutting down), and the output reader would then wait for
            // the killed group's pipe until the command ended by itself.
            if let Some(pid) = state.pid {
                kill_group(pid);
            }
            // `notify_one` keeps a permit if the task is not waiting yet.
            build.cancel.notify_one();
        }
        Ok(())
    }
}

async fn read_state(dir: &Path, id: &BuildId) -> Result<BuildState, RunnerError> {
    match tokio::fs::read(dir.join("state.json")).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            RunnerError::Invalid(stovepipe_entity::InvalidValue {
                kind: "command build state",
                value: id.to_string(),
                expected: format!("a readable state.json ({e})"),
            })
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(RunnerError::NotFound(id.to_string()))
        }
        Err(e) => Err(io_unavailable(
            &format!("reading the state of build {id}"),
            &e,
        )),
    }
}

/// Copies the command's output into the tail buffer until every writer is
/// gone.
fn drain(mut reader: std::io::PipeReader, build: &Active) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => build.log().push(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Records the end of a build: log file, targets, then the terminal state.
async fn finish(
    inner: &Inner,
    dir: &Path,
    state: &mut BuildState,
    outcome: Outcome,
    build: &Active,
    workdir: PathBuf,
) {
    let (status, mut reasons) = match outcome {
        Outcome::Exited(exit) => match (exit.code(), exit.signal()) {
            (Some(0), _) => (BuildStatus::Succeeded, Vec::new()),
            (Some(code), _) => {
                state.exit_code = Some(code);
                (
                    BuildStatus::Failed,
                    vec![format!("command exited with code {code}")],
                )
            }
            (None, signal) => (
                BuildStatus::Failed,
                vec![format!(
                    "command killed by signal {}",
                    signal.map_or_else(|| "?".to_owned(), |s| s.to_string())
                )],
            ),
        },
        Outcome::TimedOut => (
            BuildStatus::Failed,
            vec![format!(
                "timed out after {}",
                humantime::format_duration(inner.timeout)
            )],
        ),
        Outcome::Cancelled => (BuildStatus::Cancelled, vec!["cancelled".to_owned()]),
    };
    if status == BuildStatus::Succeeded {
        state.exit_code = Some(0);
    }
    if let Some(spec) = inner.targets_report.clone() {
        let parsed = tokio::task::spawn_blocking(move || parse_targets_report(&workdir, &spec))
            .await
            .unwrap_or_else(|e| Err(format!("targets report parser crashed: {e}")));
        match parsed {
            Ok(targets) => state.targets = targets,
            Err(e) => reasons.push(e),
        }
    }
    let log = build.log().render();
    if let Err(e) = tokio::fs::write(dir.join("log"), log).await {
        tracing::error!(build = %state.id, error = %e, "cannot write the build log");
    }
    state.status = status;
    state.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    state.finished_at = Some(now_ms());
    if let Err(e) = write_state(dir, state).await {
        // The next runner construction reports it lost: never running forever.
        tracing::error!(build = %state.id, error = %e, "cannot record the end of a build");
    }
    tracing::info!(build = %state.id, status = %state.status, "command build ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_buffer_keeps_the_last_bytes() {
        let mut t = TailBuffer::new(4);
        t.push(b"ab");
        assert_eq!(t.render(), b"ab");
        t.push(b"cdef");
        let text = String::from_utf8(t.render()).unwrap();
        assert!(text.starts_with("[stovepipe: 2 earlier bytes"), "{text}");
        assert!(text.ends_with("\ncdef"), "{text}");
        t.push(b"0123456789");
        let text = String::from_utf8(t.render()).unwrap();
        assert!(text.starts_with("[stovepipe: 12 earlier bytes"), "{text}");
        assert!(text.ends_with("\n6789"), "{text}");
    }

    #[test]
    fn foreign_ids_are_not_found() {
        let root = Path::new("/tmp/x");
        for bad in ["gha-a/b/1", "cmd-", "cmd-../../etc", "cmd-abc/def"] {
            let id = BuildId::new(bad).unwrap();
            assert!(matches!(
                build_dir(root, &id),
                Err(RunnerError::NotFound(_))
            ));
        }
        assert!(build_dir(root, &BuildId::new("cmd-0a-1f").unwrap()).is_ok());
    }
}
