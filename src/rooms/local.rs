//! Delivery lists: for each room with members on this worker, which of this worker's
//! connections receive its messages (and which its presence events).
//!
//! A room's owner decides who is a member; the worker holding a member mirrors that here
//! when the owner's answer arrives (see `msg.rs`), and delivers what the owner sends. The
//! lists are handed to the event loop as shared slices, rebuilt only when membership
//! changes: a publish costs a reference-count bump, not a copy of the member list.

use std::collections::HashMap;
use std::sync::Arc;

use super::protocol::Presence;
use crate::server::ConnId;

/// Who a delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Members,
    /// Members that watch presence by connection.
    Watchers,
    /// Members that watch presence by user.
    UserWatchers,
}

impl Audience {
    /// How many audiences there are (for arrays indexed by [`Audience::index`]).
    pub const COUNT: usize = 3;

    /// Whether a member watching `presence` is in this audience.
    pub fn includes(self, presence: Presence) -> bool {
        match self {
            Audience::Members => true,
            Audience::Watchers => presence == Presence::Connections,
            Audience::UserWatchers => presence == Presence::Users,
        }
    }

    /// The audience of a presence event shown `by` connection or user.
    pub fn watching(by: Presence) -> Audience {
        match by {
            Presence::Users => Audience::UserWatchers,
            Presence::Off | Presence::Connections => Audience::Watchers,
        }
    }

    /// 0, 1, 2.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
pub struct LocalRoom {
    /// Member -> the presence it watches.
    members: HashMap<ConnId, Presence>,
    /// Each audience's list, built on first use after a change.
    lists: [Option<Arc<[ConnId]>>; Audience::COUNT],
}

impl LocalRoom {
    pub fn insert(&mut self, conn: ConnId, presence: Presence) {
        if self.members.insert(conn, presence) != Some(presence) {
            self.lists = Default::default();
        }
    }

    pub fn remove(&mut self, conn: ConnId) {
        if self.members.remove(&conn).is_some() {
            self.lists = Default::default();
        }
    }

    /// The presence `conn` watches here (`None`: not a member here).
    pub fn presence_of(&self, conn: ConnId) -> Option<Presence> {
        self.members.get(&conn).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The receivers of a delivery, built once per membership change.
    pub fn audience(&mut self, audience: Audience) -> Arc<[ConnId]> {
        self.lists[audience.index()]
            .get_or_insert_with(|| {
                self.members.iter().filter(|(_, &presence)| audience.includes(presence)).map(|(&c, _)| c).collect()
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
    pub fn insert(&mut self, room: &Arc<str>, conn: ConnId, presence: Presence) {
        self.rooms.entry(room.clone()).or_default().insert(conn, presence);
    }

    /// The presence `conn` watches in `room` (`None`: not a member here).
    pub fn presence_of(&self, room: &str, conn: ConnId) -> Option<Presence> {
        self.rooms.get(room)?.presence_of(conn)
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
        room.insert(a, Presence::Connections);
        room.insert(b, Presence::Off);
        let first = room.audience(Audience::Members);
        assert!(Arc::ptr_eq(&first, &room.audience(Audience::Members)), "no rebuild per publish");
        assert_eq!(&*room.audience(Audience::Watchers), &[a]);
        assert!(room.audience(Audience::UserWatchers).is_empty());
        room.insert(b, Presence::Users);
        assert_eq!(&*room.audience(Audience::UserWatchers), &[b]);
        assert_eq!(&*room.audience(Audience::Watchers), &[a], "one kind of presence at a time");
        room.insert(b, Presence::Connections);
        let mut watchers = room.audience(Audience::Watchers).to_vec();
        watchers.sort();
        assert_eq!(watchers, [a, b]);
        room.remove(a);
        assert_eq!(&*room.audience(Audience::Members), &[b]);
    }
}
