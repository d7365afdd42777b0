//! What the two ends of `wsedge.v1` share: the subprotocol name and the error codes of
//! replies. The server's room layer (`rooms`) and the clients (`client`, `bench`, `wsedge
//! chat`) both use this module; neither imports the other.
//!
//! The protocol is written down in docs/protocol.md (its Errors section lists the codes).
//! A client decides on these codes, never on an error's message text (that is for people).

/// The subprotocol name of the room protocol (`Sec-WebSocket-Protocol`).
pub const SUBPROTOCOL: &str = "wsedge.v1";

/// The `code` of an error reply (`{"id":…,"error":{"code":…,"message":…}}`): HTTP-like.
pub mod code {
    /// Malformed JSON, unknown op, a missing or ill-typed field, a binary frame.
    pub const BAD_REQUEST: u16 = 400;
    /// No valid token: authentication is required first, or the token was refused.
    pub const UNAUTHORIZED: u16 = 401;
    /// The connection's permissions do not allow it.
    pub const FORBIDDEN: u16 = 403;
    /// Not a member of that room.
    pub const NOT_FOUND: u16 = 404;
    /// `POST /publish` names an event stream this node does not hold (ended, or on
    /// another node): send again with the same key once the stream is back.
    pub const GONE: u16 = 410;
    /// The message is over the server's size limit.
    pub const TOO_LARGE: u16 = 413;
    /// Rate limited.
    pub const TOO_MANY_REQUESTS: u16 = 429;
    /// The room, the connection's room list or the server is full.
    pub const UNAVAILABLE: u16 = 503;
}
