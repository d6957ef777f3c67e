//! The Buildkite runner against a wiremock stand-in for the REST API
//! (request and response shapes as documented for pipeline builds).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

mod common;

use common::{BASE_SHA, FakeScm, HEAD_SHA, config, request};
use serde_json::{Value, json};
use stovepipe_adapter_ci::{BuildkiteRunner, Env};
use stovepipe_entity::{BuildId, BuildStatus, RunnerKind};
use stovepipe_ports::{BuildRunner, RunnerError};
use wiremock::matchers::{body_json, header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BUILDS: &str = "/v2/organizations/acme/pipelines/monorepo/builds";

fn runner(server: &MockServer) -> BuildkiteRunner {
    let mut c = config("mono/main", RunnerKind::Buildkite);
    for (k, v) in [
        ("organization", "acme"),
        ("pipeline", "monorepo"),
        ("api_url", server.uri().as_str()),
    ] {
        c.build.settings.insert(k.into(), v.into());
    }
    BuildkiteRunner::new(
        &c,
        FakeScm::new(std::env::temp_dir()),
        &Env::from_pairs([("BUILDKITE_TOKEN", "bkua_secret")]),
    )
    .unwrap()
}

/// A build as `GET .../builds/{number}` returns it.
fn build_json(number: u64, state: &str) -> Value {
    json!({
        "id": "01908131-7d9f-495e-a17b-80ed31276810",
        "graphql_id": "QnVpbGQtLS0wMTkwODEzMS03ZDlm",
        "url": format!("https://api.buildkite.com/v2/organizations/acme/pipelines/monorepo/builds/{number}"),
        "web_url": format!("https://buildkite.com/acme/monorepo/builds/{number}"),
        "number": number,
        "state": state,
        "blocked": state == "blocked",
        "message": "Stovepipe validation of mono/main",
        "commit": HEAD_SHA,
        "branch": "main",
        "env": {},
        "source": "api",
        "jobs": [],
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": null,
        "finished_at": null,
    })
}

fn id(s: &str) -> BuildId {
    BuildId::new(s).unwrap()
}

#[tokio::test]
async fn trigger_creates_a_build() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(BUILDS))
        .and(header("authorization", "Bearer bkua_secret"))
        .and(header_exists("user-agent"))
        .and(body_json(json!({
            "commit": HEAD_SHA,
            "branch": "main",
            "message": "Stovepipe validation of mono/main",
            "env": {
                "STOVEPIPE_QUEUE": "mono/main",
                "STOVEPIPE_HEAD_COMMIT": HEAD_SHA,
                "STOVEPIPE_BASE_COMMIT": BASE_SHA,
                "STOVEPIPE_REQUEST_ID": "request/mono/main/7",
                "STOVEPIPE_PROJECT": "",
            },
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(build_json(1234, "scheduled")))
        .expect(1)
        .mount(&server)
        .await;
    let bk = runner(&server);
    let build = bk.trigger(&request("mono/main", true)).await.unwrap();
    assert_eq!(build.as_str(), "bk-acme/monorepo/1234");
}

#[tokio::test]
async fn a_full_build_sends_an_empty_base_commit() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(BUILDS))
        .respond_with(ResponseTemplate::new(201).set_body_json(build_json(1, "scheduled")))
        .mount(&server)
        .await;
    runner(&server)
        .trigger(&request("mono/main", false))
        .await
        .unwrap();
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(body["env"]["STOVEPIPE_BASE_COMMIT"], "");
}

#[tokio::test]
async fn every_build_state_maps_in_one_table() {
    use BuildStatus::{Accepted, Cancelled, Failed, Running, Succeeded};
    let cases: &[(&str, BuildStatus)] = &[
        ("creating", Accepted),
        ("scheduled", Accepted),
        ("waiting", Accepted),
        ("running", Running),
        ("blocked", Running),
        ("canceling", Running),
        ("failing", Running),
        ("waiting_failed", Running),
        ("passed", Succeeded),
        ("failed", Failed),
        ("timed_out", Failed),
        ("canceled", Cancelled),
        ("skipped", Cancelled),
        ("not_run", Cancelled),
    ];
    let server = MockServer::start().await;
    for (n, (state, _)) in cases.iter().enumerate() {
        Mock::given(method("GET"))
            .and(path(format!("{BUILDS}/{}", n + 1)))
            .and(header("authorization", "Bearer bkua_secret"))
            .respond_with(ResponseTemplate::new(200).set_body_json(build_json(n as u64 + 1, state)))
            .mount(&server)
            .await;
    }
    let bk = runner(&server);
    for (n, (state, expected)) in cases.iter().enumerate() {
        let report = bk
            .status(&id(&format!("bk-acme/monorepo/{}", n + 1)))
            .await
            .unwrap();
        assert_eq!(report.status, Some(*expected), "{state}");
        assert_eq!(
            report.url,
            Some(format!(
                "https://buildkite.com/acme/monorepo/builds/{}",
                n + 1
            ))
        );
        assert_eq!(
            report.metadata["buildkite_build_number"],
            (n + 1).to_string()
        );
    }
}

#[tokio::test]
async fn an_unknown_state_is_invalid_and_named() {
    let server = MockServer::start().await;
    for (n, state) in [(1, "teleporting"), (2, "finished")] {
        Mock::given(method("GET"))
            .and(path(format!("{BUILDS}/{n}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(build_json(n, state)))
            .mount(&server)
            .await;
    }
    let bk = runner(&server);
    for (n, state) in [(1, "teleporting"), (2, "finished")] {
        match bk.status(&id(&format!("bk-acme/monorepo/{n}"))).await {
            Err(RunnerError::Invalid(e)) => assert!(e.to_string().contains(state), "{e}"),
            other => panic!("expected Invalid for {state}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn cancel_puts_and_is_idempotent() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(format!("{BUILDS}/5/cancel")))
        .and(header("authorization", "Bearer bkua_secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(build_json(5, "canceling")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("{BUILDS}/6/cancel")))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "message": "Build can't be canceled because it's already finished",
        })))
        .mount(&server)
        .await;
    let bk = runner(&server);
    bk.cancel(&id("bk-acme/monorepo/5")).await.unwrap();
    bk.cancel(&id("bk-acme/monorepo/6")).await.unwrap();
}

#[tokio::test]
async fn foreign_and_missing_builds_are_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{BUILDS}/404")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"message": "No build found"})),
        )
        .mount(&server)
        .await;
    let bk = runner(&server);
    for build in [
        "bk-acme/monorepo/404",
        "bk-acme/other/1",
        "bk-acme/monorepo/x",
        "gha-acme/monorepo/1",
    ] {
        assert!(
            matches!(bk.status(&id(build)).await, Err(RunnerError::NotFound(_))),
            "{build}"
        );
    }
}

#[tokio::test]
async fn errors_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(BUILDS))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Authentication required"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(BUILDS))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{BUILDS}/1")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("ratelimit-remaining", "0")
                .insert_header("ratelimit-reset", "30"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{BUILDS}/2")))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let bk = runner(&server);
    let req = request("mono/main", true);

    let err = bk.trigger(&req).await.unwrap_err();
    assert!(
        matches!(&err, RunnerError::Rejected(m) if m.contains("BUILDKITE_TOKEN") && m.contains("401")),
        "{err}"
    );
    let err = bk.trigger(&req).await.unwrap_err();
    assert!(
        matches!(&err, RunnerError::Rejected(m) if m.contains("may exist")),
        "{err}"
    );
    for n in [1, 2] {
        let err = bk
            .status(&id(&format!("bk-acme/monorepo/{n}")))
            .await
            .unwrap_err();
        assert!(matches!(err, RunnerError::Unavailable(_)), "{err}");
    }
    let err = bk.cancel(&id("bk-acme/monorepo/404")).await.unwrap_err();
    assert!(matches!(err, RunnerError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn missing_settings_name_the_key() {
    let env = Env::from_pairs([("BUILDKITE_TOKEN", "t")]);
    let scm = FakeScm::new(std::env::temp_dir());
    let mut c = config("q", RunnerKind::Buildkite);
    c.build
        .settings
        .insert("organization".into(), "acme".into());
    let err = BuildkiteRunner::new(&c, scm.clone(), &env).unwrap_err();
    assert!(
        matches!(&err, RunnerError::Config(m) if m.contains("queue.build.settings.pipeline")),
        "{err}"
    );
    c.build.settings.insert("pipeline".into(), "p".into());
    c.build.settings.insert("token_env".into(), "MY_BK".into());
    let err = BuildkiteRunner::new(&c, scm, &env).unwrap_err();
    assert!(
        matches!(&err, RunnerError::Config(m) if m.contains("MY_BK")),
        "{err}"
    );
}
