//! [`WebhookSink`]: one signed `POST` per delivery, classified.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use stovepipe_entity::{EventEnvelope, HookRelease};
use stovepipe_ports::{Clock, DeliveryOutcome, HookSink};
use thiserror::Error;
use tracing::debug;

use crate::signature::{SIGNATURE_HEADER, sign};

/// The sink could not be built.
#[derive(Debug, Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct WebhookError(String);

/// Delivers envelopes over HTTP. One client is shared by every delivery, so
/// connections to a receiver are reused; each request is bounded by its
/// release's `timeout_ms`.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl WebhookSink {
    /// A sink signing with timestamps from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            // A redirect is an answer, not a new destination: following it
            // would send a signed event somewhere the release does not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stovepipe-webhook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError(e.to_string()))?;
        Ok(Self { client, clock })
    }

    fn headers(release: &HookRelease, envelope: &EventEnvelope) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::new();
        // The release's own headers first, so the ones below always win.
        for (name, value) in &release.spec.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header name {name:?}: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("header {name} value: {e}"))?;
            map.insert(name, value);
        }
        let mut set = |name: &'static str, value: String| -> Result<(), String> {
            let value = HeaderValue::from_str(&value).map_err(|e| format!("header {name}: {e}"))?;
            map.insert(HeaderName::from_static(name), value);
            Ok(())
        };
        set("content-type", "application/json".to_owned())?;
        set("stovepipe-event-id", envelope.id.clone())?;
        set(
            "stovepipe-event-type",
            envelope.event_type.as_str().to_owned(),
        )?;
        set(
            "stovepipe-hook",
            format!("{}@{}", release.hook, release.version),
        )?;
        Ok(map)
    }
}

/// What an HTTP status means for a delivery.
fn classify(status: u16) -> DeliveryOutcome {
    match status {
        200..=299 => DeliveryOutcome::Delivered { status },
        408 | 429 | 500..=599 => DeliveryOutcome::Retryable {
            status: Some(status),
            error: format!("receiver answered {status}"),
        },
        _ => DeliveryOutcome::Failed {
            status: Some(status),
            error: format!("receiver answered {status}"),
        },
    }
}

#[async_trait]
impl HookSink for WebhookSink {
    async fn deliver(&self, release: &HookRelease, envelope: &EventEnvelope) -> DeliveryOutcome {
        let failed = |error: String| DeliveryOutcome::Failed {
            status: None,
            error,
        };
        let body = match serde_json::to_vec(envelope) {
            Ok(b) => b,
            Err(e) => return failed(format!("cannot serialise the envelope: {e}")),
        };
        let mut headers = match Self::headers(release, envelope) {
            Ok(h) => h,
            Err(e) => return failed(e),
        };
        if let Some(secret) = &release.spec.secret {
            let value = sign(secret, self.clock.now().as_secs(), &body);
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(SIGNATURE_HEADER, v);
                }
                Err(e) => return failed(format!("signature header: {e}")),
            }
        }
        let timeout = Duration::from_millis(u64::from(release.spec.timeout_ms));
        let sent = self
            .client
            .post(&release.spec.url)
            .headers(headers)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                debug!(hook = %release.hook, version = release.version, event = %envelope.id, status, "webhook answered");
                classify(status)
            }
            // A URL reqwest cannot even build a request for will never work.
            Err(e) if e.is_builder() => failed(format!("cannot send to {}: {e}", release.spec.url)),
            Err(e) if e.is_timeout() => DeliveryOutcome::Retryable {
                status: None,
                error: format!("no answer within {} ms", release.spec.timeout_ms),
            },
            // Connection refused, reset, DNS, TLS…: the receiver may be back
            // later.
            Err(e) => DeliveryOutcome::Retryable {
                status: None,
                error: format!("cannot reach {}: {e}", release.spec.url),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(204), DeliveryOutcome::Delivered { status: 204 });
        for s in [408, 429, 500, 599] {
            assert!(
                matches!(classify(s), DeliveryOutcome::Retryable { status: Some(x), .. } if x == s)
            );
        }
        for s in [301, 400, 404, 422, 600] {
            assert!(
                matches!(classify(s), DeliveryOutcome::Failed { status: Some(x), .. } if x == s)
            );
        }
    }
}
