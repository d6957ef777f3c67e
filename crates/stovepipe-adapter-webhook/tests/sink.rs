//! The webhook sink against a real local HTTP receiver (wiremock): the
//! `hook_sink` contract suite, then what the suite does not own — the
//! signature as a receiver checks it, headers, timeouts, unreachable
//! receivers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures and helpers: a broken fixture must panic the test"
)]

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stovepipe_adapter_webhook::{WebhookSink, verify_signature};
use stovepipe_contract::SinkFixture;
use stovepipe_entity::{
    EventEnvelope, EventType, HookName, HookRelease, HookReleaseSpec, QueueName, Timestamp,
};
use stovepipe_ports::{Clock, DeliveryOutcome, HookSink, SystemClock};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A receiver per fixture; each URL is its own path, answered by a script.
struct Receiver {
    server: MockServer,
    sink: Arc<WebhookSink>,
    urls: AtomicU64,
}

#[async_trait]
impl SinkFixture for Receiver {
    fn sink(&self) -> Arc<dyn HookSink> {
        self.sink.clone()
    }

    async fn url_answering(&self, statuses: &[u16]) -> String {
        let n = self.urls.fetch_add(1, Ordering::Relaxed);
        let route = format!("/hook/{n}");
        // Mocks mounted earlier win while they last; each answers once, so
        // the answers come in script order.
        for status in statuses {
            Mock::given(method("POST"))
                .and(path(route.as_str()))
                .respond_with(ResponseTemplate::new(*status))
                .up_to_n_times(1)
                .mount(&self.server)
                .await;
        }
        format!("{}{route}", self.server.uri())
    }

    async fn received(&self, url: &str) -> Vec<EventEnvelope> {
        let route = url.trim_start_matches(&self.server.uri()).to_owned();
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == route)
            .map(|r| serde_json::from_slice(&r.body).expect("an envelope body"))
            .collect()
    }
}

fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock::default())
}

async fn receiver() -> Arc<dyn SinkFixture> {
    Arc::new(Receiver {
        server: MockServer::start().await,
        sink: Arc::new(WebhookSink::new(system_clock()).unwrap()),
        urls: AtomicU64::new(0),
    })
}

stovepipe_contract::contract_tests!(hook_sink, super::receiver);

fn release(url: &str, secret: Option<&str>) -> HookRelease {
    HookRelease {
        hook: HookName::new("deploy-bot").unwrap(),
        version: 3,
        spec: HookReleaseSpec {
            url: url.to_owned(),
            secret: secret.map(str::to_owned),
            headers: BTreeMap::from([
                ("X-Team".to_owned(), "payments".to_owned()),
                // Cannot replace a Stovepipe header.
                ("Stovepipe-Hook".to_owned(), "forged@9".to_owned()),
            ]),
            timeout_ms: 2_000,
            max_attempts: 3,
        },
        digest: "d".to_owned(),
        created_by: "tester".to_owned(),
        created_at: Timestamp(0),
    }
}

fn envelope() -> EventEnvelope {
    EventEnvelope {
        id: "validation.recorded/request/team/svc/7".to_owned(),
        event_type: EventType::ValidationRecorded,
        source: "stovepipe".to_owned(),
        queue: Some(QueueName::new("team/svc").unwrap()),
        occurred_at: Timestamp(1_700_000_000_000),
        data: serde_json::json!({ "green": true }),
    }
}

fn now_unix() -> i64 {
    system_clock().now().as_secs()
}

async fn answering(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn signed_delivery_carries_the_wire_format() {
    let server = answering(204).await;
    let sink = WebhookSink::new(system_clock()).unwrap();
    let got = sink
        .deliver(
            &release(&format!("{}/in", server.uri()), Some("s3cret")),
            &envelope(),
        )
        .await;
    assert_eq!(got, DeliveryOutcome::Delivered { status: 204 });

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let header = |name: &str| {
        r.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(
        header("stovepipe-event-id"),
        "validation.recorded/request/team/svc/7"
    );
    assert_eq!(header("stovepipe-event-type"), "validation.recorded");
    assert_eq!(header("stovepipe-hook"), "deploy-bot@3");
    assert_eq!(header("x-team"), "payments");
    assert_eq!(r.headers.get_all("stovepipe-hook").iter().count(), 1);

    let signature = header("stovepipe-signature");
    let tolerance = Duration::from_mins(5);
    verify_signature("s3cret", &signature, &r.body, now_unix(), tolerance)
        .expect("the receiver accepts the signature");
    assert!(verify_signature("other", &signature, &r.body, now_unix(), tolerance).is_err());
    let mut tampered = r.body.clone();
    tampered.push(b' ');
    assert!(verify_signature("s3cret", &signature, &tampered, now_unix(), tolerance).is_err());

    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["id"], "validation.recorded/request/team/svc/7");
    assert_eq!(body["type"], "validation.recorded");
    assert_eq!(body["source"], "stovepipe");
    assert_eq!(body["queue"], "team/svc");
    assert_eq!(body["occurred_at"], 1_700_000_000_000_i64);
    assert_eq!(body["data"]["green"], true);
}

#[tokio::test]
async fn no_secret_no_signature_header() {
    let server = answering(200).await;
    let sink = WebhookSink::new(system_clock()).unwrap();
    let got = sink
        .deliver(&release(&server.uri(), None), &envelope())
        .await;
    assert_eq!(got, DeliveryOutcome::Delivered { status: 200 });
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("stovepipe-signature").is_none());
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let sink = WebhookSink::new(system_clock()).unwrap();
    let mut r = release(&server.uri(), Some("k"));
    r.spec.timeout_ms = 100;
    let started = std::time::Instant::now();
    let got = sink.deliver(&r, &envelope()).await;
    assert!(
        matches!(got, DeliveryOutcome::Retryable { status: None, .. }),
        "{got:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by timeout_ms, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_retryable() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = WebhookSink::new(system_clock()).unwrap();
    let got = sink
        .deliver(
            &release(&format!("http://127.0.0.1:{port}/x"), None),
            &envelope(),
        )
        .await;
    assert!(
        matches!(got, DeliveryOutcome::Retryable { status: None, .. }),
        "{got:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_fail() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "http://example.com/"))
        .mount(&server)
        .await;
    let sink = WebhookSink::new(system_clock()).unwrap();
    let got = sink
        .deliver(&release(&server.uri(), Some("k")), &envelope())
        .await;
    assert!(
        matches!(
            got,
            DeliveryOutcome::Failed {
                status: Some(307),
                ..
            }
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn an_invalid_header_value_fails_without_sending() {
    let server = answering(200).await;
    let sink = WebhookSink::new(system_clock()).unwrap();
    let mut r = release(&server.uri(), None);
    r.spec
        .headers
        .insert("X-Bad".to_owned(), "line\nbreak".to_owned());
    let got = sink.deliver(&r, &envelope()).await;
    assert!(matches!(got, DeliveryOutcome::Failed { .. }), "{got:?}");
    assert!(server.received_requests().await.unwrap().is_empty());
}
