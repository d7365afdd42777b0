//! Routing within one node, shared by every engine: each room has one owner worker (a
//! hash of its name, the same on every worker), which handles everything that reads or
//! changes the room, in the order it arrives. A worker forwards a request for a room to
//! its owner as a [`Msg`] over the mesh; the owner sends events back to the workers with
//! members. Per-room order across workers rests on that: one thread per room, FIFO links.
//!
//! No IO: what is for another worker leaves through [`Router::poll`] as [`Output::Send`].

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;

use super::room::Membership;
use super::{Answer, Event, Join, Leave, Output, Publish, ReplyTo, RoomsSummary};
use crate::rooms::count::SharedCount;
use crate::rooms::error::RoomError;
use crate::rooms::local::Audience;
use crate::rooms::protocol::Presence;
use crate::server::{ConnId, MAX_WORKERS};

/// What an engine on one worker sends the engine on another (the mesh carries it).
#[derive(Debug)]
pub enum Msg {
    // ---- to the owner of a room ----
    /// A `join`.
    Join(Join),
    /// A `leave`, or a closed connection.
    Leave(Leave),
    /// A `publish` (or the backend's).
    Publish(Publish),
    /// A `presence` request (a member's, or the backend's).
    Presence {
        /// Who asks.
        to: ReplyTo,
        /// The room.
        room: String,
    },
    /// A `history` request (a member's, or the backend's).
    History {
        /// Who asks.
        to: ReplyTo,
        /// The room.
        room: String,
        /// How many.
        limit: Option<u64>,
    },
    // ---- to every worker ----
    /// Answer `reply_to` with a summary of the rooms owned here (or just an
    /// acknowledgement, without `summary`).
    Gather {
        /// The asker's gathering.
        token: u64,
        /// The asking worker.
        reply_to: usize,
        /// Whether to send the rooms, or only an acknowledgement.
        summary: bool,
    },
    // ---- to the asker's worker ----
    /// One worker's part of a gathering.
    Gathered {
        /// The gathering.
        token: u64,
        /// The rooms owned there (`None`: an acknowledgement).
        part: Option<RoomsSummary>,
    },
    /// An event for the member side there.
    Event(Event),
}

impl Msg {
    /// The room a request is about (`None`: not a room request).
    pub fn room(&self) -> Option<&str> {
        match self {
            Msg::Join(join) => Some(&join.room),
            Msg::Leave(leave) => Some(&leave.room),
            Msg::Publish(publish) => Some(&publish.room),
            Msg::Presence { room, .. } | Msg::History { room, .. } => Some(room),
            Msg::Gather { .. } | Msg::Gathered { .. } | Msg::Event(_) => None,
        }
    }
}

/// What the engines of one node's workers share: the routing keys and the node-wide room
/// count.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// Room name -> owner worker.
    pub router: RandomState,
    /// Rooms held across workers (`max_rooms`).
    pub room_count: SharedCount,
}

/// One worker's view of the others: who owns a room, and the output queue.
#[derive(Debug)]
pub struct Router {
    me: usize,
    workers: usize,
    /// Room name -> owner worker; the same keys on every worker.
    hasher: RandomState,
    output: VecDeque<Output>,
}

impl Router {
    /// The router of worker `me` of `workers`; `hasher` is the same for all of them.
    pub fn new(me: usize, workers: usize, hasher: RandomState) -> Self {
        Router { me, workers: workers.max(1), hasher, output: VecDeque::new() }
    }

    /// This worker.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Workers on this node.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The worker that owns room `name`.
    pub fn owner(&self, name: &str) -> usize {
        if self.workers == 1 {
            return 0;
        }
        (self.hasher.hash_one(name) % self.workers as u64) as usize
    }

    /// Sends `msg` to worker `to`; hands it back when `to` is this worker (the caller
    /// handles it now).
    pub fn send(&mut self, to: usize, msg: Msg) -> Option<Msg> {
        if to == self.me {
            return Some(msg);
        }
        self.output.push_back(Output::Send(to, msg));
        None
    }

    /// Sends `event` to the member side of worker `to`.
    pub fn emit(&mut self, to: usize, event: Event) {
        if to == self.me {
            self.output.push_back(Output::Event(event));
        } else {
            self.output.push_back(Output::Send(to, Msg::Event(event)));
        }
    }

    /// Delivers `payload` to the members (or watchers) of `room` on every worker in
    /// `mask` (bit w: worker w).
    pub fn deliver(&mut self, mask: u64, room: &Arc<str>, audience: Audience, except: Option<ConnId>, payload: &Bytes) {
        for worker in 0..self.workers.min(MAX_WORKERS) {
            if mask & (1 << worker) != 0 {
                let event = Event::Deliver { room: room.clone(), audience, except, payload: payload.clone() };
                self.emit(worker, event);
            }
        }
    }

    /// Answers a request (success without an `id` is silent).
    pub fn answer(&mut self, to: ReplyTo, result: Result<Answer, RoomError>) {
        if matches!(to, ReplyTo::Member { id: None, .. }) && result.is_ok() {
            return;
        }
        let worker = to.worker();
        self.emit(worker, Event::Answer { to, result });
    }

    /// The next output, in order.
    pub fn poll(&mut self) -> Option<Output> {
        self.output.pop_front()
    }
}

/// Members of a room on one worker, per [`Audience`]: where the owner sends deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WorkerShare {
    counts: [u32; Audience::COUNT],
}

impl WorkerShare {
    fn add(&mut self, presence: Presence, by: i32) {
        for (audience, count) in AUDIENCES.iter().zip(&mut self.counts) {
            if audience.includes(presence) {
                *count = count.saturating_add_signed(by);
            }
        }
    }
}

const AUDIENCES: [Audience; Audience::COUNT] = [Audience::Members, Audience::Watchers, Audience::UserWatchers];

/// What adding a member changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// It was not a member before (a second `join` only updates its presence).
    pub new: bool,
    /// It is its user's first connection here (always, for an anonymous one): presence by
    /// user sees the user join.
    pub first_of_user: bool,
}

/// A room's members (on every worker of this node), as its owner keeps them.
#[derive(Debug, Default)]
pub struct Roster {
    members: HashMap<ConnId, Membership>,
    /// Per worker index: how many members (and presence watchers of each kind) live there.
    shares: Vec<WorkerShare>,
    /// A named user's connections here (anonymous ones are each a user of their own).
    users: HashMap<Arc<str>, u32>,
}

impl Roster {
    /// An empty roster for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Roster { members: HashMap::new(), shares: vec![WorkerShare::default(); workers.max(1)], users: HashMap::new() }
    }

    /// Every member.
    pub fn members(&self) -> &HashMap<ConnId, Membership> {
        &self.members
    }

    /// Whether `conn` is a member.
    pub fn contains(&self, conn: ConnId) -> bool {
        self.members.contains_key(&conn)
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds (or updates) a member.
    pub fn insert(&mut self, conn: ConnId, membership: Membership) -> Arrival {
        let presence = membership.presence;
        let user = membership.identity.user.clone();
        let old = self.members.insert(conn, membership);
        if let Some(share) = self.shares.get_mut(conn.worker()) {
            if let Some(old) = &old {
                share.add(old.presence, -1);
            }
            share.add(presence, 1);
        }
        let new = old.is_none();
        let first_of_user = new
            && user.is_none_or(|user| {
                let count = self.users.entry(user).or_default();
                *count += 1;
                *count == 1
            });
        Arrival { new, first_of_user }
    }

    /// Removes a member; with whether it was its user's last connection here (always, for
    /// an anonymous one).
    pub fn remove(&mut self, conn: ConnId) -> Option<(Membership, bool)> {
        let old = self.members.remove(&conn)?;
        if let Some(share) = self.shares.get_mut(conn.worker()) {
            share.add(old.presence, -1);
        }
        let last_of_user = match &old.identity.user {
            None => true,
            Some(user) => match self.users.get_mut(user) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                _ => {
                    self.users.remove(user);
                    true
                }
            },
        };
        Some((old, last_of_user))
    }

    /// Bit `w` set: worker `w` has members of `audience` here.
    pub fn worker_mask(&self, audience: Audience) -> u64 {
        let i = audience.index();
        self.shares.iter().enumerate().filter(|(_, s)| s.counts[i] > 0).fold(0, |mask, (w, _)| mask | 1 << w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::engine::Identity;

    #[test]
    fn shares_count_members_and_watchers_per_worker() {
        let mut roster = Roster::new(3);
        let who = Identity { client: "c".into(), user: None, info: None };
        let on = |w: u16, i: u32| ConnId::for_worker(w, i, 0);
        let member = |presence| Membership { presence, identity: who.clone() };
        assert!(roster.insert(on(0, 1), member(Presence::Connections)).new);
        assert!(roster.insert(on(2, 1), member(Presence::Off)).new);
        assert!(!roster.insert(on(2, 1), member(Presence::Connections)).new);
        assert_eq!(roster.worker_mask(Audience::Members), 0b101);
        assert_eq!(roster.worker_mask(Audience::Watchers), 0b101, "the member on 2 now watches too");
        assert_eq!(roster.worker_mask(Audience::UserWatchers), 0);
        roster.insert(on(2, 1), member(Presence::Users));
        assert_eq!(
            (roster.worker_mask(Audience::Watchers), roster.worker_mask(Audience::UserWatchers)),
            (0b001, 0b100)
        );
        assert!(roster.remove(on(0, 1)).is_some());
        assert_eq!(roster.worker_mask(Audience::Watchers), 0);
        assert!(roster.remove(on(0, 1)).is_none());
        roster.remove(on(2, 1));
        assert_eq!(roster.worker_mask(Audience::Members), 0);
        assert!(roster.is_empty());
    }

    #[test]
    fn a_user_arrives_with_its_first_connection_and_goes_with_its_last() {
        let mut roster = Roster::new(2);
        let on = |w: u16, i: u32| ConnId::for_worker(w, i, 0);
        let ann = |client: &str| Membership {
            presence: Presence::Off,
            identity: Identity { client: client.into(), user: Some("ann".into()), info: None },
        };
        let anon =
            Membership { presence: Presence::Off, identity: Identity { client: "x".into(), user: None, info: None } };
        assert_eq!(roster.insert(on(0, 1), ann("a1")), Arrival { new: true, first_of_user: true });
        assert_eq!(roster.insert(on(1, 1), ann("a2")), Arrival { new: true, first_of_user: false });
        assert_eq!(roster.insert(on(1, 1), ann("a2")), Arrival { new: false, first_of_user: false }, "a second join");
        assert_eq!(roster.insert(on(0, 2), anon.clone()), Arrival { new: true, first_of_user: true });
        assert_eq!(roster.remove(on(0, 1)).map(|(_, last)| last), Some(false));
        assert_eq!(roster.remove(on(0, 2)).map(|(_, last)| last), Some(true), "an anonymous one is its own user");
        assert_eq!(roster.remove(on(1, 1)).map(|(_, last)| last), Some(true));
        assert!(roster.insert(on(1, 1), ann("a3")).first_of_user, "back again: a new arrival");
    }
}
