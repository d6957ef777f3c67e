//! A clock that only moves when a test moves it.
//!
//! Owns: the controllable [`ManualClock`]. Does not own: real time; `wait`
//! timeouts of the message queue still use tokio's clock, because a test
//! that forgets to advance must not hang forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use stovepipe_entity::Timestamp;
use stovepipe_ports::Clock;

/// A cloneable handle on one manually driven instant; every clone sees the
/// same time. Never goes backwards (the `Clock` contract is monotone).
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(start.as_millis())),
        }
    }

    /// Moves time forward by `by` (whole milliseconds).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // fetch_update keeps the add saturating even under concurrent advances.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            });
    }

    /// Jumps to `to`; an earlier instant is ignored so the clock stays monotone.
    pub fn set(&self, to: Timestamp) {
        self.now.fetch_max(to.as_millis(), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    /// Starts at 1_000_000 ms so timestamps are positive and distinguishable
    /// from "unset".
    fn default() -> Self {
        Self::new(Timestamp(1_000_000))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_and_never_goes_back() {
        let clock = ManualClock::new(Timestamp(10));
        let other = clock.clone();
        clock.advance(Duration::from_millis(5));
        assert_eq!(other.now(), Timestamp(15));
        clock.set(Timestamp(100));
        assert_eq!(other.now(), Timestamp(100));
        clock.set(Timestamp(50));
        assert_eq!(clock.now(), Timestamp(100));
    }
}
