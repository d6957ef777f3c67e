//! The GitHub Actions runner against a wiremock stand-in for the REST API
//! (request and response shapes as documented for workflow dispatches and
//! workflow runs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers

mod common;

use common::{BASE_SHA, FakeScm, HEAD_SHA, config, request};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use stovepipe_adapter_ci::{Env, GithubActionsRunner};
use stovepipe_entity::{BuildId, BuildStatus, ProjectName, RunnerKind};
use stovepipe_ports::{BuildRunner, RunnerError};
use wiremock::matchers::{header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const DISPATCH: &str = "/repos/octo/mono/actions/workflows/stovepipe.yml/dispatches";
const RUNS: &str = "/repos/octo/mono/actions/workflows/stovepipe.yml/runs";

fn runner_with(server: &MockServer, extra: &[(&str, &str)]) -> GithubActionsRunner {
    let mut c = config("mono/main", RunnerKind::GithubActions);
    for (k, v) in [
        ("owner", "octo"),
        ("repo", "mono"),
        ("workflow", "stovepipe.yml"),
        ("token_env", "STOVEPIPE_TEST_GH"),
        ("api_url", server.uri().as_str()),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        c.build.settings.insert(k.into(), v.into());
    }
    let scm = FakeScm::new(std::env::temp_dir());
    GithubActionsRunner::new(
        &c,
        scm,
        &Env::from_pairs([("STOVEPIPE_TEST_GH", "ghp_secret")]),
    )
    .unwrap()
}

fn runner(server: &MockServer) -> GithubActionsRunner {
    runner_with(server, &[])
}

/// A workflow run as `GET .../actions/runs/{id}` returns it.
fn run_json(id: u64, title: &str, status: &str, conclusion: Option<&str>) -> Value {
    json!({
        "id": id,
        "name": title,
        "display_title": title,
        "run_number": 12,
        "event": "workflow_dispatch",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": 161_335,
        "head_branch": "main",
        "head_sha": HEAD_SHA,
        "html_url": format!("https://github.com/octo/mono/actions/runs/{id}"),
        "url": format!("https://api.github.com/repos/octo/mono/actions/runs/{id}"),
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:05Z",
    })
}

fn run_list(runs: &[Value]) -> Value {
    json!({ "total_count": runs.len(), "workflow_runs": runs })
}

fn id(s: &str) -> BuildId {
    BuildId::new(s).unwrap()
}

#[tokio::test]
async fn trigger_dispatches_the_workflow_and_resolves_the_run_lazily() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DISPATCH))
        .and(header("authorization", "Bearer ghp_secret"))
        .and(header("accept", "application/vnd.github+json"))
        .and(header("x-github-api-version", "2022-11-28"))
        .and(header_exists("user-agent"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    // GitHub has not created the run yet.
    let empty = Mock::given(method("GET"))
        .and(path(RUNS))
        .and(query_param("event", "workflow_dispatch"))
        .and(query_param("per_page", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(run_list(&[])))
        .mount_as_scoped(&server)
        .await;
    let gh = runner(&server);
    let build = gh.trigger(&request("mono/main", true)).await.unwrap();

    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    let correlation = body["inputs"]["stovepipe_request"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        body,
        json!({
            "ref": "main",
            "inputs": {
                "stovepipe_head": HEAD_SHA,
                "stovepipe_base": BASE_SHA,
                "stovepipe_queue": "mono/main",
                "stovepipe_request": correlation,
            }
        })
    );
    assert!(correlation.starts_with("stovepipe-"), "{correlation}");
    let prefix = "gha-octo/mono/dispatch/";
    assert!(build.as_str().starts_with(prefix), "{build}");
    assert!(
        build.as_str().ends_with(&format!("/{correlation}")),
        "{build}"
    );
    // The listing looks for runs created since (shortly before) the dispatch.
    let listing = &server.received_requests().await.unwrap()[1];
    let created = listing
        .url
        .query_pairs()
        .find(|(k, _)| k == "created")
        .unwrap()
        .1
        .into_owned();
    assert!(created.starts_with(">=20"), "{created}");

    // Still not visible: accepted.
    let report = gh.status(&build).await.unwrap();
    assert_eq!(report.status, Some(BuildStatus::Accepted));
    assert_eq!(report.metadata["github_correlation_id"], correlation);
    drop(empty);

    // The run shows up, named by `run-name: ${{ inputs.stovepipe_request }}`.
    Mock::given(method("GET"))
        .and(path(RUNS))
        .respond_with(ResponseTemplate::new(200).set_body_json(run_list(&[
            run_json(1, "stovepipe-someone-else", "completed", Some("failure")),
            run_json(42, &correlation, "completed", Some("success")),
        ])))
        .mount(&server)
        .await;
    let report = gh.status(&build).await.unwrap();
    assert_eq!(report.status, Some(BuildStatus::Succeeded));
    assert_eq!(
        report.url.as_deref(),
        Some("https://github.com/octo/mono/actions/runs/42")
    );
    assert_eq!(report.metadata["github_run_id"], "42");
}

#[tokio::test]
async fn a_full_build_sends_an_empty_base_and_a_project_build_names_its_project() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DISPATCH))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNS))
        .respond_with(ResponseTemplate::new(200).set_body_json(run_list(&[])))
        .mount(&server)
        .await;
    let gh = runner_with(&server, &[("ref", "ci-runner")]);
    let mut req = request("mono/main", false);
    req.project = ProjectName::new("payments").unwrap();
    gh.trigger(&req).await.unwrap();
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(body["ref"], "ci-runner");
    assert_eq!(body["inputs"]["stovepipe_base"], "");
    assert_eq!(body["inputs"]["stovepipe_project"], "payments");
}

/// A stateful stand-in for GitHub: a dispatch creates run 77 named after
/// the `stovepipe_request` input, as `run-name` would.
#[derive(Clone, Default)]
struct FakeGithub {
    dispatched: Arc<Mutex<Option<String>>>,
}

impl Respond for FakeGithub {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.method.as_str() == "POST" {
            let body: Value = request.body_json().unwrap();
            let title = body["inputs"]["stovepipe_request"]
                .as_str()
                .unwrap()
                .to_owned();
            *self.dispatched.lock().unwrap() = Some(title);
            return ResponseTemplate::new(204);
        }
        let runs = self
            .dispatched
            .lock()
            .unwrap()
            .iter()
            .map(|title| run_json(77, title, "in_progress", None))
            .collect::<Vec<_>>();
        ResponseTemplate::new(200).set_body_json(run_list(&runs))
    }
}

#[tokio::test]
async fn a_run_visible_at_once_gets_a_run_id() {
    let server = MockServer::start().await;
    let github = FakeGithub::default();
    Mock::given(path(DISPATCH))
        .respond_with(github.clone())
        .mount(&server)
        .await;
    Mock::given(path(RUNS))
        .respond_with(github.clone())
        .mount(&server)
        .await;
    let gh = runner(&server);
    let build = gh.trigger(&request("mono/main", true)).await.unwrap();
    assert_eq!(build.as_str(), "gha-octo/mono/77");
}

#[tokio::test]
async fn a_failed_lookup_after_dispatch_still_returns_the_build() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DISPATCH))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNS))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let gh = runner(&server);
    // The build exists once the dispatch is accepted: a failed lookup only
    // means the run is resolved later.
    let build = gh.trigger(&request("mono/main", true)).await.unwrap();
    assert!(
        build.as_str().starts_with("gha-octo/mono/dispatch/"),
        "{build}"
    );
}

#[tokio::test]
async fn dispatch_with_run_details_returns_the_run_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DISPATCH))
        .and(wiremock::matchers::body_partial_json(
            json!({"return_run_details": true}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "workflow_run_id": 987_654,
            "run_url": "https://api.github.com/repos/octo/mono/actions/runs/987654",
            "html_url": "https://github.com/octo/mono/actions/runs/987654",
        })))
        .expect(1)
        .mount(&server)
        .await;
    let gh = runner_with(&server, &[("return_run_details", "true")]);
    let build = gh.trigger(&request("mono/main", true)).await.unwrap();
    assert_eq!(build.as_str(), "gha-octo/mono/987654");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_run_state_maps_in_one_table() {
    use BuildStatus::{Accepted, Cancelled, Failed, Running, Succeeded};
    let cases: &[(&str, Option<&str>, BuildStatus)] = &[
        ("queued", None, Accepted),
        ("waiting", None, Accepted),
        ("requested", None, Accepted),
        ("pending", None, Accepted),
        ("in_progress", None, Running),
        ("completed", Some("success"), Succeeded),
        ("completed", Some("failure"), Failed),
        ("completed", Some("timed_out"), Failed),
        ("completed", Some("startup_failure"), Failed),
        ("completed", Some("action_required"), Failed),
        ("completed", Some("cancelled"), Cancelled),
        ("completed", Some("skipped"), Cancelled),
        ("completed", Some("neutral"), Cancelled),
        ("completed", Some("stale"), Cancelled),
    ];
    let server = MockServer::start().await;
    for (n, (status, conclusion, _)) in cases.iter().enumerate() {
        Mock::given(method("GET"))
            .and(path(format!("/repos/octo/mono/actions/runs/{}", n + 1)))
            .and(header("authorization", "Bearer ghp_secret"))
            .respond_with(ResponseTemplate::new(200).set_body_json(run_json(
                n as u64 + 1,
                "t",
                status,
                *conclusion,
            )))
            .mount(&server)
            .await;
    }
    let gh = runner(&server);
    for (n, (status, conclusion, expected)) in cases.iter().enumerate() {
        let report = gh
            .status(&id(&format!("gha-octo/mono/{}", n + 1)))
            .await
            .unwrap();
        assert_eq!(report.status, Some(*expected), "{status}/{conclusion:?}");
        assert_eq!(
            report.url,
            Some(format!(
                "https://github.com/octo/mono/actions/runs/{}",
                n + 1
            ))
        );
    }
}

#[tokio::test]
async fn unknown_states_are_invalid_never_guessed() {
    let server = MockServer::start().await;
    for (n, status, conclusion) in [
        (1, "teleporting", None),
        (2, "completed", Some("exploded")),
        (3, "completed", None),
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/repos/octo/mono/actions/runs/{n}")))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(run_json(n, "t", status, conclusion)),
            )
            .mount(&server)
            .await;
    }
    let gh = runner(&server);
    for (n, named) in [(1, "teleporting"), (2, "exploded"), (3, "completed/null")] {
        match gh.status(&id(&format!("gha-octo/mono/{n}"))).await {
            Err(RunnerError::Invalid(e)) => assert!(e.to_string().contains(named), "{e}"),
            other => panic!("run {n}: expected Invalid, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn cancel_posts_and_is_idempotent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/mono/actions/runs/42/cancel"))
        .and(header("authorization", "Bearer ghp_secret"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/repos/octo/mono/actions/runs/43/cancel"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "message": "Cannot cancel a workflow run that is completed.",
        })))
        .mount(&server)
        .await;
    let gh = runner(&server);
    gh.cancel(&id("gha-octo/mono/42")).await.unwrap();
    gh.cancel(&id("gha-octo/mono/43")).await.unwrap();
}

#[tokio::test]
async fn foreign_and_missing_builds_are_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/mono/actions/runs/404"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .mount(&server)
        .await;
    let gh = runner(&server);
    for build in [
        "gha-octo/mono/404",
        "gha-octo/other/1",
        "gha-octo/mono/dispatch/x/y",
        "bk-acme/mono/1",
    ] {
        assert!(
            matches!(gh.status(&id(build)).await, Err(RunnerError::NotFound(_))),
            "{build}"
        );
    }
}

#[tokio::test]
async fn bad_credentials_are_rejected_with_a_hint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DISPATCH))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "message": "Bad credentials",
            "documentation_url": "https://docs.github.com/rest",
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/mono/actions/runs/1"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"})),
        )
        .mount(&server)
        .await;
    let gh = runner(&server);
    let err = gh.trigger(&request("mono/main", true)).await.unwrap_err();
    assert!(
        matches!(&err, RunnerError::Rejected(m) if m.contains("STOVEPIPE_TEST_GH") && m.contains("401")),
        "{err}"
    );
    let err = gh.status(&id("gha-octo/mono/1")).await.unwrap_err();
    assert!(matches!(err, RunnerError::Rejected(_)), "{err}");
}

#[tokio::test]
async fn rate_limits_are_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/mono/actions/runs/1"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/mono/actions/runs/2"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", "1767225600")
                .set_body_json(json!({"message": "API rate limit exceeded"})),
        )
        .mount(&server)
        .await;
    let gh = runner(&server);
    for n in [1, 2] {
        let err = gh
            .status(&id(&format!("gha-octo/mono/{n}")))
            .await
            .unwrap_err();
        assert!(matches!(err, RunnerError::Unavailable(_)), "{err}");
    }
}

#[tokio::test]
async fn server_errors_are_permanent_on_trigger_and_retryable_on_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DISPATCH))
        .respond_with(ResponseTemplate::new(502))
        .expect(1) // never retried behind the caller's back
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/mono/actions/runs/1"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let gh = runner(&server);
    let err = gh.trigger(&request("mono/main", true)).await.unwrap_err();
    assert!(
        matches!(&err, RunnerError::Rejected(m) if m.contains("may exist")),
        "{err}"
    );
    let err = gh.status(&id("gha-octo/mono/1")).await.unwrap_err();
    assert!(matches!(err, RunnerError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn an_unreachable_api_is_retryable() {
    // Bind then drop a listener: nothing accepts on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = config("q", RunnerKind::GithubActions);
    for (k, v) in [
        ("owner", "octo"),
        ("repo", "mono"),
        ("workflow", "1234"),
        ("api_url", &format!("http://127.0.0.1:{port}")),
    ] {
        c.build.settings.insert(k.into(), v.into());
    }
    let gh = GithubActionsRunner::new(
        &c,
        FakeScm::new(std::env::temp_dir()),
        &Env::from_pairs([("GITHUB_TOKEN", "t")]),
    )
    .unwrap();
    let err = gh.status(&id("gha-octo/mono/1")).await.unwrap_err();
    assert!(matches!(err, RunnerError::Unavailable(_)), "{err}");
    // Nothing was sent, so a refused connection is retryable on trigger too.
    let err = gh.trigger(&request("q", false)).await.unwrap_err();
    assert!(matches!(err, RunnerError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn missing_settings_name_the_key() {
    let env = Env::from_pairs([("GITHUB_TOKEN", "t")]);
    let scm = FakeScm::new(std::env::temp_dir());
    let mut c = config("q", RunnerKind::GithubActions);
    let err = GithubActionsRunner::new(&c, scm.clone(), &env).unwrap_err();
    assert!(
        matches!(&err, RunnerError::Config(m) if m.contains("queue.build.settings.owner")),
        "{err}"
    );
    for (k, v) in [("owner", "octo"), ("repo", "mono"), ("workflow", "ci.yml")] {
        c.build.settings.insert(k.into(), v.into());
    }
    let err =
        GithubActionsRunner::new(&c, scm.clone(), &Env::from_pairs([("X", "y")])).unwrap_err();
    assert!(
        matches!(&err, RunnerError::Config(m) if m.contains("GITHUB_TOKEN")),
        "{err}"
    );
    c.build.settings.insert("repo".into(), "a/b".into());
    let err = GithubActionsRunner::new(&c, scm, &env).unwrap_err();
    assert!(
        matches!(&err, RunnerError::Config(m) if m.contains("queue.build.settings.repo")),
        "{err}"
    );
}
