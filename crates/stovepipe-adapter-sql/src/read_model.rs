//! The query side.
//!
//! Owns: the listings of `ReadModel` — requests ordered by their number
//! column (never by id text), facts by queue, builds across queues — each
//! bounded by its limit and kept inside its queue; and the one-statement
//! commit record of a greenness read. Does not own: any write.

use crate::backend::{big, limit, values};
use crate::rows::{self, BUILD_COLUMNS, Cols, FACT_COLUMNS, QUEUE_COLUMNS, REQUEST_COLUMNS};
use crate::{SqlBackend, error};
use async_trait::async_trait;
use sea_orm::{DbErr, QueryResult, Value};
use stovepipe_entity::{
    Build, BuildId, Fact, ProjectName, Queue, QueueName, Request, RequestId, Uri,
};
use stovepipe_ports::{CommitRecord, ReadModel, StoreError};

/// URIs per `IN (…)` list, well under every backend's parameter limit.
const URI_CHUNK: usize = 500;

/// How the commit record names the fact's and the request's columns.
const RECORD_FACT: Cols = Cols::prefixed("f_");
const RECORD_REQUEST: Cols = Cols::prefixed("r_");

/// The commit record as one statement, for each of `keys` keys `(queue,
/// uri, project)` (`$1, $2, $3` the first, `$4, $5, $6` the next, …): one
/// row per key whatever exists, in the keys' order (the `merged_read`
/// rule), the fact of the key and the request the URI index names for its
/// queue and URI left-joined to it. Each join is a primary-key lookup
/// (`facts`, `request_uris`) or an index lookup (`requests_queue_uri`); the
/// request must also carry the indexed id, so at most one row matches.
/// The backend's `commit_records` runs it (`merged_read`).
pub(crate) fn commit_records_sql(keys: usize) -> String {
    let rows: Vec<String> = (0..keys)
        .map(|k| {
            let p = 3 * k;
            format!("(${}, ${}, ${}, {k})", p + 1, p + 2, p + 3)
        })
        .collect();
    format!(
        "WITH k (queue, uri, project, n) AS (VALUES {}) \
         SELECT {}, {} FROM k \
         LEFT JOIN facts f ON f.queue = k.queue AND f.uri = k.uri AND f.project = k.project \
         LEFT JOIN request_uris i ON i.queue = k.queue AND i.uri = k.uri \
         LEFT JOIN requests r ON r.queue = i.queue AND r.uri = i.uri AND r.id = i.request_id \
         ORDER BY k.n",
        rows.join(", "),
        RECORD_FACT.select("f", FACT_COLUMNS),
        RECORD_REQUEST.select("r", REQUEST_COLUMNS),
    )
}

/// Decodes a row of [`commit_records_sql`]: a side whose key column is null
/// did not match.
fn commit_record(row: &QueryResult) -> Result<CommitRecord, DbErr> {
    let present = |cols: Cols, key| -> Result<bool, DbErr> {
        Ok(rows::get::<Option<String>>(row, &cols.name(key))?.is_some())
    };
    Ok(CommitRecord {
        fact: present(RECORD_FACT, "uri")?
            .then(|| rows::fact_in(row, RECORD_FACT))
            .transpose()?,
        request: present(RECORD_REQUEST, "id")?
            .then(|| rows::request_in(row, RECORD_REQUEST))
            .transpose()?,
    })
}

impl SqlBackend {
    async fn list<T>(
        &self,
        sql: &str,
        values: Vec<Value>,
        decode: fn(&QueryResult) -> Result<T, DbErr>,
    ) -> Result<Vec<T>, StoreError> {
        let found = self
            .shared
            .query_all(sql, values)
            .await
            .map_err(error::store)?;
        found
            .iter()
            .map(decode)
            .collect::<Result<_, _>>()
            .map_err(error::store)
    }

    /// Runs `sql` (whose `{in}` is replaced by a placeholder list after the
    /// queue's `$1`) once per chunk of `uris`.
    async fn by_uris<T>(
        &self,
        queue: &QueueName,
        uris: &[Uri],
        sql: &str,
        decode: fn(&QueryResult) -> Result<T, DbErr>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for chunk in uris.chunks(URI_CHUNK) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let mut v = values![queue.as_str()];
            v.extend(chunk.iter().map(|u| Value::from(u.as_str())));
            let sql = sql.replace("{in}", &list.join(", "));
            out.extend(self.list(&sql, v, decode).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl ReadModel for SqlBackend {
    async fn queues(&self) -> Result<Vec<Queue>, StoreError> {
        let sql = format!(
            "SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name{}",
            self.shared.dialect.bytewise()
        );
        self.list(&sql, vec![], rows::queue).await
    }

    async fn requests(
        &self,
        queue: &QueueName,
        before: Option<u64>,
        limit_: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let before = before.map_or(i64::MAX, big);
        self.list(
            &format!(
                "SELECT {REQUEST_COLUMNS} FROM requests WHERE queue = $1 AND number < $2 \
                 ORDER BY number DESC LIMIT $3"
            ),
            values![queue.as_str(), before, limit(limit_)],
            rows::request,
        )
        .await
    }

    async fn open_requests(
        &self,
        queue: &QueueName,
        limit_: usize,
    ) -> Result<Vec<Request>, StoreError> {
        self.list(
            &format!(
                "SELECT {REQUEST_COLUMNS} FROM requests \
                 WHERE queue = $1 AND state IN ('accepted', 'processing') \
                 ORDER BY number LIMIT $2"
            ),
            values![queue.as_str(), limit(limit_)],
            rows::request,
        )
        .await
    }

    async fn requests_missing_fact(
        &self,
        queue: &QueueName,
        limit_: usize,
    ) -> Result<Vec<Request>, StoreError> {
        self.list(
            &format!(
                "SELECT {REQUEST_COLUMNS} FROM requests r \
                 WHERE r.queue = $1 AND r.state IN ('succeeded', 'failed') \
                 AND r.failed_closed = $2 \
                 AND NOT EXISTS (SELECT 1 FROM facts f \
                   WHERE f.queue = r.queue AND f.uri = r.uri AND f.project = '') \
                 ORDER BY r.number LIMIT $3"
            ),
            values![queue.as_str(), false, limit(limit_)],
            rows::request,
        )
        .await
    }

    async fn requests_for_uris(
        &self,
        queue: &QueueName,
        uris: &[Uri],
    ) -> Result<Vec<Request>, StoreError> {
        self.by_uris(
            queue,
            uris,
            &format!(
                "SELECT {REQUEST_COLUMNS} FROM requests WHERE queue = $1 AND uri IN ({{in}}) \
                 ORDER BY number"
            ),
            rows::request,
        )
        .await
    }

    async fn facts_for_uris(
        &self,
        queue: &QueueName,
        uris: &[Uri],
    ) -> Result<Vec<Fact>, StoreError> {
        self.by_uris(
            queue,
            uris,
            &format!(
                "SELECT {FACT_COLUMNS} FROM facts WHERE queue = $1 AND uri IN ({{in}}) \
                 ORDER BY uri, project"
            ),
            rows::fact,
        )
        .await
    }

    async fn facts_of_request(
        &self,
        queue: &QueueName,
        request_id: &RequestId,
    ) -> Result<Vec<Fact>, StoreError> {
        self.list(
            &format!(
                "SELECT {FACT_COLUMNS} FROM facts WHERE queue = $1 AND request_id = $2 \
                 ORDER BY uri, project"
            ),
            values![queue.as_str(), request_id.as_str()],
            rows::fact,
        )
        .await
    }

    async fn find_build(&self, id: &BuildId) -> Result<Option<Build>, StoreError> {
        let mut found = self
            .list(
                &format!("SELECT {BUILD_COLUMNS} FROM builds WHERE build_id = $1 LIMIT 1"),
                values![id.as_str()],
                rows::build,
            )
            .await?;
        Ok(found.pop())
    }

    async fn commit_record(
        &self,
        queue: &QueueName,
        uri: &Uri,
        project: &ProjectName,
    ) -> Result<CommitRecord, StoreError> {
        let found = self
            .shared
            .commit_record_rows(values![queue.as_str(), uri.as_str(), project.as_str()])
            .await
            .map_err(error::store)?;
        match found.first() {
            Some(row) => commit_record(row).map_err(error::store),
            None => Ok(CommitRecord::default()),
        }
    }
}
