//! What one worker's room layer tells another's over the mesh.
//!
//! Each room has one owner worker (by a hash of its name, `Rooms::owner`). Everything that
//! reads or changes a room goes to its owner as a request; the owner answers the member's
//! worker and sends each worker with members one `Deliver` per message. A worker talks to
//! itself by a direct call, never through a channel.
//!
//! Why per-room order holds across workers: the owner assigns offsets one at a time on its
//! own thread, and sends its messages for a worker in that order over a FIFO link (or
//! calls itself in that order). A member is added to its worker's delivery list when the
//! owner's `Joined` arrives, which the owner sent after every message before the join and
//! before every message after it: so each member gets exactly the messages after its
//! join, once, in offset order.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::local::Audience;
use super::protocol::{RequestError, Since};
use super::room::Identity;
use crate::proto::MessageKind;
use crate::server::{ConnId, HttpResponse};

/// A request's `id`, owned (it travels to the owner and back).
pub type OwnedId = Option<Box<RawValue>>;

#[derive(Debug)]
pub enum RoomMsg {
    // ---- to the owner of `room` ----
    Join(JoinRequest),
    /// `id: None` with `gone`: the connection closed (no answer).
    Leave {
        conn: ConnId,
        room: String,
        id: OwnedId,
        gone: bool,
    },
    Publish {
        conn: ConnId,
        identity: Identity,
        room: String,
        /// The request's `data` JSON: a slice of the client's frame, not a copy.
        data: Bytes,
        echo: bool,
        ephemeral: bool,
        id: OwnedId,
    },
    /// `POST /api/publish` on worker `http.worker()`.
    ApiPublish {
        http: ConnId,
        room: String,
        data: String,
    },
    Presence {
        conn: ConnId,
        room: String,
        id: OwnedId,
    },
    History {
        conn: ConnId,
        room: String,
        limit: Option<u64>,
        id: OwnedId,
    },
    RelayJoin {
        conn: ConnId,
        room: Arc<str>,
    },
    RelayLeave {
        conn: ConnId,
        room: Arc<str>,
    },
    RelayForward {
        room: Arc<str>,
        kind: MessageKind,
        data: Bytes,
    },
    /// To every worker: answer `reply_to` (with a summary of the rooms it owns, for
    /// `/api/rooms` and `/metrics`, or just an acknowledgement, for `ping`).
    Gather {
        token: u64,
        reply_to: usize,
        summary: bool,
    },

    // ---- to the worker of a member ----
    /// The answer to a request; `Ok` holds the reply body.
    Reply {
        conn: ConnId,
        id: OwnedId,
        result: Result<String, RequestError>,
    },
    /// The owner's answer to `Join`; on success the member is added to the delivery list.
    Joined {
        conn: ConnId,
        room: Arc<str>,
        presence: bool,
        id: OwnedId,
        result: Result<String, RequestError>,
    },
    /// The owner removed the member (a `leave` request); it is dropped from the list.
    Left {
        conn: ConnId,
        room: Arc<str>,
        id: OwnedId,
    },
    /// A message or presence event for this worker's members of `room` (all but `except`).
    Deliver {
        room: Arc<str>,
        audience: Audience,
        except: Option<ConnId>,
        payload: Bytes,
    },
    /// A relay message for this worker's members of relay room `room`.
    RelayDeliver {
        room: Arc<str>,
        kind: MessageKind,
        data: Bytes,
    },
    /// The relay room is full: the connection is closed.
    RelayRefused {
        conn: ConnId,
    },
    HttpReply {
        http: ConnId,
        response: HttpResponse,
    },
    /// One worker's part of a `Gather`.
    Gathered {
        token: u64,
        part: Option<OwnedRooms>,
    },
}

/// A `join`, on its way to the room's owner.
#[derive(Debug)]
pub struct JoinRequest {
    pub conn: ConnId,
    pub identity: Identity,
    pub room: String,
    pub presence: bool,
    pub since: Option<Since>,
    pub id: OwnedId,
}

/// The rooms one worker owns, summarized.
#[derive(Debug, Default)]
pub struct OwnedRooms {
    /// (name, members, offset)
    pub rooms: Vec<(Arc<str>, usize, u64)>,
    pub history_messages: usize,
    pub history_bytes: usize,
    pub relay_rooms: usize,
}
