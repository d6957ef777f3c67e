//! Stovepipe's hook sink: delivers event envelopes to hook releases as
//! signed HTTP webhooks, and the helper receivers use to check them.
//!
//! Owns: [`WebhookSink`] (the [`HookSink`](stovepipe_ports::HookSink)
//! implementation: one `POST` per call, classified as delivered, retryable
//! or failed) and the signature scheme ([`sign`], [`verify_signature`]).
//!
//! Does not own: retries, backoff, which releases receive an event, or the
//! record of runs — those are the dispatcher's (in the application layer).
//! Depends only on the entity and port crates.
//!
//! # Wire format
//!
//! `POST <release url>`, `Content-Type: application/json`, the body is the
//! event envelope (`id`, `type`, `source`, `queue`, `occurred_at`, `data`),
//! with the headers
//!
//! - `Stovepipe-Event-Id`: the envelope id (`<type>/<subject>`); deliveries
//!   are at least once, so receivers must be idempotent on it;
//! - `Stovepipe-Event-Type`: the envelope type;
//! - `Stovepipe-Hook`: `<hook name>@<release version>`;
//! - `Stovepipe-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>`, present only when the release has a secret;
//! - the release's own headers (they cannot replace the ones above).
//!
//! 2xx is delivered; 408, 429, 5xx, a timeout or a connection error is
//! retryable; any other answer (including redirects, which are not
//! followed) fails the delivery at once.
//!
//! # Receiving a webhook
//!
//! 1. Read the raw body bytes **before** parsing them (the signature covers
//!    the exact bytes).
//! 2. Call [`verify_signature`] with the shared secret, the
//!    `Stovepipe-Signature` header, the body, the current Unix time and a
//!    tolerance (five minutes is a good default). Reject the request with
//!    401 when it fails: it is forged, altered or replayed late.
//! 3. Deduplicate on `Stovepipe-Event-Id`, act, and answer 2xx quickly
//!    (slow work belongs in the receiver's own queue: a timeout is retried).
//!
//! ```
//! use std::time::Duration;
//! use stovepipe_adapter_webhook::{sign, verify_signature};
//!
//! let body = br#"{"id":"validation.recorded/request/q/1"}"#;
//! // What Stovepipe sends at Unix time 1700000000:
//! let header = sign("s3cret", 1_700_000_000, body);
//! // What the receiver checks, ten seconds later:
//! let tolerance = Duration::from_secs(300);
//! assert!(verify_signature("s3cret", &header, body, 1_700_000_010, tolerance).is_ok());
//! assert!(verify_signature("wrong", &header, body, 1_700_000_010, tolerance).is_err());
//! ```

mod signature;
mod sink;

pub use signature::{SIGNATURE_HEADER, VerifyError, sign, verify_signature};
pub use sink::{WebhookError, WebhookSink};
