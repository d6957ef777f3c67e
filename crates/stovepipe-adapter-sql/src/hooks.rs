//! The SQL hook registry.
//!
//! Owns: hook identities (created race-free with `INSERT … ON CONFLICT DO
//! NOTHING` and read back, so concurrent identical upserts never fail),
//! release minting, the live pointer, and runs (idempotent by id, each
//! first record appending a `hook.run` change in the same transaction).
//!
//! Minting: `create_release` locks the hook row (`SELECT … FOR UPDATE` on
//! Postgres; SQLite's single writer connection serialises the whole
//! transaction), then looks for the digest, and only then inserts
//! `MAX(version) + 1` and moves the live pointer — so the created flag is
//! decided under the same lock as the insert: N identical concurrent
//! releases give one `created = true`, N distinct ones versions 1..N.
//!
//! Does not own: delivery or the dispatcher's policy.

use crate::backend::{Tx, check_changes, json_value, values};
use crate::rows::{self, HOOK_COLUMNS, RELEASE_COLUMNS, RUN_COLUMNS};
use crate::{SqlBackend, error, validate};
use async_trait::async_trait;
use sea_orm::DbErr;
use stovepipe_entity::{
    ChangeKind, EventType, Hook, HookContract, HookName, HookRelease, HookReleaseSpec, HookRun,
    NewChange, QueueName, Timestamp,
};
use stovepipe_ports::{HookError, HookRegistry, ReleaseOutcome, UpsertOutcome};

fn unknown_hook(name: &HookName) -> HookError {
    HookError::NotFound(format!("hook {name}"))
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl SqlBackend {
    async fn hook_row(&self, name: &HookName) -> Result<Option<Hook>, HookError> {
        let row = self
            .shared
            .query_one(
                &format!("SELECT {HOOK_COLUMNS} FROM hooks WHERE name = $1"),
                values![name.as_str()],
            )
            .await
            .map_err(error::hook)?;
        row.as_ref()
            .map(rows::hook)
            .transpose()
            .map_err(error::hook)
    }

    /// Runs `f` in one write transaction; commits when it returns `Ok(Ok)`.
    async fn hook_write<T, F>(&self, f: F) -> Result<T, HookError>
    where
        F: for<'t> FnOnce(
            &'t mut Tx,
            Timestamp,
        )
            -> futures::future::BoxFuture<'t, Result<Result<T, HookError>, DbErr>>,
    {
        let now = self.shared.clock.now();
        let mut tx = self.shared.begin().await.map_err(error::hook)?;
        match f(&mut tx, now).await.map_err(error::hook)? {
            Ok(out) => {
                tx.commit().await.map_err(error::hook)?;
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl HookRegistry for SqlBackend {
    async fn upsert_hook(
        &self,
        name: &HookName,
        contract: &HookContract,
        now: Timestamp,
    ) -> Result<(Hook, UpsertOutcome), HookError> {
        let json = validate::json("hook contract", contract)?;
        let key = name.clone();
        let inserted = self
            .hook_write(move |tx, _| {
                Box::pin(async move {
                    let n = tx
                        .exec(
                            "INSERT INTO hooks (name, contract, live_version, created_at) \
                             VALUES ($1, $2, NULL, $3) ON CONFLICT (name) DO NOTHING",
                            vec![
                                key.as_str().into(),
                                json_value(json),
                                now.as_millis().into(),
                            ],
                        )
                        .await?;
                    Ok(Ok(n > 0))
                })
            })
            .await?;
        // Read back: the winner of a race may be another caller.
        let stored = self
            .hook_row(name)
            .await?
            .ok_or_else(|| unknown_hook(name))?;
        if inserted {
            Ok((stored, UpsertOutcome::Created))
        } else if &stored.contract == contract {
            Ok((stored, UpsertOutcome::Unchanged))
        } else {
            Err(HookError::ContractConflict(name.to_string()))
        }
    }

    async fn create_release(
        &self,
        name: &HookName,
        spec: &HookReleaseSpec,
        created_by: &str,
        now: Timestamp,
    ) -> Result<ReleaseOutcome, HookError> {
        spec.validate()?;
        validate::text("created_by", created_by, validate::MAX_KEY_BYTES)?;
        let spec_json = validate::json("hook release", spec)?;
        let digest = spec.digest();
        let (name, created_by) = (name.clone(), created_by.to_owned());
        self.hook_write(move |tx, _| {
            Box::pin(async move {
                let lock = tx.dialect().for_update();
                let hook = tx
                    .one(
                        &format!("SELECT name FROM hooks WHERE name = $1{lock}"),
                        values![name.as_str()],
                    )
                    .await?;
                if hook.is_none() {
                    return Ok(Err(unknown_hook(&name)));
                }
                let existing = tx
                    .one(
                        &format!(
                            "SELECT {RELEASE_COLUMNS} FROM hook_releases \
                             WHERE hook = $1 AND digest = $2"
                        ),
                        values![name.as_str(), digest.as_str()],
                    )
                    .await?;
                if let Some(row) = existing {
                    return Ok(Ok(ReleaseOutcome {
                        release: rows::release(&row)?,
                        created: false,
                    }));
                }
                let next = tx
                    .one(
                        "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM hook_releases \
                         WHERE hook = $1",
                        values![name.as_str()],
                    )
                    .await?
                    .ok_or_else(|| DbErr::Custom("MAX(version) returned no row".into()))?;
                let version: i32 = rows::get(&next, "next")?;
                let row = tx
                    .one(
                        &format!(
                            "INSERT INTO hook_releases (hook, version, spec, digest, created_by, \
                             created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                             RETURNING {RELEASE_COLUMNS}"
                        ),
                        vec![
                            name.as_str().into(),
                            version.into(),
                            json_value(spec_json),
                            digest.as_str().into(),
                            created_by.as_str().into(),
                            now.as_millis().into(),
                        ],
                    )
                    .await?
                    .ok_or_else(|| DbErr::Custom("release insert returned no row".into()))?;
                tx.exec(
                    "UPDATE hooks SET live_version = $2 WHERE name = $1",
                    values![name.as_str(), version],
                )
                .await?;
                Ok(Ok(ReleaseOutcome {
                    release: rows::release(&row)?,
                    created: true,
                }))
            })
        })
        .await
    }

    async fn set_live(&self, name: &HookName, version: u32) -> Result<Hook, HookError> {
        let key = name.clone();
        let moved = self
            .hook_write(move |tx, _| {
                Box::pin(async move {
                    let n = tx
                        .exec(
                            "UPDATE hooks SET live_version = $2 WHERE name = $1 AND EXISTS \
                             (SELECT 1 FROM hook_releases WHERE hook = $1 AND version = $2)",
                            values![key.as_str(), int(version)],
                        )
                        .await?;
                    Ok(Ok(n > 0))
                })
            })
            .await?;
        if !moved {
            return Err(HookError::NotFound(format!(
                "hook {name} version {version}"
            )));
        }
        self.hook_row(name).await?.ok_or_else(|| unknown_hook(name))
    }

    async fn get(&self, name: &HookName) -> Result<Option<Hook>, HookError> {
        self.hook_row(name).await
    }

    async fn list(&self) -> Result<Vec<Hook>, HookError> {
        let sql = format!(
            "SELECT {HOOK_COLUMNS} FROM hooks ORDER BY name{}",
            self.shared.dialect.bytewise()
        );
        let found = self
            .shared
            .query_all(&sql, vec![])
            .await
            .map_err(error::hook)?;
        found
            .iter()
            .map(rows::hook)
            .collect::<Result<_, _>>()
            .map_err(error::hook)
    }

    async fn list_releases(&self, name: &HookName) -> Result<Vec<HookRelease>, HookError> {
        if self.hook_row(name).await?.is_none() {
            return Err(unknown_hook(name));
        }
        let found = self
            .shared
            .query_all(
                &format!(
                    "SELECT {RELEASE_COLUMNS} FROM hook_releases WHERE hook = $1 \
                     ORDER BY version DESC"
                ),
                values![name.as_str()],
            )
            .await
            .map_err(error::hook)?;
        found
            .iter()
            .map(rows::release)
            .collect::<Result<_, _>>()
            .map_err(error::hook)
    }

    async fn get_release(
        &self,
        name: &HookName,
        version: u32,
    ) -> Result<Option<HookRelease>, HookError> {
        let row = self
            .shared
            .query_one(
                &format!(
                    "SELECT {RELEASE_COLUMNS} FROM hook_releases WHERE hook = $1 AND version = $2"
                ),
                values![name.as_str(), int(version)],
            )
            .await
            .map_err(error::hook)?;
        row.as_ref()
            .map(rows::release)
            .transpose()
            .map_err(error::hook)
    }

    async fn resolve_live(
        &self,
        event: EventType,
        queue: Option<QueueName>,
    ) -> Result<Vec<(Hook, HookRelease)>, HookError> {
        let found = self
            .shared
            .query_all(
                &format!(
                    "SELECT h.name, h.contract, h.live_version, h.created_at AS hook_created_at, \
                     r.hook, r.version, r.spec, r.digest, r.created_by, r.created_at \
                     FROM hooks h JOIN hook_releases r \
                       ON r.hook = h.name AND r.version = h.live_version \
                     ORDER BY h.name{}",
                    self.shared.dialect.bytewise()
                ),
                vec![],
            )
            .await
            .map_err(error::hook)?;
        let mut out = Vec::new();
        for row in &found {
            let mut hook = rows::hook_joined(row).map_err(error::hook)?;
            if !hook.contract.matches(event, queue.as_ref()) {
                continue;
            }
            let release = rows::release(row).map_err(error::hook)?;
            hook.live_version = Some(release.version);
            out.push((hook, release));
        }
        Ok(out)
    }

    async fn record_run(&self, run: &HookRun) -> Result<bool, HookError> {
        validate::text("hook run id", &run.id, validate::MAX_KEY_BYTES)?;
        validate::text("hook run event id", &run.event_id, validate::MAX_KEY_BYTES)?;
        let change = NewChange {
            queue: None,
            kind: ChangeKind::HookRun,
            subject: run.id.clone(),
            data: validate::json("hook run", run)?,
        };
        check_changes(std::slice::from_ref(&change))?;
        let status = serde_json::to_value(run.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let run = run.clone();
        self.hook_write(move |tx, now| {
            Box::pin(async move {
                let hook = tx
                    .one(
                        "SELECT name FROM hooks WHERE name = $1",
                        values![run.hook.as_str()],
                    )
                    .await?;
                if hook.is_none() {
                    return Ok(Err(unknown_hook(&run.hook)));
                }
                // `recorded` orders runs started at the same instant.
                let n = tx
                    .exec(
                        "INSERT INTO hook_runs (id, hook, release_version, event_id, status, \
                         attempts, last_http_status, started_at, finished_at, recorded) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                         (SELECT COALESCE(MAX(recorded), 0) + 1 FROM hook_runs WHERE hook = $2)) \
                         ON CONFLICT (id) DO NOTHING",
                        values![
                            run.id.as_str(),
                            run.hook.as_str(),
                            int(run.release_version),
                            run.event_id.as_str(),
                            status,
                            int(run.attempts),
                            run.last_http_status.map(i32::from),
                            run.started_at.as_millis(),
                            run.finished_at.as_millis(),
                        ],
                    )
                    .await?;
                if n == 0 {
                    return Ok(Ok(false));
                }
                tx.append(vec![change], now).await?;
                Ok(Ok(true))
            })
        })
        .await
    }

    async fn list_runs(&self, name: &HookName, limit: usize) -> Result<Vec<HookRun>, HookError> {
        if self.hook_row(name).await?.is_none() {
            return Err(unknown_hook(name));
        }
        let found = self
            .shared
            .query_all(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM hook_runs WHERE hook = $1 \
                     ORDER BY started_at DESC, recorded DESC LIMIT $2"
                ),
                values![name.as_str(), crate::backend::limit(limit)],
            )
            .await
            .map_err(error::hook)?;
        found
            .iter()
            .map(rows::run)
            .collect::<Result<_, _>>()
            .map_err(error::hook)
    }
}
