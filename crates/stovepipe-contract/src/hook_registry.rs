//! Contract of `HookRegistry`: hook identities with immutable contracts,
//! release version minting (one version for N identical concurrent
//! releases; 1..N without gaps for N distinct ones), the live pointer,
//! resolution by event and queue, and idempotent runs.
//!
//! Does not own: delivery (`HookSink`) or the dispatcher's policy.

use crate::fixtures::{HookFixture, T0, queue_a, queue_b, release_spec};
use std::collections::BTreeSet;
use std::sync::Arc;
use stovepipe_entity::{
    ChangeKind, EventType, HookContract, HookName, HookRun, HookRunStatus, QueueName, Timestamp,
};
use stovepipe_ports::{HookError, UpsertOutcome};

crate::suite!($, hook_registry, hook_registry_tests, HookFixture, [
    upsert_creates_then_is_unchanged_or_conflicts,
    concurrent_identical_upserts_never_fail,
    release_of_unknown_hook_is_not_found,
    releases_mint_versions_and_go_live,
    concurrent_identical_releases_mint_one_version,
    concurrent_distinct_releases_mint_versions_without_gaps,
    set_live_rolls_back_without_touching_history,
    resolve_live_matches_event_and_queue,
    record_run_is_idempotent_by_id,
    list_runs_is_newest_first,
    hooks_are_listed_by_name,
]);

fn name(s: &str) -> HookName {
    HookName::new(s).unwrap()
}

fn contract(events: &[EventType], queues: &[QueueName]) -> HookContract {
    HookContract::new(
        events.iter().copied().collect(),
        queues.iter().cloned().collect::<BTreeSet<_>>(),
    )
    .unwrap()
}

fn recorded() -> HookContract {
    contract(&[EventType::ValidationRecorded], &[])
}

fn hook_run(id: &str, hook: &HookName, started: i64, status: HookRunStatus) -> HookRun {
    HookRun {
        id: id.to_owned(),
        hook: hook.clone(),
        release_version: 1,
        event_id: format!("validation.recorded/{id}"),
        status,
        attempts: 1,
        last_http_status: Some(200),
        started_at: Timestamp(T0.0 + started),
        finished_at: Timestamp(T0.0 + started + 1),
    }
}

async fn hook_with_release(fx: &HookFixture, hook: &str, c: &HookContract) {
    fx.hooks.upsert_hook(&name(hook), c, T0).await.unwrap();
    let url = format!("http://hooks.example/{hook}");
    fx.hooks
        .create_release(&name(hook), &release_spec(&url), "ops", T0)
        .await
        .unwrap();
}

async fn upsert_creates_then_is_unchanged_or_conflicts(fx: HookFixture) {
    let h = name("notify");
    let (hook, outcome) = fx.hooks.upsert_hook(&h, &recorded(), T0).await.unwrap();
    assert_eq!(outcome, UpsertOutcome::Created);
    assert_eq!((hook.name.clone(), hook.live_version), (h.clone(), None));
    let (again, outcome) = fx
        .hooks
        .upsert_hook(&h, &recorded(), Timestamp(T0.0 + 5))
        .await
        .unwrap();
    assert_eq!(outcome, UpsertOutcome::Unchanged);
    assert_eq!(again, hook, "an unchanged upsert changes nothing");
    let other = contract(&[EventType::LastGreenAdvanced], &[]);
    let err = fx.hooks.upsert_hook(&h, &other, T0).await.unwrap_err();
    assert!(matches!(err, HookError::ContractConflict(_)), "got {err:?}");
    assert_eq!(fx.hooks.get(&h).await.unwrap(), Some(hook));
}

async fn concurrent_identical_upserts_never_fail(fx: HookFixture) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let hooks = Arc::clone(&fx.hooks);
            tokio::spawn(async move { hooks.upsert_hook(&name("race"), &recorded(), T0).await })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let (_, outcome) = t.await.unwrap().expect("identical upserts never fail");
        created += usize::from(outcome == UpsertOutcome::Created);
    }
    assert_eq!(created, 1, "exactly one concurrent upsert creates the hook");
}

async fn release_of_unknown_hook_is_not_found(fx: HookFixture) {
    let err = fx
        .hooks
        .create_release(&name("ghost"), &release_spec("http://x/"), "ops", T0)
        .await
        .unwrap_err();
    assert!(matches!(err, HookError::NotFound(_)), "got {err:?}");
}

async fn releases_mint_versions_and_go_live(fx: HookFixture) {
    let h = name("notify");
    fx.hooks.upsert_hook(&h, &recorded(), T0).await.unwrap();
    let v1 = fx
        .hooks
        .create_release(&h, &release_spec("http://a/1"), "ops", T0)
        .await
        .unwrap();
    assert!(v1.created);
    assert_eq!(v1.release.version, 1, "the first release is version 1");
    assert_eq!(v1.release.digest, release_spec("http://a/1").digest());
    assert_eq!(
        fx.hooks.get(&h).await.unwrap().unwrap().live_version,
        Some(1)
    );
    let v2 = fx
        .hooks
        .create_release(&h, &release_spec("http://a/2"), "ops", T0)
        .await
        .unwrap();
    assert!(v2.created);
    assert_eq!(v2.release.version, 2);
    assert_eq!(
        fx.hooks.get(&h).await.unwrap().unwrap().live_version,
        Some(2)
    );
    let same_as_v1 = fx
        .hooks
        .create_release(&h, &release_spec("http://a/1"), "bob", T0)
        .await
        .unwrap();
    assert!(!same_as_v1.created, "an existing digest mints nothing");
    assert_eq!(
        same_as_v1.release, v1.release,
        "and returns the existing release"
    );
    assert_eq!(
        fx.hooks.get(&h).await.unwrap().unwrap().live_version,
        Some(2),
        "and moves nothing"
    );
    let versions: Vec<_> = fx
        .hooks
        .list_releases(&h)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [2, 1], "releases newest first");
    assert_eq!(fx.hooks.get_release(&h, 1).await.unwrap(), Some(v1.release));
    assert_eq!(fx.hooks.get_release(&h, 3).await.unwrap(), None);
}

async fn concurrent_identical_releases_mint_one_version(fx: HookFixture) {
    let h = name("notify");
    fx.hooks.upsert_hook(&h, &recorded(), T0).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (hooks, h) = (Arc::clone(&fx.hooks), h.clone());
            tokio::spawn(async move {
                hooks
                    .create_release(&h, &release_spec("http://same/"), "ops", T0)
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let outcome = t.await.unwrap().expect("identical releases never fail");
        assert_eq!(outcome.release.version, 1, "every caller gets version 1");
        created += usize::from(outcome.created);
    }
    assert_eq!(
        created, 1,
        "exactly one of 16 identical releases is created"
    );
    assert_eq!(fx.hooks.list_releases(&h).await.unwrap().len(), 1);
}

async fn concurrent_distinct_releases_mint_versions_without_gaps(fx: HookFixture) {
    const N: u32 = 16;
    let h = name("notify");
    fx.hooks.upsert_hook(&h, &recorded(), T0).await.unwrap();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (hooks, h) = (Arc::clone(&fx.hooks), h.clone());
            tokio::spawn(async move {
                hooks
                    .create_release(
                        &h,
                        &release_spec(&format!("http://distinct/{i}")),
                        "ops",
                        T0,
                    )
                    .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        let outcome = t.await.unwrap().expect("distinct releases never fail");
        assert!(outcome.created);
        versions.push(outcome.release.version);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=N).collect::<Vec<_>>(),
        "versions 1..{N}, no gaps, no repeats"
    );
    assert_eq!(
        fx.hooks.get(&h).await.unwrap().unwrap().live_version,
        Some(N),
        "the last minted version is live"
    );
}

async fn set_live_rolls_back_without_touching_history(fx: HookFixture) {
    let h = name("notify");
    fx.hooks.upsert_hook(&h, &recorded(), T0).await.unwrap();
    fx.hooks
        .create_release(&h, &release_spec("http://a/1"), "ops", T0)
        .await
        .unwrap();
    fx.hooks
        .create_release(&h, &release_spec("http://a/2"), "ops", T0)
        .await
        .unwrap();
    let hook = fx.hooks.set_live(&h, 1).await.unwrap();
    assert_eq!(hook.live_version, Some(1));
    assert_eq!(
        fx.hooks.get(&h).await.unwrap().unwrap().live_version,
        Some(1)
    );
    assert_eq!(
        fx.hooks.list_releases(&h).await.unwrap().len(),
        2,
        "history untouched"
    );
    let live = fx
        .hooks
        .resolve_live(EventType::ValidationRecorded, Some(queue_a()))
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].1.spec.url, "http://a/1",
        "the rolled-back release resolves"
    );
    for (hook, version) in [(h.clone(), 3), (h.clone(), 0), (name("ghost"), 1)] {
        let err = fx.hooks.set_live(&hook, version).await.unwrap_err();
        assert!(
            matches!(err, HookError::NotFound(_)),
            "{hook} v{version}: got {err:?}"
        );
    }
    assert_eq!(
        fx.hooks.get(&h).await.unwrap().unwrap().live_version,
        Some(1)
    );
}

async fn resolve_live_matches_event_and_queue(fx: HookFixture) {
    hook_with_release(&fx, "all-queues", &recorded()).await;
    let only_a = contract(
        &[EventType::ValidationRecorded, EventType::LastGreenAdvanced],
        &[queue_a()],
    );
    hook_with_release(&fx, "only-a", &only_a).await;
    hook_with_release(&fx, "builds", &contract(&[EventType::BuildFinished], &[])).await;
    // A hook without a release is skipped.
    fx.hooks
        .upsert_hook(&name("unreleased"), &recorded(), T0)
        .await
        .unwrap();
    let resolve = |event, queue: Option<QueueName>| {
        let hooks = Arc::clone(&fx.hooks);
        async move {
            let mut found: Vec<_> = hooks
                .resolve_live(event, queue)
                .await
                .unwrap()
                .into_iter()
                .map(|(hook, release)| {
                    assert_eq!(Some(release.version), hook.live_version, "the live release");
                    assert_eq!(release.hook, hook.name);
                    hook.name.to_string()
                })
                .collect();
            found.sort();
            found
        }
    };
    assert_eq!(
        resolve(EventType::ValidationRecorded, Some(queue_a())).await,
        ["all-queues", "only-a"]
    );
    assert_eq!(
        resolve(EventType::ValidationRecorded, Some(queue_b())).await,
        ["all-queues"]
    );
    assert_eq!(
        resolve(EventType::LastGreenAdvanced, Some(queue_a())).await,
        ["only-a"]
    );
    assert_eq!(
        resolve(EventType::ValidationRecorded, None).await,
        ["all-queues"]
    );
    assert!(
        resolve(EventType::CulpritFound, Some(queue_a()))
            .await
            .is_empty()
    );
}

async fn record_run_is_idempotent_by_id(fx: HookFixture) {
    let h = name("notify");
    hook_with_release(&fx, "notify", &recorded()).await;
    let first = hook_run("notify:e1", &h, 1, HookRunStatus::Delivered);
    assert!(
        fx.hooks.record_run(&first).await.unwrap(),
        "a new run is recorded"
    );
    let replay = hook_run("notify:e1", &h, 9, HookRunStatus::GaveUp);
    assert!(
        !fx.hooks.record_run(&replay).await.unwrap(),
        "the same id is not recorded twice"
    );
    assert_eq!(
        fx.hooks.list_runs(&h, 10).await.unwrap(),
        [first],
        "and not overwritten"
    );
    let logged: Vec<_> = fx
        .feed
        .read_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == ChangeKind::HookRun)
        .map(|e| e.subject)
        .collect();
    assert_eq!(
        logged,
        ["notify:e1"],
        "one hook.run change, for the first record only"
    );
}

async fn list_runs_is_newest_first(fx: HookFixture) {
    let h = name("notify");
    hook_with_release(&fx, "notify", &recorded()).await;
    hook_with_release(&fx, "other", &recorded()).await;
    for (id, started) in [("r2", 2), ("r1", 1), ("r3", 3)] {
        fx.hooks
            .record_run(&hook_run(id, &h, started, HookRunStatus::Delivered))
            .await
            .unwrap();
    }
    fx.hooks
        .record_run(&hook_run("o1", &name("other"), 5, HookRunStatus::Failed))
        .await
        .unwrap();
    let ids = |runs: Vec<HookRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(fx.hooks.list_runs(&h, 10).await.unwrap()),
        ["r3", "r2", "r1"]
    );
    assert_eq!(
        ids(fx.hooks.list_runs(&h, 2).await.unwrap()),
        ["r3", "r2"],
        "limit"
    );
}

async fn hooks_are_listed_by_name(fx: HookFixture) {
    assert_eq!(fx.hooks.get(&name("nope")).await.unwrap(), None);
    for n in ["zulu", "alpha", "mike"] {
        fx.hooks
            .upsert_hook(&name(n), &recorded(), T0)
            .await
            .unwrap();
    }
    let names: Vec<_> = fx
        .hooks
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name.to_string())
        .collect();
    assert_eq!(names, ["alpha", "mike", "zulu"]);
}
