//! The api bench's HTTP clients: one keep-alive HTTP/1.1 connection each,
//! driven through hyper's connection API.
//!
//! The clients run in the bench's process, beside the server, on the same
//! cores, and the ratio they measure is against `pgbench -S`, whose client
//! is libpq: a few microseconds of CPU per transaction. reqwest's pooled
//! client cost about 25 µs per request (a quarter of the process's CPU on
//! an unvalidated read, docs/benchmarks.md, nineteenth session of
//! 2026-12-07), CPU the server then did not have. A request here is a
//! request head written to a connection the client holds and its response
//! read back, nothing more.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// One request, as every client sends it: its method, its path and query,
/// and a JSON body for a POST.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path_and_query: String,
    pub json: Option<Bytes>,
}

impl Call {
    pub fn get(path_and_query: String) -> Self {
        Self {
            method: Method::GET,
            path_and_query,
            json: None,
        }
    }

    pub fn post(path_and_query: String, json: &serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            path_and_query,
            json: Some(Bytes::from(json.to_string())),
        }
    }
}

/// A client's connection to the server, with the bearer token it sends.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    authorization: HeaderValue,
}

impl Connection {
    pub async fn open(addr: SocketAddr, token: &str) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = handshake(TokioIo::new(stream)).await?;
        // Drives the connection until the sender is dropped.
        tokio::spawn(connection);
        Ok(Self {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
            authorization: HeaderValue::from_str(&format!("Bearer {token}"))?,
        })
    }

    /// Sends `call` and reads its whole response: an error unless the
    /// status is a success.
    pub async fn send(&mut self, call: &Call) -> anyhow::Result<Bytes> {
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(call.path_and_query.as_str())
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, self.authorization.clone());
        if call.json.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = request.body(Full::new(call.json.clone().unwrap_or_default()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "HTTP {status} for {} {}: {}",
                call.method,
                call.path_and_query,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }

    /// Sends `call` and parses its JSON answer.
    pub async fn json(&mut self, call: &Call) -> anyhow::Result<serde_json::Value> {
        let body = self.send(call).await?;
        serde_json::from_slice(&body).context("the answer is not JSON")
    }
}
