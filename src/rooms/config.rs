//! The room layer's settings: every limit, its default and its outcome, in one place.
//! The CLI (`wsedge serve`) and the config file take their defaults from
//! [`RoomsConfig::default`].

use std::time::Duration;

use super::auth::{AuthConfig, RoomPatterns};

/// Room-layer limits and settings; every limit has a defined outcome.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// The WebSocket path of the room protocol (other paths get 404; empty: none).
    pub path: String,
    /// Paths under this prefix are raw relay rooms (the rest of the path names the room);
    /// `Some("/")` makes every path a relay room. `None`: no relay.
    pub relay_prefix: Option<String>,
    /// Messages kept per room for `since` and `history`.
    pub history_size: usize,
    /// Bytes of messages kept across all rooms. Beyond it, a room that publishes drops its
    /// own oldest messages (its clients then recover with `recovered: false`): memory stays
    /// bounded however many rooms there are. With several workers each owner keeps its share.
    pub max_history_bytes: usize,
    /// How long a message is kept; an empty room is dropped (and its epoch forgotten)
    /// this long after its last member left.
    pub history_ttl: Duration,
    /// Rooms one connection may be in (-> 503).
    pub max_rooms_per_connection: usize,
    /// Members per room (-> 503).
    pub max_members_per_room: usize,
    /// Rooms per server, and relay rooms per server (-> 503), counted across workers.
    pub max_rooms: usize,
    /// Largest `data` of a publish, as JSON text (-> 413).
    pub max_message_bytes: usize,
    /// Publishes per second per connection (token bucket refill, -> 429).
    pub publish_rate: f64,
    /// Token bucket size: publishes allowed in a burst.
    pub publish_burst: f64,
    /// More than this many rejected requests (errors 400, 401, 403, 413, 429: see
    /// `RoomError::is_strike`) within `abuse_window` close the connection with 1008.
    pub abuse_limit: u32,
    /// The window `abuse_limit` counts in: the count starts again this long after its
    /// first strike.
    pub abuse_window: Duration,
    /// `publish`, `presence` and `history` require membership (-> 404) unless false.
    pub require_membership: bool,
    /// Key for the backend HTTP API; the API answers 404 without one.
    pub api_key: Option<String>,
    /// Token authentication (`None`: every connection is anonymous). An invalid token on
    /// the upgrade -> HTTP 401; in `auth` -> error 401.
    pub auth: Option<AuthConfig>,
    /// What anonymous connections may join, publish to and watch presence of (default
    /// `*`: everything). Denied -> error 403.
    pub anon_rooms: RoomPatterns,
    /// With `require_auth`: how long a connection without a token on the upgrade has to
    /// send a valid `auth` (-> close 1008). The CLI uses the handshake timeout.
    pub auth_timeout: Duration,
    /// With `--redis`: a node that stops refreshing its members' presence (it died) has
    /// them leave, with leave events, within this.
    pub presence_ttl: Duration,
    /// `auth` requests per minute per connection, also the burst (-> error 429): each one
    /// costs a signature check on the worker's thread, so a client may not loop on them.
    pub auth_per_minute: u32,
    /// Connections one user (a token's `sub`) may have open on this node, across its
    /// workers (0: no limit). Beyond: HTTP 429 on the upgrade, error 429 to `auth`.
    pub max_conns_per_user: usize,
    /// Serve the demo chat at `/` and the JS client module at `/client.js`, both embedded
    /// in the binary (default true: a fresh install shows something in a browser; off: 404).
    /// Only with a room protocol `path`: the demo speaks it.
    pub demo: bool,
    /// How often an event stream (`GET /sse`) with nothing to say gets a comment line, so
    /// that proxies and browsers keep it open.
    pub sse_heartbeat: Duration,
    /// This node's name in the admin page's node list (with a store several nodes share;
    /// empty: the node's random id).
    pub node_name: String,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            path: "/ws".to_owned(),
            relay_prefix: Some("/relay/".to_owned()),
            history_size: 100,
            max_history_bytes: 256 << 20,
            history_ttl: Duration::from_secs(300),
            max_rooms_per_connection: 64,
            max_members_per_room: 100_000,
            max_rooms: 100_000,
            max_message_bytes: 64 * 1024,
            publish_rate: 100.0,
            publish_burst: 200.0,
            abuse_limit: 200,
            abuse_window: Duration::from_secs(10),
            require_membership: true,
            api_key: None,
            auth: None,
            anon_rooms: RoomPatterns::everything(),
            auth_timeout: Duration::from_secs(10),
            auth_per_minute: 10,
            max_conns_per_user: 0,
            presence_ttl: Duration::from_secs(30),
            demo: true,
            sse_heartbeat: Duration::from_secs(15),
            node_name: String::new(),
        }
    }
}
