//! Contract of `Clock`: monotone non-decreasing, also across threads.
//!
//! Does not own: controlling time (a test clock's own business).

use std::sync::Arc;
use stovepipe_ports::Clock;

/// The clock suite runs against the clock alone.
pub type Fixture = Arc<dyn Clock>;

crate::suite!($, clock, clock_tests, Fixture, [
    now_never_goes_backwards,
    now_never_goes_backwards_across_threads,
]);

async fn now_never_goes_backwards(clock: Fixture) {
    let mut last = clock.now();
    for _ in 0..10_000 {
        let now = clock.now();
        assert!(now >= last, "clock went back from {last} to {now}");
        last = now;
    }
}

async fn now_never_goes_backwards_across_threads(clock: Fixture) {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let clock = clock.clone();
            std::thread::spawn(move || {
                let mut last = clock.now();
                for _ in 0..10_000 {
                    let now = clock.now();
                    assert!(now >= last, "clock went back from {last} to {now}");
                    last = now;
                }
                last
            })
        })
        .collect();
    let before = clock.now();
    for t in threads {
        t.join().unwrap();
    }
    assert!(clock.now() >= before);
}
