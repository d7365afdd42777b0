//! The raw relay: every connection joins the room named by its URL path, and every text or
//! binary message a member sends goes verbatim to all members, the sender included.
//!
//! No JSON, no offsets, no history: game state, cursors and sensor feeds. Messages take
//! the same fan-out path as room publishes (`Outbox::broadcast`: framed and compressed
//! once), and the same slow-consumer and size limits apply.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::proto::{CloseCode, MessageKind};
use crate::server::{ConnId, Outbox};

/// Relay rooms and their members.
#[derive(Debug, Default)]
pub struct Relay {
    rooms: HashMap<String, HashSet<ConnId>>,
    member_of: HashMap<ConnId, String>,
}

impl Relay {
    pub fn members(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, HashSet::len)
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_member(&self, conn: ConnId) -> bool {
        self.member_of.contains_key(&conn)
    }

    pub fn join(&mut self, conn: ConnId, room: &str) {
        self.rooms.entry(room.to_owned()).or_default().insert(conn);
        self.member_of.insert(conn, room.to_owned());
    }

    pub fn leave(&mut self, conn: ConnId) {
        let Some(room) = self.member_of.remove(&conn) else { return };
        if let Some(members) = self.rooms.get_mut(&room) {
            members.remove(&conn);
            if members.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }

    /// Forwards a member's message to its room; over `max_bytes` closes the sender with
    /// 1009 (the relay has no reply channel for an error).
    pub fn forward(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Bytes, max_bytes: usize) {
        if data.len() > max_bytes {
            out.close(conn, CloseCode::MESSAGE_TOO_BIG, "message over the relay limit");
            return;
        }
        let Some(members) = self.member_of.get(&conn).and_then(|room| self.rooms.get(room)) else { return };
        out.broadcast(members.iter().copied().collect(), kind, data);
    }
}
