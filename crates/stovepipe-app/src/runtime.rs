//! The consumer runtime: drives a [`Handler`] over its topic.
//!
//! It owns everything about a delivery except the business decision:
//! turning the handler's result into ack / hold / retry with exponential
//! backoff / dead-letter ([`settle`]), renewing the lease while the handler
//! runs, running different partitions concurrently, timing each delivery's
//! wait since its publish (by `clock`, the clock the message queue stamps
//! with) and its handling, and draining in-flight deliveries on shutdown
//! through a cancellation token.
//!
//! [`Pump`] is the same settlement logic driven synchronously, for tests and
//! embedders that want deterministic, single-threaded progress under a
//! manual clock.

use std::sync::Arc;
use std::time::Duration;

use stovepipe_entity::Timestamp;
use stovepipe_ports::{Clock, Delivery, MessageQueue, MqError, Topic};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::error::StageError;
use crate::metrics::{self, StageTimings};
use crate::stages::{Handler, Outcome};

/// Attempts and backoff for retryable errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a retryable error dead-letters (the first delivery
    /// counts as attempt 1).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Backoff after failed attempt `attempt` (1-based): initial × 2^(n−1),
    /// capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// What the runtime did with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Acked,
    Held(Duration),
    Retried(Duration),
    DeadLettered,
    /// The lease expired under us; another consumer owns the message now.
    LeaseLost,
}

/// Applies a handler result to a delivery.
pub async fn settle(
    mq: &dyn MessageQueue,
    policy: &RetryPolicy,
    delivery: &Delivery,
    result: Result<Outcome, StageError>,
) -> Result<Settlement, MqError> {
    let settled = match result {
        Ok(Outcome::Ack) => mq.ack(delivery).await.map(|()| Settlement::Acked),
        Ok(Outcome::Hold(delay)) => mq
            .hold(delivery, delay)
            .await
            .map(|()| Settlement::Held(delay)),
        Err(StageError::Retryable(msg)) if delivery.attempt < policy.max_attempts => {
            let delay = policy.backoff(delivery.attempt);
            debug!(error = %msg, attempt = delivery.attempt, ?delay, "retrying");
            mq.retry(delivery, delay, &msg)
                .await
                .map(|()| Settlement::Retried(delay))
        }
        Err(StageError::Retryable(msg)) => {
            warn!(error = %msg, attempts = delivery.attempt, "attempts exhausted: dead-lettering");
            let why = format!("after {} attempts: {msg}", delivery.attempt);
            mq.reject(delivery, &why)
                .await
                .map(|_| Settlement::DeadLettered)
        }
        Err(StageError::Permanent(msg)) => {
            warn!(error = %msg, "permanent error: dead-lettering");
            mq.reject(delivery, &msg)
                .await
                .map(|_| Settlement::DeadLettered)
        }
    };
    let settled = match settled {
        Err(MqError::LeaseLost(_)) => Ok(Settlement::LeaseLost),
        other => other,
    };
    if let Ok(s) = &settled {
        metrics::delivery(
            &delivery.topic,
            match s {
                Settlement::Acked => "ack",
                Settlement::Held(_) => "hold",
                Settlement::Retried(_) => "retry",
                Settlement::DeadLettered => "dead_letter",
                Settlement::LeaseLost => "lease_lost",
            },
        );
    }
    settled
}

/// The tracing span of one delivery: topic, queue, subject, attempt.
fn delivery_span(delivery: &Delivery) -> tracing::Span {
    let field = |name: &str| {
        delivery
            .payload
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    info_span!(
        "delivery",
        topic = %delivery.topic,
        queue = %field("queue"),
        request_id = %field("request_id"),
        build_id = %field("build_id"),
        attempt = delivery.attempt,
    )
}

/// Runs the handler on one delivery, timing it when `timings` are given,
/// and settles it.
pub(crate) async fn deliver(
    handler: &dyn Handler,
    mq: &dyn MessageQueue,
    policy: &RetryPolicy,
    delivery: &Delivery,
    timings: Option<&StageTimings>,
) -> Result<Settlement, MqError> {
    let span = delivery_span(delivery);
    async {
        let started = tokio::time::Instant::now();
        let result = handler.handle(delivery).await;
        if let Some(timings) = timings {
            timings.handled(started.elapsed());
        }
        settle(mq, policy, delivery, result).await
    }
    .instrument(span)
    .await
}

/// Deliveries a consumer handles at once unless told
/// ([`ConsumerSettings::max_in_flight`]; `server.max_in_flight`).
///
/// Each delivery is one partition (a queue) of the consumer's topic, and a
/// stage's handler mostly waits: for its statements, which the SQL
/// backend's lanes batch, or for a CI's API. At 16 a topic's consumer was
/// the pipeline's serial bound beyond 32 busy queues: the benchmark drove
/// 64 and 128 queues no faster than 32, with the database lanes a third
/// idle; with 64 it ran 1.25 × as fast at 64 queues and 1.46–1.50 × at 128
/// (docs/benchmarks.md, 2026-12-06, sixth session). A delivery in flight
/// costs a task and a lease renewal every third of the lease.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// How a consumer polls and leases.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Identifies this consumer in leases (unique per process and topic).
    pub consumer_id: String,
    /// Deliveries (partitions) handled concurrently.
    pub max_in_flight: usize,
    /// Lease length; renewed every third of it while the handler runs.
    pub lease: Duration,
    /// Fallback poll when no wake-up arrives.
    pub idle_poll: Duration,
    /// How long shutdown waits for in-flight deliveries.
    pub drain_timeout: Duration,
}

impl ConsumerSettings {
    pub fn new(consumer_id: impl Into<String>) -> Self {
        Self {
            consumer_id: consumer_id.into(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Consumes `handler`'s topic until `cancel` fires, then drains.
pub async fn run_consumer(
    handler: Arc<dyn Handler>,
    mq: Arc<dyn MessageQueue>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    settings: ConsumerSettings,
    cancel: CancellationToken,
) {
    let topic = handler.topic();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let due = Arc::new(NextDue::default());
    let meters = metrics::ConsumerMetrics::new(&topic);
    // Woken to re-time the wait (a delivery was held), not to receive.
    let mut retime = false;
    while !cancel.is_cancelled() {
        let free = settings.max_in_flight.saturating_sub(tasks.len());
        // The topic had fewer deliverable messages than we could take: wait
        // for a wake-up (a publish, an ack making a partition's next message
        // its head, a zero-delay hold) or the idle poll instead of asking
        // again at once, which on a busy topic is mostly empty receives.
        let mut drained = true;
        if free > 0 && !std::mem::take(&mut retime) {
            match mq
                .receive(&topic, &settings.consumer_id, free, settings.lease)
                .await
            {
                Ok(deliveries) => {
                    drained = deliveries.len() < free;
                    let now = clock.now();
                    for delivery in deliveries {
                        meters.timings().waited(&delivery, now);
                        tasks.spawn(handle_with_renewal(
                            handler.clone(),
                            mq.clone(),
                            policy.clone(),
                            settings.lease,
                            delivery,
                            due.clone(),
                            meters.timings().clone(),
                        ));
                    }
                }
                Err(e) => warn!(%topic, error = %e, "receive failed"),
            }
        }
        meters.in_flight(tasks.len());
        if free == 0 {
            // At capacity: wait for a delivery to finish.
            meters.full();
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(_) = tasks.join_next() => {}
            }
        } else if drained {
            // Our own held or retried deliveries come due without anyone
            // waking the topic: wait no longer than the earliest of them.
            let wait = due.wait_at_most(settings.idle_poll);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = mq.wait(&topic, wait) => {}
                () = due.changed.notified() => retime = true,
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(settings.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(%topic, left = tasks.len(), "drain timed out; aborting in-flight deliveries (their leases will expire and they will be redelivered)");
        tasks.abort_all();
    }
}

async fn handle_with_renewal(
    handler: Arc<dyn Handler>,
    mq: Arc<dyn MessageQueue>,
    policy: RetryPolicy,
    lease: Duration,
    delivery: Delivery,
    due: Arc<NextDue>,
    timings: StageTimings,
) {
    let renew = async {
        let mut tick = tokio::time::interval(lease / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = mq.renew(&delivery, lease).await {
                warn!(topic = %delivery.topic, error = %e, "lease renewal failed");
                // Keep the handler running; settlement will report the loss.
                std::future::pending::<()>().await;
            }
        }
    };
    let work = deliver(
        handler.as_ref(),
        mq.as_ref(),
        &policy,
        &delivery,
        Some(&timings),
    );
    tokio::select! {
        settled = work => match settled {
            Ok(Settlement::Held(delay) | Settlement::Retried(delay)) => due.note(delay),
            Ok(_) => {}
            Err(e) => {
                error!(topic = %delivery.topic, error = %e, "settling a delivery failed; it will be redelivered after its lease");
            }
        },
        () = renew => {}
    }
}

/// When the earliest delivery this consumer held or retried comes due
/// again (a time-based visibility no publish or ack announces).
#[derive(Debug, Default)]
struct NextDue {
    at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Tells the waiting loop to re-time its wait.
    changed: tokio::sync::Notify,
}

impl NextDue {
    fn note(&self, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        let mut next = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if next.is_none_or(|n| at < n) {
            *next = Some(at);
            self.changed.notify_one();
        }
    }

    /// `idle_poll`, or less when a noted delivery comes due sooner; a due
    /// time reached is forgotten (the receive that follows picks it up).
    fn wait_at_most(&self, idle_poll: Duration) -> Duration {
        let mut next = self
            .at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(at) = *next else { return idle_poll };
        let left = at.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            *next = None;
        }
        left.min(idle_poll)
    }
}

/// Synchronous driving of handlers, for deterministic tests and embedders.
pub struct Pump {
    handlers: Vec<Arc<dyn Handler>>,
    mq: Arc<dyn MessageQueue>,
    policy: RetryPolicy,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field(
                "topics",
                &self.handlers.iter().map(|h| h.topic()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Lease used by the pump. Settlement happens well within it; a delivery
/// whose settlement failed comes back when it expires, like after a crash.
const PUMP_LEASE: Duration = Duration::from_mins(5);

impl Pump {
    pub fn new(
        handlers: Vec<Arc<dyn Handler>>,
        mq: Arc<dyn MessageQueue>,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            handlers,
            mq,
            policy,
        }
    }

    /// Handles every delivery that is visible now, topic by topic, until
    /// none is. Returns how many deliveries were handled.
    pub async fn run_ready(&self) -> Result<usize, MqError> {
        let mut handled = 0;
        loop {
            let mut round = 0;
            for handler in &self.handlers {
                let topic = handler.topic();
                for delivery in self.mq.receive(&topic, "pump", 64, PUMP_LEASE).await? {
                    if let Err(e) = deliver(
                        handler.as_ref(),
                        self.mq.as_ref(),
                        &self.policy,
                        &delivery,
                        None,
                    )
                    .await
                    {
                        // As in the runtime: the message stays leased and is
                        // redelivered when the lease expires.
                        warn!(%topic, error = %e, "settling failed; redelivery after the lease");
                    }
                    round += 1;
                }
            }
            if round == 0 {
                return Ok(handled);
            }
            handled += round;
        }
    }

    /// The earliest instant a message of any pumped topic becomes visible.
    pub async fn next_due(&self) -> Result<Option<Timestamp>, MqError> {
        let mut due: Option<Timestamp> = None;
        for handler in &self.handlers {
            if let Some(t) = self.mq.next_visible_at(&handler.topic()).await? {
                due = Some(due.map_or(t, |d| d.min(t)));
            }
        }
        Ok(due)
    }

    /// Runs until no message is pending at all, moving time forward with
    /// `advance_to` whenever only future messages remain. Stops after
    /// `max_rounds` time jumps (a pipeline that never settles is a bug the
    /// caller should see). Returns the deliveries handled.
    pub async fn run_until_idle(
        &self,
        max_rounds: usize,
        mut advance_to: impl FnMut(Timestamp),
    ) -> Result<usize, MqError> {
        let mut handled = self.run_ready().await?;
        for _ in 0..max_rounds {
            let Some(due) = self.next_due().await? else {
                return Ok(handled);
            };
            advance_to(due);
            handled += self.run_ready().await?;
        }
        Err(MqError::Backend(format!(
            "pipeline did not settle within {max_rounds} time jumps"
        )))
    }

    /// The topics this pump drives.
    pub fn topics(&self) -> Vec<Topic> {
        self.handlers.iter().map(|h| h.topic()).collect()
    }
}
