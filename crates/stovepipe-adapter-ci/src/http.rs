//! The HTTP client the hosted-CI runners share, and the one place their
//! HTTP failures are classified.
//!
//! Classification, by what a retry could do:
//! - 429, 408, and 403 with `x-ratelimit-remaining: 0` or `retry-after`
//!   (GitHub's rate limits): `Unavailable` on every call: the CI refused the
//!   request before doing anything, so trying later is safe;
//! - 401/403: `Rejected`, naming the token to check;
//! - 5xx and transport errors after the request was sent: `Unavailable` on
//!   `status`/`cancel`, but `Rejected` on `trigger`: the build may have been
//!   created, and a blind retry would start a second one;
//! - connection failures (nothing was sent): `Unavailable` everywhere;
//! - 404 on `status`/`cancel`: `NotFound`; other 4xx: `Rejected`.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;
use stovepipe_entity::InvalidValue;
use stovepipe_ports::RunnerError;

/// Per-request bound: a hung CI API must not hold a pipeline worker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which kind of call failed: decides whether a 5xx may be retried.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    /// Creates a build: not idempotent.
    Trigger,
    /// Reads or cancels build `id`: safe to repeat.
    Query { id: &'a str },
}

/// An authenticated client for one CI API.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
    /// "GitHub", "Buildkite": for messages.
    system: &'static str,
    /// Where the token came from, for auth error messages.
    token_var: String,
}

impl Api {
    pub(crate) fn new(
        system: &'static str,
        base: String,
        token: &str,
        token_var: String,
        headers: &[(&'static str, &'static str)],
    ) -> Result<Self, RunnerError> {
        let mut map = HeaderMap::new();
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                RunnerError::Config(format!(
                    "the {system} token in {token_var} contains characters not allowed in a header"
                ))
            })?;
        auth.set_sensitive(true);
        map.insert(AUTHORIZATION, auth);
        map.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("stovepipe/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in headers {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let client = reqwest::Client::builder()
            .default_headers(map)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| RunnerError::Config(format!("cannot build the {system} client: {e}")))?;
        Ok(Self {
            client,
            base,
            system,
            token_var,
        })
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// Sends and classifies; `Ok` only for a 2xx answer.
    pub(crate) async fn send(
        &self,
        call: Call<'_>,
        what: &str,
        request: RequestBuilder,
    ) -> Result<Response, RunnerError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(call, what, &e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let rate_limited = is_rate_limited(response.headers());
        let body = response.text().await.unwrap_or_default();
        Err(self.status_error(call, what, status, rate_limited, &body))
    }

    /// Parses a 2xx body; a body that does not fit is `Invalid`.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        response: Response,
    ) -> Result<T, RunnerError> {
        let text = response.text().await.map_err(|e| {
            RunnerError::Unavailable(format!("{} answer to {what} was cut: {e}", self.system))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            RunnerError::Invalid(InvalidValue {
                kind: "CI API response",
                value: excerpt(&text),
                expected: format!("the {} answer to {what} ({e})", self.system),
            })
        })
    }

    fn transport_error(&self, call: Call<'_>, what: &str, e: &reqwest::Error) -> RunnerError {
        let system = self.system;
        match call {
            Call::Trigger if !e.is_connect() => RunnerError::Rejected(format!(
                "{system} did not answer {what} ({e}); the build may exist, so it is not retried \
                 automatically"
            )),
            _ => RunnerError::Unavailable(format!("{system} unreachable while {what}: {e}")),
        }
    }

    fn status_error(
        &self,
        call: Call<'_>,
        what: &str,
        status: StatusCode,
        rate_limited: bool,
        body: &str,
    ) -> RunnerError {
        let system = self.system;
        let code = status.as_u16();
        let body = excerpt(body);
        if code == 429 || code == 408 || (code == 403 && rate_limited) {
            return RunnerError::Unavailable(format!(
                "{system} rate limit or timeout while {what} (HTTP {code}); try again later: {body}"
            ));
        }
        if code == 401 || code == 403 {
            return RunnerError::Rejected(format!(
                "{system} refused the credentials while {what} (HTTP {code}): check the token in \
                 {}: {body}",
                self.token_var
            ));
        }
        match call {
            Call::Query { id } if code == 404 => RunnerError::NotFound(id.to_owned()),
            Call::Trigger if status.is_server_error() => RunnerError::Rejected(format!(
                "{system} failed while {what} (HTTP {code}); the build may exist, so it is not \
                 retried automatically: {body}"
            )),
            Call::Query { .. } if status.is_server_error() => RunnerError::Unavailable(format!(
                "{system} failed while {what} (HTTP {code}): {body}"
            )),
            _ => RunnerError::Rejected(format!("{system} refused {what} (HTTP {code}): {body}")),
        }
    }
}

fn is_rate_limited(headers: &HeaderMap) -> bool {
    let remaining_zero = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    remaining_zero || headers.contains_key("retry-after")
}

/// At most 300 characters of a response body, for error messages.
fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(300).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    s
}
