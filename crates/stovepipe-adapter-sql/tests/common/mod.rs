//! Test databases: a temp-file SQLite database, or a Postgres schema of its
//! own in the database named by `STOVEPIPE_TEST_POSTGRES_URL`, each migrated,
//! driven by a manual clock, and removed when the test is done.
//!
//! Without the URL a Postgres test prints "skipped: …" to stderr and
//! passes, unless `STOVEPIPE_REQUIRE_SERVICES=1`, when it fails.

// Test helpers: a failed setup step must panic naming what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use futures::FutureExt;
use sea_orm::{ConnectionTrait, Database};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use stovepipe_adapter_memory::ManualClock;
use stovepipe_adapter_sql::{SqlBackend, SqlOptions};
use stovepipe_contract::Case;

/// Small enough for the change-feed lag case to overflow quickly.
pub const FEED_BUFFER: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub backend: Arc<SqlBackend>,
    pub clock: ManualClock,
    /// Another connection to the same database (a second replica).
    url: String,
    /// Every backend's presence heartbeat (`SqlOptions::presence_heartbeat`).
    heartbeat: Duration,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, schema: String },
}

/// The Postgres URL, or `None` after saying the test is skipped.
pub fn postgres_url() -> Option<String> {
    match std::env::var("STOVEPIPE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("STOVEPIPE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "STOVEPIPE_REQUIRE_SERVICES=1 but STOVEPIPE_TEST_POSTGRES_URL is not set"
            );
            eprintln!("skipped: STOVEPIPE_TEST_POSTGRES_URL not set");
            None
        }
    }
}

fn options(clock: &ManualClock, presence_heartbeat: Duration) -> SqlOptions {
    SqlOptions {
        clock: Arc::new(clock.clone()),
        presence_heartbeat,
        feed_buffer: FEED_BUFFER,
        ..SqlOptions::default()
    }
}

impl TestDb {
    /// A fresh, migrated database of `kind`; `None` when Postgres is skipped.
    pub async fn open(kind: Kind) -> Option<Self> {
        Self::open_with_heartbeat(kind, SqlOptions::default().presence_heartbeat).await
    }

    /// [`open`](Self::open), its backends announcing themselves to each
    /// other every `heartbeat`.
    pub async fn open_with_heartbeat(kind: Kind, heartbeat: Duration) -> Option<Self> {
        let clock = ManualClock::default();
        let (url, cleanup) = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                (url, Cleanup::Sqlite(dir))
            }
            Kind::Postgres => {
                let base = postgres_url()?;
                let schema = format!("stovepipe_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&base).await.unwrap();
                admin
                    .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options[search_path]={schema}");
                (url, Cleanup::Postgres { base, schema })
            }
        };
        // Migrated by a backend of its own, closed before the one under
        // test connects: the latter's first heartbeats (while it cannot
        // know yet whether it is alone) are not spent on migrations.
        let migrator = SqlBackend::connect_with(&url, options(&clock, heartbeat))
            .await
            .unwrap();
        migrator.migrate().await.unwrap();
        migrator.close().await;
        let backend = SqlBackend::connect_with(&url, options(&clock, heartbeat))
            .await
            .unwrap();
        Some(Self {
            backend,
            clock,
            url,
            heartbeat,
            cleanup,
        })
    }

    /// Another backend on the same database and clock, as a second
    /// process would have.
    pub async fn replica(&self) -> Arc<SqlBackend> {
        SqlBackend::connect_with(&self.url, options(&self.clock, self.heartbeat))
            .await
            .unwrap()
    }

    /// [`replica`](Self::replica) with `lanes` write lanes.
    pub async fn replica_with_lanes(&self, lanes: usize) -> Arc<SqlBackend> {
        let options = SqlOptions {
            write_lanes: lanes,
            ..options(&self.clock, self.heartbeat)
        };
        SqlBackend::connect_with(&self.url, options).await.unwrap()
    }

    /// A plain connection to the same database, for what no port does (an
    /// open transaction held across a test's steps).
    pub async fn raw_connection(&self) -> sea_orm::DatabaseConnection {
        Database::connect(&self.url).await.unwrap()
    }

    /// Postgres: a plain LISTEN connection to the same database, which
    /// hears what the backends NOTIFY (and is no replica: it never
    /// announces itself).
    pub async fn listen(&self, channel: &str) -> sea_orm::sqlx::postgres::PgListener {
        let mut listener = sea_orm::sqlx::postgres::PgListener::connect(&self.url)
            .await
            .unwrap();
        listener.listen(channel).await.unwrap();
        listener
    }

    /// Closes the backend and removes the database.
    pub async fn finish(self) {
        self.backend.close().await;
        match self.cleanup {
            Cleanup::Sqlite(dir) => drop(dir),
            Cleanup::Postgres { base, schema } => {
                let admin = Database::connect(&base).await.unwrap();
                admin
                    .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
                    .await
                    .unwrap();
                admin.close().await.unwrap();
            }
        }
    }
}

/// Names of a suite's cases, in order.
pub fn names<F>(cases: &[Case<F>]) -> Vec<&'static str> {
    cases.iter().map(|c| c.name).collect()
}

/// Runs case `name` of a suite on a fresh database of `kind`, removing the
/// database afterwards whether the case passed or not.
pub async fn run_case<F>(kind: Kind, cases: Vec<Case<F>>, name: &str, make: fn(&TestDb) -> F) {
    let case = cases
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no contract case {name}"));
    let Some(db) = TestDb::open(kind).await else {
        return;
    };
    let fixture = make(&db);
    let outcome = AssertUnwindSafe((case.run)(fixture)).catch_unwind().await;
    db.finish().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
