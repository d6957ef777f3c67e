//! The HTTP API through the real HTTP stack, in process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use common::{Server, commit};
use futures::StreamExt;
use reqwest::StatusCode;
use stovepipe_server::auth::Scope;

fn is_problem(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"))
}

/// Every documented operation answers 401 without a token: a route without
/// a gate fails this test.
#[tokio::test]
async fn every_operation_is_gated() {
    let server = Server::command_runner().await;
    let spec: serde_json::Value =
        serde_json::from_str(&stovepipe_server::api::spec_json()).unwrap();
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{queue}", "team%2Fsvc")
            .replace("{number}", "1")
            .replace("{build_id}", "b-1")
            .replace("{id}", "1")
            .replace("{name}", "h");
        for method in ops.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // A well-formed body, so the answer is about the credentials and
            // not the payload; a new operation with a body needs its sample
            // here, or this test fails.
            let body = match path.as_str() {
                "/v1/builds/{build_id}/status" => r#"{"status":"succeeded"}"#,
                "/v1/hooks/{name}" => r#"{"events":["validation.recorded"]}"#,
                "/v1/hooks/{name}/releases" => r#"{"url":"http://127.0.0.1/x"}"#,
                "/v1/hooks/{name}/live" => r#"{"version":1}"#,
                _ => "{}",
            };
            let resp = server
                .http
                .request(method.clone(), server.url(&concrete))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} answered without a token"
            );
            assert!(
                is_problem(&resp),
                "{method} {path}: 401 is a problem document"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "the spec lists every operation ({checked})");
    server.stop().await;
}

#[tokio::test]
async fn ingest_then_read_greenness_last_green_commits_and_requests() {
    let server = Server::command_runner().await;
    let head = common::git(&server.repo, &["rev-parse", "HEAD"]);
    let first = server.ingest(None).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["request_id"], "request/team/svc/1");
    assert_eq!(body["created"], true);
    let again = server.ingest(None).await;
    assert_eq!(again.status(), StatusCode::OK, "deduplicated");
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["created"],
        false
    );

    let g = server
        .eventually(
            &format!("/v1/queues/team%2Fsvc/greenness?rev={head}"),
            "green",
            |b| b["status"] == "green",
        )
        .await;
    assert_eq!(g["degree"], 0.0);
    assert_eq!(g["commit"], head.as_str());
    let last = server.get_json("/v1/queues/team%2Fsvc/last-green").await;
    assert_eq!(last["commit"], head.as_str());
    assert_eq!(
        common::git(&server.repo, &["rev-parse", "verified-main"]),
        head,
        "promotion ref moved"
    );

    let broken = commit(&server.repo, "break it", &[("BROKEN", "yes")]);
    server.ingest(Some(&broken)).await;
    server
        .eventually(
            &format!("/v1/queues/team%2Fsvc/greenness?rev={broken}"),
            "broken",
            |b| b["status"] == "broken",
        )
        .await;
    let commits = server
        .get_json("/v1/queues/team%2Fsvc/commits?limit=10")
        .await;
    let statuses: Vec<_> = commits["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["broken", "green"]);
    let last = server.get_json("/v1/queues/team%2Fsvc/last-green").await;
    assert_eq!(last["commit"], head.as_str(), "a failure keeps last green");

    let requests = server
        .get_json("/v1/queues/team%2Fsvc/requests?limit=1")
        .await;
    assert_eq!(
        requests["items"][0]["id"], "request/team/svc/2",
        "newest first"
    );
    let next = requests["next_cursor"].as_str().expect("a second page");
    let page2 = server
        .get_json(&format!(
            "/v1/queues/team%2Fsvc/requests?limit=1&cursor={next}"
        ))
        .await;
    assert_eq!(page2["items"][0]["id"], "request/team/svc/1");

    let detail = server.get_json("/v1/queues/team%2Fsvc/requests/2").await;
    assert_eq!(detail["state"], "failed");
    assert_eq!(detail["facts"][0]["green"], false);
    let build_id = detail["builds"][0]["id"].as_str().unwrap().to_owned();
    let log = server
        .get(&format!("/v1/builds/{build_id}/log"), &[Scope::Read])
        .await;
    assert_eq!(log.status(), StatusCode::OK);
    assert!(log.text().await.unwrap().contains("building"));

    // Record releases the slot in the write after the fact's.
    let queue = server
        .eventually("/v1/queues/team%2Fsvc", "no slot held", |q| {
            q["in_flight"] == 0
        })
        .await;
    assert_eq!(queue["latest_request_id"], "request/team/svc/2");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_problem_and_changes_nothing() {
    let server = Server::command_runner().await;
    let token = Server::token(&[Scope::Ingest, Scope::Read]);
    let post = |path: &str, body: String| {
        server
            .http
            .post(server.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let cases: Vec<(&str, String, StatusCode)> = vec![
        (
            "/v1/queues/team%2Fsvc/ingest",
            r#"{"rev": null, "surprise": 1}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/queues/team%2Fsvc/ingest",
            "not json".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/queues/team%2Fsvc/ingest",
            format!(r#"{{"rev": "{}"}}"#, "a".repeat(2 * 1024 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "/v1/queues/a%20b/ingest",
            "{}".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/queues/nope%2Fmain/ingest",
            "{}".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/queues/team%2Fsvc/ingest",
            r#"{"rev": "deadbeefdeadbeef"}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, body, want) in cases {
        let resp = post(path, body).await.unwrap();
        assert_eq!(resp.status(), want, "POST {path}");
        assert!(is_problem(&resp), "POST {path}: problem+json");
        let problem: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(problem["status"], want.as_u16());
        assert!(!problem["detail"].as_str().unwrap_or("").is_empty());
    }
    for (path, want) in [
        (
            "/v1/queues/team%2Fsvc/commits?limit=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/queues/team%2Fsvc/requests?cursor=garbage",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/queues/team%2Fsvc/greenness", StatusCode::BAD_REQUEST),
        ("/v1/queues/team%2Fsvc/last-green", StatusCode::NOT_FOUND),
        ("/v1/queues/team%2Fsvc/requests/99", StatusCode::NOT_FOUND),
        ("/v1/nothing-here", StatusCode::NOT_FOUND),
    ] {
        let resp = server.get(path, &[Scope::Read]).await;
        assert_eq!(resp.status(), want, "GET {path}");
        assert!(is_problem(&resp), "GET {path}: problem+json");
    }
    let requests = server.get_json("/v1/queues/team%2Fsvc/requests").await;
    assert_eq!(
        requests["items"].as_array().unwrap().len(),
        0,
        "nothing was ingested"
    );
    server.stop().await;
}

#[tokio::test]
async fn scopes_are_enforced() {
    let server = Server::command_runner().await;
    let read_only = Server::token(&[Scope::Read]);
    let resp = server
        .http
        .post(server.url("/v1/queues/team%2Fsvc/ingest"))
        .bearer_auth(&read_only)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = server.get("/v1/admin/dead-letters", &[Scope::Read]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = server.get("/v1/admin/dead-letters", &[Scope::Admin]).await;
    assert_eq!(resp.status(), StatusCode::OK, "admin satisfies the gate");
    let admin = Server::token(&[Scope::Admin]);
    let resp = server
        .http
        .post(server.url("/v1/queues/team%2Fsvc/ingest"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "admin satisfies every gate"
    );
    let resp = server
        .http
        .get(server.url("/v1/queues"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

/// Reads SSE frames until `n` events arrived; returns (id, event) pairs.
async fn read_events(
    server: &Server,
    query: &str,
    last_event_id: Option<&str>,
    n: usize,
) -> Vec<(u64, String)> {
    let mut req = server
        .http
        .get(server.url(&format!("/v1/events{query}")))
        .bearer_auth(Server::token(&[Scope::Read]));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events arrive in time")
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse::<u64>().unwrap());
            let event = frame
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(|v| v.trim().to_owned());
            if let (Some(id), Some(event)) = (id, event) {
                out.push((id, event));
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_replays_then_resumes_exactly_once_in_order() {
    let server = Server::command_runner().await;
    server.ingest(None).await;
    server
        .eventually("/v1/queues/team%2Fsvc/last-green", "green", |b| {
            b["commit"].is_string()
        })
        .await;
    let page = server.get_json("/v1/changes?after=0&limit=1000").await;
    let total = page["items"].as_array().unwrap().len();
    assert!(total >= 5, "the pipeline wrote its changes ({total})");

    let all = read_events(&server, "?after=0", None, total).await;
    let ids: Vec<u64> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=total as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(all.iter().any(|(_, e)| e == "validation.recorded"));

    // Resume in the middle; then a live event arrives after the replay.
    let resume_at = (total / 2) as u64;
    let live = tokio::spawn({
        let http = server.http.clone();
        let url = server.url("/v1/queues/team%2Fsvc/ingest");
        let repo = server.repo.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            commit(&repo, "more", &[("more", "1")]);
            http.post(url)
                .bearer_auth(Server::token(&[Scope::Ingest]))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
        }
    });
    let resumed = read_events(
        &server,
        "",
        Some(&resume_at.to_string()),
        total - resume_at as usize + 1,
    )
    .await;
    live.await.unwrap();
    let ids: Vec<u64> = resumed.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (resume_at + 1..=total as u64 + 1).collect::<Vec<_>>(),
        "replay then live, no gap, no duplicate"
    );
    server.stop().await;
}

#[tokio::test]
async fn external_ci_reports_status() {
    let server = Server::start("[queue.build]\nrunner = \"external\"").await;
    server.ingest(None).await;
    let detail = server
        .eventually("/v1/queues/team%2Fsvc/requests/1", "a build", |b| {
            b["builds"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let build_id = detail["builds"][0]["id"].as_str().unwrap().to_owned();
    let report = |status: &str, scopes: &[Scope]| {
        server
            .http
            .post(server.url(&format!("/v1/builds/{build_id}/status")))
            .bearer_auth(Server::token(scopes))
            .json(&serde_json::json!({ "status": status, "url": "https://ci.example.com/1" }))
            .send()
    };
    assert_eq!(
        report("succeeded", &[Scope::Read]).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        report("exploded", &[Scope::BuildsReport])
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    let ok = report("succeeded", &[Scope::BuildsReport]).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.json::<serde_json::Value>().await.unwrap()["url"],
        "https://ci.example.com/1"
    );
    server
        .eventually("/v1/queues/team%2Fsvc/last-green", "green", |b| {
            b["commit"].is_string()
        })
        .await;
    assert_eq!(
        report("failed", &[Scope::BuildsReport])
            .await
            .unwrap()
            .status(),
        StatusCode::CONFLICT
    );
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_docs() {
    let server = Server::command_runner().await;
    server.ingest(None).await;
    server
        .eventually("/v1/queues/team%2Fsvc/last-green", "green", |b| {
            b["commit"].is_string()
        })
        .await;
    for (path, needle) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/openapi.json", "\"openapi\""),
        ("/docs", "swagger"),
    ] {
        let resp = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            resp.text().await.unwrap().to_lowercase().contains(needle),
            "{path}"
        );
    }
    let metrics = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "stovepipe_stage_deliveries_total",
        "stovepipe_ingest_total",
        "last_green_timestamp_seconds",
        "pipeline_latency_seconds",
        r#"stovepipe_row_cache_reads_total{entity="request",served="kept"}"#,
    ] {
        assert!(metrics.contains(name), "/metrics exposes {name}");
    }
    server.stop().await;
}
