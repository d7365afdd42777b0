//! The raw relay: every connection joins the room named by its URL path, and every text or
//! binary message a member sends goes verbatim to all members, the sender included.
//!
//! No JSON, no offsets, no history: game state, cursors and sensor feeds. Like a room, a
//! relay room has an owner worker; a member's message goes to the owner, which hands it to
//! every worker with members (in one order for all), and each worker broadcasts it to its
//! members through the same fan-out path as room publishes (framed and compressed once).
//! The same slow-consumer and size limits apply.

use std::collections::HashMap;
use std::sync::Arc;

use super::local::{Audience, LocalRooms};
use crate::server::ConnId;

/// Relay rooms: this worker's members (member side) and the rooms it owns (owner side).
#[derive(Debug, Default)]
pub struct Relay {
    member_of: HashMap<ConnId, Arc<str>>,
    local: LocalRooms,
    /// Owned relay rooms: members per worker.
    owned: HashMap<Arc<str>, Vec<u32>>,
}

impl Relay {
    // ---- member side ----

    pub fn room_of(&self, conn: ConnId) -> Option<&Arc<str>> {
        self.member_of.get(&conn)
    }

    pub fn join_local(&mut self, conn: ConnId, room: &Arc<str>) {
        self.local.insert(room, conn, false);
        self.member_of.insert(conn, room.clone());
    }

    /// Drops a member from this worker's list; returns its room.
    pub fn leave_local(&mut self, conn: ConnId) -> Option<Arc<str>> {
        let room = self.member_of.remove(&conn)?;
        self.local.remove(&room, conn);
        Some(room)
    }

    pub fn receivers(&mut self, room: &str) -> Option<Arc<[ConnId]>> {
        self.local.audience(room, Audience::Members)
    }

    // ---- owner side ----

    /// Members of an owned relay room.
    pub fn members(&self, room: &str) -> usize {
        self.owned.get(room).map_or(0, |shares| shares.iter().map(|&n| n as usize).sum())
    }

    pub fn room_count(&self) -> usize {
        self.owned.len()
    }

    /// Counts a member of an owned room on `worker` (the caller checked the limits).
    pub fn admit(&mut self, room: &Arc<str>, worker: usize, workers: usize) {
        let shares = self.owned.entry(room.clone()).or_insert_with(|| vec![0; workers.max(1)]);
        if let Some(n) = shares.get_mut(worker) {
            *n += 1;
        }
    }

    /// Uncounts a member; returns whether that emptied (and dropped) the room.
    pub fn release(&mut self, room: &str, worker: usize) -> bool {
        let Some(shares) = self.owned.get_mut(room) else { return false };
        if let Some(n) = shares.get_mut(worker) {
            *n = n.saturating_sub(1);
        }
        if shares.iter().all(|&n| n == 0) {
            self.owned.remove(room);
            return true;
        }
        false
    }

    /// Bit `w` set: worker `w` has members of owned room `room`.
    pub fn workers_with_members(&self, room: &str) -> u64 {
        self.owned
            .get(room)
            .map_or(0, |shares| shares.iter().enumerate().filter(|(_, &n)| n > 0).fold(0, |mask, (w, _)| mask | 1 << w))
    }
}
