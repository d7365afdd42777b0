//! Reaching a user wherever they are connected: the backend's `POST /api/publish` with
//! `"user"` (a message to every connection of that user) and `POST /api/disconnect`
//! (every connection of that user closed with 4001).
//!
//! Within a node, a **gather**: the worker that asks sends every worker of the node,
//! itself included, one [`Msg::Reach`]; each acts on its own connections of that user
//! (`Sessions` knows them) and answers how many it reached; the asking worker has the sum
//! once every worker has answered. The mesh carries one worker's messages to another in
//! order, so one node delivers a user's messages in the order it gathers them.
//!
//! Across nodes (on Redis), the API's worker publishes the request on the channel
//! `wsedge:users`, which worker 0 of every node subscribes: the `PUBLISH` reply says how
//! many nodes got it. Each runs a gather and publishes its count on the asking worker's
//! own channel (`wsedge:reach:<id>`); the API is answered once every node has, or after
//! [`REMOTE_TIMEOUT`] with what came and `"complete": false`. Requests for one user go
//! through one Redis, in the order the API accepted them, and each node's worker 0 takes
//! them in that order. Without Redis the API's gather is the whole of it.
//!
//! No sockets: the wiring hands over mesh traffic and answers ([`Reach::poll`]); the
//! Redis link's threads carry what goes to Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::warn;

use super::engine::redis::{Backplane, Inbound, Inbox, Op, Part, Reply};
use super::error::RoomError;
use crate::server::{ConnId, Doorbell};

/// The channel every node's worker 0 takes user requests from.
const USERS_CHANNEL: &str = "wsedge:users";
/// How long the API waits for other nodes' counts before answering with what came.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do to a user's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        /// The asking worker's token for this gather.
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

/// How many connections an API call reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// Connections reached.
    pub connections: u64,
    /// False: some node did not answer in time (it may have reached more).
    pub complete: bool,
}

/// What [`Reach::poll`] hands the wiring.
#[derive(Debug)]
pub enum Output {
    /// For worker `.0` (this one included: the wiring acts on it here, then tells
    /// [`Reach::acted`]).
    Send(usize, Msg),
    /// The API call waiting on `http` is done.
    Done {
        /// The API's HTTP connection.
        http: ConnId,
        /// What it reached, or why not (503: Redis unreachable).
        result: Result<Reached, RoomError>,
    },
}

/// Who waits for a gather on this worker.
#[derive(Debug)]
enum Requester {
    /// The API, on this node without Redis.
    Api(ConnId),
    /// A worker of some node (on Redis), on its channel.
    Node { channel: Arc<str>, token: u64 },
}

#[derive(Debug)]
struct Gather {
    requester: Requester,
    /// Workers yet to answer.
    waiting: usize,
    connections: u64,
}

/// An API call out on Redis, waiting for every node's count.
#[derive(Debug)]
struct Remote {
    http: ConnId,
    /// Nodes that got the request (`None` until Redis says).
    nodes: Option<u64>,
    answered: u64,
    connections: u64,
    since: Instant,
    /// This node's channel connection was up when the request went out (else this node
    /// itself may not get it: the count would not be complete).
    listening: bool,
}

/// Whether a node on Redis hears user requests and its workers hear the counts: every
/// worker's channel, and `wsedge:users` at worker 0, subscribed on every shard. Until
/// then the node would miss requests (it is not counted by `PUBLISH`) or counts, so it
/// refuses them (503) and `/healthz` says `degraded`. Shared by the node's workers.
#[derive(Debug)]
pub struct Readiness {
    /// Subscriptions confirmed (each channel counted once per shard).
    confirmed: AtomicUsize,
    /// Subscriptions there are: shards × (workers + 1).
    expected: usize,
}

impl Readiness {
    /// For a node of `workers` workers on `shards` Redis servers.
    pub fn new(workers: usize, shards: usize) -> Arc<Readiness> {
        Arc::new(Readiness { confirmed: AtomicUsize::new(0), expected: shards * (workers.max(1) + 1) })
    }

    fn ready(&self) -> bool {
        self.confirmed.load(Ordering::Relaxed) >= self.expected
    }
}

/// The Redis side of a worker's part (nodes on Redis).
#[derive(Debug)]
struct Link {
    backplane: Backplane,
    inbox: Inbox,
    /// This worker's own channel, where nodes send their counts.
    channel: Arc<str>,
    remote: HashMap<u64, Remote>,
    readiness: Arc<Readiness>,
    /// Confirmations seen per channel of this worker (a reconnect confirms again: counted
    /// up to the number of shards).
    confirmed: HashMap<Arc<str>, usize>,
}

/// One worker's part in reaching users.
#[derive(Debug)]
pub struct Reach {
    me: usize,
    workers: usize,
    next_token: u64,
    gathers: HashMap<u64, Gather>,
    link: Option<Link>,
    output: VecDeque<Output>,
}

impl Reach {
    /// Worker `me` of `workers`, on this node alone.
    pub fn new(me: usize, workers: usize) -> Self {
        Reach {
            me,
            workers: workers.max(1),
            next_token: 0,
            gathers: HashMap::new(),
            link: None,
            output: VecDeque::new(),
        }
    }

    /// Worker `me` of `workers` of a node on Redis: `id` is unique to this worker (its
    /// channel's name); `doorbell` wakes it when Redis has news.
    pub fn on_redis(
        me: usize,
        workers: usize,
        id: &str,
        backplane: Backplane,
        doorbell: Doorbell,
        readiness: Arc<Readiness>,
    ) -> Self {
        let inbox = backplane.attach_users(me, doorbell);
        let channel: Arc<str> = format!("wsedge:reach:{id}").into();
        for shard in 0..backplane.shards() {
            backplane.subscribe(shard, me, channel.clone(), Part::Users);
            if me == 0 {
                backplane.subscribe(shard, me, USERS_CHANNEL.into(), Part::Users);
            }
        }
        let link = Link { backplane, inbox, channel, remote: HashMap::new(), readiness, confirmed: HashMap::new() };
        Reach { link: Some(link), ..Reach::new(me, workers) }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// An API call on `http`: `action` for every connection of `user` on every worker (and
    /// every node, on Redis).
    pub fn start(&mut self, now: Instant, http: ConnId, user: Arc<str>, action: Action) {
        if self.link.is_none() {
            return self.gather(Requester::Api(http), user, action);
        }
        let token = self.token();
        let (me, Some(link)) = (self.me, &mut self.link) else { return };
        if !link.readiness.ready() {
            let result = Err(RoomError::BackplaneUnavailable);
            return self.output.push_back(Output::Done { http, result });
        }
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(USERS_CHANNEL).arg(encode_request(&link.channel, token, &user, &action));
        let shard = link.backplane.shard_of(&user);
        let listening = link.backplane.is_up(shard);
        link.remote.insert(token, Remote { http, nodes: None, answered: 0, connections: 0, since: now, listening });
        link.backplane.request_for(Part::Users, shard, me, token, Op::Command(cmd));
    }

    /// Asks every worker of this node to act, for `requester`.
    fn gather(&mut self, requester: Requester, user: Arc<str>, action: Action) {
        let token = self.token();
        self.gathers.insert(token, Gather { requester, waiting: self.workers, connections: 0 });
        for worker in 0..self.workers {
            let msg = Msg::Reach { token, origin: self.me, user: user.clone(), action: action.clone() };
            self.output.push_back(Output::Send(worker, msg));
        }
    }

    /// This worker acted on a `Reach` from `origin`, reaching `connections`.
    pub fn acted(&mut self, origin: usize, token: u64, connections: u64) {
        self.output.push_back(Output::Send(origin, Msg::Reached { token, connections }));
    }

    /// A worker's answer to one of this worker's gathers.
    pub fn reached(&mut self, token: u64, connections: u64) {
        let Some(gather) = self.gathers.get_mut(&token) else { return };
        gather.connections += connections;
        gather.waiting -= 1;
        if gather.waiting > 0 {
            return;
        }
        let Some(Gather { requester, connections, .. }) = self.gathers.remove(&token) else { return };
        match requester {
            Requester::Api(http) => {
                let result = Ok(Reached { connections, complete: true });
                self.output.push_back(Output::Done { http, result });
            }
            Requester::Node { channel, token } => {
                if let Some(link) = &self.link {
                    link.backplane.publish(&channel, format!("{token} {connections}").into_bytes());
                }
            }
        }
    }

    /// Takes what Redis sent this worker: requests from nodes (worker 0), their counts,
    /// and the replies to this worker's requests.
    pub fn pump_link(&mut self) {
        let Some(link) = &mut self.link else { return };
        let mut requests = Vec::new();
        while let Some(inbound) = link.inbox.next() {
            match inbound {
                Inbound::Reply { token, result } => {
                    let Some(remote) = link.remote.get_mut(&token) else { continue };
                    match result {
                        Ok(Reply::Value(redis::Value::Int(nodes))) => remote.nodes = Some(nodes.max(0) as u64),
                        failed => {
                            if let Ok(other) = failed {
                                warn!("Redis answered a user request's PUBLISH with {other:?}");
                            }
                            let http = remote.http;
                            link.remote.remove(&token);
                            let result = Err(RoomError::BackplaneUnavailable);
                            self.output.push_back(Output::Done { http, result });
                        }
                    }
                }
                Inbound::Channel { room: channel, payload } if *channel == *USERS_CHANNEL => {
                    match decode_request(&payload) {
                        Some(request) => requests.push(request),
                        None => warn!("skipping a malformed message on {USERS_CHANNEL}"),
                    }
                }
                Inbound::Channel { payload, .. } => {
                    let text = std::str::from_utf8(&payload).unwrap_or_default();
                    let parsed = text.split_once(' ').and_then(|(t, n)| Some((t.parse().ok()?, n.parse().ok()?)));
                    let Some((token, connections)): Option<(u64, u64)> = parsed else { continue };
                    if let Some(remote) = link.remote.get_mut(&token) {
                        remote.answered += 1;
                        remote.connections += connections;
                    }
                }
                Inbound::Subscribed { room: channel, .. } => {
                    let seen = link.confirmed.entry(channel).or_default();
                    if *seen < link.backplane.shards() {
                        *seen += 1;
                        link.readiness.confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Inbound::Down(_) | Inbound::Up(_) => {}
            }
        }
        self.finish_remote(None);
        for (channel, token, user, action) in requests {
            self.gather(Requester::Node { channel, token }, user, action);
        }
    }

    /// Answers the API calls every node has answered (and, at `now`, those past
    /// [`REMOTE_TIMEOUT`], with what came).
    fn finish_remote(&mut self, now: Option<Instant>) {
        let Some(link) = &mut self.link else { return };
        let timed_out = |r: &Remote| now.is_some_and(|now| now.saturating_duration_since(r.since) >= REMOTE_TIMEOUT);
        let done: Vec<u64> = link
            .remote
            .iter()
            .filter(|(_, r)| r.nodes.is_some_and(|n| r.answered >= n) || timed_out(r))
            .map(|(&token, _)| token)
            .collect();
        for token in done {
            let Some(r) = link.remote.remove(&token) else { continue };
            let complete = r.listening && r.nodes.is_some_and(|n| r.answered >= n);
            if !complete {
                warn!("a user request had {} of {:?} nodes' answers after {REMOTE_TIMEOUT:?}", r.answered, r.nodes);
            }
            let result = Ok(Reached { connections: r.connections, complete });
            self.output.push_back(Output::Done { http: r.http, result });
        }
    }

    /// Whether this node hears user requests and counts (always, without Redis).
    pub fn ready(&self) -> bool {
        self.link.as_ref().is_none_or(|link| link.readiness.ready())
    }

    /// Time passed: API calls waiting too long for other nodes are answered.
    pub fn tick(&mut self, now: Instant) {
        self.finish_remote(Some(now));
    }

    /// The next output, in order.
    pub fn poll(&mut self) -> Option<Output> {
        self.output.pop_front()
    }
}

/// A request on `wsedge:users`: `<reply channel> <token> <s|d> <user length> <user> <push>`
/// (the user may hold spaces: its length says where it ends; `d` has no push).
fn encode_request(channel: &str, token: u64, user: &str, action: &Action) -> Vec<u8> {
    let kind = if matches!(action, Action::Send(_)) { 's' } else { 'd' };
    let mut out = format!("{channel} {token} {kind} {} {user} ", user.len()).into_bytes();
    if let Action::Send(push) = action {
        out.extend_from_slice(push);
    }
    out
}

fn decode_request(payload: &[u8]) -> Option<(Arc<str>, u64, Arc<str>, Action)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(5, ' ');
    let (channel, token, kind, len) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next()?;
    let len: usize = len.parse().ok()?;
    let user = rest.get(..len)?;
    let push = rest.get(len..)?.strip_prefix(' ')?;
    let action = match kind {
        "s" if push.starts_with('{') => Action::Send(Bytes::copy_from_slice(push.as_bytes())),
        "d" if push.is_empty() => Action::Disconnect,
        _ => return None,
    };
    if user.is_empty() || !channel.starts_with("wsedge:reach:") {
        return None;
    }
    Some((channel.into(), token.parse().ok()?, user.into(), action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_is_answered_once_every_worker_counted() {
        let http = ConnId::from_parts(7, 0);
        let mut reach = Reach::new(1, 3);
        reach.start(Instant::now(), http, "ann".into(), Action::Disconnect);
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
        let done = Reached { connections: 3, complete: true };
        assert!(matches!(reach.poll(), Some(Output::Done { http: h, result: Ok(r) }) if h == http && r == done));
        reach.reached(token, 1);
        assert!(reach.poll().is_none(), "a late or stray answer is ignored");
    }

    #[test]
    fn requests_on_redis_read_back_as_written_and_junk_is_refused() {
        let push = Bytes::from_static(br#"{"op":"message","user":"a b","data":1}"#);
        for (user, action) in [("a b", Action::Send(push)), ("ann", Action::Disconnect)] {
            let wire = encode_request("wsedge:reach:q1", 7, user, &action);
            let decoded = decode_request(&wire).expect("decodes");
            assert_eq!((&*decoded.0, decoded.1, &*decoded.2, decoded.3), ("wsedge:reach:q1", 7, user, action));
        }
        for junk in [
            &b""[..],
            b"wsedge:reach:q1 7 s 3 ann x",
            b"wsedge:reach:q1 7 x 3 ann ",
            b"wsedge:reach:q1 7 d 3 ann {}",
            b"wsedge:reach:q1 7 s 9 ann {}",
            b"elsewhere 7 d 3 ann ",
            b"wsedge:reach:q1 x d 3 ann ",
            b"wsedge:reach:q1 7 d 0  ",
        ] {
            assert_eq!(decode_request(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }
}
