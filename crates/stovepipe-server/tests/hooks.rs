//! Hooks end to end through the real HTTP server: register a hook and a
//! release through the API pointing at a local receiver, run the pipeline,
//! and check the receiver got correctly signed `validation.recorded` and
//! `last_green.advanced` deliveries, the runs are listed with provenance,
//! and the create-or-confirm semantics of the endpoints.

mod common;

use common::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use stovepipe_adapter_webhook::verify_signature;
use stovepipe_server::auth::Scope;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "hook-secret-never-returned";

#[allow(clippy::expect_used, reason = "test helper: its failure is the test's")]
async fn send(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    scopes: &[Scope],
    body: &Value,
) -> (StatusCode, Value) {
    let resp = server
        .http
        .request(method, server.url(path))
        .bearer_auth(Server::token(scopes))
        .json(body)
        .send()
        .await
        .expect("the server answers");
    let status = resp.status();
    let text = resp.text().await.expect("a body");
    assert!(
        !text.contains(SECRET),
        "{path} answered with the secret: {text}"
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn put(server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    send(
        server,
        reqwest::Method::PUT,
        path,
        &[Scope::HooksWrite],
        body,
    )
    .await
}

async fn post(server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    send(
        server,
        reqwest::Method::POST,
        path,
        &[Scope::HooksWrite],
        body,
    )
    .await
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[tokio::test]
async fn a_registered_hook_receives_signed_events_and_runs_are_listed() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let server = Server::command_runner().await;

    let contract = json!({
        "events": ["validation.recorded", "last_green.advanced"],
        "queues": ["team/svc"],
    });
    let (status, hook) = put(&server, "/v1/hooks/deploy", &contract).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert_eq!(hook["live_version"], Value::Null);
    let release_body = json!({
        "url": format!("{}/hook", receiver.uri()),
        "secret": SECRET,
        "headers": {"X-Team": "payments"},
        "timeout_ms": 5000,
        "max_attempts": 3,
    });
    let (status, release) = post(&server, "/v1/hooks/deploy/releases", &release_body).await;
    assert_eq!(status, StatusCode::CREATED, "{release}");
    assert_eq!(release["name"], "deploy");
    assert_eq!(release["version"], 1);
    assert_eq!(release["live"], true);
    assert_eq!(release["timeout_ms"], 5000);
    assert_eq!(release["max_attempts"], 3);
    assert_eq!(release["created_by"], "tester", "the principal's id");
    assert_eq!(release["digest"].as_str().map(str::len), Some(64));

    let head = common::git(&server.repo, &["rev-parse", "HEAD"]);
    assert_eq!(server.ingest(None).await.status(), StatusCode::CREATED);
    let runs = server
        .eventually("/v1/hooks/deploy/runs", "two delivered runs", |b| {
            b["runs"]
                .as_array()
                .is_some_and(|r| r.len() == 2 && r.iter().all(|run| run["status"] == "delivered"))
        })
        .await;
    for run in runs["runs"].as_array().expect("runs") {
        assert_eq!(run["hook"], "deploy");
        assert_eq!(run["release_version"], 1, "provenance: {run}");
        assert_eq!(run["attempts"], 1);
        assert_eq!(run["last_http_status"], 204);
        assert!(run["started_at"].is_string() && run["finished_at"].is_string());
    }

    let requests = receiver.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 2);
    let mut types = BTreeSet::new();
    for r in &requests {
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        verify_signature(
            SECRET,
            &header("stovepipe-signature"),
            &r.body,
            now_unix(),
            Duration::from_mins(5),
        )
        .expect("a correctly signed delivery");
        let body: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(header("stovepipe-event-id"), body["id"].as_str().unwrap());
        assert_eq!(
            header("stovepipe-event-type"),
            body["type"].as_str().unwrap()
        );
        assert_eq!(header("stovepipe-hook"), "deploy@1");
        assert_eq!(header("x-team"), "payments");
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(body["source"], "stovepipe");
        assert_eq!(body["queue"], "team/svc");
        assert_eq!(
            body["id"],
            format!("{}/request/team/svc/1", body["type"].as_str().unwrap())
        );
        assert!(
            body["data"]["uri"].as_str().is_some(),
            "data carries the URI: {body}"
        );
        types.insert(body["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        types,
        BTreeSet::from([
            "last_green.advanced".to_owned(),
            "validation.recorded".to_owned()
        ])
    );
    let last = server.get_json("/v1/queues/team%2Fsvc/last-green").await;
    assert_eq!(last["commit"], head.as_str());

    let hooks = server.get_json("/v1/hooks").await;
    assert_eq!(hooks["hooks"][0]["name"], "deploy");
    assert_eq!(hooks["hooks"][0]["live_version"], 1);
    server.stop().await;
}

#[tokio::test]
async fn put_hook_post_release_and_put_live_semantics() {
    let server = Server::command_runner().await;
    let contract = json!({"events": ["validation.recorded"]});
    assert_eq!(
        put(&server, "/v1/hooks/h", &contract).await.0,
        StatusCode::CREATED
    );
    let (status, same) = put(&server, "/v1/hooks/h", &contract).await;
    assert_eq!(status, StatusCode::OK, "same contract: {same}");
    assert_eq!(same["events"], json!(["validation.recorded"]));
    assert_eq!(same["queues"], json!([]));
    let (status, problem) = put(
        &server,
        "/v1/hooks/h",
        &json!({"events": ["last_green.advanced"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["status"], 409);
    let (status, _) = put(&server, "/v1/hooks/h", &json!({"events": ["nope"]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = put(
        &server,
        "/v1/hooks/h",
        &json!({"events": ["validation.recorded"], "extra": 1}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
    let (status, _) = send(
        &server,
        reqwest::Method::PUT,
        "/v1/hooks/h",
        &[Scope::Read],
        &contract,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "writing needs hooks:write");

    let v1 = json!({"url": "http://127.0.0.1:9/a", "secret": SECRET});
    let (status, first) = post(&server, "/v1/hooks/h/releases", &v1).await;
    assert_eq!(
        (status, first["version"].clone()),
        (StatusCode::CREATED, json!(1))
    );
    assert_eq!(first["timeout_ms"], 10_000, "defaults");
    assert_eq!(first["max_attempts"], 5);
    let (status, again) = post(&server, "/v1/hooks/h/releases", &v1).await;
    assert_eq!(status, StatusCode::OK, "same digest: {again}");
    assert_eq!(again["version"], 1);
    assert_eq!(again["digest"], first["digest"]);
    let (status, second) = post(
        &server,
        "/v1/hooks/h/releases",
        &json!({"url": "http://127.0.0.1:9/b"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (second["version"].clone(), second["live"].clone()),
        (json!(2), json!(true))
    );
    let (status, _) = post(&server, "/v1/hooks/h/releases", &json!({"url": "ftp://x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&server, "/v1/hooks/unknown/releases", &v1).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, problem) = put(&server, "/v1/hooks/h/live", &json!({"version": 9})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, hook) = put(&server, "/v1/hooks/h/live", &json!({"version": 1})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hook["live_version"], 1);
    let releases = server.get_json("/v1/hooks/h/releases").await;
    let listed: Vec<_> = releases["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .map(|r| (r["version"].clone(), r["live"].clone(), r["signed"].clone()))
        .collect();
    assert_eq!(
        listed,
        [
            (json!(2), json!(false), json!(false)),
            (json!(1), json!(true), json!(true)),
        ],
        "newest first"
    );
    assert_eq!(
        server
            .get("/v1/hooks/unknown", &[Scope::Read])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .get("/v1/hooks/unknown/runs", &[Scope::Read])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let runs = server.get_json("/v1/hooks/h/runs").await;
    assert_eq!(runs["runs"], json!([]));
    server.stop().await;
}
