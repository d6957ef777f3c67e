//! The in-memory message queue.
//!
//! Owns: partitions as FIFO queues whose head is the only deliverable
//! message (strict per-partition serialisation), leases measured by the
//! backend's clock, attempts, dead letters, dedup and wake-ups.
//! Does not own: the consumer loop, backoff policy or when to dead-letter
//! (the consumer runtime in `stovepipe-app` decides; this only obeys).
//!
//! Dedup scope: a message is "retained" while it is pending in its partition
//! (published and not yet acked or rejected, leased and held included). That
//! is the least the port promises, so tests against this adapter do not come
//! to rely on a longer retention than a real broker keeps.

use super::{MemoryBackend, State};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;
use stovepipe_entity::Timestamp;
use stovepipe_ports::{DeadLetter, Delivery, MessageQueue, MqError, OutgoingMessage, Topic};

#[derive(Default)]
pub(crate) struct MqState {
    topics: HashMap<Topic, BTreeMap<String, VecDeque<Message>>>,
    /// The partition served last per topic, so `receive` rotates over
    /// partitions instead of starving the ones late in key order.
    served_last: HashMap<Topic, String>,
    next_delivery: u64,
    dead: BTreeMap<u64, DeadLetter>,
    next_dead: u64,
}

struct Message {
    message_id: String,
    payload: serde_json::Value,
    published_at: Timestamp,
    /// The attempt number of the next delivery.
    attempt: u32,
    last_error: Option<String>,
    visible_at: Timestamp,
    lease: Option<Lease>,
}

struct Lease {
    delivery_id: String,
    expires: Timestamp,
}

impl MqState {
    pub(crate) fn pending(&self, topic: &Topic) -> usize {
        self.topics
            .get(topic)
            .map_or(0, |parts| parts.values().map(VecDeque::len).sum())
    }

    fn head_mut(&mut self, topic: &Topic, key: &str) -> Option<&mut Message> {
        self.topics.get_mut(topic)?.get_mut(key)?.front_mut()
    }

    /// The head leased by `delivery`, or `LeaseLost` (acked elsewhere,
    /// expired, or taken over).
    fn leased_head(&mut self, d: &Delivery, now: Timestamp) -> Result<&mut Message, MqError> {
        let lost = || MqError::LeaseLost(d.delivery_id.clone());
        let head = self.head_mut(&d.topic, &d.partition_key).ok_or_else(lost)?;
        match &head.lease {
            Some(l) if l.delivery_id == d.delivery_id && l.expires > now => Ok(head),
            _ => Err(lost()),
        }
    }

    fn pop_head(&mut self, topic: &Topic, key: &str) -> Option<Message> {
        let parts = self.topics.get_mut(topic)?;
        let queue = parts.get_mut(key)?;
        let head = queue.pop_front();
        if queue.is_empty() {
            parts.remove(key);
        }
        head
    }
}

impl State {
    /// Publishes unless a pending message of the partition has the same id.
    pub(crate) fn publish(&mut self, message: OutgoingMessage, now: Timestamp) -> bool {
        self.enqueue(message, None, now)
    }

    fn enqueue(
        &mut self,
        message: OutgoingMessage,
        last_error: Option<String>,
        now: Timestamp,
    ) -> bool {
        let partition = self
            .mq
            .topics
            .entry(message.topic.clone())
            .or_default()
            .entry(message.partition_key)
            .or_default();
        if partition.iter().any(|m| m.message_id == message.message_id) {
            return false;
        }
        partition.push_back(Message {
            message_id: message.message_id,
            payload: message.payload,
            published_at: now,
            attempt: 1,
            last_error,
            visible_at: now,
            lease: None,
        });
        self.wake_topic(&message.topic);
        true
    }

    fn receive(
        &mut self,
        topic: &Topic,
        max: usize,
        lease: Duration,
        now: Timestamp,
    ) -> Vec<Delivery> {
        let Some(parts) = self.mq.topics.get_mut(topic) else {
            return Vec::new();
        };
        // Rotate: start after the partition served last.
        let mut keys: Vec<String> = parts.keys().cloned().collect();
        if let Some(last) = self.mq.served_last.get(topic) {
            let split = keys.partition_point(|k| k <= last);
            keys.rotate_left(split);
        }
        let mut out = Vec::new();
        for key in keys {
            if out.len() >= max {
                break;
            }
            let Some(head) = parts.get_mut(&key).and_then(VecDeque::front_mut) else {
                continue;
            };
            if let Some(l) = &head.lease {
                if l.expires > now {
                    continue;
                }
                // The holder neither settled nor renewed: that delivery was
                // an attempt.
                head.lease = None;
                head.attempt += 1;
            }
            if head.visible_at > now {
                continue;
            }
            self.mq.next_delivery += 1;
            let delivery_id = format!("{topic}#{}", self.mq.next_delivery);
            head.lease = Some(Lease {
                delivery_id: delivery_id.clone(),
                expires: now.saturating_add(lease),
            });
            out.push(Delivery {
                delivery_id,
                topic: topic.clone(),
                partition_key: key.clone(),
                message_id: head.message_id.clone(),
                payload: head.payload.clone(),
                attempt: head.attempt,
                last_error: head.last_error.clone(),
                published_at: head.published_at,
            });
            self.mq.served_last.insert(topic.clone(), key);
        }
        out
    }

    fn postpone(
        &mut self,
        d: &Delivery,
        delay: Duration,
        error: Option<&str>,
        now: Timestamp,
    ) -> Result<(), MqError> {
        let head = self.mq.leased_head(d, now)?;
        head.lease = None;
        head.visible_at = now.saturating_add(delay);
        if let Some(error) = error {
            head.attempt += 1;
            head.last_error = Some(error.to_owned());
        }
        if delay.is_zero() {
            self.wake_topic(&d.topic);
        }
        Ok(())
    }

    fn reject(&mut self, d: &Delivery, error: &str, now: Timestamp) -> Result<DeadLetter, MqError> {
        let attempts = self.mq.leased_head(d, now)?.attempt;
        let head = self
            .mq
            .pop_head(&d.topic, &d.partition_key)
            .ok_or_else(|| MqError::LeaseLost(d.delivery_id.clone()))?;
        self.mq.next_dead += 1;
        let dead = DeadLetter {
            id: self.mq.next_dead,
            topic: d.topic.clone(),
            partition_key: d.partition_key.clone(),
            message_id: head.message_id,
            payload: head.payload,
            attempts,
            last_error: error.to_owned(),
            published_at: head.published_at,
            dead_at: now,
        };
        self.mq.dead.insert(dead.id, dead.clone());
        // A dead-letter topic's own rejects are only parked, or a failing
        // reconciler would feed itself forever.
        if !d.topic.is_dlq() {
            let to_dlq = OutgoingMessage::new(
                d.topic.dlq(),
                dead.partition_key.clone(),
                dead.message_id.clone(),
                dead.payload.clone(),
            );
            self.enqueue(to_dlq, Some(error.to_owned()), now);
        }
        // The partition's next message is deliverable now.
        self.wake_topic(&d.topic);
        Ok(dead)
    }
}

#[async_trait]
impl MessageQueue for MemoryBackend {
    async fn publish(&self, message: OutgoingMessage) -> Result<bool, MqError> {
        self.shared.write(|st, now| Ok(st.publish(message, now)))
    }

    async fn receive(
        &self,
        topic: &Topic,
        _consumer: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>, MqError> {
        Ok(self
            .shared
            .housekeeping(|st, now| st.receive(topic, max, lease, now)))
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), MqError> {
        self.shared.write(|st, now| {
            st.mq.leased_head(delivery, now)?;
            st.mq.pop_head(&delivery.topic, &delivery.partition_key);
            st.wake_topic(&delivery.topic);
            Ok(())
        })
    }

    async fn hold(&self, delivery: &Delivery, delay: Duration) -> Result<(), MqError> {
        self.shared
            .write(|st, now| st.postpone(delivery, delay, None, now))
    }

    async fn retry(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), MqError> {
        self.shared
            .write(|st, now| st.postpone(delivery, delay, Some(error), now))
    }

    async fn reject(&self, delivery: &Delivery, error: &str) -> Result<DeadLetter, MqError> {
        self.shared.write(|st, now| st.reject(delivery, error, now))
    }

    async fn renew(&self, delivery: &Delivery, lease: Duration) -> Result<(), MqError> {
        self.shared.housekeeping(|st, now| {
            let head = st.mq.leased_head(delivery, now)?;
            if let Some(l) = head.lease.as_mut() {
                l.expires = now.saturating_add(lease);
            }
            Ok(())
        })
    }

    async fn wake(&self, topic: &Topic, partition_key: &str) -> Result<bool, MqError> {
        self.shared.write(|st, now| {
            let Some(head) = st.mq.head_mut(topic, partition_key) else {
                return Ok(false);
            };
            if head.lease.is_some() || head.visible_at <= now {
                return Ok(false);
            }
            head.visible_at = now;
            st.wake_topic(topic);
            Ok(true)
        })
    }

    async fn wait(&self, topic: &Topic, timeout: Duration) {
        let notify = self.shared.housekeeping(|st, _| st.waker(topic));
        // Spurious returns are allowed; the caller receives again either way.
        let _ = tokio::time::timeout(timeout, notify.notified()).await;
    }

    async fn next_visible_at(&self, topic: &Topic) -> Result<Option<Timestamp>, MqError> {
        Ok(self.shared.read(|st| {
            st.mq.topics.get(topic).and_then(|parts| {
                parts
                    .values()
                    .filter_map(VecDeque::front)
                    .map(|head| head.lease.as_ref().map_or(head.visible_at, |l| l.expires))
                    .min()
            })
        }))
    }

    async fn dead_letters(
        &self,
        topic: Option<Topic>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, MqError> {
        Ok(self.shared.read(|st| {
            st.mq
                .dead
                .values()
                .filter(|d| topic.as_ref().is_none_or(|t| &d.topic == t))
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn requeue_dead_letter(&self, id: u64) -> Result<(), MqError> {
        self.shared.write(|st, now| {
            let dead = st
                .mq
                .dead
                .remove(&id)
                .ok_or_else(|| MqError::NotFound(format!("dead letter {id}")))?;
            let message = OutgoingMessage::new(
                dead.topic,
                dead.partition_key,
                dead.message_id,
                dead.payload,
            );
            // Attempts start again at 1; the reason it died stays visible.
            st.enqueue(message, Some(dead.last_error), now);
            Ok(())
        })
    }

    async fn purge_dead_letter(&self, id: u64) -> Result<(), MqError> {
        self.shared.write(|st, _| {
            st.mq
                .dead
                .remove(&id)
                .map(|_| ())
                .ok_or_else(|| MqError::NotFound(format!("dead letter {id}")))
        })
    }
}
