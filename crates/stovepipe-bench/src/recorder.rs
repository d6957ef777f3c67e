//! The pipeline's row-cache reads (`stovepipe_row_cache_reads_total`),
//! counted by where each was served from, so that a run reports how many
//! of a request's reloads its writer's kept rows saved.
//!
//! [`install`] makes this the process's metrics recorder. Every other
//! metric is dropped, as it is without a recorder, so the pipeline pays
//! for no recording but these counters' atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use serde::Serialize;

const READS: &str = "stovepipe_row_cache_reads_total";

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

#[derive(Default)]
struct Counters {
    kept: Arc<AtomicU64>,
    kept_after_write: Arc<AtomicU64>,
    fetched: Arc<AtomicU64>,
    fetched_during_write: Arc<AtomicU64>,
}

static COUNTERS: OnceLock<Arc<Counters>> = OnceLock::new();

/// Installs the recorder (once; a later call, or another recorder already
/// installed, leaves things as they are).
pub fn install() {
    let counters = COUNTERS.get_or_init(Arc::default).clone();
    // Another recorder already installed: `counts` then stays at zero.
    let _ = metrics::set_global_recorder(ReadsOnly(counters));
}

/// The reads counted so far (zero before [`install`]).
pub fn counts() -> ReadCounts {
    COUNTERS
        .get()
        .map_or_else(ReadCounts::default, |c| ReadCounts {
            kept: c.kept.load(Ordering::Relaxed),
            kept_after_write: c.kept_after_write.load(Ordering::Relaxed),
            fetched: c.fetched.load(Ordering::Relaxed),
            fetched_during_write: c.fetched_during_write.load(Ordering::Relaxed),
        })
}

struct ReadsOnly(Arc<Counters>);

impl Recorder for ReadsOnly {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != READS {
            return Counter::noop();
        }
        let served = key.labels().find(|l| l.key() == "served");
        let counter = match served.map(metrics::Label::value) {
            Some("kept") => &self.0.kept,
            Some("kept_after_write") => &self.0.kept_after_write,
            Some("fetched") => &self.0.fetched,
            Some("fetched_during_write") => &self.0.fetched_during_write,
            _ => return Counter::noop(),
        };
        Counter::from_arc(counter.clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
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
        let counters = Arc::new(Counters::default());
        let recorder = ReadsOnly(counters.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!(READS, "entity" => "request", "served" => "kept").increment(2);
            metrics::counter!(READS, "entity" => "queue", "served" => "fetched_during_write")
                .increment(1);
            metrics::counter!(READS, "entity" => "build", "served" => "kept_after_write")
                .increment(3);
            metrics::counter!("stovepipe_ingest_total", "served" => "kept").increment(5);
        });
        assert_eq!(counters.kept.load(Ordering::Relaxed), 2);
        assert_eq!(counters.fetched.load(Ordering::Relaxed), 0);
        assert_eq!(counters.fetched_during_write.load(Ordering::Relaxed), 1);
        assert_eq!(counters.kept_after_write.load(Ordering::Relaxed), 3);
    }
}
