//! Problem documents keep the detail that names the bad value, whether the
//! operation or the framework refused the request.

#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

mod common;

use common::Server;
use stovepipe_server::auth::Scope;

async fn problem(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{status}: {content_type}"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    (status, body["detail"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn details_name_the_bad_value() {
    let server = Server::command_runner().await;
    let cases: [(&str, u16, &[&str]); 5] = [
        ("/v1/queues/a%20b", 400, &["\"a b\"", "[A-Za-z0-9._/-]"]),
        ("/v1/queues/nope", 404, &["nope"]),
        (
            "/v1/queues/team%2Fsvc/requests?cursor=zzz",
            400,
            &["\"zzz\""],
        ),
        ("/v1/queues/team%2Fsvc/commits?limit=0", 400, &["limit"]),
        (
            "/v1/queues/team%2Fsvc/greenness?rev=0123abc",
            404,
            &["0123abc"],
        ),
    ];
    for (path, want, needles) in cases {
        let (status, detail) = problem(server.get(path, &[Scope::Read]).await).await;
        assert_eq!(status, want, "{path}: {detail}");
        for needle in needles {
            assert!(
                detail.contains(needle),
                "{path}: detail {detail:?} should mention {needle}"
            );
        }
    }
    let resp = server
        .http
        .post(server.url("/v1/queues/team%2Fsvc/ingest"))
        .bearer_auth(Server::token(&[Scope::Ingest]))
        .json(&serde_json::json!({"rev": null, "surprise": 1}))
        .send()
        .await
        .unwrap();
    let (status, detail) = problem(resp).await;
    assert_eq!(status, 400);
    assert!(detail.contains("surprise"), "unknown field named: {detail}");
    server.stop().await;
}

#[tokio::test]
async fn an_empty_last_event_id_is_no_cursor() {
    let server = Server::command_runner().await;
    let resp = server
        .http
        .get(server.url("/v1/events"))
        .bearer_auth(Server::token(&[Scope::Read]))
        .header("Last-Event-ID", "")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bad = server
        .http
        .get(server.url("/v1/events"))
        .bearer_auth(Server::token(&[Scope::Read]))
        .header("Last-Event-ID", "seven")
        .send()
        .await
        .unwrap();
    let (status, detail) = problem(bad).await;
    assert_eq!(status, 400);
    assert!(detail.contains("seven"), "{detail}");
    server.stop().await;
}
