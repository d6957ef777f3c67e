//! End to end: the real `stovepipe` binary, a real git repository, the
//! command runner, SQLite (and Postgres when `STOVEPIPE_TEST_POSTGRES_URL`
//! is set; required with `STOVEPIPE_REQUIRE_SERVICES=1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{commit, git, repo};

const BIN: &str = env!("CARGO_BIN_EXE_stovepipe");

/// A `stovepipe serve` process and what it printed.
struct Serve {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`start`](Self::start) with `env` set for the server.
    fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("STOVEPIPE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stovepipe starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let url: String = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let _ = tx.send(url);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let base = rx
            .recv_timeout(Duration::from_mins(1))
            .unwrap_or_else(|_| panic!("server never listened:\n{}", log.lock().unwrap()));
        Self { child, base, log }
    }

    /// SIGTERM, then wait: a graceful shutdown must exit 0.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log.lock().unwrap().clone();
                assert!(
                    status.success(),
                    "graceful shutdown exits 0 ({status}):\n{log}"
                );
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("stovepipe runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, repo: &Path, database_url: &str, command: &str) -> PathBuf {
    let path = dir.join("stovepipe.toml");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data}"
drain_timeout = "10s"
reconcile_interval = "1s"
[database]
url = "{database_url}"
[[queue]]
name = "team/svc"
repo = "{repo}"
promotion_ref = "verified-main"
poll_interval = "0s"
gate_wait_delay = "100ms"
poll_delay_accepted = "100ms"
poll_delay_running = "100ms"
[queue.build]
runner = "command"
command = "{command}"
timeout = "1m"
"#,
        data = dir.join("data").display(),
        repo = repo.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn get(base: &str, path: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sf", &format!("{base}{path}")])
        .output()
        .expect("curl runs");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ingest through the CLI, wait for facts, read them through the API and the
/// CLI, check the promotion ref with git; `env` is the server's. Returns
/// the server's log.
fn pipeline_through_the_binary(database_url: &str, dir: &Path, env: &[(&str, &str)]) -> String {
    let repo = repo(dir);
    let config = write_config(dir, &repo, database_url, "sh ci.sh");
    let server = Serve::start_with_env(&config, env);
    let green = git(&repo, &["rev-parse", "HEAD"]);

    let (code, out, err) = cli(&["ingest", "team/svc", "--server", &server.base]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("request/team/svc/1"), "{out}");
    eventually("green", || {
        get(&server.base, "/v1/queues/team%2Fsvc/last-green")["commit"] == green.as_str()
    });
    assert_eq!(git(&repo, &["rev-parse", "verified-main"]), green);

    let broken = commit(&repo, "break", &[("BROKEN", "1")]);
    let (code, _, err) = cli(&[
        "ingest",
        "team/svc",
        "--rev",
        &broken,
        "--server",
        &server.base,
    ]);
    assert_eq!(code, 0, "{err}");
    eventually("broken", || {
        get(
            &server.base,
            &format!("/v1/queues/team%2Fsvc/greenness?rev={broken}"),
        )["status"]
            == "broken"
    });

    let (code, table, _) = cli(&["status", "--server", &server.base]);
    assert_eq!(code, 0);
    assert!(
        table.contains("team/svc") && table.contains(&green[..10]),
        "{table}"
    );
    let (code, commits, _) = cli(&["status", "team/svc", "--server", &server.base]);
    assert_eq!(code, 0);
    assert!(
        commits.contains("broken") && commits.contains("green"),
        "{commits}"
    );
    let (code, json, _) = cli(&["status", "team/svc", "--json", "--server", &server.base]);
    assert_eq!(code, 0);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["items"][0]["status"], "broken");

    let (code, _, err) = cli(&["ingest", "no/such-queue", "--server", &server.base]);
    assert_eq!(code, 1, "a 404 is a runtime failure");
    assert!(err.contains("404"), "{err}");
    server.stop()
}

#[test]
fn serve_ingest_and_status_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db/stovepipe.db").display()
    );
    pipeline_through_the_binary(&url, dir.path(), &[]);
}

/// A fresh schema on the test Postgres, or `None` (skipped) without one.
fn postgres_schema_url() -> Option<(String, String, String)> {
    let Ok(base) = std::env::var("STOVEPIPE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STOVEPIPE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "STOVEPIPE_REQUIRE_SERVICES=1 but STOVEPIPE_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: STOVEPIPE_TEST_POSTGRES_URL not set");
        return None;
    };
    let schema = format!("stovepipe_e2e_{}", std::process::id());
    let ok = Command::new("psql")
        .args([
            &base,
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        ])
        .status()
        .expect("psql runs");
    assert!(ok.success(), "cannot create schema {schema} on {base}");
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");
    Some((base, schema, url))
}

#[test]
fn serve_ingest_and_status_on_postgres() {
    let Some((base, schema, url)) = postgres_schema_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // One write lane, set the way operators override a key: every write
    // of the run goes through it.
    let log = pipeline_through_the_binary(
        &url,
        dir.path(),
        &[("STOVEPIPE_DATABASE__WRITE_LANES", "1")],
    );
    assert!(
        log.contains("database open") && log.contains("write_lanes=1"),
        "{log}"
    );
    let _ = Command::new("psql")
        .args([&base, "-qc", &format!("DROP SCHEMA {schema} CASCADE")])
        .status();
}

/// SIGTERM while a build runs; start again on the same database: every
/// request finishes, the interrupted build shows as `error` (never red) and
/// the newest head ends green.
#[test]
fn a_restart_mid_pipeline_finishes_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("stovepipe.db").display()
    );
    let config = write_config(dir.path(), &repo, &url, "sleep 3; sh ci.sh");
    let server = Serve::start(&config);
    cli(&["ingest", "team/svc", "--server", &server.base]);
    eventually("the first build running", || {
        get(&server.base, "/v1/queues/team%2Fsvc")["in_flight"] == 1
    });
    for n in 0..2 {
        commit(&repo, &format!("more {n}"), &[("more", &n.to_string())]);
        let (code, _, err) = cli(&["ingest", "team/svc", "--server", &server.base]);
        assert_eq!(code, 0, "{err}");
    }
    let log = server.stop();
    assert!(log.contains("shutting down"), "{log}");

    let server = Serve::start(&config);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    eventually("the newest head green after the restart", || {
        get(&server.base, "/v1/queues/team%2Fsvc/last-green")["commit"] == head.as_str()
    });
    eventually("every request terminal", || {
        let page = get(&server.base, "/v1/queues/team%2Fsvc/requests");
        page["items"].as_array().is_some_and(|items| {
            items.len() == 3
                && items.iter().all(|r| {
                    matches!(
                        r["state"].as_str(),
                        Some("succeeded" | "failed" | "cancelled" | "superseded")
                    )
                })
        })
    });
    let commits = get(&server.base, "/v1/queues/team%2Fsvc/commits");
    let statuses: Vec<&str> = commits["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert!(
        !statuses.contains(&"broken"),
        "an interrupted build is never red: {statuses:?}\n{:#}",
        get(&server.base, "/v1/queues/team%2Fsvc/requests/1")
    );
    // Record releases a slot in the write after the fact's.
    eventually("no slot held", || {
        get(&server.base, "/v1/queues/team%2Fsvc")["in_flight"] == 0
    });
    server.stop();
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
    let (code, _, err) = cli(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("auth.hs256_secret"), "{err}");

    std::fs::write(
        &bad,
        "[[queue]]\nname = \"a b\"\nrepo = \"/r\"\n[queue.build]\ncommand = \"true\"\n",
    )
    .unwrap();
    let (code, _, err) = cli(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("queue[0].name") && err.contains("\"a b\""),
        "{err}"
    );

    let (code, _, err) = cli(&["serve", "--config", "/no/such/file.toml"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = cli(&["no-such-command"]);
    assert_eq!(code, 2);
    let (code, _, err) = cli(&[
        "token",
        "mint",
        "--sub",
        "x",
        "--scope",
        "read",
        "--config",
        dir.path().join("none.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn token_mint_uses_the_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("[auth]\nhs256_secret = \"{}\"\n", common::SECRET),
    )
    .unwrap();
    let (code, token, err) = cli(&[
        "token",
        "mint",
        "--sub",
        "ci",
        "--scope",
        "ingest",
        "read",
        "--ttl",
        "5m",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(token.trim().split('.').count(), 3, "a JWT");
    let (code, _, err) = cli(&[
        "token",
        "mint",
        "--sub",
        "ci",
        "--scope",
        "root",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("root"), "{err}");
}

#[test]
fn openapi_prints_the_checked_in_spec() {
    let (code, out, _) = cli(&["openapi"]);
    assert_eq!(code, 0);
    let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../api/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, checked_in, "run `cargo xtask openapi`");
}

#[test]
fn the_demo_finishes_within_a_minute() {
    let started = Instant::now();
    let (code, out, err) = cli(&["demo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(started.elapsed() < Duration::from_mins(1));
    for needle in [
        "green",
        "broken",
        "skipped",
        "Last green",
        "checked with git",
    ] {
        assert!(out.contains(needle), "the demo prints {needle:?}:\n{out}");
    }
}
