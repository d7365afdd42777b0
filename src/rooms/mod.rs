//! The pub/sub room layer (`wsedge.v1`: docs/protocol.md). [`Rooms`] is a
//! `server::Handler`, one per worker, on that worker's thread (no locks), that only wires
//! the parts, each owning its state: `engine/` (what orders a room, behind the
//! [`engine::Engine`] seam), `members.rs` (this worker's connections, their requests and
//! replies), `sessions.rs` (who each is: tokens, expiry), `api.rs` (`/api/*`, `/metrics`),
//! `relay.rs` (raw relay rooms), `reach.rs` (messages to a user and disconnects, across
//! workers); `protocol.rs` (the JSON wire format), `error.rs` (every
//! refusal), `config.rs` (every limit), `local.rs` (delivery lists), `auth.rs` (JWT).
//!
//! Every publish, a client's or the API's, is one engine call. What the engine and the
//! relay send other workers goes over the [`Mesh`]; what they have for this worker goes
//! to its part (`pump`) after each handler call.

pub mod api;
pub mod auth;
mod config;
mod count;
pub mod engine;
pub mod error;
mod local;
pub mod members;
#[cfg(any(test, feature = "fuzzing"))]
pub mod protocol;
#[cfg(not(any(test, feature = "fuzzing")))]
mod protocol;
pub mod reach;
pub mod relay;
pub mod sessions;
pub mod sse;
pub mod users;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use self::{api::Api, auth::AuthError, error::RoomError, error::UpgradeRefusal, members::Members, sessions::Sessions};
use crate::proto::handshake::{PlainRequest, UpgradeRequest};
use crate::proto::MessageKind;
use crate::server::{ConnId, Handler, HttpResponse, Mesh, Metrics, Now, Outbox, Payload};
use engine::redis::{Backplane, RedisEngine};
use engine::{memory::MemoryEngine, Engine, EngineMsg, Event, Output, ReplyTo};
use reach::Reach;
use relay::{Endpoint, Relay};

pub use crate::wire::SUBPROTOCOL;
pub use config::RoomsConfig;
pub use sessions::Admission;

/// What one worker's room layer sends another's over the mesh.
#[derive(Debug)]
pub enum RoomMsg {
    /// For the engine there.
    Engine(EngineMsg),
    /// For the relay there.
    Relay(relay::Msg),
    /// Reaching a user's connections there.
    Reach(reach::Msg),
    /// An event stream's request over HTTP, for the worker holding the stream (named by
    /// its token, in `body`); `http` waits.
    StreamRequest {
        /// The HTTP connection waiting for the answer.
        http: ConnId,
        /// The request's body.
        body: bytes::Bytes,
    },
    /// The stream's worker refused its request before the engine saw it.
    StreamRefused {
        /// The HTTP connection waiting for the answer.
        http: ConnId,
        /// Why.
        error: RoomError,
    },
}

/// The room layer of one worker.
#[derive(Debug)]
pub struct Rooms {
    mesh: Mesh<RoomMsg>,
    engine: Box<dyn Engine>,
    members: Members,
    sessions: Sessions,
    relay: Relay,
    reach: Reach,
    api: Api,
    /// Event streams (`GET /sse`) are served: the room protocol has a path here.
    streams: bool,
    /// Streams answered and waiting for the server's admission: what each asked for.
    admitting: HashMap<ConnId, (sse::StreamRequest, BTreeMap<String, protocol::Since>)>,
}

impl Rooms {
    /// The room layer of a single-worker server (`Server::bind`).
    pub fn new(config: RoomsConfig) -> Self {
        Rooms::for_workers(config)(Mesh::single())
    }

    /// Makes the room layer of each worker of a `Workers` server:
    /// `Workers::bind(server_config, Rooms::for_workers(rooms_config))`.
    pub fn for_workers(config: RoomsConfig) -> impl FnMut(Mesh<RoomMsg>) -> Rooms {
        Rooms::build(config, None)
    }

    /// As [`Rooms::for_workers`], with rooms, presence and history in Redis (the
    /// [`engine::redis::RedisEngine`]), shared with every node on the same Redis.
    pub fn for_workers_on_redis(config: RoomsConfig, backplane: Backplane) -> impl FnMut(Mesh<RoomMsg>) -> Rooms {
        Rooms::build(config, Some(backplane))
    }

    fn build(config: RoomsConfig, backplane: Option<Backplane>) -> impl FnMut(Mesh<RoomMsg>) -> Rooms {
        let config = Arc::new(config);
        let (engine, relay) = (engine::route::Shared::default(), relay::Shared::default());
        let users = Arc::new(users::UserConnections::new(config.max_conns_per_user));
        // One per node, made by the first worker built (the workers are known from its mesh).
        let reach_ready = Arc::new(std::sync::OnceLock::new());
        let this_node = Arc::new(api::admin::ThisNode::new(&config.node_name));
        move |mesh| {
            let (me, workers) = (mesh.me(), mesh.workers());
            // One random prefix per worker: its client ids (`q3zdpn-1`) and epochs
            // (`q3zdpn.1`) do not repeat across workers, restarts or nodes.
            let node = protocol::random_id();
            let engine: Box<dyn Engine> = match &backplane {
                None => Box::new(MemoryEngine::new(config.clone(), node.clone(), me, workers, &engine)),
                Some(backplane) => Box::new(RedisEngine::new(
                    config.clone(),
                    node.clone(),
                    (me, workers),
                    &engine,
                    backplane.clone(),
                    mesh.doorbell(),
                )),
            };
            Rooms {
                members: Members::new(config.clone(), node.clone()),
                sessions: Sessions::new(&config).sharing_users(users.clone()),
                relay: Relay::new(
                    config.clone(),
                    me,
                    workers,
                    relay.clone(),
                    backplane.as_ref().map(|b| (b.clone(), b.attach_relay(me, mesh.doorbell()))),
                ),
                api: Api::new(config.clone(), this_node.clone()),
                streams: !config.path.is_empty(),
                admitting: HashMap::new(),
                reach: match &backplane {
                    None => Reach::new(me, workers),
                    Some(b) => {
                        let ready = reach_ready.get_or_init(|| reach::Readiness::new(workers, b.shards())).clone();
                        Reach::on_redis(me, workers, &node, b.clone(), mesh.doorbell(), ready)
                    }
                },
                engine,
                mesh,
            }
        }
    }

    /// Rooms this worker's engine holds.
    pub fn room_count(&self) -> usize {
        self.engine.room_count()
    }

    /// Whether this worker reports the node to the others sharing the engine's store
    /// (worker 0 does, every tick, when there is such a store).
    fn reports_node(&self) -> bool {
        self.mesh.me() == 0 && self.engine.nodes().is_some()
    }

    /// Hands on what the engine and the relay have: events to their parts here, traffic
    /// to other workers over the mesh.
    fn pump(&mut self, out: &mut Outbox) {
        while let Some(output) = self.engine.poll() {
            match output {
                Output::Send(to, msg) => self.mesh.post(to, RoomMsg::Engine(msg)),
                Output::Event(Event::Answer { to: ReplyTo::Http(http), result }) => {
                    self.api.on_answer(out, http, result, self.relay.room_count());
                }
                Output::Event(event) => self.members.on_event(out, event),
            }
        }
        self.relay.pump_link(out);
        while let Some((to, msg)) = self.relay.poll() {
            self.mesh.post(to, RoomMsg::Relay(msg));
        }
        self.reach.pump_link();
        while let Some(output) = self.reach.poll() {
            match output {
                reach::Output::Send(to, msg) if to == self.mesh.me() => self.on_reach(out, msg),
                reach::Output::Send(to, msg) => self.mesh.post(to, RoomMsg::Reach(msg)),
                reach::Output::Done { http, result } => self.api.on_reached(out, http, result),
            }
        }
    }

    /// `GET /sse`: an event stream of the rooms its query names, checked as a socket's
    /// upgrade and joins are (its token, the user's connection limit, each room's
    /// permissions), resuming from its `Last-Event-ID`. Refusals are the API's JSON errors,
    /// with the codes of the room protocol, and an allowed origin's CORS headers (a page
    /// reading the stream with `fetch` sees the status, not a network error).
    fn open_stream(&mut self, out: &mut Outbox, conn: ConnId, request: &PlainRequest) -> HttpResponse {
        let cors = request.origin.as_deref().filter(|_| request.origin_allowed);
        let refuse = |e: RoomError| HttpResponse::json_error(e.code(), &e.to_string()).with_cors(cors);
        if request.method == "OPTIONS" {
            // A page of another origin reading the stream with `fetch` sends `Last-Event-ID`
            // itself (and maybe `Authorization`): its browser asks first.
            if !request.origin_allowed {
                return refuse(RoomError::OriginDenied);
            }
            return HttpResponse::preflight("GET", "Last-Event-ID, Authorization").with_cors(cors);
        }
        if request.method != "GET" {
            let response = HttpResponse::json_error(405, "method not allowed").with_header("Allow", "GET, OPTIONS");
            return response.with_cors(cors);
        }
        let wanted = match sse::parse_query(&request.path) {
            Ok(wanted) => wanted,
            Err(e) => return refuse(e),
        };
        let since = match sse::parse_last_event_id(request.last_event_id.as_deref().unwrap_or_default()) {
            Ok(since) => since,
            Err(reason) => return HttpResponse::json_error(400, reason).with_cors(cors),
        };
        let admission = match self.sessions.admit_token(&request.path, request.authorization.as_deref(), out.now()) {
            // No `auth` message on a stream: a required token comes with the request.
            Ok(Admission::Pending) => return refuse(RoomError::Token(AuthError::MissingToken)),
            Ok(admission) => admission,
            Err(e) => return refuse(RoomError::Token(e)),
        };
        if let Admission::Authenticated(grant) = &admission {
            if !self.sessions.user_has_room(&grant.user) {
                return refuse(RoomError::TooManyUserConnections);
            }
        }
        let permissions = self.sessions.permissions(&admission);
        for room in &wanted.rooms {
            if !permissions.may_join(room) {
                return refuse(RoomError::JoinDenied);
            }
            if wanted.presence.watches() && !permissions.may_presence(room) {
                return refuse(RoomError::PresenceDenied);
            }
        }
        if wanted.rooms.len() > self.members.max_rooms_per_connection() {
            return refuse(RoomError::TooManyRoomsForConnection { max: self.members.max_rooms_per_connection() });
        }
        let session = self.sessions.open(conn, admission, out.now());
        if session.over_user_limit() {
            self.sessions.close(conn);
            return refuse(RoomError::TooManyUserConnections);
        }
        // Joined once the server admits it (`on_stream`): a stream it refuses costs no joins.
        self.admitting.insert(conn, (wanted, since));
        HttpResponse::event_stream()
    }

    /// An event stream's requests over HTTP, answered as its own would be on a socket:
    /// `POST /publish` (a publish; body: the `publish` request's fields and `stream`),
    /// `GET /presence?stream=T&room=R[&by=users]` and `GET /history?stream=T&room=R[&limit=N]`.
    /// The token of the stream's `welcome` names it, and the worker that holds it, which
    /// checks the request as the stream's. The answer is the reply's `ok` body, or the error
    /// with its code as the HTTP status. These are a browser's requests: the origin rules
    /// apply, and an allowed origin gets CORS headers (and its preflight an answer).
    fn stream_request(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        request: &PlainRequest,
        body: &[u8],
    ) -> Option<HttpResponse> {
        let cors = request.origin.as_deref().filter(|_| request.origin_allowed);
        let refuse = |e: RoomError| Some(HttpResponse::json_error(e.code(), &e.to_string()).with_cors(cors));
        if !request.origin_allowed {
            return refuse(RoomError::OriginDenied);
        }
        let path = request.path.split('?').next().unwrap_or_default();
        let method = if path == "/publish" { "POST" } else { "GET" };
        let (body, by) = match request.method.as_str() {
            "OPTIONS" => return Some(HttpResponse::preflight(method, "Content-Type, Authorization").with_cors(cors)),
            m if m != method => {
                let response = HttpResponse::json_error(405, "method not allowed")
                    .with_header("Allow", format!("{method}, OPTIONS"));
                return Some(response.with_cors(cors));
            }
            "POST" => (bytes::Bytes::copy_from_slice(body), protocol::Presence::Connections),
            _ => match sse::read_request(path, &request.path) {
                Ok(read) => read,
                Err(e) => return refuse(e),
            },
        };
        // Which worker holds the stream: the token's first part (checked again there).
        let text = std::str::from_utf8(&body).map_err(|_| RoomError::BodyNotUtf8);
        let worker = match text.and_then(protocol::parse_stream_request) {
            Ok((token, _)) => token.split_once('.').and_then(|(w, _)| w.parse::<usize>().ok()),
            Err(e) => return refuse(e),
        };
        let Some(worker) = worker.filter(|&w| w < self.mesh.workers()) else {
            return refuse(RoomError::NoSuchStream);
        };
        self.api.await_stream_request(conn, cors, by);
        if worker == self.mesh.me() {
            if let Err(e) = self.members.request_from_stream(out, &body, conn, &self.sessions, &mut *self.engine) {
                self.api.on_answer(out, conn, Err(e), self.relay.room_count());
            }
        } else {
            self.mesh.post(worker, RoomMsg::StreamRequest { http: conn, body });
        }
        None
    }

    /// A worker's request to act on this worker's connections of a user, or its answer.
    fn on_reach(&mut self, out: &mut Outbox, msg: reach::Msg) {
        match msg {
            reach::Msg::Reach { token, origin, user, action } => {
                let reached = match action {
                    // Relay connections do not speak the room protocol: only its clients.
                    reach::Action::Send(push) => self
                        .sessions
                        .connections_of(&user)
                        .iter()
                        .filter(|&&conn| self.members.is_client(conn))
                        .map(|&conn| self.members.send_push(out, conn, &push))
                        .count(),
                    reach::Action::Disconnect => self
                        .sessions
                        .disconnect_user(&user)
                        .into_iter()
                        .map(|conn| {
                            let (code, reason) = (error::DISCONNECTED, error::close_reason::DISCONNECTED);
                            self.members.closing(out, conn, code, reason);
                            out.close(conn, code, reason);
                        })
                        .count(),
                };
                self.reach.acted(origin, token, reached as u64);
            }
            reach::Msg::Reached { token, connections } => self.reach.reached(token, connections),
        }
    }
}

impl Handler for Rooms {
    type Admission = Admission;

    fn accept(&mut self, request: &UpgradeRequest, now: Now) -> Result<Admission, HttpResponse> {
        let path = request.path.split('?').next().unwrap_or_default();
        let admit = |sessions: &Sessions| match sessions.admit(request, now) {
            Ok(Admission::Authenticated(grant)) if !sessions.user_has_room(&grant.user) => {
                Err(UpgradeRefusal::TooManyUserConnections)
            }
            admitted => admitted.map_err(UpgradeRefusal::Token),
        };
        match self.relay.endpoint(path) {
            Endpoint::Protocol => admit(&self.sessions),
            Endpoint::None => Err(UpgradeRefusal::NoEndpoint),
            Endpoint::Relay(room) => match admit(&self.sessions) {
                // The relay has no `auth` op: a required token comes with the upgrade.
                Ok(Admission::Pending) => Err(UpgradeRefusal::Token(AuthError::MissingToken)),
                Ok(admission) => {
                    self.relay.check_upgrade(room, self.sessions.permissions(&admission)).map(|()| admission)
                }
                Err(e) => Err(e),
            },
        }
        .map_err(UpgradeRefusal::response)
    }

    fn on_open(&mut self, out: &mut Outbox, conn: ConnId, request: &UpgradeRequest, admission: Admission) {
        let path = request.path.split('?').next().unwrap_or_default();
        match self.relay.endpoint(path) {
            Endpoint::Relay(room) => self.relay.open(out, conn, room, admission, &mut self.sessions),
            Endpoint::Protocol | Endpoint::None => {
                let session = self.sessions.open(conn, admission, out.now());
                if !session.over_user_limit() {
                    self.members.open(out, conn, session);
                }
            }
        }
        if self.sessions.get(conn).is_some_and(|s| s.over_user_limit()) {
            // Another worker opened this user's last allowed connection after our upgrade
            // check: the limit holds exactly.
            let reason = error::close_reason::TOO_MANY_USER_CONNECTIONS;
            out.close(conn, crate::proto::CloseCode::POLICY_VIOLATION, reason);
        }
        self.pump(out);
    }

    fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Payload<'_>) {
        // Kept as it is: a publish's data is a slice of it, and the relay forwards it whole.
        let data = data.into_bytes();
        if self.relay.is_member(conn) {
            self.relay.on_message(out, conn, kind, data);
        } else {
            self.members.on_message(out, conn, kind, &data, &mut self.sessions, &mut *self.engine);
        }
        self.pump(out);
    }

    fn on_stream(&mut self, out: &mut Outbox, conn: ConnId) {
        if self.api.on_stream(out, conn) {
            return;
        }
        let (Some((wanted, since)), Some(session)) = (self.admitting.remove(&conn), self.sessions.get(conn)) else {
            return;
        };
        self.members.open_stream(out, conn, session, wanted, since, &mut *self.engine);
        self.pump(out);
    }

    fn on_close(&mut self, out: &mut Outbox, conn: ConnId) {
        self.admitting.remove(&conn);
        self.api.on_close(conn);
        self.relay.close(out, conn);
        self.sessions.close(conn);
        self.members.close(out, conn, &mut *self.engine);
        self.pump(out);
    }

    fn on_http(
        &mut self,
        out: &mut Outbox,
        conn: ConnId,
        request: &PlainRequest,
        body: &[u8],
        metrics: &Metrics,
    ) -> Option<HttpResponse> {
        let path = request.path.split('?').next().unwrap_or_default();
        let response = if self.streams && path == "/sse" {
            Some(self.open_stream(out, conn, request))
        } else if self.streams && matches!(path, "/publish" | "/presence" | "/history") {
            self.stream_request(out, conn, request, body)
        } else {
            self.api.serve(out, conn, request, body, metrics, &mut *self.engine, &mut self.reach)
        };
        self.pump(out);
        response
    }

    fn on_tick(&mut self, out: &mut Outbox) {
        self.sessions.enforce(out);
        self.members.heartbeat(out);
        self.engine.tick(out.now());
        self.reach.tick(out.now().mono);
        self.pump(out);
    }

    fn wants_stats(&self) -> bool {
        self.api.wants_stats() || self.reports_node()
    }

    fn on_stats(&mut self, out: &mut Outbox, workers: &[Metrics]) {
        if self.reports_node() {
            self.api.report_node(out.now(), workers, &mut *self.engine);
        }
        self.api.on_stats(out, workers, &mut *self.engine);
        self.pump(out);
    }

    fn on_wake(&mut self, out: &mut Outbox) {
        let batches: Vec<Vec<RoomMsg>> = self.mesh.receive().collect();
        for msg in batches.into_iter().flatten() {
            match msg {
                RoomMsg::Engine(msg) => self.engine.receive(out.now(), msg),
                RoomMsg::Relay(msg) => self.relay.receive(out, msg),
                RoomMsg::Reach(msg) => self.on_reach(out, msg),
                RoomMsg::StreamRequest { http, body } => {
                    let result = self.members.request_from_stream(out, &body, http, &self.sessions, &mut *self.engine);
                    if let Err(error) = result {
                        self.mesh.post(http.worker(), RoomMsg::StreamRefused { http, error });
                    }
                }
                RoomMsg::StreamRefused { http, error } => {
                    self.api.on_answer(out, http, Err(error), self.relay.room_count())
                }
            }
            self.pump(out);
        }
        self.pump(out); // an engine fed by a thread of its own may have news without a message
    }

    fn end_turn(&mut self) {
        self.mesh.flush();
    }

    fn accepting_input(&self) -> bool {
        !self.mesh.congested()
    }
}
