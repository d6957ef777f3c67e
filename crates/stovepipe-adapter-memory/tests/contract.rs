//! Runs every contract suite against the memory adapters: one test per
//! case, each on a fresh backend.

use std::sync::Arc;
use stovepipe_adapter_memory::{ManualClock, MemoryBackend};
use stovepipe_contract::{FeedFixture, HookFixture, MqFixture, StoreFixture, contract_tests};
use stovepipe_ports::{Clock, SystemClock};

/// Small enough for the lag case to overflow quickly.
const FEED_BUFFER: usize = 8;

fn backend() -> (Arc<MemoryBackend>, ManualClock) {
    let clock = ManualClock::default();
    let backend = MemoryBackend::with_feed_buffer(Arc::new(clock.clone()), FEED_BUFFER);
    (backend, clock)
}

async fn stores() -> StoreFixture {
    let (b, _) = backend();
    StoreFixture {
        stores: b.clone(),
        read_model: b.clone(),
        feed: b.clone(),
        messages: b,
    }
}

async fn mq() -> MqFixture {
    let (b, clock) = backend();
    MqFixture {
        queue: b,
        advance: Arc::new(move |d| clock.advance(d)),
    }
}

async fn feed() -> FeedFixture {
    let (b, _) = backend();
    FeedFixture {
        feed: b,
        live_buffer: FEED_BUFFER,
    }
}

async fn hooks() -> HookFixture {
    let (b, _) = backend();
    HookFixture {
        hooks: b.clone(),
        feed: b,
    }
}

async fn queue_configs() -> stovepipe_contract::queue_config::Fixture {
    backend().0
}

async fn manual_clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::default())
}

contract_tests!(request_store, stores);
contract_tests!(uri_store, stores);
contract_tests!(queue_store, stores);
contract_tests!(build_store, stores);
contract_tests!(fact_store, stores);
contract_tests!(counter, stores);
contract_tests!(read_model, stores);
contract_tests!(queue_config, queue_configs);
contract_tests!(message_queue, mq);
contract_tests!(change_feed, feed);
contract_tests!(hook_registry, hooks);
contract_tests!(clock, manual_clock);

/// The whole-suite runner works too, and the system clock passes.
#[tokio::test]
async fn system_clock_and_whole_suite_runner() {
    stovepipe_contract::clock::run(|| async { Arc::new(SystemClock::default()) as Arc<dyn Clock> })
        .await;
    stovepipe_contract::counter::run(stores).await;
}
