//! Behaviour of the memory adapter beyond the port contracts: fault
//! injection, introspection, and the scripted SCM, runner and hook sink.

// Fixture helpers live outside #[test] fns: a bad fixture must panic loudly.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use stovepipe_adapter_memory::{
    CommitSpec, ManualClock, MemoryBackend, RecordingHookSink, ScriptedBuildRunner, ScriptedRepo,
    ScriptedRunnerFactory, ScriptedScmFactory,
};
use stovepipe_entity::{
    BuildId, BuildStatus, ChangeKind, EventEnvelope, EventType, HookRelease, HookReleaseSpec,
    NewChange, Origin, ProjectName, QueueConfig, QueueName, Request, RequestId, Timestamp, Uri,
};
use stovepipe_ports::{
    BuildRunner, BuildRunnerFactory, ChangeFeed, DeliveryOutcome, HookSink, MessageQueue, MqError,
    Outbox, OutgoingMessage, PromoteOutcome, RunnerError, ScmError, SourceControl,
    SourceControlFactory, StoreError, StoreFactory, Topic, TriggerRequest,
};

fn q() -> QueueName {
    QueueName::new("mono/main").unwrap()
}

fn request(n: u64) -> Request {
    Request::accepted(
        RequestId::new(&q(), n).unwrap(),
        q(),
        Uri::new(format!("mem://mono/main/c{n}")).unwrap(),
        Origin::Ingest,
        Timestamp(n as i64),
    )
}

fn outbox(n: u64) -> Outbox {
    Outbox::none()
        .change(NewChange::new(
            &q(),
            ChangeKind::RequestCreated,
            format!("r{n}"),
            json!({}),
        ))
        .publish(OutgoingMessage::new(
            Topic::process(),
            "mono/main",
            format!("m{n}"),
            json!(n),
        ))
}

fn backend() -> Arc<MemoryBackend> {
    MemoryBackend::new(Arc::new(ManualClock::default()))
}

#[tokio::test]
async fn an_injected_fault_fails_one_write_and_writes_nothing() {
    let b = backend();
    let s = b.for_queue(&q());
    s.requests.create(&request(1), outbox(1)).await.unwrap();
    assert_eq!(b.writes_performed(), 1);
    b.fail_writes_after(1);
    s.requests.create(&request(2), outbox(2)).await.unwrap();
    let err = s.requests.create(&request(3), outbox(3)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // Neither the row nor its outbox.
    let numbers: Vec<_> = b.all_requests(&q()).iter().map(|r| r.id.number()).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(b.changes().len(), 2);
    assert_eq!(b.pending_messages(&Topic::process()), 2);
    assert_eq!(b.writes_performed(), 2, "the refused call is not counted");
    // Later calls succeed again.
    s.requests.create(&request(3), outbox(3)).await.unwrap();
    assert_eq!(b.writes_performed(), 3);
}

#[tokio::test]
async fn every_kind_of_write_is_gated() {
    let b = backend();
    b.fail_writes_after(0);
    let err = b
        .publish(OutgoingMessage::new(Topic::build(), "k", "m", json!(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, MqError::Unavailable(_)));
    assert_eq!(b.pending_messages(&Topic::build()), 0);
    b.fail_writes_after(0);
    let c1 = request(1).uri;
    assert!(b.for_queue(&q()).request_uris.mint(&c1).await.is_err());
    assert_eq!(
        b.for_queue(&q()).request_uris.mint(&c1).await.unwrap(),
        (RequestId::new(&q(), 1).unwrap(), true),
        "the refused mint neither indexed the URI nor spent its number"
    );
    b.fail_writes_after(0);
    assert!(b.append(vec![]).await.is_err());
    b.clear_faults();
    assert!(b.append(vec![]).await.is_ok());
}

#[tokio::test]
async fn crash_points_can_be_enumerated() {
    async fn scenario(b: &MemoryBackend) -> usize {
        let s = b.for_queue(&q());
        let mut failures = 0;
        for n in 1..=3 {
            failures += usize::from(s.requests.create(&request(n), outbox(n)).await.is_err());
            failures += usize::from(s.request_uris.mint(&request(n + 3).uri).await.is_err());
        }
        failures
    }
    let clean = backend();
    assert_eq!(scenario(&clean).await, 0);
    let writes = clean.writes_performed();
    assert_eq!(writes, 6);
    for k in 0..writes {
        let b = backend();
        b.fail_writes_after(usize::try_from(k).unwrap());
        assert_eq!(
            scenario(&b).await,
            1,
            "crash point {k} fails exactly one write"
        );
        assert_eq!(b.writes_performed(), writes - 1);
    }
}

// --- scripted source control -------------------------------------------------

fn repo() -> ScriptedRepo {
    ScriptedRepo::new(q())
}

#[tokio::test]
async fn history_is_newest_first_and_pages_visit_every_commit_once() {
    let r = repo();
    let a = r.push("a");
    r.push("b");
    // A side branch merged back: m has parents [b, s].
    r.commit("s", &["a"]);
    r.commit("m", &["b", "s"]);
    r.set_head("m");
    r.push("c");
    assert_eq!(r.latest().await.unwrap(), r.uri("c"));
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = r.history(cursor, 2).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|i| i.commit));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["c", "m", "b", "s", "a"],
        "first-parent line first, parents after children"
    );
    let bad = r.history(Some("garbage".into()), 2).await.unwrap_err();
    assert!(matches!(bad, ScmError::Invalid(_)), "{bad:?}");
    assert!(r.is_ancestor(&a, &r.uri("c")).await.unwrap());
    assert!(r.is_ancestor(&r.uri("s"), &r.uri("m")).await.unwrap());
    assert!(!r.is_ancestor(&r.uri("s"), &r.uri("b")).await.unwrap());
    assert!(
        r.is_ancestor(&a, &a).await.unwrap(),
        "a commit is its own ancestor"
    );
    let unknown = Uri::new("mem://mono/main/zzz").unwrap();
    assert!(matches!(
        r.is_ancestor(&unknown, &a).await,
        Err(ScmError::NotFound(_))
    ));
    let between = r
        .history_between(Some(r.uri("b")), &r.uri("c"))
        .await
        .unwrap();
    assert_eq!(between, [r.uri("c"), r.uri("m"), r.uri("s")]);
    assert_eq!(
        r.history_between(None, &r.uri("b")).await.unwrap(),
        [r.uri("b"), a]
    );
}

#[tokio::test]
async fn resolve_change_info_and_changed_paths() {
    let r = repo();
    r.push_with("abc123", CommitSpec::paths(&["src/a.rs"]));
    r.push_with(
        "abd999",
        CommitSpec {
            author: Some("ann".into()),
            title: Some("fix".into()),
            created_at: Some(Timestamp(42)),
            paths: vec!["src/b.rs".into(), "src/a.rs".into()],
            ..CommitSpec::default()
        },
    );
    assert_eq!(r.resolve("abc123").await.unwrap(), r.uri("abc123"));
    assert_eq!(
        r.resolve("abc").await.unwrap(),
        r.uri("abc123"),
        "unique prefix"
    );
    assert!(
        matches!(r.resolve("ab").await, Err(ScmError::NotFound(_))),
        "ambiguous prefix"
    );
    assert_eq!(r.resolve("HEAD").await.unwrap(), r.uri("abd999"));
    assert_eq!(
        r.resolve("mem://mono/main/abc123").await.unwrap(),
        r.uri("abc123")
    );
    assert!(matches!(
        r.resolve("mem://other/abc123").await,
        Err(ScmError::NotFound(_))
    ));
    let info = r.change_info(&r.uri("abd999")).await.unwrap();
    assert_eq!((info.author.as_str(), info.title.as_str()), ("ann", "fix"));
    assert_eq!(info.created_at, Timestamp(42));
    assert!(r.change_info(&r.uri("abc123")).await.unwrap().created_at > Timestamp(0));
    assert_eq!(
        r.changed_paths(Some(r.uri("abc123")), &r.uri("abd999"))
            .await
            .unwrap(),
        ["src/a.rs", "src/b.rs"]
    );
    assert_eq!(
        r.changed_paths(None, &r.uri("abc123")).await.unwrap(),
        ["src/a.rs"]
    );
}

#[tokio::test]
async fn promotion_follows_the_branch_and_force_pushes() {
    let r = repo();
    let a = r.push("a");
    let b = r.push("b");
    assert_eq!(r.promote(&b).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(r.promote(&b).await.unwrap(), PromoteOutcome::AlreadyThere);
    assert_eq!(r.promoted(), Some(b.clone()));
    // Force-push: the branch now ends at a rewritten commit off `a`.
    r.commit("b2", &["a"]);
    r.set_head("b2");
    assert!(
        matches!(r.promote(&b).await, Err(ScmError::NotFound(_))),
        "b left the branch"
    );
    assert_eq!(r.promoted(), Some(b), "a refused promotion moves nothing");
    assert_eq!(
        r.promote_to("refs/heads/verified/payments", &a)
            .await
            .unwrap(),
        PromoteOutcome::Moved
    );
    assert_eq!(r.ref_target("refs/heads/verified/payments"), Some(a));
    let history: Vec<_> = r
        .history(None, 10)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.commit)
        .collect();
    assert_eq!(history, ["b2", "a"]);
}

#[tokio::test]
async fn scripted_failures_and_checkout() {
    let r = repo();
    let a = r.push("a");
    r.set_latest_error(ScmError::Unavailable("remote down".into()));
    assert!(matches!(r.latest().await, Err(ScmError::Unavailable(_))));
    assert!(r.resolve("a").await.is_ok(), "only latest fails");
    r.clear_latest_error();
    r.fail_all_with(ScmError::Unavailable("fetch failed".into()));
    assert!(r.change_info(&a).await.is_err());
    r.clear_failures();
    let dir = r.checkout(&a, 0).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("STOVEPIPE_COMMIT")).unwrap(),
        "a"
    );
    let unknown = Uri::new("mem://mono/main/nope").unwrap();
    assert!(matches!(
        r.checkout(&unknown, 0).await,
        Err(ScmError::NotFound(_))
    ));
}

#[tokio::test]
async fn scm_factory_maps_queues_and_promotion_config() {
    let r = repo();
    let a = r.push("a");
    let factory = ScriptedScmFactory::new().with(r.clone());
    let mut config = QueueConfig::new(q(), "mem", "main");
    let scm = factory.for_queue(&config).await.unwrap();
    assert_eq!(
        scm.promote(&a).await.unwrap(),
        PromoteOutcome::NotConfigured
    );
    config.promotion_ref = Some("refs/heads/verified".into());
    let scm = factory.for_queue(&config).await.unwrap();
    assert_eq!(scm.promote(&a).await.unwrap(), PromoteOutcome::Moved);
    assert_eq!(r.promoted(), Some(a));
    let other = QueueConfig::new(QueueName::new("other").unwrap(), "mem", "main");
    assert!(matches!(
        factory.for_queue(&other).await,
        Err(ScmError::Invalid(_))
    ));
}

// --- scripted build runner --------------------------------------------------

fn trigger(head: &str) -> TriggerRequest {
    TriggerRequest {
        queue: q(),
        request_id: RequestId::new(&q(), 1).unwrap(),
        project: ProjectName::whole_repo(),
        base: None,
        head: Uri::new(head).unwrap(),
        metadata: BTreeMap::new(),
    }
}

#[tokio::test]
async fn runner_mints_ids_and_follows_its_script() {
    let runner = ScriptedBuildRunner::new();
    let ok = runner.trigger(&trigger("mem://h/ok")).await.unwrap();
    assert_eq!(ok.as_str(), "build-1");
    assert_eq!(
        runner.status(&ok).await.unwrap().status,
        Some(BuildStatus::Succeeded),
        "terminal on the first poll by default"
    );
    runner.set_polls_before_finish(2);
    runner.set_outcome(&Uri::new("mem://h/bad").unwrap(), BuildStatus::Failed);
    let bad = runner.trigger(&trigger("mem://h/bad")).await.unwrap();
    assert_eq!(bad.as_str(), "build-2");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(runner.status(&bad).await.unwrap().status.unwrap());
    }
    assert_eq!(
        statuses,
        [
            BuildStatus::Running,
            BuildStatus::Running,
            BuildStatus::Failed,
            BuildStatus::Failed
        ]
    );
    runner.set_never_finishes(&Uri::new("mem://h/slow").unwrap());
    let slow = runner.trigger(&trigger("mem://h/slow")).await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            runner.status(&slow).await.unwrap().status,
            Some(BuildStatus::Running)
        );
    }
    runner.cancel(&slow).await.unwrap();
    assert_eq!(
        runner.status(&slow).await.unwrap().status,
        Some(BuildStatus::Cancelled)
    );
    runner.cancel(&ok).await.unwrap();
    assert_eq!(
        runner.status(&ok).await.unwrap().status,
        Some(BuildStatus::Succeeded),
        "cancelling a finished build changes nothing"
    );
    assert_eq!(runner.cancels(), [slow, ok]);
    assert_eq!(runner.triggers().len(), 3);
    let unknown = BuildId::new("build-99").unwrap();
    assert!(matches!(
        runner.status(&unknown).await,
        Err(RunnerError::NotFound(_))
    ));
}

#[tokio::test]
async fn runner_scripted_errors_and_api_reporting() {
    let runner = ScriptedBuildRunner::with_prefix("ext-");
    runner.fail_trigger_with(RunnerError::Unavailable("ci down".into()));
    assert!(runner.trigger(&trigger("mem://h/a")).await.is_err());
    let id = runner.trigger(&trigger("mem://h/a")).await.unwrap();
    assert_eq!(id.as_str(), "ext-1", "a failed trigger mints nothing");
    runner.fail_status_with(RunnerError::Unavailable("502".into()));
    assert!(runner.status(&id).await.is_err());
    runner.set_reports_via_api(true);
    assert!(runner.reports_via_api());
    assert_eq!(runner.status(&id).await.unwrap().status, None);
    let factory = ScriptedRunnerFactory::new(runner.clone());
    let from_factory = factory
        .for_queue(&QueueConfig::new(q(), "r", "main"))
        .await
        .unwrap();
    assert!(
        from_factory.reports_via_api(),
        "the factory hands out the shared runner"
    );
}

// --- recording hook sink -----------------------------------------------------

#[tokio::test]
async fn sink_records_and_answers_as_scripted() {
    let sink = RecordingHookSink::new();
    let spec = HookReleaseSpec {
        url: "http://hooks/x".into(),
        secret: None,
        headers: BTreeMap::new(),
        timeout_ms: 100,
        max_attempts: 3,
    };
    let release = HookRelease {
        hook: "x".parse().unwrap(),
        version: 1,
        digest: spec.digest(),
        spec,
        created_by: "ops".into(),
        created_at: Timestamp(1),
    };
    let envelope = EventEnvelope {
        id: "validation.recorded/request/mono/main/1".into(),
        event_type: EventType::ValidationRecorded,
        source: "stovepipe".into(),
        queue: Some(q()),
        occurred_at: Timestamp(1),
        data: json!({}),
    };
    let failed = DeliveryOutcome::Retryable {
        status: Some(500),
        error: "boom".into(),
    };
    sink.script("http://hooks/x", [failed.clone()]);
    assert_eq!(sink.deliver(&release, &envelope).await, failed);
    assert_eq!(
        sink.deliver(&release, &envelope).await,
        DeliveryOutcome::Delivered { status: 200 }
    );
    assert_eq!(sink.deliveries().len(), 2);
    assert_eq!(
        sink.deliveries_to("http://hooks/x"),
        [envelope.clone(), envelope]
    );
}
