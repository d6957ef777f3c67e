//! The command runner against real processes: verdicts, timeouts killing
//! the whole process group, bounded logs, environment, targets reports,
//! concurrency and restart recovery.
// Test helpers outside #[test] fns are not covered by clippy.toml's
// allow-unwrap-in-tests; a panic is the right failure here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    BASE_SHA, BASE_URI, FakeScm, HEAD_SHA, HEAD_URI, command_config, eventually, request,
    wait_terminal,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use stovepipe_adapter_ci::{CommandRunner, DEFAULT_LOG_LIMIT, LOST_REASON};
use stovepipe_entity::{BuildId, BuildStatus, ProjectName, TargetResult, TargetStatus};
use stovepipe_ports::{BuildRunner, RunnerError};
use tempfile::TempDir;

const MINUTE: Duration = Duration::from_mins(1);

struct Fixture {
    _tmp: TempDir,
    data: std::path::PathBuf,
    scm: Arc<FakeScm>,
}

fn fixture() -> Fixture {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let scm = FakeScm::new(tmp.path().join("checkouts"));
    Fixture {
        _tmp: tmp,
        data,
        scm,
    }
}

impl Fixture {
    fn runner(&self, queue: &str, command: &str, timeout: Duration) -> CommandRunner {
        self.runner_with(queue, command, timeout, None)
    }

    fn runner_with(
        &self,
        queue: &str,
        command: &str,
        timeout: Duration,
        report: Option<&str>,
    ) -> CommandRunner {
        let mut config = command_config(queue, command, timeout);
        config.build.targets_report = report.map(str::to_owned);
        CommandRunner::new(&config, self.scm.clone(), &self.data).unwrap()
    }
}

/// Runs `command` to the end in queue `q`; returns the report and the log.
async fn run(
    f: &Fixture,
    command: &str,
    report: Option<&str>,
) -> (stovepipe_entity::BuildReport, String) {
    let runner = f.runner_with("q", command, MINUTE, report);
    let id = runner.trigger(&request("q", true)).await.unwrap();
    let result = wait_terminal(&runner, &id).await;
    let log = runner.log(&id).await.unwrap();
    (result, log)
}

#[tokio::test]
async fn exit_zero_succeeds_with_interleaved_log() {
    let f = fixture();
    let (report, log) = run(&f, "echo out-1; echo err-1 >&2; echo out-2", None).await;
    assert_eq!(report.status, Some(BuildStatus::Succeeded));
    assert_eq!(report.reason, None);
    assert_eq!(
        report.metadata.get("exit_code").map(String::as_str),
        Some("0")
    );
    assert_eq!(log, "out-1\nerr-1\nout-2\n");
}

#[tokio::test]
async fn non_zero_exit_fails() {
    let f = fixture();
    let (report, log) = run(&f, "echo before; exit 3", None).await;
    assert_eq!(report.status, Some(BuildStatus::Failed));
    assert!(
        report.reason.as_deref().unwrap().contains("code 3"),
        "{report:?}"
    );
    assert_eq!(
        report.metadata.get("exit_code").map(String::as_str),
        Some("3")
    );
    assert_eq!(log, "before\n");
}

fn pid_gone(pid: &str) -> bool {
    // A killed orphan may linger as a zombie until init reaps it: that is
    // gone too.
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let f = fixture();
    let runner = f.runner(
        "q",
        "sleep 100 & echo $! > bg.pid; sh -c 'sleep 100' & echo $! > nested.pid; echo $$ > sh.pid; sleep 100",
        Duration::from_secs(2),
    );
    let id = runner.trigger(&request("q", false)).await.unwrap();
    let report = wait_terminal(&runner, &id).await;
    assert_eq!(report.status, Some(BuildStatus::Failed));
    let reason = report.reason.unwrap();
    assert!(reason.starts_with("timed out after 2s"), "{reason}");
    let dir = f.scm.root.join("0");
    for file in ["bg.pid", "nested.pid", "sh.pid"] {
        let pid = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(!pid.trim().is_empty());
        eventually(&format!("{file} ({pid}) to be gone"), || pid_gone(&pid)).await;
    }
}

#[tokio::test]
async fn background_jobs_do_not_outlive_a_finished_build() {
    let f = fixture();
    let runner = f.runner("q", "sleep 100 & echo $! > bg.pid; echo done", MINUTE);
    let id = runner.trigger(&request("q", false)).await.unwrap();
    let report = wait_terminal(&runner, &id).await;
    assert_eq!(report.status, Some(BuildStatus::Succeeded));
    let pid = std::fs::read_to_string(f.scm.root.join("0/bg.pid")).unwrap();
    eventually("the background sleep to be gone", || pid_gone(&pid)).await;
    assert_eq!(runner.log(&id).await.unwrap(), "done\n");
}

#[tokio::test]
async fn huge_output_keeps_a_bounded_tail() {
    let f = fixture();
    // 3 MiB of output, then a last line that must survive.
    let (report, log) = run(
        &f,
        "head -c 3145728 /dev/zero | tr '\\0' 'x'; echo; echo LAST-LINE",
        None,
    )
    .await;
    assert_eq!(report.status, Some(BuildStatus::Succeeded));
    assert!(
        log.len() <= DEFAULT_LOG_LIMIT + 200,
        "log is {} bytes",
        log.len()
    );
    assert!(log.len() >= DEFAULT_LOG_LIMIT, "log is {} bytes", log.len());
    assert!(
        log.starts_with("[stovepipe: 2097163 earlier bytes of output were dropped"),
        "{}",
        &log[..200]
    );
    assert!(log.ends_with("xxx\nLAST-LINE\n"));
}

#[tokio::test]
async fn log_limit_is_configurable() {
    let f = fixture();
    let mut config = command_config("q", "seq 1 1000", MINUTE);
    config.build.targets_report = None;
    let runner = CommandRunner::new(&config, f.scm.clone(), &f.data)
        .unwrap()
        .with_log_limit(20);
    let id = runner.trigger(&request("q", false)).await.unwrap();
    wait_terminal(&runner, &id).await;
    let log = runner.log(&id).await.unwrap();
    let (marker, tail) = log.split_once('\n').unwrap();
    assert!(
        marker.contains("earlier bytes of output were dropped"),
        "{log}"
    );
    assert_eq!(tail, "96\n997\n998\n999\n1000\n");
}

#[tokio::test]
async fn the_command_sees_its_environment_and_runs_in_the_checkout() {
    let f = fixture();
    let runner = f.runner(
        "team/q",
        "env | grep ^STOVEPIPE_ | sort; cat marker.txt",
        MINUTE,
    );
    let mut req = request("team/q", true);
    req.project = ProjectName::new("payments").unwrap();
    let id = runner.trigger(&req).await.unwrap();
    assert_eq!(
        wait_terminal(&runner, &id).await.status,
        Some(BuildStatus::Succeeded)
    );
    let log = runner.log(&id).await.unwrap();
    for line in [
        format!("STOVEPIPE_BASE_COMMIT={BASE_SHA}"),
        format!("STOVEPIPE_BASE_URI={BASE_URI}"),
        format!("STOVEPIPE_BUILD_ID={id}"),
        format!("STOVEPIPE_HEAD_COMMIT={HEAD_SHA}"),
        format!("STOVEPIPE_HEAD_URI={HEAD_URI}"),
        "STOVEPIPE_PROJECT=payments".to_owned(),
        "STOVEPIPE_QUEUE=team/q".to_owned(),
        "STOVEPIPE_REQUEST_ID=request/team/q/7".to_owned(),
        format!("checkout of {HEAD_URI}"),
    ] {
        assert!(log.lines().any(|l| l == line), "missing {line:?} in\n{log}");
    }

    // A full build has empty base variables.
    let runner = f.runner(
        "q",
        "test -z \"$STOVEPIPE_BASE_URI\" && test -z \"$STOVEPIPE_BASE_COMMIT\" && test -z \"$STOVEPIPE_PROJECT\"",
        MINUTE,
    );
    let id = runner.trigger(&request("q", false)).await.unwrap();
    assert_eq!(
        wait_terminal(&runner, &id).await.status,
        Some(BuildStatus::Succeeded)
    );
}

fn target(name: &str, status: TargetStatus) -> TargetResult {
    TargetResult {
        target: name.to_owned(),
        status,
    }
}

#[tokio::test]
async fn json_targets_report_is_parsed_after_the_command() {
    let f = fixture();
    let (report, _) = run(
        &f,
        r#"echo '[{"target": "//pay:test", "status": "failed"}, {"target": "//web:test", "status": "passed"}]' > out.json; exit 1"#,
        Some("out.json"),
    )
    .await;
    assert_eq!(report.status, Some(BuildStatus::Failed));
    assert_eq!(
        report.targets,
        vec![
            target("//pay:test", TargetStatus::Failed),
            target("//web:test", TargetStatus::Passed)
        ]
    );
}

#[tokio::test]
async fn junit_glob_is_parsed_after_the_command() {
    let f = fixture();
    let command = r#"mkdir -p reports
cat > reports/a.xml <<'EOF'
<testsuite name="a"><testcase classname="pay.Api" name="charges"/><testcase classname="pay.Api" name="refunds"><failure message="boom"/></testcase></testsuite>
EOF
cat > reports/b.xml <<'EOF'
<testsuites><testsuite name="b"><testcase classname="web" name="home"><error/></testcase><testcase classname="web" name="about"></testcase></testsuite></testsuites>
EOF
exit 1"#;
    let (report, _) = run(&f, command, Some("reports/*.xml")).await;
    assert_eq!(report.status, Some(BuildStatus::Failed));
    assert_eq!(
        report.targets,
        vec![
            target("pay.Api.charges", TargetStatus::Passed),
            target("pay.Api.refunds", TargetStatus::Failed),
            target("web.about", TargetStatus::Passed),
            target("web.home", TargetStatus::Failed),
        ]
    );
}

#[tokio::test]
async fn a_malformed_report_never_changes_the_verdict() {
    let f = fixture();
    for (exit, expected) in [(0, BuildStatus::Succeeded), (1, BuildStatus::Failed)] {
        let (report, _) = run(
            &f,
            &format!(r#"echo '[{{"target": "x", "status": "green"}}]' > out.json; exit {exit}"#),
            Some("out.json"),
        )
        .await;
        assert_eq!(report.status, Some(expected));
        assert!(report.targets.is_empty());
        let reason = report.reason.unwrap();
        assert!(
            reason.contains("targets report out.json is malformed"),
            "{reason}"
        );
    }
    // A missing JUnit report is noted as well.
    let (report, _) = run(&f, "true", Some("reports/*.xml")).await;
    assert_eq!(report.status, Some(BuildStatus::Succeeded));
    assert!(
        report
            .reason
            .unwrap()
            .contains("no file matches reports/*.xml")
    );
}

#[tokio::test]
async fn builds_of_different_queues_run_concurrently() {
    let f = fixture();
    let shared = f.data.parent().unwrap().join("rendezvous");
    std::fs::create_dir_all(&shared).unwrap();
    // Each build announces itself and waits (bounded) for the other: both
    // succeed only if they run at the same time.
    let command = |me: &str, other: &str| {
        format!(
            "touch {dir}/{me}; i=0; while [ ! -f {dir}/{other} ]; do i=$((i+1)); [ $i -gt 400 ] && exit 9; sleep 0.05; done",
            dir = shared.display()
        )
    };
    let scm_a = FakeScm::new(f.data.parent().unwrap().join("checkouts-a"));
    let scm_b = FakeScm::new(f.data.parent().unwrap().join("checkouts-b"));
    let a = CommandRunner::new(
        &command_config("a", &command("a", "b"), MINUTE),
        scm_a,
        &f.data,
    )
    .unwrap();
    let b = CommandRunner::new(
        &command_config("b", &command("b", "a"), MINUTE),
        scm_b,
        &f.data,
    )
    .unwrap();
    let id_a = a.trigger(&request("a", false)).await.unwrap();
    let id_b = b.trigger(&request("b", false)).await.unwrap();
    assert_ne!(id_a, id_b);
    assert_eq!(
        wait_terminal(&a, &id_a).await.status,
        Some(BuildStatus::Succeeded)
    );
    assert_eq!(
        wait_terminal(&b, &id_b).await.status,
        Some(BuildStatus::Succeeded)
    );
    // A queue's runner does not answer for another queue's builds.
    assert!(matches!(
        a.status(&id_b).await,
        Err(RunnerError::NotFound(_))
    ));
}

#[tokio::test]
async fn concurrent_builds_of_one_queue_get_their_own_checkout_slot() {
    let f = fixture();
    let runner = f.runner("q", "sleep 100", MINUTE);
    let first = runner.trigger(&request("q", false)).await.unwrap();
    let second = runner.trigger(&request("q", false)).await.unwrap();
    assert_eq!(*f.scm.checkouts.lock().unwrap(), vec![0, 1]);
    runner.cancel(&first).await.unwrap();
    runner.cancel(&second).await.unwrap();
    wait_terminal(&runner, &first).await;
    wait_terminal(&runner, &second).await;
    // Both slots are free again.
    let third = runner.trigger(&request("q", false)).await.unwrap();
    assert_eq!(f.scm.checkouts.lock().unwrap().last(), Some(&0));
    runner.cancel(&third).await.unwrap();
    wait_terminal(&runner, &third).await;
}

#[tokio::test]
async fn cancel_kills_the_build_and_is_idempotent() {
    let f = fixture();
    let runner = f.runner("q", "echo started; sleep 100", MINUTE);
    let id = runner.trigger(&request("q", false)).await.unwrap();
    assert_eq!(
        runner.status(&id).await.unwrap().status,
        Some(BuildStatus::Running)
    );
    runner.cancel(&id).await.unwrap();
    let report = wait_terminal(&runner, &id).await;
    assert_eq!(report.status, Some(BuildStatus::Cancelled));
    runner.cancel(&id).await.unwrap();
    assert_eq!(
        runner.status(&id).await.unwrap().status,
        Some(BuildStatus::Cancelled)
    );
}

#[tokio::test]
async fn unknown_ids_and_failed_checkouts() {
    let f = fixture();
    let runner = f.runner("q", "true", MINUTE);
    for id in [
        "cmd-00000000-0000-4000-8000-000000000000",
        "cmd-../../etc",
        "gha-o/r/1",
    ] {
        let id = BuildId::new(id).unwrap();
        assert!(matches!(
            runner.status(&id).await,
            Err(RunnerError::NotFound(_))
        ));
        assert!(matches!(
            runner.cancel(&id).await,
            Err(RunnerError::NotFound(_))
        ));
        assert!(matches!(
            runner.log(&id).await,
            Err(RunnerError::NotFound(_))
        ));
    }
    // An unknown head is refused, never a build that "failed".
    let mut req = request("q", false);
    req.head = stovepipe_entity::Uri::new("fake://repo/unknown").unwrap();
    assert!(matches!(
        runner.trigger(&req).await,
        Err(RunnerError::Rejected(_))
    ));
}

#[tokio::test]
async fn missing_command_or_timeout_is_a_config_error() {
    let f = fixture();
    let mut config = command_config("q", "  ", MINUTE);
    let err = CommandRunner::new(&config, f.scm.clone(), &f.data).unwrap_err();
    assert!(
        matches!(&err, RunnerError::Config(m) if m.contains("queue.build.command")),
        "{err}"
    );
    config.build.command = Some("true".into());
    config.build.timeout = Duration::ZERO;
    let err = CommandRunner::new(&config, f.scm.clone(), &f.data).unwrap_err();
    assert!(
        matches!(&err, RunnerError::Config(m) if m.contains("queue.build.timeout")),
        "{err}"
    );
}

/// Writes the state file a previous server process would have left.
fn leave_running_build(data: &Path, queue: &str, pid: u32) -> BuildId {
    let id = format!("cmd-{}", uuid::Uuid::new_v4());
    let dir = data.join("command-runner").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let state = serde_json::json!({
        "id": id,
        "queue": queue,
        "request_id": format!("request/{queue}/1"),
        "project": "",
        "status": "running",
        "pid": pid,
        "started_at": 1,
        "finished_at": null,
        "exit_code": null,
        "reason": null,
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    BuildId::new(id).unwrap()
}

#[tokio::test]
async fn restart_reports_orphaned_builds_as_lost() {
    let f = fixture();
    // A pid that surely no longer runs: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let mine = leave_running_build(&f.data, "q", dead_pid);
    let other_queue = leave_running_build(&f.data, "other", dead_pid);

    let runner = f.runner("q", "true", MINUTE);
    let report = runner.status(&mine).await.unwrap();
    assert_eq!(
        report.status,
        Some(BuildStatus::Cancelled),
        "never judged: not broken"
    );
    assert_eq!(report.reason.as_deref(), Some(LOST_REASON));
    assert_eq!(runner.log(&mine).await.unwrap(), "");

    // Another queue's builds are that queue's runner's business.
    let state = std::fs::read_to_string(
        f.data
            .join("command-runner")
            .join(other_queue.as_str())
            .join("state.json"),
    )
    .unwrap();
    assert!(state.contains("\"running\""), "{state}");
    let other = f.runner("other", "true", MINUTE);
    assert_eq!(
        other.status(&other_queue).await.unwrap().reason.as_deref(),
        Some(LOST_REASON)
    );
}

#[tokio::test]
async fn a_rebuilt_runner_keeps_live_builds_of_this_process() {
    let f = fixture();
    let first = f.runner("q", "sleep 100", MINUTE);
    let id = first.trigger(&request("q", false)).await.unwrap();
    // Same queue, new runner (a configuration change): the live build is
    // neither lost nor out of reach.
    let second = f.runner("q", "true", MINUTE);
    assert_eq!(
        second.status(&id).await.unwrap().status,
        Some(BuildStatus::Running)
    );
    second.cancel(&id).await.unwrap();
    assert_eq!(
        wait_terminal(&second, &id).await.status,
        Some(BuildStatus::Cancelled)
    );
}

#[tokio::test]
async fn build_ids_are_unique() {
    let f = fixture();
    let runner = f.runner("q", "true", MINUTE);
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let id = runner.trigger(&request("q", false)).await.unwrap();
        assert!(id.as_str().starts_with("cmd-"));
        wait_terminal(&runner, &id).await;
        assert!(ids.insert(id));
    }
}

/// `cancel` kills the build's processes itself: a caller that stops right
/// after it (a runtime shutting down, before the build's own task runs
/// again) does not wait for the command to end by itself, which a reader
/// of its output pipe would otherwise do.
#[test]
fn a_runtime_stopping_right_after_cancel_does_not_wait_for_the_command() {
    let f = fixture();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let runner = f.runner("q", "sleep 30", MINUTE);
        let id = runner.trigger(&request("q", true)).await.unwrap();
        runner.cancel(&id).await.unwrap();
    });
    let stopping = std::time::Instant::now();
    drop(runtime);
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the runtime waited {:?} for the cancelled command's output",
        stopping.elapsed()
    );
}
