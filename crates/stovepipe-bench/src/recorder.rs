//! The two things the benches read from the pipeline's own metrics:
//!
//! - its row-cache reads (`stovepipe_row_cache_reads_total`), counted by
//!   where each was served from, so that a run reports how many of a
//!   request's reloads its writer's kept rows saved;
//! - its stages' timings (`stovepipe_stage_wait_seconds`,
//!   `stovepipe_stage_handle_seconds`), summed by topic, so that a run
//!   reports where a request's time goes: waiting for each stage to take
//!   its hop, and the stage's handling of it.
//!
//! [`install`] makes this the process's metrics recorder. Every other
//! metric is dropped, as it is without a recorder, so the pipeline pays
//! for no recording but these counters' atomic adds and the timings' sums.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use serde::Serialize;
use stovepipe_ports::Topic;

const READS: &str = "stovepipe_row_cache_reads_total";
const STAGE_WAIT: &str = "stovepipe_stage_wait_seconds";
const STAGE_HANDLE: &str = "stovepipe_stage_handle_seconds";

/// The stages a request passes, in the order it passes them.
const PIPELINE_ORDER: [&str; 4] = [
    Topic::PROCESS,
    Topic::BUILD,
    Topic::BUILDSIGNAL,
    Topic::RECORD,
];

/// Reads so far, by where they were served from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub kept: u64,
    pub kept_after_write: u64,
    pub fetched: u64,
    pub fetched_during_write: u64,
}

impl ReadCounts {
    /// The reads since `before`, per recorded fact (`None` without facts).
    pub fn per_fact_since(self, before: Self, facts: u64) -> Option<ReadsPerFact> {
        let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / facts as f64;
        (facts > 0).then(|| ReadsPerFact {
            kept: per(self.kept, before.kept),
            kept_after_write: per(self.kept_after_write, before.kept_after_write),
            fetched: per(self.fetched, before.fetched),
            fetched_during_write: per(self.fetched_during_write, before.fetched_during_write),
        })
    }
}

/// Row-cache reads per recorded fact, by where they were served from:
/// the kept row, the row a write in flight kept (waited for), the store
/// (nothing kept, or too old), or the store because a write of the row
/// was in flight and failed or outlasted the wait.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReadsPerFact {
    pub kept: f64,
    pub kept_after_write: f64,
    pub fetched: f64,
    pub fetched_during_write: f64,
}

/// One stage's timings so far: the seconds and the count of its
/// deliveries' waits (all but retries) and of their handlers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTotals {
    pub wait: Sum,
    pub handle: Sum,
}

/// Seconds recorded, and how many records.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sum {
    pub seconds: f64,
    pub count: u64,
}

impl Sum {
    fn since(self, before: Self) -> Self {
        Self {
            seconds: self.seconds - before.seconds,
            count: self.count.saturating_sub(before.count),
        }
    }

    /// Milliseconds per record (`None` without records).
    fn mean_ms(self) -> Option<f64> {
        (self.count > 0).then(|| self.seconds * 1000.0 / self.count as f64)
    }
}

/// Every stage's timings so far, by topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTimings(pub BTreeMap<String, StageTotals>);

impl StageTimings {
    /// Each stage that handled deliveries since `before`: its mean wait
    /// and handling, and its deliveries per recorded fact, in the
    /// pipeline's order (`process`, `build`, `buildsignal`, `record`, then
    /// any other topic by name). Empty without facts.
    pub fn per_fact_since(&self, before: &Self, facts: u64) -> Vec<StageTime> {
        if facts == 0 {
            return Vec::new();
        }
        let mut stages: Vec<StageTime> = self
            .0
            .iter()
            .filter_map(|(topic, now)| {
                let then = before.0.get(topic).copied().unwrap_or_default();
                let handle = now.handle.since(then.handle);
                Some(StageTime {
                    topic: topic.clone(),
                    deliveries_per_fact: handle.count as f64 / facts as f64,
                    wait_ms: now.wait.since(then.wait).mean_ms(),
                    handle_ms: handle.mean_ms()?,
                })
            })
            .collect();
        let place = |topic: &str| {
            PIPELINE_ORDER
                .iter()
                .position(|t| *t == topic)
                .unwrap_or(usize::MAX)
        };
        stages.sort_by(|a, b| (place(&a.topic), &a.topic).cmp(&(place(&b.topic), &b.topic)));
        stages
    }
}

/// One stage's share of a request's time over a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageTime {
    pub topic: String,
    /// Deliveries handled per recorded fact (1 for a stage every request
    /// passes once).
    pub deliveries_per_fact: f64,
    /// Mean wait of a delivery that is not a retry, from its publish to
    /// its handler (millisecond clock; `None` without such a delivery).
    pub wait_ms: Option<f64>,
    /// Mean time of a delivery in its handler (its settlement not counted).
    pub handle_ms: f64,
}

impl StageTime {
    /// `process 2.1 + 3.4 ms`, with `× n` when the stage handled other
    /// than one delivery per request.
    pub fn summary(&self) -> String {
        let wait = self
            .wait_ms
            .map_or_else(|| "?".to_owned(), |ms| format!("{ms:.1}"));
        let times = if (self.deliveries_per_fact - 1.0).abs() < 0.005 {
            String::new()
        } else {
            format!(" × {:.2}", self.deliveries_per_fact)
        };
        format!("{} {wait} + {:.1} ms{times}", self.topic, self.handle_ms)
    }
}

#[derive(Default)]
struct Counters {
    kept: Arc<AtomicU64>,
    kept_after_write: Arc<AtomicU64>,
    fetched: Arc<AtomicU64>,
    fetched_during_write: Arc<AtomicU64>,
}

/// What the recorder keeps: the reads' counters and, by topic, the sums
/// of its two stage timings, registered once per consumer loop.
#[derive(Default)]
struct Recorded {
    reads: Counters,
    timings: Mutex<BTreeMap<String, StageSums>>,
}

/// One topic's two histograms, as sums.
#[derive(Default)]
struct StageSums {
    wait: Arc<Timing>,
    handle: Arc<Timing>,
}

/// The sum of one histogram's records.
#[derive(Default)]
struct Timing(Mutex<Sum>);

impl HistogramFn for Timing {
    fn record(&self, seconds: f64) {
        let mut sum = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        sum.seconds += seconds;
        sum.count += 1;
    }
}

impl Timing {
    fn sum(&self) -> Sum {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static RECORDED: OnceLock<Arc<Recorded>> = OnceLock::new();

/// Installs the recorder (once; a later call, or another recorder already
/// installed, leaves things as they are).
pub fn install() {
    let recorded = RECORDED.get_or_init(Arc::default).clone();
    // Another recorder already installed: `counts` and `stage_timings`
    // then stay at zero.
    let _ = metrics::set_global_recorder(BenchRecorder(recorded));
}

/// The reads counted so far (zero before [`install`]).
pub fn counts() -> ReadCounts {
    RECORDED
        .get()
        .map_or_else(ReadCounts::default, |r| r.reads.counts())
}

/// The stages' timings so far (none before [`install`]).
pub fn stage_timings() -> StageTimings {
    RECORDED
        .get()
        .map_or_else(StageTimings::default, |r| r.stage_timings())
}

impl Counters {
    fn counts(&self) -> ReadCounts {
        ReadCounts {
            kept: self.kept.load(Ordering::Relaxed),
            kept_after_write: self.kept_after_write.load(Ordering::Relaxed),
            fetched: self.fetched.load(Ordering::Relaxed),
            fetched_during_write: self.fetched_during_write.load(Ordering::Relaxed),
        }
    }
}

impl Recorded {
    fn lock_timings(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StageSums>> {
        self.timings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stage_timings(&self) -> StageTimings {
        let timings = self.lock_timings();
        let stages = timings.iter().map(|(topic, sums)| {
            let totals = StageTotals {
                wait: sums.wait.sum(),
                handle: sums.handle.sum(),
            };
            (topic.clone(), totals)
        });
        StageTimings(stages.collect())
    }
}

struct BenchRecorder(Arc<Recorded>);

impl Recorder for BenchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != READS {
            return Counter::noop();
        }
        let served = key.labels().find(|l| l.key() == "served");
        let reads = &self.0.reads;
        let counter = match served.map(metrics::Label::value) {
            Some("kept") => &reads.kept,
            Some("kept_after_write") => &reads.kept_after_write,
            Some("fetched") => &reads.fetched,
            Some("fetched_during_write") => &reads.fetched_during_write,
            _ => return Counter::noop(),
        };
        Counter::from_arc(counter.clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let wait = match key.name() {
            STAGE_WAIT => true,
            STAGE_HANDLE => false,
            _ => return Histogram::noop(),
        };
        let Some(topic) = key.labels().find(|l| l.key() == "topic") else {
            return Histogram::noop();
        };
        let mut timings = self.0.lock_timings();
        let sums = timings.entry(topic.value().to_owned()).or_default();
        Histogram::from_arc(if wait { &sums.wait } else { &sums.handle }.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_per_fact_are_the_differences_over_the_facts() {
        let before = ReadCounts {
            kept: 10,
            kept_after_write: 2,
            fetched: 4,
            fetched_during_write: 1,
        };
        let after = ReadCounts {
            kept: 30,
            kept_after_write: 5,
            fetched: 9,
            fetched_during_write: 1,
        };
        let per = after.per_fact_since(before, 10).unwrap();
        assert_eq!(
            (
                per.kept,
                per.kept_after_write,
                per.fetched,
                per.fetched_during_write
            ),
            (2.0, 0.3, 0.5, 0.0)
        );
        assert!(after.per_fact_since(before, 0).is_none());
    }

    #[test]
    fn only_the_row_cache_reads_are_counted_by_where_they_were_served() {
        let kept = Arc::new(Recorded::default());
        let recorder = BenchRecorder(kept.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(READS, "entity" => "request", "served" => "kept").increment(2);
            metrics::counter!(READS, "entity" => "queue", "served" => "fetched_during_write")
                .increment(1);
            metrics::counter!(READS, "entity" => "build", "served" => "kept_after_write")
                .increment(3);
            metrics::counter!("stovepipe_ingest_total", "served" => "kept").increment(5);
        });
        assert_eq!(
            kept.reads.counts(),
            ReadCounts {
                kept: 2,
                kept_after_write: 3,
                fetched: 0,
                fetched_during_write: 1,
            }
        );
    }

    #[test]
    fn stage_timings_are_summed_by_topic_and_stated_per_fact_in_pipeline_order() {
        let kept = Arc::new(Recorded::default());
        let recorder = BenchRecorder(kept.clone());
        let record = |metric: &'static str, topic: &'static str, seconds: &[f64]| {
            metrics::with_local_recorder(&recorder, || {
                let histogram = metrics::histogram!(metric, "topic" => topic);
                for s in seconds {
                    histogram.record(*s);
                }
            });
        };
        record(STAGE_WAIT, "record", &[0.002]);
        record(STAGE_HANDLE, "record", &[0.004]);
        record(STAGE_WAIT, "process", &[0.001]);
        record(STAGE_HANDLE, "process", &[0.003]);
        let before = kept.stage_timings();
        // Two requests: process once each, record once each and once more
        // for a redelivery (which records no wait).
        record(STAGE_WAIT, "record", &[0.002, 0.004]);
        record(STAGE_HANDLE, "record", &[0.003, 0.005, 0.004]);
        record(STAGE_WAIT, "process", &[0.001, 0.003]);
        record(STAGE_HANDLE, "process", &[0.002, 0.004]);
        record("pipeline_latency_seconds", "process", &[9.0]);
        let stages = kept.stage_timings().per_fact_since(&before, 2);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert_eq!(
            stages.iter().map(|s| s.topic.as_str()).collect::<Vec<_>>(),
            ["process", "record"],
            "the pipeline's order, not the names'"
        );
        let (process, record) = (&stages[0], &stages[1]);
        assert!(close(process.deliveries_per_fact, 1.0));
        assert!(close(process.wait_ms.unwrap(), 2.0));
        assert!(close(process.handle_ms, 3.0));
        assert!(close(record.deliveries_per_fact, 1.5));
        assert!(close(record.wait_ms.unwrap(), 3.0));
        assert!(close(record.handle_ms, 4.0));
        assert_eq!(process.summary(), "process 2.0 + 3.0 ms");
        assert_eq!(record.summary(), "record 3.0 + 4.0 ms × 1.50");
        assert!(kept.stage_timings().per_fact_since(&before, 0).is_empty());
    }
}
