//! Delivery lists: for each room with members on this worker, which of this worker's
//! connections receive its messages (and which its presence events).
//!
//! A room's owner decides who is a member; the worker holding a member mirrors that here
//! when the owner's answer arrives (see `msg.rs`), and delivers what the owner sends. The
//! lists are handed to the event loop as shared slices, rebuilt only when membership
//! changes: a publish costs a reference-count bump, not a copy of the member list.

use std::collections::HashMap;
use std::sync::Arc;

use crate::server::ConnId;

/// Who a delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Members,
    /// Members that asked for presence events.
    Watchers,
}

#[derive(Debug, Default)]
pub struct LocalRoom {
    /// Member -> wants presence events.
    members: HashMap<ConnId, bool>,
    everyone: Option<Arc<[ConnId]>>,
    watchers: Option<Arc<[ConnId]>>,
}

impl LocalRoom {
    pub fn insert(&mut self, conn: ConnId, presence: bool) {
        if self.members.insert(conn, presence) != Some(presence) {
            self.everyone = None;
            self.watchers = None;
        }
    }

    pub fn remove(&mut self, conn: ConnId) {
        if self.members.remove(&conn).is_some() {
            self.everyone = None;
            self.watchers = None;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The receivers of a delivery, built once per membership change.
    pub fn audience(&mut self, audience: Audience) -> Arc<[ConnId]> {
        let (slot, watchers_only) = match audience {
            Audience::Members => (&mut self.everyone, false),
            Audience::Watchers => (&mut self.watchers, true),
        };
        slot.get_or_insert_with(|| {
            self.members.iter().filter(|(_, &presence)| presence || !watchers_only).map(|(&c, _)| c).collect()
        })
        .clone()
    }
}

/// A worker's delivery lists, by room name.
#[derive(Debug, Default)]
pub struct LocalRooms {
    rooms: HashMap<Arc<str>, LocalRoom>,
}

impl LocalRooms {
    pub fn insert(&mut self, room: &Arc<str>, conn: ConnId, presence: bool) {
        self.rooms.entry(room.clone()).or_default().insert(conn, presence);
    }

    pub fn remove(&mut self, room: &str, conn: ConnId) {
        if let Some(local) = self.rooms.get_mut(room) {
            local.remove(conn);
            if local.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// The receivers of a delivery to `room` (none when no member is here any more).
    pub fn audience(&mut self, room: &str, audience: Audience) -> Option<Arc<[ConnId]>> {
        Some(self.rooms.get_mut(room)?.audience(audience))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_shared_until_membership_changes() {
        let mut room = LocalRoom::default();
        let (a, b) = (ConnId::from_parts(1, 0), ConnId::from_parts(2, 0));
        room.insert(a, true);
        room.insert(b, false);
        let first = room.audience(Audience::Members);
        assert!(Arc::ptr_eq(&first, &room.audience(Audience::Members)), "no rebuild per publish");
        assert_eq!(&*room.audience(Audience::Watchers), &[a]);
        room.insert(b, true);
        let mut watchers = room.audience(Audience::Watchers).to_vec();
        watchers.sort();
        assert_eq!(watchers, [a, b]);
        room.remove(a);
        assert_eq!(&*room.audience(Audience::Members), &[b]);
    }
}
