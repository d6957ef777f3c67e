//! The migrations: unique names, and `up` → `down` → `up` on SQLite always
//! and on Postgres when `STOVEPIPE_TEST_POSTGRES_URL` is set (each run in a
//! database of its own, dropped afterwards).

// Test helpers: a failed setup step must panic naming what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sea_orm_migration::MigratorTrait;
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use std::collections::HashSet;
use stovepipe_migrations::Migrator;

#[test]
fn migration_names_are_unique_and_ordered() {
    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let unique: HashSet<_> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "duplicate migration names: {names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, names, "migrations are listed in version order");
    assert!(
        names.iter().all(|n| n.starts_with('m') && n.len() > 16),
        "names carry a version prefix: {names:?}"
    );
}

const TABLES: [&str; 13] = [
    "queues",
    "requests",
    "request_uris",
    "counters",
    "builds",
    "facts",
    "queue_configs",
    "messages",
    "dead_letters",
    "change_log",
    "hooks",
    "hook_releases",
    "hook_runs",
];

async fn table_count(db: &DatabaseConnection) -> usize {
    let mut found = 0;
    for t in TABLES {
        let probe = Statement::from_string(
            db.get_database_backend(),
            format!("SELECT 1 FROM {t} LIMIT 1"),
        );
        if db.query_all(probe).await.is_ok() {
            found += 1;
        }
    }
    found
}

async fn up_down_up(db: &DatabaseConnection) {
    Migrator::up(db, None).await.unwrap();
    assert_eq!(table_count(db).await, TABLES.len(), "every table after up");
    Migrator::up(db, None).await.unwrap();
    Migrator::down(db, None).await.unwrap();
    assert_eq!(table_count(db).await, 0, "no table after down");
    Migrator::up(db, None).await.unwrap();
    assert_eq!(
        table_count(db).await,
        TABLES.len(),
        "every table after up again"
    );
    assert!(
        Migrator::get_pending_migrations(db)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn up_down_up_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let db = Database::connect(&url).await.unwrap();
    up_down_up(&db).await;
}

/// A fresh Postgres database of its own, and the admin connection that
/// drops it ([`drop_scratch`]); `None` when no Postgres is configured.
async fn scratch_postgres() -> Option<(DatabaseConnection, DatabaseConnection, String)> {
    let Ok(base) = std::env::var("STOVEPIPE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STOVEPIPE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "STOVEPIPE_REQUIRE_SERVICES=1 but STOVEPIPE_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: STOVEPIPE_TEST_POSTGRES_URL not set");
        return None;
    };
    let admin = Database::connect(&base).await.unwrap();
    let name = format!("stovepipe_test_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("a database URL ends in /<database>");
    let db = Database::connect(&format!("{prefix}/{name}"))
        .await
        .unwrap();
    Some((db, admin, name))
}

async fn drop_scratch(db: DatabaseConnection, admin: DatabaseConnection, name: &str) {
    db.close().await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn up_down_up_on_postgres() {
    let Some((db, admin, name)) = scratch_postgres().await else {
        return;
    };
    up_down_up(&db).await;
    drop_scratch(db, admin, &name).await;
}

/// How many migrations come before `name`.
fn migrations_before(name: &str) -> u32 {
    let at = Migrator::migrations()
        .iter()
        .position(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no migration {name}"));
    u32::try_from(at).unwrap()
}

/// Rolls back `name` and every migration after it.
async fn down_through(db: &DatabaseConnection, name: &str) {
    let total = u32::try_from(Migrator::migrations().len()).unwrap();
    Migrator::down(db, Some(total - migrations_before(name)))
        .await
        .unwrap();
}

async fn messages_options(db: &DatabaseConnection) -> Option<String> {
    db.query_one(Statement::from_string(
        db.get_database_backend(),
        "SELECT array_to_string(reloptions, ',') AS options FROM pg_class \
         WHERE relname = 'messages' AND relkind = 'r'",
    ))
    .await
    .unwrap()
    .expect("the messages table exists")
    .try_get("", "options")
    .unwrap()
}

/// On Postgres the message queue's pages are left half empty for its
/// lease updates; down takes the setting back.
#[tokio::test]
async fn messages_leave_room_for_their_updates_on_postgres() {
    let Some((db, admin, name)) = scratch_postgres().await else {
        return;
    };
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(
        messages_options(&db).await.as_deref(),
        Some("fillfactor=50")
    );
    down_through(&db, "m20250101_000019_messages_fillfactor").await;
    assert_eq!(messages_options(&db).await, None);
    drop_scratch(db, admin, &name).await;
}

async fn seqs(db: &DatabaseConnection) -> Vec<(String, i64)> {
    db.query_all(Statement::from_string(
        db.get_database_backend(),
        "SELECT subject, seq FROM change_log ORDER BY seq",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get("", "subject").unwrap(),
            r.try_get("", "seq").unwrap(),
        )
    })
    .collect()
}

/// Moving the Postgres change log's numbering to insert time keeps the
/// numbers given, numbers the rows still waiting as the sequencer would
/// have (after the highest, in `(txid, id)` order), and every number given
/// afterwards is higher; down gives the rows back ids and transaction ids.
#[tokio::test]
async fn change_log_numbering_moves_to_insert_time_on_postgres() {
    let Some((db, admin, name)) = scratch_postgres().await else {
        return;
    };
    let insert_time = "m20250101_000018_change_log_numbered_at_insert";
    let before_insert_time = migrations_before(insert_time);
    assert!(migrations_before("m20250101_000014_change_log_sequencing") < before_insert_time);
    Migrator::up(&db, Some(before_insert_time)).await.unwrap();
    // Two rows numbered, two waiting; "late" has the higher transaction id
    // but the lower row id, "early" the lower transaction id.
    db.execute_unprepared(
        "INSERT INTO change_log (seq, kind, subject, data, created_at, txid) VALUES \
         (1, 'k', 'one', '{}', 0, 10), (2, 'k', 'two', '{}', 0, 11), \
         (NULL, 'k', 'late', '{}', 0, 13), (NULL, 'k', 'early', '{}', 0, 12)",
    )
    .await
    .unwrap();
    Migrator::up(&db, None).await.unwrap();
    let named = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
        pairs.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    };
    assert_eq!(
        seqs(&db).await,
        named(&[("one", 1), ("two", 2), ("early", 3), ("late", 4)])
    );
    db.execute_unprepared(
        "INSERT INTO change_log (seq, kind, subject, data, created_at) VALUES \
         (pg_current_xact_id()::text::bigint << 20, 'k', 'new', '{}', 0)",
    )
    .await
    .unwrap();
    let after = seqs(&db).await;
    assert_eq!(after[4].0, "new");
    assert!(after[4].1 > 4, "above every older number: {after:?}");

    down_through(&db, insert_time).await;
    let restored = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, txid, seq FROM change_log ORDER BY seq",
        ))
        .await
        .unwrap();
    let ids: Vec<i64> = restored
        .iter()
        .map(|r| r.try_get("", "id").unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "ids in seq order");
    let new_txid: i64 = restored[4].try_get("", "txid").unwrap();
    assert_eq!(new_txid, after[4].1 >> 20);
    // Rows appended after down get the next id and wait for the sequencer.
    db.execute_unprepared(
        "INSERT INTO change_log (kind, subject, data, created_at) VALUES ('k', 'x', '{}', 0)",
    )
    .await
    .unwrap();
    let next = db
        .query_one(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, seq FROM change_log WHERE subject = 'x'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.try_get::<i64>("", "id").unwrap(), 6);
    assert_eq!(next.try_get::<Option<i64>>("", "seq").unwrap(), None);
    drop_scratch(db, admin, &name).await;
}
