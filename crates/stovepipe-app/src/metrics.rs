//! Metric names and the one place that records them. Operators scrape them
//! through the server's `/metrics`.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `stovepipe_ingest_total` | counter | queue, created |
//! | `stovepipe_stage_deliveries_total` | counter | topic, outcome (ack, hold, retry, dead_letter, lease_lost) |
//! | `stovepipe_consumer_in_flight` | gauge | topic (deliveries being handled) |
//! | `stovepipe_stage_wait_seconds` | histogram | topic (from a message's publish to its handler, by the wall clock, on deliveries that are not retries: how far the stage is behind; a held message's next delivery counts its hold) |
//! | `stovepipe_stage_handle_seconds` | histogram | topic (a delivery's handler, without its settlement) |
//! | `stovepipe_consumer_full_total` | counter | topic (waits with `server.max_in_flight` deliveries in flight: a rising rate means the setting, not the database, bounds the stage) |
//! | `stovepipe_gate_holds_total` | counter | queue |
//! | `stovepipe_superseded_total` | counter | queue |
//! | `stovepipe_admitted_total` | counter | queue, strategy |
//! | `stovepipe_last_green_unknown_total` | counter | queue |
//! | `stovepipe_failed_closed_total` | counter | queue |
//! | `stovepipe_facts_total` | counter | queue, green |
//! | `last_green_timestamp_seconds` | gauge | queue |
//! | `failure_detection_latency_seconds` | histogram | queue, strategy |
//! | `pipeline_latency_seconds` | histogram | queue (ingest → fact) |
//! | `stovepipe_promotions_total` / `stovepipe_promotions_skipped_total` | counter | queue |
//! | `stovepipe_dead_letters_reconciled_total` | counter | topic |
//! | `stovepipe_reconcile_repairs_total` | counter | queue, repair |
//! | `stovepipe_row_cache_reads_total` | counter | entity (request, queue, build), served (kept; kept_after_write: a write of the row was in flight and the read waited for the row it kept; fetched: nothing kept or too old; fetched_during_write: a write of the row was in flight and failed or did not end within 50 ms, so the read went to the store) |
//!
//! The SQL adapter records its own, on both backends: `stovepipe_db_writes_total`
//! (path: alone, batched; role: write, lease, read) and `stovepipe_db_write_batches_total` (outcome:
//! committed, rolled_back, lost); see its `write_batch` module. On Postgres
//! also the gauge `stovepipe_feed_held_back_seconds`: how long committed
//! change rows have waited behind an open transaction of the database (0
//! while the live stream keeps up; alert on it staying above a few seconds);
//! see its `feed` module.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use stovepipe_entity::{BuildStrategy, Fact, QueueName, Request, Timestamp};
use stovepipe_ports::{Delivery, Topic};

use crate::cache::Served;

/// The pipeline's row-cache reads (`row_cache`) of one entity, by where
/// each was served from. Registered once, with the recorder installed when
/// the cache is made (the server installs its recorder before wiring),
/// rather than looked up on every read: reads are on every stage's path.
pub(crate) struct RowCacheReads {
    kept: Counter,
    kept_after_write: Counter,
    fetched: Counter,
    fetched_during_write: Counter,
}

impl RowCacheReads {
    pub(crate) fn new(entity: &'static str) -> Self {
        let served = |served: Served| counter!("stovepipe_row_cache_reads_total", "entity" => entity, "served" => served.label());
        Self {
            kept: served(Served::Kept),
            kept_after_write: served(Served::KeptAfterWrite),
            fetched: served(Served::Fetched),
            fetched_during_write: served(Served::FetchedDuringWrite),
        }
    }

    pub(crate) fn read(&self, served: Served) {
        let counter = match served {
            Served::Kept => &self.kept,
            Served::KeptAfterWrite => &self.kept_after_write,
            Served::Fetched => &self.fetched,
            Served::FetchedDuringWrite => &self.fetched_during_write,
        };
        counter.increment(1);
    }
}

pub fn ingested(queue: &QueueName, created: bool) {
    counter!("stovepipe_ingest_total", "queue" => queue.to_string(), "created" => created.to_string())
        .increment(1);
}

pub fn delivery(topic: &Topic, outcome: &'static str) {
    counter!("stovepipe_stage_deliveries_total", "topic" => topic.to_string(), "outcome" => outcome)
        .increment(1);
}

/// A consumer loop's own metrics, registered once per loop rather than
/// looked up (and their label formatted) on every turn of it.
pub(crate) struct ConsumerMetrics {
    in_flight: Gauge,
    full: Counter,
    timings: StageTimings,
}

/// How long one topic's deliveries waited and took, handed to each
/// delivery's task.
#[derive(Clone)]
pub(crate) struct StageTimings {
    wait: Histogram,
    handle: Histogram,
}

impl StageTimings {
    /// A delivery handed to its handler at `now`: its wait since the
    /// message's publish, unless it is a retry (whose wait would count
    /// the backoff the stage chose). A held message's next delivery is
    /// not a retry, and counts its hold: the stage was that far behind.
    pub(crate) fn waited(&self, delivery: &Delivery, now: Timestamp) {
        if delivery.is_first() {
            self.wait
                .record(now.since(delivery.published_at).as_secs_f64());
        }
    }

    /// A delivery's handler took `took` (its settlement not counted).
    pub(crate) fn handled(&self, took: Duration) {
        self.handle.record(took.as_secs_f64());
    }
}

impl ConsumerMetrics {
    pub(crate) fn new(topic: &Topic) -> Self {
        let topic = topic.to_string();
        Self {
            in_flight: gauge!("stovepipe_consumer_in_flight", "topic" => topic.clone()),
            full: counter!("stovepipe_consumer_full_total", "topic" => topic.clone()),
            timings: StageTimings {
                wait: histogram!("stovepipe_stage_wait_seconds", "topic" => topic.clone()),
                handle: histogram!("stovepipe_stage_handle_seconds", "topic" => topic),
            },
        }
    }

    pub(crate) fn timings(&self) -> &StageTimings {
        &self.timings
    }

    pub(crate) fn in_flight(&self, deliveries: usize) {
        self.in_flight.set(deliveries as f64);
    }

    pub(crate) fn full(&self) {
        self.full.increment(1);
    }
}

pub fn gate_held(queue: &QueueName) {
    counter!("stovepipe_gate_holds_total", "queue" => queue.to_string()).increment(1);
}

pub fn superseded(queue: &QueueName) {
    counter!("stovepipe_superseded_total", "queue" => queue.to_string()).increment(1);
}

pub fn admitted(queue: &QueueName, strategy: BuildStrategy) {
    counter!("stovepipe_admitted_total", "queue" => queue.to_string(), "strategy" => strategy.as_str())
        .increment(1);
}

pub fn last_green_unknown(queue: &QueueName) {
    counter!("stovepipe_last_green_unknown_total", "queue" => queue.to_string()).increment(1);
}

pub fn failed_closed(queue: &QueueName) {
    counter!("stovepipe_failed_closed_total", "queue" => queue.to_string()).increment(1);
}

/// Reported only by the delivery that created the fact, so redeliveries
/// never double-count latency.
pub fn fact_recorded(request: &Request, fact: &Fact, now: Timestamp) {
    let queue = request.queue.to_string();
    counter!("stovepipe_facts_total", "queue" => queue.clone(), "green" => fact.is_green().to_string())
        .increment(1);
    let latency = now.since(request.created_at).as_secs_f64();
    histogram!("pipeline_latency_seconds", "queue" => queue.clone()).record(latency);
    if !fact.is_green() {
        let strategy = request
            .build_strategy
            .map_or("unknown", BuildStrategy::as_str);
        histogram!("failure_detection_latency_seconds", "queue" => queue, "strategy" => strategy)
            .record(latency);
    }
}

pub fn last_green_advanced(queue: &QueueName, now: Timestamp) {
    gauge!("last_green_timestamp_seconds", "queue" => queue.to_string())
        .set(now.as_millis() as f64 / 1000.0);
}

pub fn promoted(queue: &QueueName) {
    counter!("stovepipe_promotions_total", "queue" => queue.to_string()).increment(1);
}

pub fn promotion_skipped(queue: &QueueName) {
    counter!("stovepipe_promotions_skipped_total", "queue" => queue.to_string()).increment(1);
}

pub fn dead_letter_reconciled(topic: &Topic) {
    counter!("stovepipe_dead_letters_reconciled_total", "topic" => topic.to_string()).increment(1);
}

pub fn repaired(queue: &QueueName, repair: &'static str) {
    counter!("stovepipe_reconcile_repairs_total", "queue" => queue.to_string(), "repair" => repair)
        .increment(1);
}
