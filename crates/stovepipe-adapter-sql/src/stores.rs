//! The six queue-bound stores (`StoreFactory::for_queue`) and the queue
//! configuration store.
//!
//! Owns: queue binding (`WrongQueue` before any SQL runs), conditional
//! writes as one `UPDATE … WHERE queue = ? AND key = ? AND version = ?`
//! (zero rows — stale version or no row — is `VersionMismatch`), creates as
//! `INSERT … ON CONFLICT DO NOTHING` (zero rows is `AlreadyExists`), and
//! each write's outbox committed in the same transaction (on Postgres the
//! same statement, on SQLite one multi-statement call:
//! `Shared::write_with_outbox`). Does not own:
//! listings (see `read_model`) or transition rules (entities bump their
//! own versions).

use crate::backend::{Dialect, Shared, big, bind, check_outbox, json_value, values, write_list};
use crate::row_write::{RowOp, RowWrite};
use crate::rows::{self, BUILD_COLUMNS, FACT_COLUMNS, QUEUE_COLUMNS, REQUEST_COLUMNS};
use crate::{SqlBackend, error, validate};
use async_trait::async_trait;
use sea_orm::{DbErr, Value};
use std::fmt::Write as _;
use std::sync::Arc;
use stovepipe_entity::{
    Build, BuildId, Fact, ProjectName, Queue, QueueConfig, QueueName, Request, RequestId, Uri,
};
use stovepipe_ports::{
    BuildStore, EntityWrite, FactStore, JointWriter, Outbox, QueueConfigStore, QueueStore,
    RequestStore, RequestUriStore, StoreError, StoreFactory, Stores,
};

const REQUEST: &str = "request";
const REQUEST_URI: &str = "request uri";
const QUEUE: &str = "queue";
const BUILD: &str = "build";
const FACT: &str = "fact";

/// The columns a request's write sets (all but its key).
const REQUEST_SET: [&str; 10] = [
    "version",
    "uri",
    "state",
    "strategy",
    "base_uri",
    "origin",
    "failed_closed",
    "failure_reason",
    "created_at",
    "updated_at",
];
/// The columns a queue row's write sets (all but its name).
const QUEUE_SET: [&str; 9] = [
    "version",
    "last_green_uri",
    "last_green_request_id",
    "last_green_recorded_at",
    "in_flight",
    "project_last_green",
    "latest_request_id",
    "created_at",
    "updated_at",
];
/// The columns a build's write sets (all but its key and `inserted`).
const BUILD_SET: [&str; 11] = [
    "version",
    "request_number",
    "request_id",
    "project",
    "status",
    "url",
    "metadata",
    "targets",
    "reason",
    "created_at",
    "updated_at",
];

/// A store handle bound to one queue.
#[derive(Clone)]
struct Bound {
    shared: Arc<Shared>,
    queue: QueueName,
}

/// One entity's row write, and the error it means when it touches no row
/// (`AlreadyExists` for a create, `VersionMismatch` for an update).
struct EntityRow {
    write: RowWrite,
    miss: StoreError,
}

/// An entity's row as its writes see it: the table, the key condition over
/// bound values, and the columns every write sets (`set`) with their values
/// (`values`, bound when the write is made).
struct Columns<'a> {
    entity: &'static str,
    /// The key, as an error names it.
    id: &'a str,
    table: &'static str,
    key: String,
    set: &'static [&'static str],
    values: Vec<Value>,
}

impl Columns<'_> {
    /// The update of the row where it is at `expected_version`.
    fn update(self, v: &mut Vec<Value>, expected_version: u64) -> EntityRow {
        let expected = bind(v, big(expected_version).into());
        let set = assignments(v, self.set, self.values);
        EntityRow {
            write: RowWrite {
                table: self.table,
                key: self.key,
                op: RowOp::Update { set, expected },
            },
            miss: StoreError::VersionMismatch {
                entity: self.entity,
                key: self.id.to_owned(),
                expected: expected_version,
            },
        }
    }

    /// The insert of the row: `key_columns` (their values `key_values`,
    /// bound) beside the set columns; nothing when a row holds `conflict`.
    fn create(
        self,
        v: &mut Vec<Value>,
        key_columns: &str,
        key_values: impl std::fmt::Display,
        conflict: &'static str,
    ) -> EntityRow {
        let columns = format!("{key_columns}, {}", self.set.join(", "));
        let values = format!("{key_values}, {}", placeholders(v, self.values));
        EntityRow {
            write: RowWrite {
                table: self.table,
                key: self.key,
                op: RowOp::Create {
                    columns,
                    values,
                    conflict,
                },
            },
            miss: StoreError::AlreadyExists {
                entity: self.entity,
                key: self.id.to_owned(),
            },
        }
    }
}

/// `name = $n, …`: `columns` set to newly bound `row` values.
fn assignments(values: &mut Vec<Value>, columns: &[&str], row: Vec<Value>) -> String {
    let mut set = String::with_capacity(columns.len() * 24);
    write_list(&mut set, columns.iter().zip(row), |set, (column, value)| {
        let _ = write!(set, "{column} = {}", bind(values, value));
    });
    set
}

/// `$n, …`: newly bound `row` values.
fn placeholders(values: &mut Vec<Value>, row: Vec<Value>) -> String {
    let mut list = String::with_capacity(row.len() * 5);
    write_list(&mut list, row, |list, value| {
        let _ = write!(list, "{}", bind(values, value));
    });
    list
}

impl Bound {
    fn check(&self, entity: &'static str, got: &str) -> Result<(), StoreError> {
        if got == self.queue.as_str() {
            Ok(())
        } else {
            Err(StoreError::WrongQueue {
                entity,
                bound: self.queue.to_string(),
                got: got.to_owned(),
            })
        }
    }

    fn check_request_id(&self, entity: &'static str, id: &RequestId) -> Result<(), StoreError> {
        self.check(entity, id.queue_str())
    }

    fn q(&self) -> Value {
        self.queue.as_str().into()
    }

    /// Runs the rows' writes (over `values`) and, when every one touched
    /// its row, the outbox, in one transaction; when one touched none,
    /// writes nothing and reports its miss.
    async fn write(
        &self,
        rows: Vec<EntityRow>,
        values: Vec<Value>,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        check_outbox(&outbox)?;
        let now = self.shared.clock.now();
        let (writes, mut misses): (Vec<RowWrite>, Vec<StoreError>) =
            rows.into_iter().map(|r| (r.write, r.miss)).unzip();
        let written = self
            .shared
            .write_with_outbox(&writes, values, outbox, now)
            .await;
        match written.map_err(error::store)? {
            Ok(()) => Ok(()),
            Err(i) if i < misses.len() => Err(misses.swap_remove(i)),
            Err(i) => Err(StoreError::Backend(format!(
                "write {i} of {} missed its row",
                misses.len()
            ))),
        }
    }
}

/// The row writes of the entities, checked as their stores check them:
/// an update from `expected`, or, without one, a create.
impl Bound {
    fn request_row(
        &self,
        v: &mut Vec<Value>,
        r: &Request,
        expected: Option<u64>,
    ) -> Result<EntityRow, StoreError> {
        self.check(REQUEST, r.queue.as_str())?;
        self.check_request_id(REQUEST, &r.id)?;
        validate::opt_text(
            "failure reason",
            r.failure_reason.as_deref(),
            validate::MAX_TEXT_BYTES,
        )?;
        let (q, number) = (bind(v, self.q()), bind(v, big(r.id.number()).into()));
        let mut values = values![big(r.version)];
        values.extend(Requests::columns(r));
        let row = Columns {
            entity: REQUEST,
            id: r.id.as_str(),
            table: "requests",
            key: format!("queue = {q} AND number = {number}"),
            set: &REQUEST_SET,
            values,
        };
        Ok(if let Some(version) = expected {
            row.update(v, version)
        } else {
            let id = bind(v, r.id.as_str().into());
            let key_values = format!("{q}, {number}, {id}");
            row.create(v, "queue, number, id", &key_values, "queue, number")
        })
    }

    fn queue_row(
        &self,
        v: &mut Vec<Value>,
        queue: &Queue,
        expected: Option<u64>,
    ) -> Result<EntityRow, StoreError> {
        self.check(QUEUE, queue.name.as_str())?;
        let name = bind(v, self.q());
        let mut values = values![big(queue.version)];
        values.extend(Queues::columns(queue)?);
        let row = Columns {
            entity: QUEUE,
            id: queue.name.as_str(),
            table: "queues",
            key: format!("name = {name}"),
            set: &QUEUE_SET,
            values,
        };
        Ok(if let Some(version) = expected {
            row.update(v, version)
        } else {
            row.create(v, "name", name, "name")
        })
    }

    fn build_row(
        &self,
        v: &mut Vec<Value>,
        b: &Build,
        expected: Option<u64>,
    ) -> Result<EntityRow, StoreError> {
        self.check(BUILD, b.queue.as_str())?;
        self.check_request_id(BUILD, &b.request_id)?;
        validate::opt_text("build url", b.url.as_deref(), validate::MAX_TEXT_BYTES)?;
        validate::opt_text(
            "build reason",
            b.reason.as_deref(),
            validate::MAX_TEXT_BYTES,
        )?;
        let (q, id) = (bind(v, self.q()), bind(v, b.id.as_str().into()));
        let mut values = values![big(b.version), big(b.request_id.number())];
        values.extend(Builds::columns(b)?);
        let row = Columns {
            entity: BUILD,
            id: b.id.as_str(),
            table: "builds",
            key: format!("queue = {q} AND build_id = {id}"),
            set: &BUILD_SET,
            values,
        };
        Ok(if let Some(version) = expected {
            row.update(v, version)
        } else {
            // `inserted` orders builds created at the same instant; under
            // concurrent Postgres inserts two may share a value, which only
            // leaves their relative order to the build id.
            let key_values = format!(
                "{q}, {id}, (SELECT COALESCE(MAX(inserted), 0) + 1 FROM builds WHERE queue = {q})"
            );
            row.create(
                v,
                "queue, build_id, inserted",
                &key_values,
                "queue, build_id",
            )
        })
    }

    /// Facts are create-only.
    fn fact_row(&self, v: &mut Vec<Value>, fact: &Fact) -> Result<EntityRow, StoreError> {
        self.check(FACT, fact.queue.as_str())?;
        self.check_request_id(FACT, &fact.request_id)?;
        let q = bind(v, self.q());
        let uri = bind(v, fact.uri.as_str().into());
        let project = bind(v, fact.project.as_str().into());
        let id = format!("{} {:?}", fact.uri, fact.project.as_str());
        let row = Columns {
            entity: FACT,
            id: &id,
            table: "facts",
            key: format!("queue = {q} AND uri = {uri} AND project = {project}"),
            set: &["degree", "request_id", "build_id", "created_at"],
            values: values![
                fact.degree.value(),
                fact.request_id.as_str(),
                fact.build_id.as_ref().map(|b| b.as_str().to_owned()),
                fact.created_at.as_millis()
            ],
        };
        let key_values = format!("{q}, {uri}, {project}");
        Ok(row.create(v, "queue, uri, project", &key_values, "queue, uri, project"))
    }
}

struct Requests(Bound);
struct RequestUris(Bound);
struct Queues(Bound);
struct Builds(Bound);
struct Facts(Bound);

impl Requests {
    /// Every column but the key and version, in `REQUEST_SET` order after
    /// the version.
    fn columns(r: &Request) -> Vec<Value> {
        values![
            r.uri.as_str(),
            r.state.as_str(),
            r.build_strategy.map(|s| s.as_str().to_owned()),
            r.base_uri.as_ref().map(|u| u.as_str().to_owned()),
            r.origin.as_str(),
            r.failed_closed,
            r.failure_reason.clone(),
            r.created_at.as_millis(),
            r.updated_at.as_millis(),
        ]
    }
}

#[async_trait]
impl RequestStore for Requests {
    async fn create(&self, request: &Request, outbox: Outbox) -> Result<(), StoreError> {
        let mut v = Vec::new();
        let row = self.0.request_row(&mut v, request, None)?;
        self.0.write(vec![row], v, outbox).await
    }

    async fn get(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.0.check_request_id(REQUEST, id)?;
        let row = self
            .0
            .shared
            .query_one(
                &format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE queue = $1 AND number = $2"),
                values![self.0.q(), big(id.number())],
            )
            .await
            .map_err(error::store)?;
        row.as_ref()
            .map(rows::request)
            .transpose()
            .map_err(error::store)
    }

    async fn update(
        &self,
        request: &Request,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let mut v = Vec::new();
        let row = self
            .0
            .request_row(&mut v, request, Some(expected_version))?;
        self.0.write(vec![row], v, outbox).await
    }
}

#[async_trait]
impl RequestUriStore for RequestUris {
    async fn mint(&self, uri: &Uri) -> Result<(RequestId, bool), StoreError> {
        // Ingest answers a head polled again from the queue's latest
        // request and mints only other URIs, nearly always new ones
        // (docs/decisions.md, "Ingest dedups the head on the queue's latest
        // request").
        // Postgres's one statement looks the URI up itself; SQLite's
        // numbers before it indexes, so a plain read on a reader first
        // keeps an indexed URI from spending a number.
        let minted = if self.0.shared.dialect == Dialect::Postgres {
            self.mint_postgres(uri).await
        } else {
            if let Some(id) = self.lookup(uri).await.map_err(error::store)? {
                return Ok((id, false));
            }
            self.mint_sqlite(uri).await
        };
        if let Some(minted) = minted.map_err(error::store)? {
            return Ok(minted);
        }
        // Lost the race to a concurrent mint of the same URI: its entry
        // committed after this call's lookup (on Postgres, the statement's
        // own); read it now.
        let winner = self.lookup(uri).await.map_err(error::store)?;
        winner.map(|id| (id, false)).ok_or_else(|| {
            StoreError::Unavailable(format!(
                "uri index entry for {uri} exists but cannot be read"
            ))
        })
    }

    async fn create(&self, uri: &Uri, request_id: &RequestId) -> Result<(), StoreError> {
        self.0.check_request_id(REQUEST_URI, request_id)?;
        let mut v = Vec::new();
        let (q, u) = (bind(&mut v, self.0.q()), bind(&mut v, uri.as_str().into()));
        let row = Columns {
            entity: REQUEST_URI,
            id: uri.as_str(),
            table: "request_uris",
            key: format!("queue = {q} AND uri = {u}"),
            set: &["request_id"],
            values: values![request_id.as_str()],
        }
        .create(&mut v, "queue, uri", format_args!("{q}, {u}"), "queue, uri");
        self.0.write(vec![row], v, Outbox::none()).await
    }

    async fn get(&self, uri: &Uri) -> Result<Option<RequestId>, StoreError> {
        self.lookup(uri).await.map_err(error::store)
    }
}

impl RequestUris {
    /// One statement: the lookup, and when the URI is not indexed the counter's
    /// upsert and the entry's insert. `None`: a concurrent mint indexed the
    /// URI first (its entry is not in this statement's snapshot; the
    /// counter value is spent).
    async fn mint_postgres(&self, uri: &Uri) -> Result<Option<(RequestId, bool)>, DbErr> {
        let row = self
            .0
            .shared
            .write_one(
                "WITH found AS ( \
                     SELECT request_id FROM request_uris WHERE queue = $1 AND uri = $2 \
                 ), numbered AS ( \
                     INSERT INTO counters (queue, value) \
                     SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM found) \
                     ON CONFLICT (queue) DO UPDATE SET value = counters.value + 1 \
                     RETURNING value \
                 ), indexed AS ( \
                     INSERT INTO request_uris (queue, uri, request_id) \
                     SELECT $1, $2, $3 || CAST(value AS TEXT) FROM numbered \
                     ON CONFLICT (queue, uri) DO NOTHING \
                     RETURNING request_id \
                 ) \
                 SELECT request_id, TRUE AS minted FROM indexed \
                 UNION ALL SELECT request_id, FALSE AS minted FROM found",
                values![self.0.q(), uri.as_str(), RequestId::prefix(&self.0.queue)],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let minted: bool = rows::get(&row, "minted")?;
        Ok(Some((Self::request_id(&row)?, minted)))
    }

    /// SQLite has no writes inside `WITH`: the counter's upsert and the
    /// entry's insert, numbered from the counter as on Postgres, in one
    /// transaction on the single writer, sent in one call. `None`: a
    /// concurrent mint (another process on the same file) indexed the URI
    /// first (the counter value is spent, as on Postgres).
    async fn mint_sqlite(&self, uri: &Uri) -> Result<Option<(RequestId, bool)>, DbErr> {
        let rows = self
            .0
            .shared
            .sqlite_transaction(
                "INSERT INTO counters (queue, value) VALUES ($1, 1) \
                 ON CONFLICT (queue) DO UPDATE SET value = counters.value + 1; \
                 INSERT INTO request_uris (queue, uri, request_id) \
                 SELECT $1, $2, $3 || CAST(value AS TEXT) FROM counters WHERE queue = $1 \
                 ON CONFLICT (queue, uri) DO NOTHING \
                 RETURNING request_id",
                values![self.0.q(), uri.as_str(), RequestId::prefix(&self.0.queue)],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some((Self::request_id(row)?, true)))
    }

    /// The entry for `uri`, read on the reader.
    async fn lookup(&self, uri: &Uri) -> Result<Option<RequestId>, DbErr> {
        let row = self
            .0
            .shared
            .query_one(
                "SELECT request_id FROM request_uris WHERE queue = $1 AND uri = $2",
                values![self.0.q(), uri.as_str()],
            )
            .await?;
        row.map(|row| Self::request_id(&row)).transpose()
    }

    fn request_id(row: &sea_orm::QueryResult) -> Result<RequestId, DbErr> {
        let text: String = rows::get(row, "request_id")?;
        RequestId::parse(&text).map_err(|e| error::corrupt("request_id", e))
    }
}

impl Queues {
    /// Every column but the name and version, in `QUEUE_SET` order after
    /// the version.
    fn columns(q: &Queue) -> Result<Vec<Value>, StoreError> {
        let mark = q.last_green.as_ref();
        Ok(vec![
            mark.map(|b| b.uri.as_str().to_owned()).into(),
            mark.map(|b| b.request_id.as_str().to_owned()).into(),
            mark.map(|b| b.recorded_at.as_millis()).into(),
            json_value(validate::json("queue slots", &q.in_flight)?),
            json_value(validate::json(
                "queue project bookmarks",
                &q.project_last_green,
            )?),
            q.latest_request_id
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .into(),
            q.created_at.as_millis().into(),
            q.updated_at.as_millis().into(),
        ])
    }
}

#[async_trait]
impl QueueStore for Queues {
    async fn create(&self, queue: &Queue) -> Result<(), StoreError> {
        let mut v = Vec::new();
        let row = self.0.queue_row(&mut v, queue, None)?;
        self.0.write(vec![row], v, Outbox::none()).await
    }

    async fn get(&self) -> Result<Option<Queue>, StoreError> {
        let row = self
            .0
            .shared
            .query_one(
                &format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = $1"),
                values![self.0.q()],
            )
            .await
            .map_err(error::store)?;
        row.as_ref()
            .map(rows::queue)
            .transpose()
            .map_err(error::store)
    }

    async fn update(
        &self,
        queue: &Queue,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let mut v = Vec::new();
        let row = self.0.queue_row(&mut v, queue, Some(expected_version))?;
        self.0.write(vec![row], v, outbox).await
    }
}

impl Builds {
    /// Every column but the key, version and request number, in
    /// `BUILD_SET` order after those two.
    fn columns(b: &Build) -> Result<Vec<Value>, StoreError> {
        Ok(vec![
            b.request_id.as_str().into(),
            b.project.as_str().into(),
            b.status.as_str().into(),
            b.url.clone().into(),
            json_value(validate::json("build metadata", &b.metadata)?),
            json_value(validate::json("build targets", &b.targets)?),
            b.reason.clone().into(),
            b.created_at.as_millis().into(),
            b.updated_at.as_millis().into(),
        ])
    }
}

#[async_trait]
impl BuildStore for Builds {
    async fn create(&self, build: &Build, outbox: Outbox) -> Result<(), StoreError> {
        let mut v = Vec::new();
        let row = self.0.build_row(&mut v, build, None)?;
        self.0.write(vec![row], v, outbox).await
    }

    async fn get(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        let row = self
            .0
            .shared
            .query_one(
                &format!("SELECT {BUILD_COLUMNS} FROM builds WHERE queue = $1 AND build_id = $2"),
                values![self.0.q(), id.as_str()],
            )
            .await
            .map_err(error::store)?;
        row.as_ref()
            .map(rows::build)
            .transpose()
            .map_err(error::store)
    }

    async fn update(
        &self,
        build: &Build,
        expected_version: u64,
        outbox: Outbox,
    ) -> Result<(), StoreError> {
        let mut v = Vec::new();
        let row = self.0.build_row(&mut v, build, Some(expected_version))?;
        self.0.write(vec![row], v, outbox).await
    }

    async fn list_for_request(&self, request_id: &RequestId) -> Result<Vec<Build>, StoreError> {
        self.0.check_request_id(BUILD, request_id)?;
        let found = self
            .0
            .shared
            .query_all(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM builds WHERE queue = $1 AND request_number = $2 \
                     ORDER BY created_at, inserted, build_id"
                ),
                values![self.0.q(), big(request_id.number())],
            )
            .await
            .map_err(error::store)?;
        found
            .iter()
            .map(rows::build)
            .collect::<Result<_, _>>()
            .map_err(error::store)
    }
}

#[async_trait]
impl FactStore for Facts {
    async fn create(&self, fact: &Fact, outbox: Outbox) -> Result<(), StoreError> {
        let mut v = Vec::new();
        let row = self.0.fact_row(&mut v, fact)?;
        self.0.write(vec![row], v, outbox).await
    }

    async fn get(&self, uri: &Uri, project: &ProjectName) -> Result<Option<Fact>, StoreError> {
        let row = self
            .0
            .shared
            .query_one(
                &format!(
                    "SELECT {FACT_COLUMNS} FROM facts WHERE queue = $1 AND uri = $2 AND project = $3"
                ),
                values![self.0.q(), uri.as_str(), project.as_str()],
            )
            .await
            .map_err(error::store)?;
        row.as_ref()
            .map(rows::fact)
            .transpose()
            .map_err(error::store)
    }
}

/// Several entities' writes as one (`row_write`).
struct Joint(Bound);

#[async_trait]
impl JointWriter for Joint {
    async fn write_all(&self, writes: Vec<EntityWrite>, outbox: Outbox) -> Result<(), StoreError> {
        EntityWrite::check_list(&writes)?;
        let mut v = Vec::new();
        let mut rows = Vec::with_capacity(writes.len());
        for write in &writes {
            let b = &self.0;
            rows.push(match write {
                EntityWrite::CreateRequest(request) => b.request_row(&mut v, request, None),
                EntityWrite::UpdateRequest {
                    request,
                    expected_version,
                } => b.request_row(&mut v, request, Some(*expected_version)),
                EntityWrite::UpdateQueue {
                    queue,
                    expected_version,
                } => b.queue_row(&mut v, queue, Some(*expected_version)),
                EntityWrite::UpdateBuild {
                    build,
                    expected_version,
                } => b.build_row(&mut v, build, Some(*expected_version)),
                EntityWrite::CreateFact(fact) => b.fact_row(&mut v, fact),
            }?);
        }
        self.0.write(rows, v, outbox).await
    }
}

impl StoreFactory for SqlBackend {
    fn for_queue(&self, queue: &QueueName) -> Stores {
        let bound = Bound {
            shared: self.shared.clone(),
            queue: queue.clone(),
        };
        Stores {
            queue: queue.clone(),
            requests: Arc::new(Requests(bound.clone())),
            request_uris: Arc::new(RequestUris(bound.clone())),
            queues: Arc::new(Queues(bound.clone())),
            builds: Arc::new(Builds(bound.clone())),
            facts: Arc::new(Facts(bound.clone())),
            joint: Arc::new(Joint(bound)),
        }
    }
}

#[async_trait]
impl QueueConfigStore for SqlBackend {
    async fn get(&self, queue: &QueueName) -> Result<Option<QueueConfig>, StoreError> {
        let row = self
            .shared
            .query_one(
                "SELECT config FROM queue_configs WHERE name = $1",
                values![queue.as_str()],
            )
            .await
            .map_err(error::store)?;
        row.as_ref()
            .map(rows::queue_config)
            .transpose()
            .map_err(error::store)
    }

    async fn list(&self) -> Result<Vec<QueueConfig>, StoreError> {
        let sql = format!(
            "SELECT config FROM queue_configs ORDER BY name{}",
            self.shared.dialect.bytewise()
        );
        let found = self
            .shared
            .query_all(&sql, vec![])
            .await
            .map_err(error::store)?;
        found
            .iter()
            .map(rows::queue_config)
            .collect::<Result<_, _>>()
            .map_err(error::store)
    }

    async fn upsert(&self, config: &QueueConfig) -> Result<(), StoreError> {
        let json = validate::json("queue config", config)?;
        let run = async {
            let mut tx = self.shared.begin().await?;
            tx.exec(
                "INSERT INTO queue_configs (name, config) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET config = excluded.config",
                vec![config.name.as_str().into(), json_value(json)],
            )
            .await?;
            tx.commit().await
        };
        run.await.map_err(error::store)
    }
}
