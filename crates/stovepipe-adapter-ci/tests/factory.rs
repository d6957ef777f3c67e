//! Choosing and caching a queue's runner, and the external runner.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

mod common;

use common::{FakeScmFactory, command_config, config, request, wait_terminal};
use std::sync::Arc;
use std::time::Duration;
use stovepipe_adapter_ci::{CiRunnerFactory, Env, ExternalRunner};
use stovepipe_entity::{BuildId, BuildStatus, RunnerKind};
use stovepipe_ports::{BuildRunner, BuildRunnerFactory, RunnerError};
use tempfile::TempDir;

fn factory(tmp: &TempDir) -> CiRunnerFactory {
    CiRunnerFactory::new(
        tmp.path().join("data"),
        Arc::new(FakeScmFactory {
            root: tmp.path().join("checkouts"),
        }),
    )
    .with_env(Env::from_pairs([
        ("GITHUB_TOKEN", "gh"),
        ("BUILDKITE_TOKEN", "bk"),
    ]))
}

fn config_err(result: Result<Arc<dyn BuildRunner>, RunnerError>) -> String {
    match result {
        Err(RunnerError::Config(m)) => m,
        Err(other) => panic!("expected Config, got {other}"),
        Ok(_) => panic!("expected Config, got a runner"),
    }
}

#[tokio::test]
async fn command_runner_is_cached_per_queue_and_its_log_is_served() {
    let tmp = TempDir::new().unwrap();
    let f = factory(&tmp);
    let c = command_config("q", "echo from-the-factory", Duration::from_mins(1));
    let runner = f.for_queue(&c).await.unwrap();
    assert!(Arc::ptr_eq(&runner, &f.for_queue(&c).await.unwrap()));
    assert!(!runner.reports_via_api());

    let id = runner.trigger(&request("q", false)).await.unwrap();
    assert_eq!(
        wait_terminal(runner.as_ref(), &id).await.status,
        Some(BuildStatus::Succeeded)
    );
    assert_eq!(f.log(&id).await.unwrap(), "from-the-factory\n");
    assert!(matches!(
        f.log(&BuildId::new("ext-1").unwrap()).await,
        Err(RunnerError::NotFound(_))
    ));

    // A changed configuration gets a fresh runner that still knows the
    // queue's earlier builds.
    let changed = command_config("q", "echo changed", Duration::from_mins(1));
    let rebuilt = f.for_queue(&changed).await.unwrap();
    assert!(!Arc::ptr_eq(&runner, &rebuilt));
    assert_eq!(
        rebuilt.status(&id).await.unwrap().status,
        Some(BuildStatus::Succeeded)
    );
    // Another queue gets its own runner.
    let other = f
        .for_queue(&command_config("r", "true", Duration::from_mins(1)))
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&rebuilt, &other));
}

#[tokio::test]
async fn each_kind_gets_its_runner_and_missing_settings_name_the_key() {
    let tmp = TempDir::new().unwrap();
    let f = factory(&tmp);

    let message = config_err(f.for_queue(&config("q", RunnerKind::Command)).await);
    assert!(message.contains("queue.build.command"), "{message}");

    let message = config_err(f.for_queue(&config("q", RunnerKind::GithubActions)).await);
    assert!(message.contains("queue.build.settings.owner"), "{message}");

    let message = config_err(f.for_queue(&config("q", RunnerKind::Buildkite)).await);
    assert!(
        message.contains("queue.build.settings.organization"),
        "{message}"
    );

    let mut gh = config("q", RunnerKind::GithubActions);
    for (k, v) in [("owner", "o"), ("repo", "r"), ("workflow", "ci.yml")] {
        gh.build.settings.insert(k.into(), v.into());
    }
    let runner = f.for_queue(&gh).await.unwrap();
    assert!(!runner.reports_via_api());
    // Only the GitHub runner reads gha- ids as its own (a foreign repo's id
    // is answered without any HTTP call).
    assert!(matches!(
        runner.status(&BuildId::new("gha-x/y/1").unwrap()).await,
        Err(RunnerError::NotFound(_))
    ));

    let mut bk = config("q", RunnerKind::Buildkite);
    for (k, v) in [("organization", "acme"), ("pipeline", "mono")] {
        bk.build.settings.insert(k.into(), v.into());
    }
    let runner = f.for_queue(&bk).await.unwrap();
    assert!(!runner.reports_via_api());

    let runner = f
        .for_queue(&config("q", RunnerKind::External))
        .await
        .unwrap();
    assert!(runner.reports_via_api());
}

#[tokio::test]
async fn external_runner_mints_ids_and_leaves_statuses_to_the_store() {
    let runner = ExternalRunner::new();
    assert!(runner.reports_via_api());
    let a = runner.trigger(&request("q", false)).await.unwrap();
    let b = runner.trigger(&request("q", false)).await.unwrap();
    assert_ne!(a, b);
    assert!(a.as_str().starts_with("ext-"));
    let report = runner.status(&a).await.unwrap();
    assert_eq!(report.status, None);
    runner.cancel(&a).await.unwrap();
    runner.cancel(&a).await.unwrap();
    let foreign = BuildId::new("cmd-1").unwrap();
    assert!(matches!(
        runner.status(&foreign).await,
        Err(RunnerError::NotFound(_))
    ));
}
