//! Classifies database errors once, where they are produced: connection,
//! pool-timeout, busy, deadlock and serialisation failures are retryable
//! (`Unavailable`); everything else is `Backend`.

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};
use stovepipe_ports::{HookError, MqError, StoreError};

/// Whether a later attempt may succeed.
pub(crate) fn is_transient(e: &DbErr) -> bool {
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_transient(e)
        }
        _ => false,
    }
}

fn sqlx_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
            db.code().is_some_and(|code| {
                if sqlite {
                    sqlite_transient(&code)
                } else {
                    postgres_transient(&code)
                }
            })
        }
        _ => false,
    }
}

/// Whether the connection that met `e` is to be given up: it failed to
/// reach the server, or the server is going away. Not when the server only
/// refused the statement for now (a serialization failure, a deadlock, a
/// lock not available, SQLite busy or locked): the connection is as good
/// as before, and giving it up lost what it had prepared. Two lanes'
/// batches that deadlocked each dropped their connection, and every
/// statement was prepared and planned afresh on the next (the pipeline
/// benchmark's planning time went up eightfold; docs/benchmarks.md,
/// 2026-12-06, fifth session).
pub(crate) fn connection_failed(e: &DbErr) -> bool {
    is_transient(e) && !refused_for_now(e)
}

/// A transient error that is the server's answer to one statement.
fn refused_for_now(e: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(db)))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(db)))) = e
    else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return true;
    }
    db.code()
        .is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01" | "55P03"))
}

/// Whether `e` is the server's answer to a statement (an error it
/// reported), not a failure to reach it: a transaction that met one did
/// not commit.
pub(crate) fn is_server_answer(e: &DbErr) -> bool {
    matches!(
        e,
        DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(_)))
            | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(_)))
    )
}

/// SQLite reports (extended) numeric result codes; the primary code is the
/// low byte: 5 = `SQLITE_BUSY`, 6 = `SQLITE_LOCKED`.
fn sqlite_transient(code: &str) -> bool {
    code.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// Postgres SQLSTATEs: connection exceptions (08…), serialization failure,
/// deadlock, lock not available, too many connections, shutdown.
fn postgres_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03"
        )
}

// By value so it reads `.map_err(error::store)`.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn store(e: DbErr) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

// By value so it reads `.map_err(error::mq)`.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn mq(e: DbErr) -> MqError {
    if is_transient(&e) {
        MqError::Unavailable(e.to_string())
    } else {
        MqError::Backend(e.to_string())
    }
}

pub(crate) fn hook(e: DbErr) -> HookError {
    HookError::Store(store(e))
}

/// A stored row that does not decode into an entity: corrupt data, not a
/// condition a retry heals.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> DbErr {
    DbErr::Custom(format!("stored {what} does not decode: {detail}"))
}

/// The answer to work whose flush (`group_commit`) was cancelled before
/// its result: `what` was abandoned, and whether it ran is unknown
/// (retryable, as for a lost connection).
pub(crate) fn abandoned(what: &str) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!(
        "{what} was abandoned before its result"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        for (code, transient) in [("5", true), ("517", true), ("6", true), ("2067", false)] {
            assert_eq!(sqlite_transient(code), transient, "{code}");
        }
        for (code, transient) in [
            ("40001", true),
            ("40P01", true),
            ("08006", true),
            ("23505", false),
            ("42P01", false),
        ] {
            assert_eq!(postgres_transient(code), transient, "{code}");
        }
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        let e = DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout);
        assert!(matches!(store(e), StoreError::Unavailable(_)));
        let e = DbErr::Custom("x".into());
        assert!(matches!(mq(e), MqError::Backend(_)));
    }
}
