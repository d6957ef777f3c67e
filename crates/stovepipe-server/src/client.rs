//! The command-line client: `ingest`, `status`, `watch` talk to a running
//! server over its HTTP API, like any other client.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use serde_json::Value;

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Percent-encodes a queue name for a path segment (`/` → `%2F`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Self {
        Self {
            base: server.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn json(&self, builder: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let resp = builder
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            let detail = body
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or("(no detail)");
            bail!("{status}: {detail}");
        }
        Ok((status, body))
    }

    pub async fn ingest(&self, queue: &str, rev: Option<&str>) -> anyhow::Result<Value> {
        let path = format!("/v1/queues/{}/ingest", encode_segment(queue));
        let body = serde_json::json!({ "rev": rev });
        Ok(self
            .json(self.request(reqwest::Method::POST, &path).json(&body))
            .await?
            .1)
    }

    pub async fn queues(&self) -> anyhow::Result<Value> {
        Ok(self
            .json(self.request(reqwest::Method::GET, "/v1/queues"))
            .await?
            .1)
    }

    pub async fn commits(&self, queue: &str, limit: u32) -> anyhow::Result<Value> {
        let path = format!("/v1/queues/{}/commits?limit={limit}", encode_segment(queue));
        Ok(self
            .json(self.request(reqwest::Method::GET, &path))
            .await?
            .1)
    }

    /// Prints the event stream until it ends; resumes from `after`.
    pub async fn watch(&self, after: Option<u64>) -> anyhow::Result<()> {
        let path = after.map_or_else(
            || "/v1/events".to_owned(),
            |a| format!("/v1/events?after={a}"),
        );
        let resp = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(
                &chunk.context("event stream broke")?,
            ));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                if let Some(line) = render_event(&frame) {
                    println!("{line}");
                }
            }
        }
        Ok(())
    }
}

/// One SSE frame as a terminal line: `seq  type  subject`.
fn render_event(frame: &str) -> Option<String> {
    let (mut id, mut event, mut data) = ("", "", "");
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = v.trim();
        }
    }
    if event.is_empty() {
        return None;
    }
    let parsed: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let subject = parsed.get("subject").and_then(Value::as_str).unwrap_or("");
    let queue = parsed.get("queue").and_then(Value::as_str).unwrap_or("");
    Some(format!("{id:>6}  {event:<28} {queue:<20} {subject}"))
}

/// The queue table of `stovepipe status`.
pub fn render_queues(body: &Value) -> String {
    let mut out = format!(
        "{:<28} {:<12} {:>9}  {}\n",
        "QUEUE", "LAST GREEN", "IN FLIGHT", "LATEST REQUEST"
    );
    for q in body
        .get("queues")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = q.get("name").and_then(Value::as_str).unwrap_or("");
        let green = q
            .pointer("/last_green/commit")
            .and_then(Value::as_str)
            .map_or_else(|| "-".to_owned(), |c| c.chars().take(10).collect());
        let in_flight = q.get("in_flight").and_then(Value::as_u64).unwrap_or(0);
        let latest = q
            .get("latest_request_id")
            .and_then(Value::as_str)
            .unwrap_or("-");
        let _ = writeln!(out, "{name:<28} {green:<12} {in_flight:>9}  {latest}");
    }
    out
}

/// One queue's recent commits for `stovepipe status QUEUE`.
pub fn render_commits(body: &Value) -> String {
    let mut out = format!(
        "{:<10} {:<14} {:<8} {}\n",
        "COMMIT", "STATUS", "DEGREE", "TITLE"
    );
    for c in body
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let commit: String = c
            .get("commit")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(10)
            .collect();
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        let degree = c
            .get("degree")
            .and_then(Value::as_f64)
            .map_or_else(|| "-".to_owned(), |d| format!("{d:.2}"));
        let title = c.get("title").and_then(Value::as_str).unwrap_or("");
        let _ = writeln!(out, "{commit:<10} {status:<14} {degree:<8} {title}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_percent_encoded() {
        assert_eq!(encode_segment("monorepo/main"), "monorepo%2Fmain");
        assert_eq!(encode_segment("a.b_c-d"), "a.b_c-d");
    }

    #[test]
    fn sse_frames_render() {
        let frame = "id: 7\nevent: validation.recorded\ndata: {\"subject\":\"request/q/1\",\"queue\":\"q\"}\n\n";
        let line = render_event(frame).unwrap();
        assert!(
            line.contains("validation.recorded") && line.contains("request/q/1"),
            "{line}"
        );
        assert_eq!(render_event(": keep-alive\n\n"), None);
    }
}
