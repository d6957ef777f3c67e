//! A hook sink that records deliveries and answers as scripted.
//!
//! Owns: the record of `(release, envelope)` deliveries and per-URL queues of
//! scripted outcomes. Does not own: HTTP or signatures (see
//! `stovepipe-adapter-webhook`).

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use stovepipe_entity::{EventEnvelope, HookRelease};
use stovepipe_ports::{DeliveryOutcome, HookSink};

#[derive(Debug)]
struct SinkState {
    deliveries: Vec<(HookRelease, EventEnvelope)>,
    scripted: HashMap<String, VecDeque<DeliveryOutcome>>,
    default: DeliveryOutcome,
}

/// A cloneable handle on one recording sink; clones share it. Each
/// delivery to a URL takes the next scripted outcome of that URL, or the
/// default (`Delivered { status: 200 }`) when none is left.
#[derive(Debug, Clone)]
pub struct RecordingHookSink {
    state: Arc<Mutex<SinkState>>,
}

impl Default for RecordingHookSink {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingHookSink {
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(SinkState {
                deliveries: Vec::new(),
                scripted: HashMap::new(),
                default: DeliveryOutcome::Delivered { status: 200 },
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        // No method panics while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends outcomes for the next deliveries to `url` (e.g. a 500, then
    /// a 200).
    pub fn script(&self, url: &str, outcomes: impl IntoIterator<Item = DeliveryOutcome>) {
        self.lock()
            .scripted
            .entry(url.to_owned())
            .or_default()
            .extend(outcomes);
    }

    /// The outcome once a URL's script is used up.
    pub fn set_default(&self, outcome: DeliveryOutcome) {
        self.lock().default = outcome;
    }

    /// Every delivery attempt, in order.
    pub fn deliveries(&self) -> Vec<(HookRelease, EventEnvelope)> {
        self.lock().deliveries.clone()
    }

    /// Delivery attempts to `url`.
    pub fn deliveries_to(&self, url: &str) -> Vec<EventEnvelope> {
        self.lock()
            .deliveries
            .iter()
            .filter(|(r, _)| r.spec.url == url)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

#[async_trait]
impl HookSink for RecordingHookSink {
    async fn deliver(&self, release: &HookRelease, envelope: &EventEnvelope) -> DeliveryOutcome {
        let mut st = self.lock();
        st.deliveries.push((release.clone(), envelope.clone()));
        let next = st
            .scripted
            .get_mut(&release.spec.url)
            .and_then(VecDeque::pop_front);
        next.unwrap_or_else(|| st.default.clone())
    }
}
