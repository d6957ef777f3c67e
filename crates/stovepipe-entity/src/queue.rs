//! The queue entity: latest head pointer, build slots, last-green bookmarks.
//!
//! Slots are a set of owners (request ids with their admit time) rather than
//! a counter, so claiming and releasing are idempotent per request and a
//! leaked slot names its owner. Bookmarks only ever move forward in ingest
//! order ([`compare_request_id`]).

use crate::error::InvalidValue;
use crate::ids::{RequestId, Uri, compare_request_id};
use crate::names::{ProjectName, QueueName};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A last-green bookmark: the newest green commit in ingest order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bookmark {
    pub uri: Uri,
    pub request_id: RequestId,
    pub recorded_at: Timestamp,
}

/// A held build slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub request_id: RequestId,
    pub admitted_at: Timestamp,
}

/// Result of trying to move a bookmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookmarkMove {
    /// The bookmark now points at the candidate (write needed).
    Advanced,
    /// The bookmark already pointed at the candidate.
    AlreadyHeld,
    /// A newer request holds the bookmark; it stays.
    NotHeld,
}

impl BookmarkMove {
    /// True when the candidate holds the bookmark after the move.
    pub fn holds(self) -> bool {
        matches!(self, Self::Advanced | Self::AlreadyHeld)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub name: QueueName,
    /// Whole-repository bookmark.
    pub last_green: Option<Bookmark>,
    /// Per-project bookmarks (phase 2).
    pub project_last_green: BTreeMap<ProjectName, Bookmark>,
    pub in_flight: Vec<Slot>,
    pub latest_request_id: Option<RequestId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
}

impl Queue {
    /// A queue as get-or-created by ingest: version 1, everything empty.
    pub fn new(name: QueueName, now: Timestamp) -> Self {
        Self {
            name,
            last_green: None,
            project_last_green: BTreeMap::new(),
            in_flight: Vec::new(),
            latest_request_id: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    fn touched(&mut self, now: Timestamp) {
        self.updated_at = now;
        self.version += 1;
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    pub fn holds_slot(&self, id: &RequestId) -> bool {
        self.in_flight.iter().any(|s| &s.request_id == id)
    }

    /// Compares `id` with the latest pointer: `Less` means a newer head was
    /// ingested after it. `None` when there is no latest pointer yet.
    pub fn compare_with_latest(&self, id: &RequestId) -> Result<Option<Ordering>, InvalidValue> {
        self.latest_request_id
            .as_ref()
            .map(|latest| compare_request_id(&self.name, id, latest))
            .transpose()
    }

    /// Moves the latest pointer to `id` when it is strictly newer. Returns
    /// whether it moved (a write is needed).
    pub fn advance_latest(&mut self, id: &RequestId, now: Timestamp) -> Result<bool, InvalidValue> {
        match self.compare_with_latest(id)? {
            Some(Ordering::Less | Ordering::Equal) => Ok(false),
            None | Some(Ordering::Greater) => {
                self.latest_request_id = Some(id.clone());
                self.touched(now);
                Ok(true)
            }
        }
    }

    /// Adds `id` to the slot owners. Returns false when it already held one
    /// (idempotent; no write needed). Refuses an id of another queue.
    pub fn claim_slot(&mut self, id: &RequestId, now: Timestamp) -> Result<bool, InvalidValue> {
        self.check_mine(id)?;
        if self.holds_slot(id) {
            return Ok(false);
        }
        self.in_flight.push(Slot {
            request_id: id.clone(),
            admitted_at: now,
        });
        self.touched(now);
        Ok(true)
    }

    /// Removes `id` from the slot owners. Returns false when it held none
    /// (already released; no write needed).
    pub fn release_slot(&mut self, id: &RequestId, now: Timestamp) -> bool {
        let before = self.in_flight.len();
        self.in_flight.retain(|s| &s.request_id != id);
        if self.in_flight.len() == before {
            return false;
        }
        self.touched(now);
        true
    }

    pub fn bookmark(&self, project: &ProjectName) -> Option<&Bookmark> {
        if project.is_whole_repo() {
            self.last_green.as_ref()
        } else {
            self.project_last_green.get(project)
        }
    }

    /// Offers a green commit to the bookmark of `project`: empty or older →
    /// advance; same request → already held; newer → not held.
    pub fn advance_last_green(
        &mut self,
        project: &ProjectName,
        uri: &Uri,
        id: &RequestId,
        now: Timestamp,
    ) -> Result<BookmarkMove, InvalidValue> {
        self.check_mine(id)?;
        let order = self
            .bookmark(project)
            .map(|b| compare_request_id(&self.name, id, &b.request_id))
            .transpose()?;
        match order {
            Some(Ordering::Equal) => Ok(BookmarkMove::AlreadyHeld),
            Some(Ordering::Less) => Ok(BookmarkMove::NotHeld),
            None | Some(Ordering::Greater) => {
                let mark = Bookmark {
                    uri: uri.clone(),
                    request_id: id.clone(),
                    recorded_at: now,
                };
                if project.is_whole_repo() {
                    self.last_green = Some(mark);
                } else {
                    self.project_last_green.insert(project.clone(), mark);
                }
                self.touched(now);
                Ok(BookmarkMove::Advanced)
            }
        }
    }

    fn check_mine(&self, id: &RequestId) -> Result<(), InvalidValue> {
        if id.belongs_to(&self.name) {
            Ok(())
        } else {
            Err(InvalidValue::new(
                "request id",
                id.as_str(),
                format!("an id of queue {}", self.name),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        Queue::new(QueueName::new("q").unwrap(), Timestamp(1))
    }

    fn id(n: u64) -> RequestId {
        RequestId::new(&QueueName::new("q").unwrap(), n).unwrap()
    }

    fn uri(s: &str) -> Uri {
        Uri::new(format!("git://r/main/{s}")).unwrap()
    }

    #[test]
    fn latest_only_moves_forward() {
        let mut q = queue();
        assert_eq!(q.advance_latest(&id(2), Timestamp(2)), Ok(true));
        assert_eq!(q.advance_latest(&id(10), Timestamp(3)), Ok(true));
        assert_eq!(q.advance_latest(&id(9), Timestamp(4)), Ok(false));
        assert_eq!(q.advance_latest(&id(10), Timestamp(4)), Ok(false));
        assert_eq!(q.latest_request_id, Some(id(10)));
        assert_eq!(q.version, 3);
        let other = RequestId::new(&QueueName::new("p").unwrap(), 99).unwrap();
        assert!(q.advance_latest(&other, Timestamp(5)).is_err());
    }

    #[test]
    fn slots_are_idempotent_sets() {
        let mut q = queue();
        assert_eq!(q.claim_slot(&id(1), Timestamp(2)), Ok(true));
        assert_eq!(q.claim_slot(&id(1), Timestamp(3)), Ok(false));
        assert_eq!(q.in_flight_count(), 1);
        assert!(q.release_slot(&id(1), Timestamp(4)));
        assert!(!q.release_slot(&id(1), Timestamp(5)));
        assert_eq!(q.in_flight_count(), 0);
        assert_eq!(q.version, 3);
        let other = RequestId::new(&QueueName::new("p").unwrap(), 1).unwrap();
        assert!(q.claim_slot(&other, Timestamp(6)).is_err());
    }

    #[test]
    fn bookmark_never_moves_backwards() {
        let mut q = queue();
        let whole = ProjectName::whole_repo();
        assert_eq!(
            q.advance_last_green(&whole, &uri("a"), &id(9), Timestamp(2)),
            Ok(BookmarkMove::Advanced)
        );
        assert_eq!(
            q.advance_last_green(&whole, &uri("a"), &id(9), Timestamp(3)),
            Ok(BookmarkMove::AlreadyHeld)
        );
        assert_eq!(
            q.advance_last_green(&whole, &uri("b"), &id(10), Timestamp(4)),
            Ok(BookmarkMove::Advanced)
        );
        assert_eq!(
            q.advance_last_green(&whole, &uri("a"), &id(9), Timestamp(5)),
            Ok(BookmarkMove::NotHeld)
        );
        assert_eq!(q.last_green.as_ref().unwrap().request_id, id(10));
        // Projects have their own bookmark.
        let payments = ProjectName::new("payments").unwrap();
        assert_eq!(
            q.advance_last_green(&payments, &uri("a"), &id(9), Timestamp(6)),
            Ok(BookmarkMove::Advanced)
        );
        assert_eq!(q.bookmark(&payments).unwrap().request_id, id(9));
        assert_eq!(q.bookmark(&whole).unwrap().request_id, id(10));
    }
}
