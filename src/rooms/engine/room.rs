//! One room as its owner worker keeps it: its members (on every worker), its offsets and
//! epoch, and its history.
//!
//! No IO, no clock reads: time comes in as an argument. The history is a ring of the last
//! `history_size` messages, each the exact JSON text members received, so recovery replays
//! bytes identical to the live ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::route::{Arrival, Roster};
use super::Identity;
use crate::rooms::local::Audience;
use crate::rooms::protocol::Presence;
use crate::server::ConnId;

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Which join/leave events of others it receives.
    pub presence: Presence,
    pub identity: Identity,
}

/// A message kept for recovery.
#[derive(Debug, Clone)]
pub struct Kept {
    pub offset: u64,
    pub at: Instant,
    /// The message push as members received it: the very `Bytes` that was broadcast.
    pub json: Bytes,
    /// Its idempotency key.
    pub key: Option<Box<str>>,
}

#[derive(Debug)]
pub struct Room {
    pub name: Arc<str>,
    /// Changes whenever the room's history is lost (the room was dropped and recreated).
    pub epoch: Arc<str>,
    /// The offset of the last message (0: none yet).
    pub offset: u64,
    roster: Roster,
    history: VecDeque<Kept>,
    /// The keys of kept messages -> their offsets (a publish with one is a duplicate).
    keys: HashMap<Box<str>, u64>,
    /// Bytes of JSON in `history`.
    history_bytes: usize,
    /// When the last member left (the room is dropped once its history has expired).
    pub emptied_at: Option<Instant>,
}

/// What `join` with `since` recovers.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Every message after `since` is in `missed`.
    pub recovered: bool,
    /// The kept messages after `since`, in order.
    pub missed: Vec<Bytes>,
}

impl Room {
    pub fn new(name: Arc<str>, epoch: Arc<str>, now: Instant, workers: usize) -> Self {
        Room {
            name,
            epoch,
            offset: 0,
            roster: Roster::new(workers),
            history: VecDeque::new(),
            keys: HashMap::new(),
            history_bytes: 0,
            emptied_at: Some(now),
        }
    }

    pub fn members(&self) -> &HashMap<ConnId, Membership> {
        self.roster.members()
    }

    pub fn is_member(&self, conn: ConnId) -> bool {
        self.roster.contains(conn)
    }

    /// Adds (or updates) a member.
    pub fn insert_member(&mut self, conn: ConnId, membership: Membership) -> Arrival {
        self.emptied_at = None;
        self.roster.insert(conn, membership)
    }

    /// Removes a member (with whether it was its user's last connection here); when it was
    /// the last member, the room starts its way out (`emptied_at`).
    pub fn remove_member(&mut self, conn: ConnId, now: Instant) -> Option<(Membership, bool)> {
        let old = self.roster.remove(conn)?;
        if self.roster.is_empty() {
            self.emptied_at = Some(now);
        }
        Some(old)
    }

    /// Bit `w` set: worker `w` has members of `audience` here.
    pub fn worker_mask(&self, audience: Audience) -> u64 {
        self.roster.worker_mask(audience)
    }

    /// Assigns the next offset.
    pub fn next_offset(&mut self) -> u64 {
        self.offset += 1;
        self.offset
    }

    /// Keeps a message, dropping the oldest beyond `limit`. Returns the bytes dropped.
    pub fn keep(&mut self, kept: Kept, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        let mut freed = 0;
        while self.history.len() >= limit {
            freed += self.evict_oldest().unwrap_or(0);
        }
        self.history_bytes += kept.json.len();
        if let Some(key) = &kept.key {
            self.keys.insert(key.clone(), kept.offset);
        }
        self.history.push_back(kept);
        freed
    }

    /// The offset of the kept message published with `key`.
    pub fn offset_of_key(&self, key: &str) -> Option<u64> {
        self.keys.get(key).copied()
    }

    /// Drops the oldest kept message; returns its size.
    pub fn evict_oldest(&mut self) -> Option<usize> {
        let kept = self.history.pop_front()?;
        self.history_bytes -= kept.json.len();
        if let Some(key) = &kept.key {
            self.keys.remove(key);
        }
        Some(kept.json.len())
    }

    /// Drops messages older than `ttl`. Returns the bytes dropped.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut freed = 0;
        while self.history.front().is_some_and(|k| now.saturating_duration_since(k.at) >= ttl) {
            freed += self.evict_oldest().unwrap_or(0);
        }
        freed
    }

    /// The messages after `offset` in `epoch`, and whether that is all of them (contract:
    /// "Ordering and recovery"). Another epoch recovers nothing.
    pub fn recover(&self, epoch: &str, offset: u64) -> Recovery {
        if epoch != &*self.epoch || offset > self.offset {
            // Offsets of another epoch (or from the future) mean nothing here.
            return Recovery { recovered: false, missed: Vec::new() };
        }
        let missed: Vec<Bytes> = self.history.iter().filter(|k| k.offset > offset).map(|k| k.json.clone()).collect();
        // Complete when every offset in (offset, self.offset] is still kept.
        let first_kept = self.history.iter().find(|k| k.offset > offset).map(|k| k.offset);
        let recovered = offset == self.offset || first_kept == Some(offset + 1);
        Recovery { recovered, missed }
    }

    /// The last `limit` kept messages, oldest first.
    pub fn history(&self, limit: usize) -> impl Iterator<Item = &Bytes> {
        let skip = self.history.len().saturating_sub(limit);
        self.history.iter().skip(skip).map(|k| &k.json)
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Bytes of JSON held in history (the owner keeps a running total; tests check it).
    #[cfg(test)]
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Now;

    fn room_with(offsets: std::ops::RangeInclusive<u64>, limit: usize, at: Instant) -> Room {
        let mut room = Room::new("r".into(), "e1".into(), at, 1);
        for _ in offsets {
            let offset = room.next_offset();
            room.keep(Kept { offset, at, json: format!("{{\"offset\":{offset}}}").into(), key: None }, limit);
        }
        room
    }

    #[test]
    fn recovery_is_complete_when_nothing_aged_out() {
        let now = Now::read().mono;
        let room = room_with(1..=5, 10, now);
        let r = room.recover("e1", 2);
        assert!(r.recovered);
        assert_eq!(
            r.missed,
            ["{\"offset\":3}", "{\"offset\":4}", "{\"offset\":5}"].map(|s| Bytes::from_static(s.as_bytes()))
        );
        assert_eq!(room.recover("e1", 5), Recovery { recovered: true, missed: vec![] });
    }

    #[test]
    fn recovery_is_partial_when_some_aged_out() {
        let now = Now::read().mono;
        let room = room_with(1..=10, 3, now); // keeps 8, 9, 10
        let r = room.recover("e1", 5);
        assert!(!r.recovered);
        assert_eq!(r.missed.len(), 3);
        assert!(room.recover("e1", 7).recovered);
    }

    #[test]
    fn another_epoch_recovers_nothing() {
        let room = room_with(1..=3, 10, Now::read().mono);
        assert_eq!(room.recover("e0", 1), Recovery { recovered: false, missed: vec![] });
        assert_eq!(room.recover("e1", 99), Recovery { recovered: false, missed: vec![] });
    }

    #[test]
    fn ttl_expires_old_messages() {
        let start = Now::read().mono;
        let mut room = room_with(1..=3, 10, start);
        room.expire(start + Duration::from_secs(301), Duration::from_secs(300));
        assert_eq!(room.history_len(), 0);
        assert!(!room.recover("e1", 1).recovered);
        assert_eq!(room.history(10).count(), 0);
    }
}
