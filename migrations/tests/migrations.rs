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

#[tokio::test]
async fn up_down_up_on_postgres() {
    let Ok(base) = std::env::var("STOVEPIPE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("STOVEPIPE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "STOVEPIPE_REQUIRE_SERVICES=1 but STOVEPIPE_TEST_POSTGRES_URL is not set"
        );
        eprintln!("skipped: STOVEPIPE_TEST_POSTGRES_URL not set");
        return;
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
    up_down_up(&db).await;
    db.close().await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
