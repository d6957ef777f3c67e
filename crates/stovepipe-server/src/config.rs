//! Configuration: a TOML file plus `STOVEPIPE_<SECTION>__<KEY>` environment
//! overrides, validated into [`Settings`]. Every error names the bad key and
//! value and what was expected; the binary exits with code 2 on them.
//!
//! Only variables with a `__` separator are read, so the command runner's
//! `STOVEPIPE_QUEUE`/`STOVEPIPE_HEAD_URI`… and test settings such as
//! `STOVEPIPE_TEST_POSTGRES_URL` never leak into the configuration.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stovepipe_adapter_sql::DEFAULT_WRITE_LANES;
use stovepipe_app::DEFAULT_MAX_IN_FLIGHT;
use stovepipe_entity::{
    BuildConfig, ProjectConfig, ProjectName, QueueConfig, QueueName, RunnerKind,
};
use thiserror::Error;

use crate::auth::AuthConfig;

/// A configuration error: the key, and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("configuration error at {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The file as written (before validation).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub database: RawDatabase,
    pub messaging: RawMessaging,
    pub auth: AuthConfig,
    #[serde(rename = "queue")]
    pub queues: Vec<RawQueue>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    /// Where git mirrors, checkouts and build logs live.
    pub data_dir: String,
    /// How long shutdown waits for in-flight deliveries.
    pub drain_timeout: String,
    /// Period of the reconcile loop.
    pub reconcile_interval: String,
    /// Deliveries each stage's consumer handles at once (one per queue);
    /// signed, so that a negative value gets our message, not serde's.
    pub max_in_flight: Option<i64>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: ".stovepipe".into(),
            drain_timeout: "30s".into(),
            reconcile_interval: "30s".into(),
            max_in_flight: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    pub url: String,
    /// Postgres: batches of writes in flight at once (signed, as
    /// `max_in_flight`).
    pub write_lanes: Option<i64>,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.into(),
            write_lanes: None,
        }
    }
}

/// The embedded default: SQLite under the data directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://.stovepipe/stovepipe.db?mode=rwc";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMessaging {
    pub backend: String,
}

impl Default for RawMessaging {
    fn default() -> Self {
        Self {
            backend: "sql".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub name: String,
    pub repo: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    pub promotion_ref: Option<String>,
    pub poll_interval: Option<String>,
    pub max_concurrent: Option<u32>,
    pub gate_wait_delay: Option<String>,
    pub poll_delay_accepted: Option<String>,
    pub poll_delay_running: Option<String>,
    pub max_validation: Option<String>,
    #[serde(default)]
    pub culprit_finding: bool,
    #[serde(default)]
    pub build: RawBuild,
    #[serde(default, rename = "project")]
    pub projects: Vec<RawProject>,
}

fn default_branch() -> String {
    "main".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    #[serde(default)]
    pub runner: Option<String>,
    pub command: Option<String>,
    pub timeout: Option<String>,
    pub targets_report: Option<String>,
    /// Runner-specific settings (owner, repo, workflow, organization…).
    #[serde(flatten)]
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub name: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub targets: Vec<String>,
}

/// Which message-queue implementation the pipeline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Messaging {
    /// The SQL database (the default: one dependency).
    Sql,
    /// In process (tests; nothing survives a restart).
    Memory,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub drain_timeout: Duration,
    pub reconcile_interval: Duration,
    /// Deliveries each stage's consumer handles at once.
    pub max_in_flight: usize,
    pub database_url: String,
    /// Postgres: batches of writes in flight at once (SQLite has one
    /// writer whatever this says).
    pub write_lanes: usize,
    pub messaging: Messaging,
    pub auth: AuthConfig,
    pub queues: Vec<QueueConfig>,
}

impl Settings {
    /// Loads `file` (optional) with environment overrides and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Every section has serde defaults, so an empty figment is the embedded
        // default configuration.
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("STOVEPIPE_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let raw: RawConfig = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            ConfigError::new(
                if key.is_empty() { "(file)".into() } else { key },
                e.kind.to_string(),
            )
        })?;
        Self::validate(raw)
    }

    /// Parses a TOML string (tests, the demo) without the environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::new(e.path.join("."), e.kind.to_string()))?;
        Self::validate(raw)
    }

    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let listen: SocketAddr = raw.server.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    raw.server.listen
                ),
            )
        })?;
        if !listen.ip().is_loopback() && raw.auth.hs256_secret.is_empty() {
            return Err(ConfigError::new(
                "auth.hs256_secret",
                format!(
                    "required when server.listen ({listen}) is not a loopback address: without it every caller would be an admin"
                ),
            ));
        }
        let messaging = match raw.messaging.backend.as_str() {
            "sql" => Messaging::Sql,
            "memory" => Messaging::Memory,
            other => {
                return Err(ConfigError::new(
                    "messaging.backend",
                    format!("{other:?}: expected \"sql\" or \"memory\""),
                ));
            }
        };
        let url = raw.database.url.clone();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url == "memory:")
        {
            return Err(ConfigError::new(
                "database.url",
                format!("{url:?}: expected sqlite://…, postgres://… or memory:"),
            ));
        }
        // Store writes publish their next hop in the same transaction (the
        // outbox), so the transport lives where the data lives.
        if (url == "memory:") != (messaging == Messaging::Memory) {
            return Err(ConfigError::new(
                "messaging.backend",
                format!(
                    "{:?} with database.url {url:?}: use \"sql\" with a SQL database, \"memory\" only with database.url = \"memory:\"",
                    raw.messaging.backend
                ),
            ));
        }
        let mut names = BTreeSet::new();
        let mut queues = Vec::new();
        for (i, q) in raw.queues.into_iter().enumerate() {
            let config = validate_queue(i, q)?;
            if !names.insert(config.name.clone()) {
                return Err(ConfigError::new(
                    format!("queue[{i}].name"),
                    format!("{} is configured twice", config.name),
                ));
            }
            queues.push(config);
        }
        Ok(Self {
            listen,
            data_dir: PathBuf::from(&raw.server.data_dir),
            drain_timeout: duration("server.drain_timeout", &raw.server.drain_timeout)?,
            reconcile_interval: duration(
                "server.reconcile_interval",
                &raw.server.reconcile_interval,
            )?,
            max_in_flight: count_in(
                "server.max_in_flight",
                raw.server.max_in_flight,
                DEFAULT_MAX_IN_FLIGHT,
                MAX_IN_FLIGHT_LIMIT,
                "deliveries handled at once per stage",
            )?,
            database_url: url,
            write_lanes: count_in(
                "database.write_lanes",
                raw.database.write_lanes,
                DEFAULT_WRITE_LANES,
                MAX_WRITE_LANES,
                "batches of writes in flight at once",
            )?,
            messaging,
            auth: raw.auth,
            queues,
        })
    }
}

/// At most this many deliveries in flight per topic: more than any
/// deployment's queues need, and a typo such as `640000` is refused
/// rather than left to spawn that many handlers under a backlog.
pub const MAX_IN_FLIGHT_LIMIT: usize = 4096;

/// At most this many write lanes: each borrows one of the connections
/// that reads use too for its batch, and more than two spread the writes
/// over smaller batches that cost the server more for no more throughput
/// (docs/decisions.md, "write lanes").
pub const MAX_WRITE_LANES: usize = 4;

/// `key`'s count: `default` when absent, else a whole number from 1 to
/// `max` (of `what`, for the error).
fn count_in(
    key: &str,
    value: Option<i64>,
    default: usize,
    max: usize,
    what: &str,
) -> Result<usize, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    usize::try_from(value)
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ConfigError::new(
                key,
                format!("{value} is out of range: expected 1 to {max} {what}"),
            )
        })
}

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        ConfigError::new(
            key,
            format!("{value:?} is not a duration like \"10s\" or \"2h\": {e}"),
        )
    })
}

fn optional_duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    value.map_or(Ok(default), |v| duration(key, v))
}

fn validate_queue(i: usize, q: RawQueue) -> Result<QueueConfig, ConfigError> {
    let key = |k: &str| format!("queue[{i}].{k}");
    let name = QueueName::new(&q.name).map_err(|e| ConfigError::new(key("name"), e.to_string()))?;
    if q.repo.trim().is_empty() {
        return Err(ConfigError::new(
            key("repo"),
            "a repository path or URL is required",
        ));
    }
    if q.branch.is_empty()
        || q.branch
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        || q.branch.contains("..")
    {
        return Err(ConfigError::new(
            key("branch"),
            format!("{:?} is not a branch name", q.branch),
        ));
    }
    let mut c = QueueConfig::new(name, q.repo, q.branch);
    c.promotion_ref = q.promotion_ref.filter(|r| !r.is_empty());
    c.poll_interval = optional_duration(
        &key("poll_interval"),
        q.poll_interval.as_ref(),
        c.poll_interval,
    )?;
    c.gate_wait_delay = optional_duration(
        &key("gate_wait_delay"),
        q.gate_wait_delay.as_ref(),
        c.gate_wait_delay,
    )?;
    c.poll_delay_accepted = optional_duration(
        &key("poll_delay_accepted"),
        q.poll_delay_accepted.as_ref(),
        c.poll_delay_accepted,
    )?;
    c.poll_delay_running = optional_duration(
        &key("poll_delay_running"),
        q.poll_delay_running.as_ref(),
        c.poll_delay_running,
    )?;
    c.max_validation = optional_duration(
        &key("max_validation"),
        q.max_validation.as_ref(),
        c.max_validation,
    )?;
    if let Some(n) = q.max_concurrent {
        if n == 0 {
            return Err(ConfigError::new(
                key("max_concurrent"),
                "0: at least 1 build slot is needed",
            ));
        }
        c.max_concurrent = n;
    }
    c.culprit_finding = q.culprit_finding;
    let runner = match q.build.runner.as_deref().unwrap_or("command") {
        "command" => RunnerKind::Command,
        "external" => RunnerKind::External,
        "github-actions" => RunnerKind::GithubActions,
        "buildkite" => RunnerKind::Buildkite,
        other => {
            return Err(ConfigError::new(
                key("build.runner"),
                format!("{other:?}: expected command, external, github-actions or buildkite"),
            ));
        }
    };
    if runner == RunnerKind::Command
        && q.build
            .command
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
    {
        return Err(ConfigError::new(
            key("build.command"),
            "the command runner needs a command, e.g. \"make test\"",
        ));
    }
    c.build = BuildConfig {
        runner,
        command: q.build.command,
        timeout: optional_duration(
            &key("build.timeout"),
            q.build.timeout.as_ref(),
            c.build.timeout,
        )?,
        targets_report: q.build.targets_report,
        settings: q.build.settings,
    };
    let mut projects = BTreeSet::new();
    for (j, p) in q.projects.into_iter().enumerate() {
        let pkey = format!("queue[{i}].project[{j}].name");
        let pname =
            ProjectName::new(&p.name).map_err(|e| ConfigError::new(pkey.clone(), e.to_string()))?;
        if pname.is_whole_repo() {
            return Err(ConfigError::new(pkey, "a project needs a name"));
        }
        if !projects.insert(pname.clone()) {
            return Err(ConfigError::new(
                pkey,
                format!("project {pname} is configured twice"),
            ));
        }
        c.projects.push(ProjectConfig {
            name: pname,
            paths: p.paths,
            targets: p.targets,
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [server]
        listen = "127.0.0.1:9000"
        [database]
        url = "sqlite://x.db?mode=rwc"
        [[queue]]
        name = "monorepo/main"
        repo = "/srv/git/monorepo.git"
        promotion_ref = "verified-main"
        poll_interval = "0s"
        max_concurrent = 2
        [queue.build]
        runner = "command"
        command = "make test"
        timeout = "5m"
        [[queue.project]]
        name = "payments"
        paths = ["services/payments/**"]
    "#;

    #[test]
    fn a_good_file() {
        let s = Settings::from_toml(GOOD).unwrap();
        assert_eq!(s.listen.port(), 9000);
        let q = &s.queues[0];
        assert_eq!(q.name.as_str(), "monorepo/main");
        assert_eq!(q.branch, "main");
        assert_eq!(q.max_concurrent, 2);
        assert_eq!(q.poll_interval, Duration::ZERO);
        assert_eq!(q.build.timeout, Duration::from_mins(5));
        assert_eq!(q.projects[0].name.as_str(), "payments");
        assert_eq!(s.messaging, Messaging::Sql);
    }

    #[test]
    fn defaults_are_the_embedded_ones() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(s.write_lanes, DEFAULT_WRITE_LANES);
        assert!(s.queues.is_empty());
    }

    /// A bounded count's key, how to read it, a good value and bad ones,
    /// and what the error says is expected.
    struct Count {
        section: &'static str,
        key: &'static str,
        read: fn(&Settings) -> usize,
        good: &'static str,
        bad: [&'static str; 3],
        expected: &'static str,
    }

    #[test]
    fn counts_are_read_and_bounded() {
        let counts = [
            Count {
                section: "server",
                key: "max_in_flight",
                read: |s| s.max_in_flight,
                good: "200",
                bad: ["0", "-3", "4097"],
                expected: "expected 1 to 4096 deliveries",
            },
            Count {
                section: "database",
                key: "write_lanes",
                read: |s| s.write_lanes,
                good: "1",
                bad: ["0", "-1", "5"],
                expected: "expected 1 to 4 batches",
            },
        ];
        for c in counts {
            let s =
                Settings::from_toml(&format!("[{}]\n{} = {}", c.section, c.key, c.good)).unwrap();
            assert_eq!((c.read)(&s).to_string(), c.good, "{}", c.key);
            for bad in c.bad {
                let toml = format!("[{}]\n{} = {bad}", c.section, c.key);
                let e = Settings::from_toml(&toml).unwrap_err();
                assert_eq!(e.key, format!("{}.{}", c.section, c.key));
                assert!(
                    e.message.contains(bad) && e.message.contains(c.expected),
                    "{e:?}"
                );
            }
        }
    }

    fn error_key(toml: &str) -> String {
        Settings::from_toml(toml).unwrap_err().key
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nlisten = \"0.0.0.0:8080\"", "auth.hs256_secret"),
            ("[messaging]\nbackend = \"kafka\"", "messaging.backend"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            ("[messaging]\nbackend = \"memory\"", "messaging.backend"),
            ("[database]\nurl = \"memory:\"", "messaging.backend"),
            (
                "[[queue]]\nname = \"a//b\"\nrepo = \"/r\"\n[queue.build]\ncommand = \"true\"",
                "queue[0].name",
            ),
            (
                "[[queue]]\nname = \"a\"\nrepo = \"\"\n[queue.build]\ncommand = \"true\"",
                "queue[0].repo",
            ),
            (
                "[[queue]]\nname = \"a\"\nrepo = \"/r\"\npoll_interval = \"soon\"\n[queue.build]\ncommand = \"true\"",
                "queue[0].poll_interval",
            ),
            (
                "[[queue]]\nname = \"a\"\nrepo = \"/r\"\nmax_concurrent = 0\n[queue.build]\ncommand = \"true\"",
                "queue[0].max_concurrent",
            ),
            (
                "[[queue]]\nname = \"a\"\nrepo = \"/r\"",
                "queue[0].build.command",
            ),
            (
                "[[queue]]\nname = \"a\"\nrepo = \"/r\"\n[queue.build]\nrunner = \"jenkins\"",
                "queue[0].build.runner",
            ),
            (
                "[[queue]]\nname = \"a\"\nrepo = \"/r\"\n[queue.build]\ncommand = \"true\"\n[[queue]]\nname = \"a\"\nrepo = \"/r\"\n[queue.build]\ncommand = \"true\"",
                "queue[1].name",
            ),
            (
                "[[queue]]\nname = \"a\"\nrepo = \"/r\"\n[queue.build]\ncommand = \"true\"\n[[queue.project]]\nname = \"x/y\"",
                "queue[0].project[0].name",
            ),
        ];
        for (toml, key) in cases {
            assert_eq!(error_key(toml), key, "{toml}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e =
            Settings::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"").unwrap_err();
        assert!(e.message.contains("lisen"), "{e}");
    }

    #[test]
    fn non_loopback_with_a_secret_is_fine() {
        let toml = "[server]\nlisten = \"0.0.0.0:8080\"\n[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"";
        assert!(Settings::from_toml(toml).is_ok());
    }
}
