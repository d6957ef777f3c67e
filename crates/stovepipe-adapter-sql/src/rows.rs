//! Decoding rows into entities, and the column lists that go with them.
//!
//! Owns: the mapping between columns and entity fields (the schema's side
//! of it is in the migrations). A stored value that does not decode is
//! corrupt data and reported as a backend error naming the column.

use crate::error::corrupt;
use sea_orm::{DbErr, QueryResult, TryGetable};
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use stovepipe_entity::{
    Bookmark, Build, BuildId, BuildStatus, ChangeEvent, ChangeKind, Degree, Fact, Hook,
    HookContract, HookName, HookRelease, HookReleaseSpec, HookRun, ProjectName, Queue, QueueConfig,
    QueueName, Request, RequestId, RequestState, Timestamp, Uri,
};
use stovepipe_ports::{DeadLetter, Topic};

pub(crate) fn get<T: TryGetable>(row: &QueryResult, col: &str) -> Result<T, DbErr> {
    row.try_get("", col)
}

fn ts(row: &QueryResult, col: &str) -> Result<Timestamp, DbErr> {
    Ok(Timestamp(get::<i64>(row, col)?))
}

fn unsigned(row: &QueryResult, col: &str) -> Result<u64, DbErr> {
    let v: i64 = get(row, col)?;
    u64::try_from(v).map_err(|e| corrupt(col, e))
}

/// An `integer` (int4) column: attempts, versions of hook releases.
fn small(row: &QueryResult, col: &str) -> Result<u32, DbErr> {
    let v: i32 = get(row, col)?;
    u32::try_from(v).map_err(|e| corrupt(col, e))
}

/// A nullable `INTEGER` column as a narrower unsigned type.
fn optional_small<T>(row: &QueryResult, col: &str) -> Result<Option<T>, DbErr>
where
    T: TryFrom<i32>,
    T::Error: std::fmt::Display,
{
    let v: Option<i32> = get(row, col)?;
    v.map(T::try_from).transpose().map_err(|e| corrupt(col, e))
}

/// Parses a validated value (names, ids, URIs) from a text column.
fn parsed<T>(row: &QueryResult, col: &str) -> Result<T, DbErr>
where
    T: TryFrom<String>,
    T::Error: std::fmt::Display,
{
    let s: String = get(row, col)?;
    T::try_from(s).map_err(|e| corrupt(col, e))
}

fn opt_parsed<T>(row: &QueryResult, col: &str) -> Result<Option<T>, DbErr>
where
    T: TryFrom<String>,
    T::Error: std::fmt::Display,
{
    let s: Option<String> = get(row, col)?;
    s.map(T::try_from).transpose().map_err(|e| corrupt(col, e))
}

/// Deserialises a JSON column.
fn json<T: DeserializeOwned>(row: &QueryResult, col: &str) -> Result<T, DbErr> {
    let v: serde_json::Value = get(row, col)?;
    serde_json::from_value(v).map_err(|e| corrupt(col, e))
}

/// An enum stored by its serde name (`"incremental_since_green"`…).
fn named<T: DeserializeOwned>(row: &QueryResult, col: &str) -> Result<T, DbErr> {
    let s: String = get(row, col)?;
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| corrupt(col, e))
}

fn opt_named<T: DeserializeOwned>(row: &QueryResult, col: &str) -> Result<Option<T>, DbErr> {
    let s: Option<String> = get(row, col)?;
    s.map(|s| serde_json::from_value(serde_json::Value::String(s)))
        .transpose()
        .map_err(|e| corrupt(col, e))
}

/// How a row names one table's columns: as stored (`uri`), or with the
/// prefix a join gave them to tell two tables apart (`f_uri`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cols(&'static str);

impl Cols {
    /// The table's own column names.
    pub(crate) const PLAIN: Self = Self("");

    /// Columns aliased `<prefix><column>`.
    pub(crate) const fn prefixed(prefix: &'static str) -> Self {
        Self(prefix)
    }

    pub(crate) fn name(self, column: &'static str) -> Cow<'static, str> {
        if self.0.is_empty() {
            Cow::Borrowed(column)
        } else {
            Cow::Owned(format!("{}{column}", self.0))
        }
    }

    /// `columns` (a `*_COLUMNS` list) of the table aliased `table`, as a
    /// select list naming them this way: `f.uri AS f_uri, …`.
    pub(crate) fn select(self, table: &str, columns: &'static str) -> String {
        columns
            .split(',')
            .map(str::trim)
            .map(|col| format!("{table}.{col} AS {}{col}", self.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) const QUEUE_COLUMNS: &str = "name, last_green_uri, last_green_request_id, \
    last_green_recorded_at, in_flight, project_last_green, latest_request_id, created_at, \
    updated_at, version";

pub(crate) fn queue(row: &QueryResult) -> Result<Queue, DbErr> {
    let uri: Option<Uri> = opt_parsed(row, "last_green_uri")?;
    let id: Option<RequestId> = opt_parsed(row, "last_green_request_id")?;
    let at: Option<i64> = get(row, "last_green_recorded_at")?;
    let last_green = match (uri, id, at) {
        (Some(uri), Some(request_id), Some(at)) => Some(Bookmark {
            uri,
            request_id,
            recorded_at: Timestamp(at),
        }),
        (None, None, None) => None,
        _ => return Err(corrupt("last_green", "partially set bookmark")),
    };
    Ok(Queue {
        name: parsed::<QueueName>(row, "name")?,
        last_green,
        project_last_green: json(row, "project_last_green")?,
        in_flight: json(row, "in_flight")?,
        latest_request_id: opt_parsed(row, "latest_request_id")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        version: unsigned(row, "version")?,
    })
}

pub(crate) const REQUEST_COLUMNS: &str = "queue, id, uri, state, strategy, base_uri, origin, \
    failed_closed, failure_reason, created_at, updated_at, version";

pub(crate) fn request(row: &QueryResult) -> Result<Request, DbErr> {
    request_in(row, Cols::PLAIN)
}

/// A request whose columns are named by `cols` (see [`Cols`]).
pub(crate) fn request_in(row: &QueryResult, cols: Cols) -> Result<Request, DbErr> {
    let c = |name| cols.name(name);
    let state: String = get(row, &c("state"))?;
    Ok(Request {
        id: parsed::<RequestId>(row, &c("id"))?,
        queue: parsed::<QueueName>(row, &c("queue"))?,
        uri: parsed::<Uri>(row, &c("uri"))?,
        state: RequestState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        build_strategy: opt_named(row, &c("strategy"))?,
        base_uri: opt_parsed(row, &c("base_uri"))?,
        origin: named(row, &c("origin"))?,
        failed_closed: get(row, &c("failed_closed"))?,
        failure_reason: get(row, &c("failure_reason"))?,
        created_at: ts(row, &c("created_at"))?,
        updated_at: ts(row, &c("updated_at"))?,
        version: unsigned(row, &c("version"))?,
    })
}

pub(crate) const BUILD_COLUMNS: &str = "queue, build_id, request_id, project, status, url, \
    metadata, targets, reason, created_at, updated_at, version";

pub(crate) fn build(row: &QueryResult) -> Result<Build, DbErr> {
    let status: String = get(row, "status")?;
    Ok(Build {
        id: parsed::<BuildId>(row, "build_id")?,
        queue: parsed::<QueueName>(row, "queue")?,
        request_id: parsed::<RequestId>(row, "request_id")?,
        project: parsed::<ProjectName>(row, "project")?,
        status: BuildStatus::parse(&status).map_err(|e| corrupt("status", e))?,
        url: get(row, "url")?,
        metadata: json(row, "metadata")?,
        targets: json(row, "targets")?,
        reason: get(row, "reason")?,
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        version: unsigned(row, "version")?,
    })
}

pub(crate) const FACT_COLUMNS: &str =
    "queue, uri, project, degree, request_id, build_id, created_at";

pub(crate) fn fact(row: &QueryResult) -> Result<Fact, DbErr> {
    fact_in(row, Cols::PLAIN)
}

/// A fact whose columns are named by `cols` (see [`Cols`]).
pub(crate) fn fact_in(row: &QueryResult, cols: Cols) -> Result<Fact, DbErr> {
    let c = |name| cols.name(name);
    let degree: f64 = get(row, &c("degree"))?;
    Ok(Fact {
        queue: parsed::<QueueName>(row, &c("queue"))?,
        uri: parsed::<Uri>(row, &c("uri"))?,
        project: parsed::<ProjectName>(row, &c("project"))?,
        degree: Degree::new(degree).map_err(|e| corrupt("degree", e))?,
        request_id: parsed::<RequestId>(row, &c("request_id"))?,
        build_id: opt_parsed(row, &c("build_id"))?,
        created_at: ts(row, &c("created_at"))?,
    })
}

pub(crate) fn queue_config(row: &QueryResult) -> Result<QueueConfig, DbErr> {
    json(row, "config")
}

pub(crate) fn change_event(row: &QueryResult) -> Result<ChangeEvent, DbErr> {
    let kind: String = get(row, "kind")?;
    Ok(ChangeEvent {
        seq: unsigned(row, "seq")?,
        queue: opt_parsed(row, "queue")?,
        kind: ChangeKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        subject: get(row, "subject")?,
        data: get(row, "data")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) const DEAD_LETTER_COLUMNS: &str = "id, topic, partition_key, message_id, payload, \
    attempts, last_error, published_at, dead_at";

pub(crate) fn dead_letter(row: &QueryResult) -> Result<DeadLetter, DbErr> {
    let topic: String = get(row, "topic")?;
    Ok(DeadLetter {
        id: unsigned(row, "id")?,
        topic: Topic::new(topic),
        partition_key: get(row, "partition_key")?,
        message_id: get(row, "message_id")?,
        payload: get(row, "payload")?,
        attempts: small(row, "attempts")?,
        last_error: get(row, "last_error")?,
        published_at: ts(row, "published_at")?,
        dead_at: ts(row, "dead_at")?,
    })
}

pub(crate) const HOOK_COLUMNS: &str = "name, contract, live_version, created_at";

pub(crate) fn hook(row: &QueryResult) -> Result<Hook, DbErr> {
    hook_with_created_at(row, "created_at")
}

/// A hook from a join whose release columns took `created_at`: the hook's
/// own is `hook_created_at`.
pub(crate) fn hook_joined(row: &QueryResult) -> Result<Hook, DbErr> {
    hook_with_created_at(row, "hook_created_at")
}

fn hook_with_created_at(row: &QueryResult, created_at: &str) -> Result<Hook, DbErr> {
    Ok(Hook {
        name: parsed::<HookName>(row, "name")?,
        contract: json::<HookContract>(row, "contract")?,
        live_version: optional_small(row, "live_version")?,
        created_at: ts(row, created_at)?,
    })
}

pub(crate) const RELEASE_COLUMNS: &str = "hook, version, spec, digest, created_by, created_at";

pub(crate) fn release(row: &QueryResult) -> Result<HookRelease, DbErr> {
    Ok(HookRelease {
        hook: parsed::<HookName>(row, "hook")?,
        version: small(row, "version")?,
        spec: json::<HookReleaseSpec>(row, "spec")?,
        digest: get(row, "digest")?,
        created_by: get(row, "created_by")?,
        created_at: ts(row, "created_at")?,
    })
}

pub(crate) const RUN_COLUMNS: &str = "id, hook, release_version, event_id, status, attempts, \
    last_http_status, started_at, finished_at";

pub(crate) fn run(row: &QueryResult) -> Result<HookRun, DbErr> {
    Ok(HookRun {
        id: get(row, "id")?,
        hook: parsed::<HookName>(row, "hook")?,
        release_version: small(row, "release_version")?,
        event_id: get(row, "event_id")?,
        status: named(row, "status")?,
        attempts: small(row, "attempts")?,
        last_http_status: optional_small(row, "last_http_status")?,
        started_at: ts(row, "started_at")?,
        finished_at: ts(row, "finished_at")?,
    })
}
