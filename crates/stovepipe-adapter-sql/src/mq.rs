//! The SQL message queue.
//!
//! Owns: partitions as the rows of `(topic, partition_key)` in `id` order,
//! whose lowest id (the head) is the only deliverable message; leases as
//! `lease_owner` (the delivery id) until `lease_expires`, measured by the
//! backend's clock; attempts, dead letters, dedup and wake-ups.
//! Does not own: the consumer loop, backoff or when to dead-letter (the
//! consumer runtime in `stovepipe-app` decides; this only obeys).
//!
//! - **Dedup scope**: acknowledged and rejected messages are deleted, so a
//!   `(topic, partition_key, message_id)` is deduplicated only while the
//!   message is pending (published and not yet acked or rejected, leased and
//!   held included) — the least the port promises. Publishing the same id
//!   after its ack delivers it again.
//! - **Cross-process safety (Postgres)**: `receive` is one `UPDATE` whose
//!   subquery locks candidate heads with `FOR UPDATE SKIP LOCKED`, so two
//!   consumers never lease one head; publishers of a
//!   partition are serialised by an advisory lock until commit, so `id`
//!   order is commit order and no older message can appear behind a leased
//!   head. Every settle (`ack`, `hold`, `retry`, `reject`, `renew`) is
//!   conditional on `lease_owner` and an unexpired `lease_expires`; zero
//!   rows is `LeaseLost`.
//! - **Round trips**: `receive` and every settle but `reject` are a single
//!   statement (a wake-up's NOTIFY rides in it), since they are most of
//!   the queue's traffic: alone, an autocommit statement that on Postgres
//!   does not wait for its WAL flush (see `Shared::lease_write` for why
//!   that is safe); under load, one more statement in the message of the
//!   batch of writes that is forming (`write_batch`). Acks that arrive
//!   while one is being written share the next statement (group commit,
//!   see `acks`).
//! - **SQLite**: the single writer connection serialises all of it.
//! - **Wake-ups**: counted locally per topic after each commit (`wakeups`:
//!   a wait returns at once only for one the last receive did not cover),
//!   and on Postgres a NOTIFY in the same transaction for the other
//!   replicas, while there are any (`presence`).

use crate::backend::{Dialect, MQ_CHANNEL, Tx, big, check_message, limit, values};
use crate::rows::{self, DEAD_LETTER_COLUMNS};
use crate::{SqlBackend, error, validate};
use async_trait::async_trait;
use sea_orm::DbErr;
use std::time::Duration;
use stovepipe_entity::Timestamp;
use stovepipe_ports::{DeadLetter, Delivery, MessageQueue, MqError, OutgoingMessage, Topic};

/// "No older message of the same partition": `m` is its partition's head.
const IS_HEAD: &str = "NOT EXISTS (SELECT 1 FROM messages o WHERE o.topic = m.topic \
    AND o.partition_key = m.partition_key AND o.id < m.id)";

/// The message row a delivery leased: its id is the prefix of the
/// delivery id (`<row id>.<uuid>`). A malformed id cannot hold a lease.
fn leased_row(d: &Delivery) -> Result<i64, MqError> {
    d.delivery_id
        .split_once('.')
        .and_then(|(id, _)| id.parse().ok())
        .ok_or_else(|| MqError::LeaseLost(d.delivery_id.clone()))
}

fn attempt(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl SqlBackend {
    /// Runs `f` in one write transaction, mapping database errors.
    async fn mq_write<T, F>(&self, f: F) -> Result<T, MqError>
    where
        F: for<'t> FnOnce(
            &'t mut Tx,
            Timestamp,
        )
            -> futures::future::BoxFuture<'t, Result<Result<T, MqError>, DbErr>>,
    {
        let now = self.shared.clock.now();
        let mut tx = self.shared.begin().await.map_err(error::mq)?;
        match f(&mut tx, now).await.map_err(error::mq)? {
            Ok(out) => {
                tx.commit().await.map_err(error::mq)?;
                Ok(out)
            }
            // Dropping the transaction rolls it back.
            Err(e) => Err(e),
        }
    }

    /// One conditional statement on the delivery's lease, on its own (one
    /// round trip); `LeaseLost` when it matched nothing (settled, expired or
    /// taken over). Whom it wakes is `wake`'s rule: locally after it, and on
    /// Postgres by a NOTIFY in the same statement.
    async fn on_lease(
        &self,
        d: &Delivery,
        set: &'static str,
        extra: Vec<sea_orm::Value>,
        wake: Wake,
    ) -> Result<(), MqError> {
        let id = leased_row(d)?;
        let now = self.shared.clock.now();
        let mut v = values![id, d.delivery_id.as_str(), now.as_millis()];
        v.extend(extra);
        let sql = self.settle_statement(
            &format!("{set} WHERE id = $1 AND lease_owner = $2 AND lease_expires > $3"),
            &mut v,
            wake,
        );
        let settled = self.shared.lease_write(&sql, v).await.map_err(error::mq)?;
        if settled.is_empty() {
            return Err(MqError::LeaseLost(d.delivery_id.clone()));
        }
        self.wake_settled(&settled).map_err(error::mq)?;
        Ok(())
    }

    /// The statement that applies `settle` (`<DELETE|UPDATE …> WHERE …`,
    /// its parameters already in `v`) and returns each settled row's `id`,
    /// `lease_owner`, `topic` and whether to `wake` its waiters, by `wake`'s
    /// rule; on Postgres the NOTIFYs ride in it (their parameters are
    /// appended to `v`).
    pub(crate) fn settle_statement(
        &self,
        settle: &str,
        v: &mut Vec<sea_orm::Value>,
        wake: Wake,
    ) -> String {
        let postgres = self.shared.dialect == Dialect::Postgres;
        // Whether waiters should hear of it, per row settled.
        let worth_waking = match (wake, postgres) {
            (Wake::Never, _) => "FALSE",
            (Wake::Always, _) | (Wake::IfPartitionHasMore, false) => "TRUE",
            (Wake::IfPartitionHasMore, true) => {
                "EXISTS (SELECT 1 FROM messages o WHERE o.topic = messages.topic \
                 AND o.partition_key = messages.partition_key AND o.id <> messages.id)"
            }
        };
        let settle = format!("{settle} RETURNING id, lease_owner, topic, {worth_waking} AS wake");
        if wake == Wake::Never || !self.shared.notifies() {
            return settle;
        }
        v.push(MQ_CHANNEL.into());
        let channel = v.len();
        v.push(self.shared.notify_tag.as_str().into());
        let tag = v.len();
        format!(
            "WITH settled AS ({settle}), \
             notified AS (SELECT pg_notify(${channel}, topic || ${tag}) FROM settled \
               WHERE wake) \
             SELECT id, lease_owner, topic, wake FROM settled \
             WHERE (SELECT COUNT(*) FROM notified) >= 0"
        )
    }

    /// Wakes the local waiters of every settled row's topic that asked for
    /// it (rows of [`settle_statement`](Self::settle_statement)).
    pub(crate) fn wake_settled(&self, settled: &[sea_orm::QueryResult]) -> Result<(), DbErr> {
        let mut woken: Vec<Topic> = Vec::new();
        for row in settled {
            if rows::get::<bool>(row, "wake")? {
                let topic = Topic::new(rows::get::<String>(row, "topic")?);
                if !woken.contains(&topic) {
                    self.shared.wake_local(&topic);
                    woken.push(topic);
                }
            }
        }
        Ok(())
    }
}

/// Whom a lease operation wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    Never,
    /// The message itself is deliverable again now.
    Always,
    /// An ack: the partition's next message, if there is one, is its head
    /// now. (SQLite wakes anyway: its waiters are in this process, where an
    /// empty receive costs little.)
    IfPartitionHasMore,
}

/// Publishes inside `tx` (see [`Tx::publish`]); true when inserted.
async fn publish_in(
    tx: &mut Tx,
    message: &OutgoingMessage,
    last_error: Option<String>,
    now: Timestamp,
) -> Result<bool, DbErr> {
    Ok(tx.publish(vec![message.clone()], last_error, now).await? > 0)
}

#[async_trait]
impl MessageQueue for SqlBackend {
    async fn publish(&self, message: OutgoingMessage) -> Result<bool, MqError> {
        check_message(&message)?;
        self.mq_write(move |tx, now| {
            Box::pin(async move { Ok(Ok(publish_in(tx, &message, None, now).await?)) })
        })
        .await
    }

    async fn receive(
        &self,
        topic: &Topic,
        _consumer: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, MqError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.shared.wakeups.receiving(topic);
        let now = self.shared.clock.now();
        let lock = match self.shared.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // One statement leases the visible heads — never leased and due, or
        // whose lease ran out — and returns them. A holder that neither
        // settled nor renewed in time used up an attempt. Delivery ids are
        // `<row id>.<token>`, the token fresh for every receive.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let expires = now.saturating_add(lease).as_millis();
        let rows = self
            .shared
            .lease_write(
                &format!(
                    "UPDATE messages SET lease_owner = CAST(id AS TEXT) || '.' || $4, \
                       lease_expires = $5, \
                       attempt = attempt + CASE WHEN lease_expires IS NULL THEN 0 ELSE 1 END \
                     WHERE id IN (SELECT m.id FROM messages m \
                       WHERE m.topic = $1 AND {IS_HEAD} AND \
                       ((m.lease_expires IS NULL AND m.visible_at <= $2) \
                        OR m.lease_expires <= $2) \
                       ORDER BY m.id LIMIT $3{lock}) \
                     RETURNING id, partition_key, message_id, payload, attempt, last_error, \
                       published_at, lease_owner"
                ),
                values![
                    topic.as_str(),
                    now.as_millis(),
                    limit(max),
                    token.as_str(),
                    expires
                ],
            )
            .await
            .map_err(error::mq)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = rows::get(&row, "id").map_err(error::mq)?;
            let delivery = Delivery {
                delivery_id: rows::get(&row, "lease_owner").map_err(error::mq)?,
                topic: topic.clone(),
                partition_key: rows::get(&row, "partition_key").map_err(error::mq)?,
                message_id: rows::get(&row, "message_id").map_err(error::mq)?,
                payload: rows::get(&row, "payload").map_err(error::mq)?,
                attempt: attempt(rows::get(&row, "attempt").map_err(error::mq)?),
                last_error: rows::get(&row, "last_error").map_err(error::mq)?,
                published_at: Timestamp(rows::get(&row, "published_at").map_err(error::mq)?),
            };
            out.push((id, delivery));
        }
        // RETURNING has no order: deliver oldest first, as the port promises.
        out.sort_by_key(|(id, _)| *id);
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), MqError> {
        let row = leased_row(delivery)?;
        self.shared.acks.ack(self, row, &delivery.delivery_id).await
    }

    async fn hold(&self, delivery: &Delivery, delay: Duration) -> Result<(), MqError> {
        let until = self.shared.clock.now().saturating_add(delay).as_millis();
        self.on_lease(
            delivery,
            "UPDATE messages SET lease_owner = NULL, lease_expires = NULL, visible_at = $4",
            values![until],
            if delay.is_zero() {
                Wake::Always
            } else {
                Wake::Never
            },
        )
        .await
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), MqError> {
        let until = self.shared.clock.now().saturating_add(delay).as_millis();
        self.on_lease(
            delivery,
            "UPDATE messages SET lease_owner = NULL, lease_expires = NULL, visible_at = $4, \
             attempt = attempt + 1, last_error = $5",
            values![until, validate::diagnostic(error)],
            if delay.is_zero() {
                Wake::Always
            } else {
                Wake::Never
            },
        )
        .await
    }

    async fn reject(&self, delivery: &Delivery, error: &str) -> Result<DeadLetter, MqError> {
        let id = leased_row(delivery)?;
        let d = delivery.clone();
        let error = validate::diagnostic(error);
        self.mq_write(move |tx, now| {
            Box::pin(async move {
                let row = tx
                    .one(
                        "DELETE FROM messages \
                         WHERE id = $1 AND lease_owner = $2 AND lease_expires > $3 \
                         RETURNING message_id, payload, attempt, published_at",
                        values![id, d.delivery_id.as_str(), now.as_millis()],
                    )
                    .await?;
                let Some(row) = row else {
                    return Ok(Err(MqError::LeaseLost(d.delivery_id.clone())));
                };
                let message_id: String = rows::get(&row, "message_id")?;
                let payload: serde_json::Value = rows::get(&row, "payload")?;
                let attempts: i32 = rows::get(&row, "attempt")?;
                let published_at: i64 = rows::get(&row, "published_at")?;
                let dead = tx
                    .one(
                        &format!(
                            "INSERT INTO dead_letters (topic, partition_key, message_id, payload, \
                             attempts, last_error, published_at, dead_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                             RETURNING {DEAD_LETTER_COLUMNS}"
                        ),
                        vec![
                            d.topic.as_str().into(),
                            d.partition_key.as_str().into(),
                            message_id.as_str().into(),
                            crate::backend::json_value(payload.clone()),
                            attempts.into(),
                            error.as_str().into(),
                            published_at.into(),
                            now.as_millis().into(),
                        ],
                    )
                    .await?
                    .ok_or_else(|| DbErr::Custom("dead letter insert returned no row".into()))?;
                let dead = rows::dead_letter(&dead)?;
                // A dead-letter topic's own rejects are only parked, or a
                // failing reconciler would feed itself forever.
                if !d.topic.is_dlq() {
                    let copy =
                        OutgoingMessage::new(d.topic.dlq(), d.partition_key, message_id, payload);
                    publish_in(tx, &copy, Some(error), now).await?;
                }
                // The partition's next message is deliverable now.
                tx.wake(&d.topic);
                Ok(Ok(dead))
            })
        })
        .await
    }

    async fn renew(&self, delivery: &Delivery, lease: Duration) -> Result<(), MqError> {
        let until = self.shared.clock.now().saturating_add(lease).as_millis();
        self.on_lease(
            delivery,
            "UPDATE messages SET lease_expires = $4",
            values![until],
            Wake::Never,
        )
        .await
    }

    async fn wake(&self, topic: &Topic, partition_key: &str) -> Result<bool, MqError> {
        let topic = topic.clone();
        let key = partition_key.to_owned();
        self.mq_write(move |tx, now| {
            Box::pin(async move {
                let woken = tx
                    .exec(
                        "UPDATE messages SET visible_at = $3 \
                         WHERE topic = $1 AND partition_key = $2 AND lease_owner IS NULL \
                         AND visible_at > $3 AND id = (SELECT MIN(id) FROM messages \
                           WHERE topic = $1 AND partition_key = $2)",
                        values![topic.as_str(), key.as_str(), now.as_millis()],
                    )
                    .await?;
                if woken > 0 {
                    tx.wake(&topic);
                }
                Ok(Ok(woken > 0))
            })
        })
        .await
    }

    async fn wait(&self, topic: &Topic, timeout: Duration) {
        // Spurious returns are allowed; the caller receives again either way.
        self.shared.wakeups.wait(topic, timeout).await;
    }

    async fn next_visible_at(&self, topic: &Topic) -> Result<Option<Timestamp>, MqError> {
        let row = self
            .shared
            .query_one(
                &format!(
                    "SELECT MIN(COALESCE(m.lease_expires, m.visible_at)) AS at FROM messages m \
                     WHERE m.topic = $1 AND {IS_HEAD}"
                ),
                values![topic.as_str()],
            )
            .await
            .map_err(error::mq)?;
        let at: Option<i64> = match row {
            Some(r) => rows::get(&r, "at").map_err(error::mq)?,
            None => None,
        };
        Ok(at.map(Timestamp))
    }

    async fn dead_letters(
        &self,
        topic: Option<Topic>,
        limit_: usize,
    ) -> Result<Vec<DeadLetter>, MqError> {
        let found = match topic {
            Some(t) => {
                self.shared
                    .query_all(
                        &format!(
                            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE topic = $1 \
                             ORDER BY id LIMIT $2"
                        ),
                        values![t.as_str(), limit(limit_)],
                    )
                    .await
            }
            None => {
                self.shared
                    .query_all(
                        &format!(
                            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id LIMIT $1"
                        ),
                        values![limit(limit_)],
                    )
                    .await
            }
        }
        .map_err(error::mq)?;
        found
            .iter()
            .map(rows::dead_letter)
            .collect::<Result<_, _>>()
            .map_err(error::mq)
    }

    async fn requeue_dead_letter(&self, id: u64) -> Result<(), MqError> {
        self.mq_write(move |tx, now| {
            Box::pin(async move {
                let row = tx
                    .one(
                        &format!(
                            "DELETE FROM dead_letters WHERE id = $1 RETURNING {DEAD_LETTER_COLUMNS}"
                        ),
                        values![big(id)],
                    )
                    .await?;
                let Some(row) = row else {
                    return Ok(Err(MqError::NotFound(format!("dead letter {id}"))));
                };
                let dead = rows::dead_letter(&row)?;
                let message = OutgoingMessage::new(
                    dead.topic,
                    dead.partition_key,
                    dead.message_id,
                    dead.payload,
                );
                // Attempts start again at 1; the reason it died stays visible.
                publish_in(tx, &message, Some(dead.last_error), now).await?;
                Ok(Ok(()))
            })
        })
        .await
    }

    async fn purge_dead_letter(&self, id: u64) -> Result<(), MqError> {
        self.mq_write(move |tx, _| {
            Box::pin(async move {
                if tx
                    .exec("DELETE FROM dead_letters WHERE id = $1", values![big(id)])
                    .await?
                    == 0
                {
                    return Ok(Err(MqError::NotFound(format!("dead letter {id}"))));
                }
                Ok(Ok(()))
            })
        })
        .await
    }
}
