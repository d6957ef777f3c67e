//! Stovepipe's SQL adapters on sea-orm: Postgres and SQLite.
//!
//! Owns: [`SqlBackend`], one database behind every storage-like port —
//! the queue-bound stores ([`StoreFactory`](stovepipe_ports::StoreFactory))
//! and the counter, the read model, the queue configuration store, the
//! message queue, the change feed and the hook registry — with every store
//! write committing its outbox (change-log rows and messages) in the same
//! transaction. The schema lives in the `stovepipe-migrations` crate;
//! [`SqlBackend::migrate`] applies it.
//!
//! Does not own: any pipeline rule, and no SQL leaves this crate.
//!
//! Concurrency model:
//! - **SQLite**: WAL, `busy_timeout`, foreign keys on; one writer connection
//!   (`sqlite_writer`, held out of a pool of one) serialises every write,
//!   each a single call that begins and commits its transaction, and the
//!   writes that wait for it commit together (`write_batch`), those that
//!   share a statement text in one call (`sqlite_merge`); a reader
//!   pool serves reads, its connections `held` too. Callers of one process
//!   never see `SQLITE_BUSY`.
//! - **Postgres**: one pool; conditional writes are single `UPDATE … WHERE
//!   version = ?` statements; message-queue heads are leased with
//!   `FOR UPDATE SKIP LOCKED` and a lease column; hook releases are minted
//!   under a `FOR UPDATE` row lock on the hook; LISTEN/NOTIFY carries
//!   wake-ups and change-feed tails between replicas, sent only while
//!   another replica is heard (`presence`); statements outside a
//!   transaction run on connections `held` out of the pool; those that
//!   meet (the stores' writes, lease operations and reads) go out
//!   together, one message and one transaction (`write_batch`).

mod acks;
mod backend;
mod error;
mod feed;
mod group_commit;
mod held;
mod hooks;
mod literal;
mod merged_read;
mod mq;
mod presence;
mod read_model;
mod row_write;
mod rows;
mod sqlite_merge;
mod sqlite_writer;
mod stores;
mod validate;
mod wakeups;
mod write_batch;

/// The test database's URL for this crate's own Postgres unit tests;
/// `None` (the test skips) only when Postgres is not required.
#[cfg(test)]
fn test_postgres_url() -> Option<String> {
    let Ok(url) = std::env::var("STOVEPIPE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STOVEPIPE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "STOVEPIPE_REQUIRE_SERVICES=1 but STOVEPIPE_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: STOVEPIPE_TEST_POSTGRES_URL not set");
        return None;
    };
    Some(url)
}

/// A pool of `size` connections to the test database, lending them
/// without a ping as the backend's pools do; `None`: the test skips.
#[cfg(test)]
async fn test_postgres_pool(size: u32) -> Option<sea_orm::sqlx::PgPool> {
    let url = test_postgres_url()?;
    let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .connect(&url)
        .await
        .unwrap();
    Some(pool)
}

pub use backend::{DEFAULT_FEED_BUFFER, DEFAULT_WRITE_LANES, SqlBackend, SqlOptions};
pub use validate::{MAX_JSON_BYTES, MAX_KEY_BYTES, MAX_TEXT_BYTES};
