//! Postgres: `stovepipe_hand_off(topic, partition_key, leased_until)`, the
//! check a store write makes before it inserts a message already leased to
//! a consumer of this process (the adapter's `hand_off` module): it returns
//! `leased_until` when no message of the partition is pending, so the new
//! one will be its head, and NULL otherwise.
//!
//! It is a function because the check must see every publisher of the
//! partition that committed before this one took the partition's advisory
//! lock, and a statement's own snapshot is taken before the lock it waits
//! for: a volatile function's query reads with a fresh snapshot. It takes
//! the lock itself first (the statement already holds it; taking it again
//! costs nothing), so it cannot run before the lock whatever the plan.
//!
//! SQLite has one writer, whose statement sees everything committed; it
//! needs no function.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&[&str]] = &[&[
    "CREATE FUNCTION stovepipe_hand_off(p_topic text, p_key text, p_leased_until bigint) \
     RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$ \
     BEGIN \
       PERFORM pg_advisory_xact_lock(hashtext(p_topic), hashtext(p_key)); \
       IF EXISTS (SELECT 1 FROM messages WHERE topic = p_topic AND partition_key = p_key) THEN \
         RETURN NULL; \
       END IF; \
       RETURN p_leased_until; \
     END $$",
]];

const DOWN: &[&[&str]] = &[&["DROP FUNCTION stovepipe_hand_off(text, text, bigint)"]];

postgres_only!();
