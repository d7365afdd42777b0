//! The pub/sub room layer: rooms, presence, ordered delivery, history and recovery, the
//! raw relay, and the backend HTTP API. Contract: `wsedge.v1`, described for users in
//! docs/protocol.md.
//!
//! [`Rooms`] is a `server::Handler`, one per worker, living on that worker's thread: no
//! locks. It only wires the parts, each owning its state:
//! - `engine/`: what orders a room (offsets, epochs, history, presence, membership),
//!   behind the [`engine::Engine`] seam; `engine/memory.rs` is the in-memory engine.
//! - `members.rs`: this worker's room-protocol connections, their requests and replies.
//! - `sessions.rs`: who each connection is (tokens, permissions, expiry).
//! - `api.rs`: `/api/*`, `/metrics`, `/healthz`.
//! - `relay.rs`: raw relay rooms (the path names the room).
//! - `protocol.rs` (the JSON wire format), `error.rs` (every refusal), `config.rs`
//!   (every limit), `local.rs` (delivery lists), `auth.rs` (JWT and permissions).
//!
//! Every publish (a client's or `POST /api/publish`) is one engine call, `publish`. What
//! the engine and the relay send to other workers goes over the server's [`Mesh`]; what
//! they have for this worker is handed to its part (`pump`) after each handler call.

pub mod api;
pub mod auth;
mod config;
pub mod engine;
pub mod error;
mod local;
pub mod members;
#[cfg(any(test, feature = "fuzzing"))]
pub mod protocol;
#[cfg(not(any(test, feature = "fuzzing")))]
mod protocol;
pub mod relay;
pub mod sessions;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::proto::handshake::{PlainRequest, UpgradeRequest};
use crate::proto::MessageKind;
use crate::server::{ConnId, Handler, HttpResponse, Mesh, Metrics, Now, Outbox};
use api::Api;
use auth::AuthError;
pub use config::RoomsConfig;
use engine::memory::{self, MemoryEngine};
use engine::{Engine, EngineMsg, Event, Output, ReplyTo};
use error::UpgradeRefusal;
use members::Members;
use relay::Relay;
pub use sessions::Admission;
use sessions::Sessions;

pub use crate::wire::SUBPROTOCOL;

/// What one worker's room layer sends another's over the mesh.
#[derive(Debug)]
pub enum RoomMsg {
    /// Engine traffic (the in-memory engine's owner requests and events).
    Engine(EngineMsg),
    /// Relay traffic.
    Relay(relay::Msg),
}

/// The room layer of one worker.
#[derive(Debug)]
pub struct Rooms {
    config: Arc<RoomsConfig>,
    mesh: Mesh<RoomMsg>,
    engine: Box<dyn Engine>,
    members: Members,
    sessions: Sessions,
    relay: Relay,
    api: Api,
}

impl Rooms {
    /// The room layer of a single-worker server (`Server::bind`).
    pub fn new(config: RoomsConfig) -> Self {
        Rooms::for_workers(config)(Mesh::single())
    }

    /// Makes the room layer of each worker of a `Workers` server:
    /// `Workers::bind(server_config, Rooms::for_workers(rooms_config))`.
    pub fn for_workers(config: RoomsConfig) -> impl FnMut(Mesh<RoomMsg>) -> Rooms {
        let config = Arc::new(config);
        let (engine, relay) = (memory::Shared::default(), relay::Shared::default());
        move |mesh| {
            let (me, workers) = (mesh.me(), mesh.workers());
            let engine = Box::new(MemoryEngine::new(config.clone(), me, workers, &engine));
            Rooms {
                // 64 random bits: client ids do not repeat across workers, restarts or nodes.
                members: Members::new(config.clone(), memory::base36(RandomState::new().build_hasher().finish())),
                sessions: Sessions::new(&config),
                relay: Relay::new(config.clone(), me, workers, relay.clone()),
                api: Api::new(config.clone()),
                engine,
                mesh,
                config: config.clone(),
            }
        }
    }

    /// Rooms this worker's engine holds.
    pub fn room_count(&self) -> usize {
        self.engine.room_count()
    }

    /// Whether `path` is the room protocol's.
    fn is_protocol_path(&self, path: &str) -> bool {
        !self.config.path.is_empty() && path == self.config.path
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
        while let Some((to, msg)) = self.relay.poll() {
            self.mesh.post(to, RoomMsg::Relay(msg));
        }
    }
}

/// An upgrade refusal as the HTTP response. RFC 6750 §3.1: a 401 names no error code
/// when no token came at all; the token itself is never shown.
fn refusal_response(refusal: UpgradeRefusal) -> HttpResponse {
    let response = HttpResponse::text(refusal.status(), &format!("{refusal}\n"));
    match refusal {
        UpgradeRefusal::Token(AuthError::MissingToken) => response.with_header("WWW-Authenticate", "Bearer"),
        UpgradeRefusal::Token(_) => response.with_header("WWW-Authenticate", "Bearer error=\"invalid_token\""),
        _ => response,
    }
}

impl Handler for Rooms {
    type Admission = Admission;

    fn accept(&mut self, request: &UpgradeRequest, now: Now) -> Result<Admission, HttpResponse> {
        let path = request.path.split('?').next().unwrap_or_default();
        let admitted = self.sessions.admit(request, now).map_err(UpgradeRefusal::Token);
        if self.is_protocol_path(path) {
            return admitted.map_err(refusal_response);
        }
        let Some(room) = self.relay.room_at(path) else {
            return Err(refusal_response(UpgradeRefusal::NoEndpoint));
        };
        let admission = match admitted {
            // The relay has no `auth` op: a required token comes with the upgrade.
            Ok(Admission::Pending) => Err(UpgradeRefusal::Token(AuthError::MissingToken)),
            Ok(admission) if !self.sessions.permissions(&admission).may_join(room) => Err(UpgradeRefusal::RelayDenied),
            other => other,
        };
        admission.and_then(|admission| self.relay.check_upgrade(room).map(|()| admission)).map_err(refusal_response)
    }

    fn on_open(&mut self, out: &mut Outbox, conn: ConnId, request: &UpgradeRequest, admission: Admission) {
        let path = request.path.split('?').next().unwrap_or_default();
        let relay_room = if self.is_protocol_path(path) { None } else { self.relay.room_at(path) };
        let session = self.sessions.open(conn, admission, out.now());
        match relay_room {
            Some(room) => {
                let may_publish = session.permissions.may_publish(room);
                self.relay.open(out, conn, room, may_publish);
            }
            None => {
                let (user, pending) = (session.user.clone(), session.is_pending());
                self.members.open(out, conn, user.as_deref(), pending);
            }
        }
        self.pump(out);
    }

    fn on_message(&mut self, out: &mut Outbox, conn: ConnId, kind: MessageKind, data: Bytes) {
        if self.relay.is_member(conn) {
            self.relay.on_message(out, conn, kind, data);
        } else {
            self.members.on_message(out, conn, kind, &data, &mut self.sessions, &mut *self.engine);
        }
        self.pump(out);
    }

    fn on_close(&mut self, out: &mut Outbox, conn: ConnId) {
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
        let response = self.api.serve(out, conn, request, body, metrics, &mut *self.engine);
        self.pump(out);
        response
    }

    fn on_tick(&mut self, out: &mut Outbox) {
        self.sessions.enforce(out);
        self.engine.tick(out.now());
        self.pump(out);
    }

    fn on_wake(&mut self, out: &mut Outbox) {
        let batches: Vec<Vec<RoomMsg>> = self.mesh.receive().collect();
        for msg in batches.into_iter().flatten() {
            match msg {
                RoomMsg::Engine(msg) => self.engine.receive(out.now(), msg),
                RoomMsg::Relay(msg) => self.relay.receive(out, msg),
            }
            self.pump(out);
        }
    }

    fn end_turn(&mut self) {
        self.mesh.flush();
    }

    fn accepting_input(&self) -> bool {
        !self.mesh.congested()
    }
}
