//! Errors as data: every way the room layer refuses a request, with its wire code, the
//! text the client reads, and whether it counts toward `--abuse-limit`; and the reasons
//! it closes a connection or refuses an upgrade.
//!
//! The one place where these texts are written: call sites name a variant, never a code
//! or a message. Codes are `wire::code` (docs/protocol.md, "Errors"); a client decides on
//! the code, the text is for the person reading it.

use std::fmt;

use super::auth::AuthError;
use crate::server::HttpResponse;
use crate::wire::code;

/// Why a request (a `wsedge.v1` op, or a backend API call) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomError {
    // ---- 400: the request itself is wrong ----
    /// The frame is not one JSON object.
    MalformedJson,
    /// `id` is neither a number nor a string.
    BadId,
    /// A required field is missing.
    MissingField(&'static str),
    /// A field has the wrong type.
    WrongType(&'static str),
    /// `op` names no operation (its first 32 bytes, for the message).
    UnknownOp(String),
    /// A room name outside `[A-Za-z0-9_.:-]{1,128}`.
    BadRoomName,
    /// A binary frame on the room protocol.
    BinaryFrame,
    /// `auth` on a server without authentication.
    AuthNotConfigured,
    /// A publish's `data` that is not UTF-8 (cannot come from a text frame or the API,
    /// whose bodies are checked first; an engine reading a store may meet it).
    DataNotUtf8,
    /// A backend API body that is not UTF-8.
    BodyNotUtf8,
    /// A backend API body that is not a JSON object.
    BodyNotObject,
    /// A backend API body whose `room` is missing or not a string.
    BodyRoomField,
    /// A publish's `key` is not 1-64 bytes.
    BadKey,
    /// A backend publish that names both a `room` and a `user`.
    BodyTwoTargets,
    /// A backend API body whose `user` is not a string of 1-256 bytes.
    BodyUserField,
    /// A backend publish to a user with an idempotency `key` (messages to users are not
    /// kept, so a key could not make a retry safe).
    BodyUserKey,

    // ---- 401: who the client is ----
    /// `require_auth`: a request before a valid `auth`.
    AuthenticateFirst,
    /// The token in `auth` was refused.
    Token(AuthError),

    // ---- 403: what the client may do ----
    /// The token's `rooms` claim (or `--anon-rooms`) does not allow joining.
    JoinDenied,
    /// ... watching presence.
    PresenceDenied,
    /// ... publishing.
    PublishDenied,
    /// ... reading (`history`).
    ReadDenied,
    /// `auth` with a token for another user than the session's.
    AnotherUser,
    /// An anonymous connection in rooms may not become a user.
    AuthAfterJoin,
    /// A refreshed token that does not allow a room the session is in.
    TokenNarrows,

    // ---- 404 ----
    /// `publish`, `presence`, `history` or `leave` in a room the connection is not in.
    NotMember,
    /// The backend's `GET /api/history` of a room that does not exist (no epoch).
    NoSuchRoom,

    // ---- 413 ----
    /// A publish's `data` over `max_message_bytes`.
    TooLarge {
        /// The limit, in bytes of JSON text.
        max: usize,
    },

    // ---- 429 ----
    /// Over `publish_rate` / `publish_burst`.
    PublishRate,
    /// Over `auth_per_minute`.
    AuthRate,
    /// An `auth` naming a user who has `max_conns_per_user` connections already.
    TooManyUserConnections,

    // ---- 503: full ----
    /// `max_rooms` reached across the server.
    TooManyRooms,
    /// `max_members_per_room` reached.
    RoomFull,
    /// `max_rooms_per_connection` reached.
    TooManyRoomsForConnection {
        /// The limit.
        max: usize,
    },
    /// The room could not be created or found (an engine that lost it meanwhile).
    RoomUnavailable,
    /// The engine's store (Redis) is unreachable: nothing is accepted that could be lost.
    BackplaneUnavailable,

    // ---- 410 ----
    /// `POST /publish` names a stream this node does not hold (it ended, or it is on
    /// another node): publish again, with the same key, once the stream is back.
    NoSuchStream,

    // ---- 403, from the server's access rules ----
    /// A browser request (`POST /publish`) from an origin `--allowed-origin` does not allow.
    OriginDenied,
}

impl RoomError {
    /// The `code` of the error reply (and the HTTP status of the backend API).
    pub fn code(&self) -> u16 {
        use RoomError::*;
        match self {
            MalformedJson | BadId | MissingField(_) | WrongType(_) | UnknownOp(_) | BadRoomName | BinaryFrame
            | AuthNotConfigured | DataNotUtf8 | BodyNotUtf8 | BodyNotObject | BodyRoomField | BadKey
            | BodyTwoTargets | BodyUserField | BodyUserKey => code::BAD_REQUEST,
            AuthenticateFirst | Token(_) => code::UNAUTHORIZED,
            JoinDenied | PresenceDenied | PublishDenied | ReadDenied | AnotherUser | AuthAfterJoin | TokenNarrows
            | OriginDenied => code::FORBIDDEN,
            NoSuchStream => code::GONE,
            NotMember | NoSuchRoom => code::NOT_FOUND,
            TooLarge { .. } => code::TOO_LARGE,
            PublishRate | AuthRate | TooManyUserConnections => code::TOO_MANY_REQUESTS,
            TooManyRooms | RoomFull | TooManyRoomsForConnection { .. } | RoomUnavailable | BackplaneUnavailable => {
                code::UNAVAILABLE
            }
        }
    }

    /// Whether the refusal counts toward `--abuse-limit`: the client sent something it
    /// should not have (400, 401, 403, 413, 429). Not being a member (404) or a full room
    /// (503) can happen to a well-behaved client racing others.
    pub fn is_strike(&self) -> bool {
        !matches!(self.code(), code::NOT_FOUND | code::GONE | code::UNAVAILABLE)
    }
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RoomError::*;
        match self {
            MalformedJson => f.write_str("malformed JSON: expected one JSON object"),
            BadId => f.write_str("id must be a number or a string"),
            MissingField(name) => write!(f, "missing field: {name}"),
            WrongType(name) => write!(f, "field {name} has the wrong type"),
            UnknownOp(op) => write!(f, "unknown op: {op}"),
            BadRoomName => f.write_str("room must be 1-128 bytes of [A-Za-z0-9_.:-]"),
            BinaryFrame => f.write_str("binary frames are not part of wsedge.v1"),
            AuthNotConfigured => f.write_str("authentication is not configured on this server"),
            DataNotUtf8 => f.write_str("data is not UTF-8"),
            BodyNotUtf8 => f.write_str("body is not UTF-8"),
            BodyNotObject => f.write_str("body must be a JSON object {\"room\",\"data\"}"),
            BodyRoomField => f.write_str("missing or ill-typed field: room"),
            BadKey => f.write_str("key must be 1-64 bytes"),
            BodyTwoTargets => f.write_str("name a room or a user, not both"),
            BodyUserField => f.write_str("user must be a string of 1-256 bytes"),
            BodyUserKey => f.write_str("key works with room only: messages to a user are not kept"),
            AuthenticateFirst => f.write_str("authenticate first: {\"op\":\"auth\",\"token\":...}"),
            Token(e) => e.fmt(f),
            JoinDenied => f.write_str("not allowed to join this room"),
            PresenceDenied => f.write_str("not allowed to see presence in this room"),
            PublishDenied => f.write_str("not allowed to publish here"),
            ReadDenied => f.write_str("not allowed to read this room"),
            AnotherUser => f.write_str("the token is for another user"),
            AuthAfterJoin => f.write_str("authenticate before joining rooms"),
            TokenNarrows => f.write_str("the token does not allow rooms you are in: leave them first"),
            NotMember => f.write_str("not a member of that room"),
            NoSuchRoom => f.write_str("no such room"),
            TooLarge { max } => write!(f, "data over {max} bytes"),
            PublishRate => f.write_str("publish rate limit exceeded"),
            AuthRate => f.write_str("auth rate limit exceeded"),
            TooManyUserConnections => f.write_str(close_reason::TOO_MANY_USER_CONNECTIONS),
            TooManyRooms => f.write_str("server full: too many rooms"),
            RoomFull => f.write_str("room full"),
            TooManyRoomsForConnection { max } => write!(f, "too many rooms for one connection (max {max})"),
            RoomUnavailable => f.write_str("room unavailable"),
            BackplaneUnavailable => f.write_str("backplane unavailable"),
            NoSuchStream => f.write_str("no such stream"),
            OriginDenied => f.write_str("origin not allowed"),
        }
    }
}

impl std::error::Error for RoomError {}

/// The close code of `POST /api/disconnect` (the application range: clients should not
/// reconnect on their own after it).
pub const DISCONNECTED: crate::proto::CloseCode = crate::proto::CloseCode(4001);

/// Close reasons (with code 1008 unless noted): what the client reads in the close frame.
pub mod close_reason {
    /// The token's `exp` (plus leeway) passed.
    pub const TOKEN_EXPIRED: &str = "token expired";
    /// The user has `max_conns_per_user` connections (HTTP 429 and error 429 say it too).
    pub const TOO_MANY_USER_CONNECTIONS: &str = "too many connections for this user";
    /// `require_auth`: no valid `auth` within `auth_timeout`.
    pub const AUTH_REQUIRED: &str = "authentication required";
    /// More than `abuse_limit` refusals within `abuse_window`.
    pub const ABUSE: &str = "too many rejected requests";
    /// A relay message over `max_message_bytes` (code 1009).
    pub const RELAY_TOO_BIG: &str = "message over the relay limit";
    /// A relay message from a connection that may not publish there.
    pub const RELAY_PUBLISH_DENIED: &str = "not allowed to publish in this room";
    /// The relay room filled up before this member was counted (code 1013).
    pub const RELAY_FULL: &str = "relay room full";
    /// `POST /api/disconnect` closed the user's connections (code [`super::DISCONNECTED`]).
    pub const DISCONNECTED: &str = "disconnected by the server";
}

/// Why an upgrade was refused by the room layer, with its HTTP status: the 101 never
/// comes. (The transport counts each under `wsedge_handshake_failures_total{reason}`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRefusal {
    /// Neither the room protocol's path nor under the relay prefix (404).
    NoEndpoint,
    /// The token was refused, or a required one is missing (401).
    Token(AuthError),
    /// The relay room is not one the connection may join (403).
    RelayDenied,
    /// The relay room has `max_members_per_room` members (503).
    RelayFull,
    /// `max_rooms` relay rooms exist (503).
    TooManyRelayRooms,
    /// The token's user has `max_conns_per_user` connections already (429).
    TooManyUserConnections,
}

impl UpgradeRefusal {
    /// The refusal as the HTTP response. RFC 6750 §3.1: a 401 names no error code when no
    /// token came at all; the token itself is never shown.
    pub fn response(self) -> HttpResponse {
        let response = HttpResponse::text(self.status(), &format!("{self}\n"));
        match self {
            UpgradeRefusal::Token(AuthError::MissingToken) => response.with_header("WWW-Authenticate", "Bearer"),
            UpgradeRefusal::Token(_) => response.with_header("WWW-Authenticate", "Bearer error=\"invalid_token\""),
            _ => response,
        }
    }

    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            UpgradeRefusal::NoEndpoint => 404,
            UpgradeRefusal::Token(_) => 401,
            UpgradeRefusal::RelayDenied => 403,
            UpgradeRefusal::RelayFull | UpgradeRefusal::TooManyRelayRooms => 503,
            UpgradeRefusal::TooManyUserConnections => 429,
        }
    }
}

impl fmt::Display for UpgradeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeRefusal::NoEndpoint => f.write_str("no WebSocket endpoint at this path"),
            UpgradeRefusal::Token(e) => e.fmt(f),
            UpgradeRefusal::RelayDenied => RoomError::JoinDenied.fmt(f),
            UpgradeRefusal::RelayFull => f.write_str(close_reason::RELAY_FULL),
            UpgradeRefusal::TooManyRelayRooms => RoomError::TooManyRooms.fmt(f),
            UpgradeRefusal::TooManyUserConnections => f.write_str(close_reason::TOO_MANY_USER_CONNECTIONS),
        }
    }
}

/// Why the backend API refused a call before it reached the engine, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRefusal {
    /// No API key is configured (404).
    Off,
    /// `Authorization: Bearer` missing or not the key (401).
    WrongKey,
    /// A known endpoint with another method (405).
    MethodNotAllowed,
    /// Under `/api/` but no such endpoint (404).
    NoEndpoint,
}

impl ApiRefusal {
    /// The refusal as the API's JSON error (`{"error":{"code","message"}}`).
    pub fn response(self) -> HttpResponse {
        let status = match self {
            ApiRefusal::Off | ApiRefusal::NoEndpoint => 404,
            ApiRefusal::WrongKey => 401,
            ApiRefusal::MethodNotAllowed => 405,
        };
        let response = HttpResponse::json_error(status, &self.to_string());
        match self {
            ApiRefusal::WrongKey => response.with_header("WWW-Authenticate", "Bearer"),
            _ => response,
        }
    }
}

impl fmt::Display for ApiRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiRefusal::Off => "the backend API is off (no API key configured)",
            ApiRefusal::WrongKey => "missing or wrong API key",
            ApiRefusal::MethodNotAllowed => "method not allowed",
            ApiRefusal::NoEndpoint => "no such API endpoint",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_are_the_refusals_a_client_could_have_avoided() {
        for e in [RoomError::MalformedJson, RoomError::AuthenticateFirst, RoomError::JoinDenied, RoomError::PublishRate]
        {
            assert!(e.is_strike(), "{e}");
        }
        assert!(RoomError::TooLarge { max: 1 }.is_strike());
        for e in [RoomError::NotMember, RoomError::RoomFull, RoomError::TooManyRooms, RoomError::RoomUnavailable] {
            assert!(!e.is_strike(), "{e}");
        }
    }

    #[test]
    fn texts_carry_their_numbers() {
        assert_eq!(RoomError::TooLarge { max: 65536 }.to_string(), "data over 65536 bytes");
        assert_eq!(
            RoomError::TooManyRoomsForConnection { max: 64 }.to_string(),
            "too many rooms for one connection (max 64)"
        );
        assert_eq!(RoomError::Token(AuthError::Expired).to_string(), "invalid token: expired");
        assert_eq!(RoomError::Token(AuthError::Expired).code(), 401);
    }
}
