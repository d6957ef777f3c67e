//! Contract of `HookSink`: one attempt per call, classified by the
//! receiver's answer (2xx delivered; 408, 429 and 5xx retryable; any other
//! answer failed, each with its status), and the envelope arrives intact.
//!
//! The fixture scripts receivers (see [`SinkFixture`]): a real adapter's
//! fixture runs a local HTTP receiver. Does not own: signatures, headers,
//! timeouts against a stalled receiver (the webhook adapter's own tests).

use crate::fixtures::{SinkFixture, T0, queue_a};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use stovepipe_entity::{EventEnvelope, EventType, HookName, HookRelease, HookReleaseSpec};
use stovepipe_ports::DeliveryOutcome;

/// The suite runs against a sink and scripted receivers.
pub type Fixture = Arc<dyn SinkFixture>;

crate::suite!($, hook_sink, hook_sink_tests, Fixture, [
    success_statuses_are_delivered,
    retryable_statuses_are_retryable,
    other_statuses_fail,
    one_attempt_per_call,
    successive_deliveries_get_successive_answers,
    envelope_arrives_intact,
]);

fn release(url: &str) -> HookRelease {
    HookRelease {
        hook: HookName::new("contract-hook").expect("valid hook name"),
        version: 1,
        spec: HookReleaseSpec {
            url: url.to_owned(),
            secret: Some("contract-secret".to_owned()),
            headers: BTreeMap::new(),
            timeout_ms: 10_000,
            max_attempts: 3,
        },
        digest: "contract-digest".to_owned(),
        created_by: "contract".to_owned(),
        created_at: T0,
    }
}

fn envelope(id: &str) -> EventEnvelope {
    EventEnvelope {
        id: id.to_owned(),
        event_type: EventType::ValidationRecorded,
        source: "stovepipe/contract".to_owned(),
        queue: Some(queue_a()),
        occurred_at: T0,
        data: json!({
            "uri": "contract://repo/c1",
            "degree": 1.0,
            "nested": { "list": [1, 2, 3], "text": "snow ☃ \"quoted\"" },
        }),
    }
}

/// Delivers one envelope to a receiver answering `status`.
async fn deliver_answered(fx: &Fixture, status: u16) -> DeliveryOutcome {
    let url = fx.url_answering(&[status]).await;
    fx.sink()
        .deliver(&release(&url), &envelope(&format!("evt-{status}")))
        .await
}

async fn success_statuses_are_delivered(fx: Fixture) {
    for status in [200, 201, 202, 204] {
        let got = deliver_answered(&fx, status).await;
        assert_eq!(
            got,
            DeliveryOutcome::Delivered { status },
            "answer {status}"
        );
    }
}

async fn retryable_statuses_are_retryable(fx: Fixture) {
    for status in [408, 429, 500, 502, 503] {
        let got = deliver_answered(&fx, status).await;
        assert!(
            matches!(got, DeliveryOutcome::Retryable { status: Some(s), .. } if s == status),
            "answer {status} must be Retryable with its status, got {got:?}"
        );
    }
}

async fn other_statuses_fail(fx: Fixture) {
    for status in [400, 401, 403, 404, 410, 422] {
        let got = deliver_answered(&fx, status).await;
        assert!(
            matches!(got, DeliveryOutcome::Failed { status: Some(s), .. } if s == status),
            "answer {status} must be Failed with its status, got {got:?}"
        );
    }
}

async fn one_attempt_per_call(fx: Fixture) {
    let url = fx.url_answering(&[503, 500, 200]).await;
    let got = fx.sink().deliver(&release(&url), &envelope("evt-1")).await;
    assert!(
        matches!(
            got,
            DeliveryOutcome::Retryable {
                status: Some(503),
                ..
            }
        ),
        "got {got:?}"
    );
    assert_eq!(
        fx.received(&url).await.len(),
        1,
        "a sink makes one attempt per call; retrying is the dispatcher's job"
    );
}

async fn successive_deliveries_get_successive_answers(fx: Fixture) {
    let url = fx.url_answering(&[500, 404, 200]).await;
    let sink = fx.sink();
    let r = release(&url);
    let first = sink.deliver(&r, &envelope("evt-1")).await;
    let second = sink.deliver(&r, &envelope("evt-1")).await;
    let third = sink.deliver(&r, &envelope("evt-1")).await;
    assert!(
        matches!(
            first,
            DeliveryOutcome::Retryable {
                status: Some(500),
                ..
            }
        ),
        "{first:?}"
    );
    assert!(
        matches!(
            second,
            DeliveryOutcome::Failed {
                status: Some(404),
                ..
            }
        ),
        "{second:?}"
    );
    assert_eq!(third, DeliveryOutcome::Delivered { status: 200 });
    assert_eq!(fx.received(&url).await.len(), 3);
}

async fn envelope_arrives_intact(fx: Fixture) {
    let url = fx.url_answering(&[200, 200]).await;
    let sink = fx.sink();
    let sent = [envelope("evt-a"), envelope("evt-b")];
    for e in &sent {
        assert_eq!(
            sink.deliver(&release(&url), e).await,
            DeliveryOutcome::Delivered { status: 200 }
        );
    }
    let got = fx.received(&url).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for (got, sent) in got.iter().zip(&sent) {
        assert_eq!(got.id, sent.id);
        assert_eq!(got.event_type, sent.event_type);
        assert_eq!(got.data, sent.data);
        assert_eq!(got.source, sent.source);
    }
}
