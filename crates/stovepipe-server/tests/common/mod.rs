//! Test support: throw-away git repositories and a server started in
//! process on a free port.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stovepipe_ports::SystemClock;
use stovepipe_server::auth::{Scope, mint_token};
use stovepipe_server::config::Settings;
use stovepipe_server::serve::{Running, start};

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository whose `ci.sh` passes unless a file `BROKEN` exists.
pub fn repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("ci.sh"),
        "echo building\ntest ! -f BROKEN && echo all green\n",
    )
    .unwrap();
    commit(&repo, "initial", &[]);
    repo
}

/// Commits `files` (path, content; content "" deletes) and returns the sha.
pub fn commit(repo: &Path, title: &str, files: &[(&str, &str)]) -> String {
    for (path, content) in files {
        if content.is_empty() {
            let _ = std::fs::remove_file(repo.join(path));
        } else {
            std::fs::write(repo.join(path), content).unwrap();
        }
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "--allow-empty", "-m", title]);
    git(repo, &["rev-parse", "HEAD"])
}

pub fn config(dir: &Path, repo: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data}"
drain_timeout = "5s"
[database]
url = "memory:"
[messaging]
backend = "memory"
[auth]
hs256_secret = "{SECRET}"
[[queue]]
name = "team/svc"
repo = "{repo}"
promotion_ref = "verified-main"
poll_interval = "0s"
gate_wait_delay = "50ms"
poll_delay_accepted = "50ms"
poll_delay_running = "50ms"
{extra}
"#,
        data = dir.join("data").display(),
        repo = repo.display(),
    )
}

pub struct Server {
    pub running: Option<Running>,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl Server {
    pub async fn start(build: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let settings = Settings::from_toml(&config(dir.path(), &repo, build)).unwrap();
        let running = start(settings, Arc::new(SystemClock::default()))
            .await
            .unwrap();
        let base = format!("http://{}", running.addr);
        Self {
            running: Some(running),
            base,
            http: reqwest::Client::new(),
            dir,
            repo,
        }
    }

    pub async fn command_runner() -> Self {
        Self::start("[queue.build]\nrunner = \"command\"\ncommand = \"sh ci.sh\"\ntimeout = \"1m\"")
            .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token(scopes: &[Scope]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        mint_token(
            SECRET,
            "stovepipe",
            "tester",
            scopes,
            Duration::from_mins(10),
            now,
        )
        .unwrap()
    }

    pub async fn get(&self, path: &str, scopes: &[Scope]) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(Self::token(scopes))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = self.get(path, &[Scope::Read]).await;
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn ingest(&self, rev: Option<&str>) -> reqwest::Response {
        self.http
            .post(self.url("/v1/queues/team%2Fsvc/ingest"))
            .bearer_auth(Self::token(&[Scope::Ingest]))
            .json(&serde_json::json!({ "rev": rev }))
            .send()
            .await
            .unwrap()
    }

    /// Polls `path` until `done` holds (20 s deadline).
    pub async fn eventually(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let resp = self.get(path, &[Scope::Read]).await;
            if resp.status().is_success() {
                let body: serde_json::Value = resp.json().await.unwrap();
                if done(&body) {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} at {path}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }
}
