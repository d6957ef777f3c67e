//! Time as a port, so no stage reads the system clock and tests can
//! control time.

use stovepipe_entity::Timestamp;

#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant. MUST be monotone non-decreasing for one clock.
    fn now(&self) -> Timestamp;
}

/// The real clock: milliseconds since the Unix epoch, never going backwards
/// within one process.
#[derive(Debug, Default)]
pub struct SystemClock {
    last: std::sync::atomic::AtomicI64,
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        use std::sync::atomic::Ordering;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let prev = self.last.fetch_max(wall, Ordering::Relaxed);
        Timestamp(wall.max(prev))
    }
}
