//! Postgres leaves half of each `messages` page free, so that a message's
//! lease and release (`UPDATE`s of unindexed columns) stay on its page as
//! heap-only (HOT) updates instead of new tuples with an entry in each of
//! the table's four indexes.
//!
//! A message is inserted, leased, and deleted within milliseconds, so its
//! pages are always full of young and dead tuples. Under the pipeline
//! benchmark at 128 queues, 2.1 of a request's 3.9 message updates were not
//! HOT, and each wrote four index entries: of the 11.6 KB of WAL a request
//! wrote, the message rows and their indexes were 5.0 KB
//! (`pg_waldump` over a round, docs/benchmarks.md, 2026-12-06, sixth
//! session). The table holds only the messages in flight, so the space
//! this leaves empty is a few pages.
//!
//! SQLite has no fill factor; nothing changes there.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&[&str]] = &[&["ALTER TABLE messages SET (fillfactor = 50)"]];

const DOWN: &[&[&str]] = &[&["ALTER TABLE messages RESET (fillfactor)"]];

postgres_only!();
