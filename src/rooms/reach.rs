//! Reaching a user wherever they are connected: the backend's `POST /api/publish` with
//! `"user"` (a message to every connection of that user) and `POST /api/disconnect`
//! (every connection of that user closed with 4001).
//!
//! The worker that took the API call asks every worker of the node, itself included, with
//! one [`Msg::Reach`]; each acts on its own connections of that user (`Sessions` knows
//! them) and answers how many it reached; the asking worker answers the API with the sum
//! once every worker has. The mesh carries one worker's messages to another in order, and
//! the API answers only after every worker acted, so messages to a user arrive in the
//! order the API accepted them.
//!
//! No IO: what goes to another worker, and the answers for the API, leave through
//! [`Reach::poll`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::server::ConnId;

/// What to do to a user's connections.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send this push (`{"op":"message","user",...}`) to each room-protocol connection.
    Send(Bytes),
    /// Close each connection (room protocol and relay) with 4001.
    Disconnect,
}

/// Between the workers of one node.
#[derive(Debug)]
pub enum Msg {
    /// Act on your connections of `user` and tell worker `origin` how many (`token`).
    Reach {
        /// The asking worker's token for this request.
        token: u64,
        /// The asking worker.
        origin: usize,
        /// The user.
        user: Arc<str>,
        /// What to do.
        action: Action,
    },
    /// The answer to a `Reach`.
    Reached {
        /// The asking worker's token.
        token: u64,
        /// Connections reached on the answering worker.
        connections: u64,
    },
}

/// What [`Reach::poll`] hands the wiring.
#[derive(Debug)]
pub enum Output {
    /// For worker `.0` (this one included: the wiring hands it back to [`Reach::receive`]
    /// after acting, through [`Reach::acted`]).
    Send(usize, Msg),
    /// Every worker answered the API call waiting on `http`: `connections` reached.
    Done {
        /// The API's HTTP connection.
        http: ConnId,
        /// Connections reached across the node.
        connections: u64,
    },
}

#[derive(Debug)]
struct Pending {
    http: ConnId,
    /// Workers yet to answer.
    waiting: usize,
    connections: u64,
}

/// One worker's part in reaching users.
#[derive(Debug)]
pub struct Reach {
    me: usize,
    workers: usize,
    next_token: u64,
    pending: HashMap<u64, Pending>,
    output: VecDeque<Output>,
}

impl Reach {
    /// Worker `me` of `workers`.
    pub fn new(me: usize, workers: usize) -> Self {
        Reach { me, workers: workers.max(1), next_token: 0, pending: HashMap::new(), output: VecDeque::new() }
    }

    /// An API call on `http`: `action` for every connection of `user` on every worker.
    pub fn start(&mut self, http: ConnId, user: Arc<str>, action: Action) {
        self.next_token += 1;
        let token = self.next_token;
        self.pending.insert(token, Pending { http, waiting: self.workers, connections: 0 });
        for worker in 0..self.workers {
            let msg = Msg::Reach { token, origin: self.me, user: user.clone(), action: action.clone() };
            self.output.push_back(Output::Send(worker, msg));
        }
    }

    /// This worker acted on a `Reach` from `origin`, reaching `connections`.
    pub fn acted(&mut self, origin: usize, token: u64, connections: u64) {
        self.output.push_back(Output::Send(origin, Msg::Reached { token, connections }));
    }

    /// A worker's answer to one of this worker's requests.
    pub fn reached(&mut self, token: u64, connections: u64) {
        let Some(pending) = self.pending.get_mut(&token) else { return };
        pending.connections += connections;
        pending.waiting -= 1;
        if pending.waiting == 0 {
            let Pending { http, connections, .. } = pending;
            let done = Output::Done { http: *http, connections: *connections };
            self.pending.remove(&token);
            self.output.push_back(done);
        }
    }

    /// The next output, in order.
    pub fn poll(&mut self) -> Option<Output> {
        self.output.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_answered_once_every_worker_counted() {
        let http = ConnId::from_parts(7, 0);
        let mut reach = Reach::new(1, 3);
        reach.start(http, "ann".into(), Action::Disconnect);
        let mut asked = Vec::new();
        while let Some(Output::Send(to, Msg::Reach { token, origin, user, .. })) = reach.poll() {
            assert_eq!((origin, &*user), (1, "ann"));
            asked.push((to, token));
        }
        assert_eq!(asked.iter().map(|a| a.0).collect::<Vec<_>>(), [0, 1, 2], "every worker, this one too");
        let token = asked[0].1;
        reach.reached(token, 2);
        reach.reached(token, 0);
        assert!(reach.poll().is_none(), "one worker has yet to answer");
        reach.reached(token, 1);
        assert!(matches!(reach.poll(), Some(Output::Done { http: h, connections: 3 }) if h == http));
        reach.reached(token, 1);
        assert!(reach.poll().is_none(), "a late or stray answer is ignored");
    }
}
