//! Postgres: whether another replica of this installation is listening,
//! so that NOTIFYs are sent only when someone else can use them.
//!
//! Owns: the presence heartbeat and the rule for [`Presence::others_listening`].
//! Does not own: what a NOTIFY carries (wake-ups, feed rounds: `backend`,
//! `mq`, `feed`).
//!
//! Every Postgres backend announces itself on [`PRESENCE_CHANNEL`] as soon
//! as its listener is subscribed and then every heartbeat (2 s by default).
//! The payload names the installation (the connection's schema) and the
//! backend, so replicas of other installations on the same database and a
//! backend's own echo are not counted.
//!
//! A backend sends wake-up and feed NOTIFYs while it is young (its first
//! three heartbeats, the time it takes to hear every live replica) or has
//! heard another replica of its installation within the last three
//! heartbeats; otherwise it sends none. With one replica, which is how
//! most installations run, every notification was its own echo, which its
//! listener discarded, and each notifying commit serialises on Postgres's
//! one notification queue lock per database (about 3 of 24 statements per
//! validated request on the pipeline bench).
//!
//! A missed wake-up costs latency, never correctness: a consumer receives
//! again after its idle poll, and the change-log tail's tick brings every
//! replica's change-feed tail up to date. A new replica can miss a
//! notification only between its first heartbeat and the moment the others'
//! listeners hear it (milliseconds), and a replica that died is still
//! notified for three heartbeats.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// NOTIFY channel of the heartbeats: `<installation>@<origin>`.
pub(crate) const PRESENCE_CHANNEL: &str = "stovepipe_presence";

/// Heartbeats a replica may miss before the others stop notifying it.
const HEARTBEATS_IN_WINDOW: u32 = 3;

/// What this backend knows of the other replicas of its installation.
#[derive(Debug)]
pub(crate) struct Presence {
    /// The installation's name among the backends on the database (the
    /// connection's schema).
    installation: String,
    heartbeat: Duration,
    started: Instant,
    /// When a heartbeat of another replica of this installation last came.
    last_heard: Mutex<Option<Instant>>,
}

impl Presence {
    pub(crate) fn new(installation: String, heartbeat: Duration) -> Self {
        Self {
            installation,
            heartbeat: heartbeat.max(Duration::from_millis(1)),
            started: Instant::now(),
            last_heard: Mutex::new(None),
        }
    }

    /// How often this backend announces itself.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// The heartbeat's payload for the backend tagged `tag`
    /// (`@<origin>`).
    pub(crate) fn announcement(&self, tag: &str) -> String {
        format!("{}{tag}", self.installation)
    }

    fn window(&self) -> Duration {
        self.heartbeat * HEARTBEATS_IN_WINDOW
    }

    /// Whether a NOTIFY may reach another replica (see the module docs).
    pub(crate) fn others_listening(&self) -> bool {
        self.others_listening_at(Instant::now())
    }

    fn others_listening_at(&self, now: Instant) -> bool {
        if now.saturating_duration_since(self.started) < self.window() {
            return true;
        }
        self.last_heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| now.saturating_duration_since(at) < self.window())
    }

    /// A heartbeat named `installation` came from another backend: it counts
    /// when it is of this backend's installation.
    pub(crate) fn heard(&self, installation: &str) {
        self.heard_at(installation, Instant::now());
    }

    fn heard_at(&self, installation: &str, at: Instant) {
        if installation == self.installation {
            *self
                .last_heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_backend_assumes_others_and_an_old_lone_one_does_not() {
        let beat = Duration::from_secs(2);
        let presence = Presence::new("mine".to_owned(), beat);
        let start = presence.started;
        assert!(presence.others_listening_at(start + beat * 2), "young");
        let old = start + beat * 4;
        assert!(!presence.others_listening_at(old), "nobody was heard");
        presence.heard_at("other-installation", old);
        assert!(
            !presence.others_listening_at(old),
            "another installation does not count"
        );
        presence.heard_at("mine", old);
        assert!(presence.others_listening_at(old + beat * 2), "heard lately");
        assert!(
            !presence.others_listening_at(old + beat * 3),
            "silent for three heartbeats"
        );
    }
}
