//! Hook scenarios on the memory adapters: the pipeline feeds the dispatcher,
//! deliveries go to matching hooks only, transient failures are retried into
//! one run, a failing hook never delays the pipeline, and a rollback changes
//! later deliveries but never past provenance. Plus the service's
//! create-or-confirm semantics.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use stovepipe_app::HookServiceError;
use stovepipe_entity::{HookReleaseSpec, HookRun, HookRunStatus};
use stovepipe_ports::DeliveryOutcome;
use support::World;

const RECORDED: &str = "validation.recorded";
const ADVANCED: &str = "last_green.advanced";

fn spec(url: &str, max_attempts: u32) -> HookReleaseSpec {
    HookReleaseSpec {
        url: url.to_owned(),
        secret: Some("s".to_owned()),
        headers: BTreeMap::new(),
        timeout_ms: 1_000,
        max_attempts,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Registers hook `name` on `events` (of `queues`; empty = every queue)
/// with a first release delivering to `url`.
#[allow(clippy::unwrap_used, reason = "test helper: its failure is the test's")]
async fn hook(w: &World, name: &str, events: &[&str], queues: &[&str], url: &str, attempts: u32) {
    let hooks = w.pipeline.hooks();
    let (_, created) = hooks
        .upsert(name, &strings(events), &strings(queues))
        .await
        .unwrap();
    assert!(created);
    let (info, created) = hooks
        .create_release(name, &spec(url, attempts), "tester")
        .await
        .unwrap();
    assert!(created && info.live);
}

#[allow(clippy::unwrap_used, reason = "test helper: its failure is the test's")]
async fn runs(w: &World, name: &str) -> Vec<HookRun> {
    w.pipeline.hooks().runs(name, 100).await.unwrap()
}

fn retryable(status: u16) -> DeliveryOutcome {
    DeliveryOutcome::Retryable {
        status: Some(status),
        error: format!("receiver answered {status}"),
    }
}

fn event_id(w: &World, event: &str, n: u64) -> String {
    format!("{event}/{}", w.id(n))
}

#[tokio::test]
async fn a_green_run_is_delivered_to_matching_hooks_only() {
    let w = World::new(|_| {}).await;
    hook(&w, "both", &[RECORDED, ADVANCED], &[], "http://both", 5).await;
    hook(
        &w,
        "this-queue",
        &[ADVANCED],
        &["monorepo/main"],
        "http://this",
        5,
    )
    .await;
    hook(
        &w,
        "other-queue",
        &[RECORDED],
        &["other/q"],
        "http://other",
        5,
    )
    .await;
    hook(&w, "errors", &["validation.error"], &[], "http://errors", 5).await;

    w.push_and_ingest("A").await;
    w.settle().await;

    // Events are independent partitions of `hook`: no order between them.
    let got: BTreeSet<_> = w
        .sink
        .deliveries_to("http://both")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([event_id(&w, RECORDED, 1), event_id(&w, ADVANCED, 1)])
    );
    let advanced = &w.sink.deliveries_to("http://this")[0];
    assert_eq!(advanced.id, event_id(&w, ADVANCED, 1));
    assert_eq!(advanced.source, "stovepipe");
    assert_eq!(advanced.queue.as_ref(), Some(&w.queue));
    assert_eq!(advanced.data["uri"], serde_json::json!(w.uri("A")));
    assert!(w.sink.deliveries_to("http://other").is_empty());
    assert!(w.sink.deliveries_to("http://errors").is_empty());
    assert_eq!(w.sink.deliveries().len(), 3);

    let both = runs(&w, "both").await;
    assert_eq!(both.len(), 2);
    for run in &both {
        assert_eq!(run.status, HookRunStatus::Delivered);
        assert_eq!((run.attempts, run.last_http_status), (1, Some(200)));
        assert_eq!(run.release_version, 1);
        assert!(run.finished_at >= run.started_at);
    }
    assert!(runs(&w, "other-queue").await.is_empty());
}

#[tokio::test]
async fn a_500_then_a_200_is_one_delivered_run_of_two_attempts() {
    let w = World::new(|_| {}).await;
    hook(&w, "flaky", &[RECORDED], &[], "http://flaky", 5).await;
    w.sink.script("http://flaky", [retryable(500)]);

    w.push_and_ingest("A").await;
    w.settle().await;

    assert_eq!(w.sink.deliveries_to("http://flaky").len(), 2);
    let runs = runs(&w, "flaky").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].event_id, event_id(&w, RECORDED, 1));
    assert_eq!(runs[0].status, HookRunStatus::Delivered);
    assert_eq!((runs[0].attempts, runs[0].last_http_status), (2, Some(200)));
    assert!(runs[0].finished_at > runs[0].started_at, "after a backoff");
}

#[tokio::test]
async fn a_400_fails_after_one_attempt() {
    let w = World::new(|_| {}).await;
    hook(&w, "picky", &[RECORDED], &[], "http://picky", 5).await;
    w.sink.script(
        "http://picky",
        [DeliveryOutcome::Failed {
            status: Some(400),
            error: "bad request".to_owned(),
        }],
    );

    w.push_and_ingest("A").await;
    w.settle().await;

    assert_eq!(w.sink.deliveries_to("http://picky").len(), 1);
    let runs = runs(&w, "picky").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, HookRunStatus::Failed);
    assert_eq!((runs[0].attempts, runs[0].last_http_status), (1, Some(400)));
}

#[tokio::test]
async fn a_failing_hook_never_delays_the_pipeline() {
    let w = World::new(|_| {}).await;
    hook(&w, "down", &[RECORDED], &[], "http://down", 5).await;
    w.sink
        .script("http://down", std::iter::repeat_n(retryable(503), 4));

    let a = w.push("A");
    w.ingest().await;
    w.until("A recorded and the bookmark on A", async |w| {
        w.fact(&a).await.is_some() && w.queue_row().await.last_green.is_some()
    })
    .await;
    // The pipeline is done with A while its delivery is still retrying.
    assert_eq!(w.queue_row().await.last_green.unwrap().uri, a);
    assert_eq!(w.queue_row().await.in_flight_count(), 0);
    assert_eq!(w.repo.promoted(), Some(a.clone()));
    assert_eq!(w.sink.deliveries_to("http://down").len(), 1);
    assert!(runs(&w, "down").await.is_empty(), "still retrying");

    w.settle().await;
    let runs = runs(&w, "down").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, HookRunStatus::Delivered);
    assert_eq!((runs[0].attempts, runs[0].last_http_status), (5, Some(200)));
}

#[tokio::test]
async fn retries_stop_at_the_releases_max_attempts() {
    let w = World::new(|_| {}).await;
    hook(&w, "down", &[RECORDED], &[], "http://down", 2).await;
    w.sink.set_default(retryable(503));

    w.push_and_ingest("A").await;
    w.settle().await;

    assert_eq!(w.sink.deliveries_to("http://down").len(), 2);
    let runs = runs(&w, "down").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, HookRunStatus::GaveUp);
    assert_eq!((runs[0].attempts, runs[0].last_http_status), (2, Some(503)));
}

/// A release allowing more attempts than the runtime's retry policy (5):
/// the runtime dead-letters the delivery, and its reconciler records the
/// run as given up instead of failing anything.
#[tokio::test]
async fn a_dead_lettered_delivery_is_recorded_as_given_up() {
    let w = World::new(|_| {}).await;
    hook(&w, "down", &[RECORDED], &[], "http://down", 20).await;
    w.sink.set_default(retryable(502));

    w.push_and_ingest("A").await;
    w.settle().await;

    assert_eq!(w.sink.deliveries_to("http://down").len(), 5);
    let runs = runs(&w, "down").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, HookRunStatus::GaveUp);
    assert_eq!((runs[0].attempts, runs[0].last_http_status), (5, Some(502)));
    assert_eq!(
        w.queue_row().await.last_green.unwrap().uri,
        w.uri("A"),
        "the pipeline is unaffected"
    );
}

#[tokio::test]
async fn a_rollback_changes_later_deliveries_not_past_provenance() {
    let w = World::new(|_| {}).await;
    let hooks = w.pipeline.hooks();
    hook(&w, "deploy", &[RECORDED], &[], "http://v1", 5).await;

    w.push_and_ingest("A").await;
    w.settle().await;
    let (v2, created) = hooks
        .create_release("deploy", &spec("http://v2", 5), "tester")
        .await
        .unwrap();
    assert!(created && v2.live && v2.release.version == 2);
    // B's delivery is snapshotted on v2 and fails once, so it is still in
    // flight when the hook is rolled back.
    w.sink.script("http://v2", [retryable(503)]);
    let b = w.push("B");
    w.ingest().await;
    w.until("B recorded", async |w| w.fact(&b).await.is_some())
        .await;
    assert_eq!(
        hooks.set_live("deploy", 1).await.unwrap().live_version,
        Some(1)
    );
    w.settle().await;
    w.push_and_ingest("C").await;
    w.settle().await;

    let by_event: BTreeMap<String, u32> = runs(&w, "deploy")
        .await
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, HookRunStatus::Delivered);
            (r.event_id, r.release_version)
        })
        .collect();
    assert_eq!(
        by_event,
        BTreeMap::from([
            (event_id(&w, RECORDED, 1), 1),
            (event_id(&w, RECORDED, 2), 2),
            (event_id(&w, RECORDED, 3), 1),
        ])
    );
    let ids = |url| {
        w.sink
            .deliveries_to(url)
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids("http://v1"),
        [event_id(&w, RECORDED, 1), event_id(&w, RECORDED, 3)]
    );
    assert_eq!(
        ids("http://v2"),
        [event_id(&w, RECORDED, 2), event_id(&w, RECORDED, 2)],
        "the mid-flight retry kept the release it was picked up with"
    );
    let releases = hooks.releases("deploy").await.unwrap();
    let versions: Vec<_> = releases
        .iter()
        .map(|r| (r.release.version, r.live))
        .collect();
    assert_eq!(versions, [(2, false), (1, true)], "newest first");
}

#[tokio::test]
async fn the_service_creates_or_confirms() {
    let w = World::new(|_| {}).await;
    let hooks = w.pipeline.hooks();
    let events = strings(&[RECORDED]);
    let (h, created) = hooks.upsert("h", &events, &[]).await.unwrap();
    assert!(created);
    assert_eq!(h.live_version, None);
    assert!(!hooks.upsert("h", &events, &[]).await.unwrap().1, "same");
    assert!(matches!(
        hooks.upsert("h", &strings(&[ADVANCED]), &[]).await,
        Err(HookServiceError::Conflict(_))
    ));
    assert!(matches!(
        hooks.upsert("h", &strings(&["request.changed"]), &[]).await,
        Err(HookServiceError::Invalid(_))
    ));
    assert!(matches!(
        hooks.upsert("bad name", &events, &[]).await,
        Err(HookServiceError::Invalid(_))
    ));

    let (first, created) = hooks
        .create_release("h", &spec("http://a", 3), "alice")
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (
            first.release.version,
            first.live,
            first.release.created_by.as_str()
        ),
        (1, true, "alice")
    );
    let (again, created) = hooks
        .create_release("h", &spec("http://a", 3), "bob")
        .await
        .unwrap();
    assert!(!created, "same digest: nothing moves");
    assert_eq!(again.release, first.release);
    assert!(matches!(
        hooks.create_release("h", &spec("ftp://a", 3), "a").await,
        Err(HookServiceError::Invalid(_))
    ));
    assert!(matches!(
        hooks
            .create_release("nope", &spec("http://a", 3), "a")
            .await,
        Err(HookServiceError::NotFound(_))
    ));
    assert!(matches!(
        hooks.set_live("h", 7).await,
        Err(HookServiceError::NotFound(_))
    ));
    assert!(matches!(
        hooks.get("nope").await,
        Err(HookServiceError::NotFound(_))
    ));
    let list = hooks.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].live_version, Some(1));
}
