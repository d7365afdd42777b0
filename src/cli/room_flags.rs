//! The room server's flags (`serve`, `relay`): the room layer's limits and the token
//! authentication and room permissions, mapped onto `rooms::RoomsConfig`. Parsing and
//! mapping only (a public key file is read here); the room layer itself is not touched.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args};

use wsedge::rooms::auth::{self, AuthConfig};
use wsedge::rooms::RoomsConfig;

use super::{non_negative, seconds};

/// The defaults the flags show and fall back to: the room layer's own, named once there.
fn defaults() -> RoomsConfig {
    RoomsConfig::default()
}

/// Room-layer flags; they map onto `rooms::RoomsConfig`.
#[derive(Args, Clone)]
pub(crate) struct RoomArgs {
    /// Key for the backend HTTP API (`Authorization: Bearer KEY`); without one the API is off.
    #[arg(long, env = "WSEDGE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Messages kept per room for recovery and `history`.
    #[arg(long, default_value_t = defaults().history_size)]
    history_size: usize,
    /// Seconds a message is kept; an empty room is dropped after this long.
    #[arg(long, default_value_t = defaults().history_ttl.as_secs(), value_parser = seconds())]
    history_ttl: u64,
    /// Bytes of history kept across all rooms; beyond it, publishing rooms keep fewer.
    #[arg(long, default_value_t = defaults().max_history_bytes)]
    max_history_bytes: usize,
    /// Largest `data` of a publish, in bytes of JSON (bigger -> error 413).
    #[arg(long, default_value_t = defaults().max_message_bytes)]
    max_room_message: usize,
    /// Rooms one connection may join (beyond -> error 503).
    #[arg(long, default_value_t = defaults().max_rooms_per_connection)]
    max_rooms_per_connection: usize,
    /// Members per room (beyond -> error 503).
    #[arg(long, default_value_t = defaults().max_members_per_room)]
    max_members_per_room: usize,
    /// Connections one user (a token's `sub`) may have open on this node (beyond -> HTTP
    /// 429 on the upgrade, error 429 to `auth`; 0: no limit).
    #[arg(long, value_name = "N", default_value_t = defaults().max_conns_per_user)]
    max_conns_per_user: usize,
    /// Rooms in the server (beyond -> error 503).
    #[arg(long, default_value_t = defaults().max_rooms)]
    max_rooms: usize,
    /// Publishes per second per connection (beyond the burst -> error 429).
    #[arg(long, default_value_t = defaults().publish_rate, value_parser = non_negative)]
    publish_rate: f64,
    /// Publishes allowed in a burst.
    #[arg(long, default_value_t = defaults().publish_burst, value_parser = non_negative)]
    publish_burst: f64,
    /// More than this many rejected requests (errors 400, 401, 403, 413, 429) within 10 s
    /// close the connection with 1008.
    #[arg(long, default_value_t = defaults().abuse_limit)]
    abuse_limit: u32,
    /// Redis to keep rooms, presence and history in (`redis://HOST:PORT[/DB]`), shared by
    /// every node started with the same Redis (default: none, rooms live in this process).
    /// Repeatable (or comma-separated): rooms are spread over several by a hash of their name.
    #[arg(long, value_name = "URL", action = ArgAction::Append, value_delimiter = ',')]
    redis: Vec<String>,
    /// With --redis: seconds within which the members of a node that died (stopped
    /// refreshing them) leave, with leave events. At least 4 (nodes refresh every quarter
    /// of it, on their 1 s tick).
    #[arg(long, default_value_t = defaults().presence_ttl.as_secs())]
    #[arg(value_parser = clap::value_parser!(u64).range(4..=super::MAX_SECONDS))]
    presence_ttl: u64,
    /// With --redis: this node's name in the admin page's list of nodes (default:
    /// `<hostname>:<port>`).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Seconds between the comment lines an event stream (`GET /sse`) with nothing to say
    /// gets, so that proxies keep it open.
    #[arg(long, default_value_t = defaults().sse_heartbeat.as_secs())]
    #[arg(value_parser = clap::value_parser!(u64).range(1..=super::MAX_SECONDS))]
    sse_heartbeat: u64,
    /// Let connections publish to, and read presence and history of, rooms they have not
    /// joined (by default these need membership: error 404).
    #[arg(long)]
    no_membership_required: bool,
    /// Do not serve the demo chat at `/` and the JS client at `/client.js` (404 instead;
    /// `relay` has no demo).
    #[arg(long)]
    no_demo: bool,
}

impl RoomArgs {
    /// The room-layer config these flags describe; its auth settings come from
    /// [`AuthArgs::apply`].
    pub(crate) fn config(&self) -> RoomsConfig {
        RoomsConfig {
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            history_size: self.history_size,
            history_ttl: Duration::from_secs(self.history_ttl),
            max_history_bytes: self.max_history_bytes,
            max_message_bytes: self.max_room_message,
            max_rooms_per_connection: self.max_rooms_per_connection,
            max_members_per_room: self.max_members_per_room,
            max_conns_per_user: self.max_conns_per_user,
            max_rooms: self.max_rooms,
            publish_rate: self.publish_rate,
            publish_burst: self.publish_burst,
            abuse_limit: self.abuse_limit,
            require_membership: !self.no_membership_required,
            presence_ttl: Duration::from_secs(self.presence_ttl),
            sse_heartbeat: Duration::from_secs(self.sse_heartbeat),
            demo: !self.no_demo,
            ..RoomsConfig::default()
        }
    }

    /// The `--redis` URLs (none: the in-memory engine).
    pub(crate) fn redis_urls(&self) -> &[String] {
        &self.redis
    }

    /// `--node-name`, or `<hostname>:<port>` for a server listening on `listen` (empty,
    /// so the node goes by its random id, when the port is chosen at bind time).
    pub(crate) fn node_name(&self, listen: std::net::SocketAddr) -> String {
        if let Some(name) = &self.node_name {
            return name.clone();
        }
        if listen.port() == 0 {
            return String::new();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "wsedge".to_owned());
        format!("{host}:{}", listen.port())
    }
}

/// Token authentication and room permissions; they map onto `RoomsConfig::auth` and
/// `RoomsConfig::anon_rooms`. Authentication is on when a secret or a public key is given.
#[derive(Args, Clone)]
pub(crate) struct AuthArgs {
    /// HS256 secret for client JWTs, at least 32 bytes (default: none; prefer the
    /// environment variable: command lines are visible to other users). A token on the
    /// upgrade that fails verification -> HTTP 401; in an `auth` request -> error 401.
    #[arg(long, env = "WSEDGE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM public key (RSA -> RS256, EC P-256 -> ES256) for client JWTs (default: none).
    /// Failing tokens get 401 as with --jwt-secret.
    #[arg(long, value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// Seconds of clock skew allowed on `exp` and `nbf` (default 0).
    #[arg(long, default_value_t = AuthConfig::default().leeway, value_parser = seconds())]
    jwt_leeway: u64,
    /// Accepted `aud` value (repeatable; default: `aud` not checked). Other audiences -> 401.
    #[arg(long, action = ArgAction::Append)]
    jwt_audience: Vec<String>,
    /// Required `iss` (default: not checked). Another issuer -> 401.
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// Every connection must authenticate (default: off). Without a token on the upgrade,
    /// no `welcome` until a valid `auth`; other requests meanwhile -> error 401; no valid
    /// `auth` within --handshake-timeout -> close 1008.
    #[arg(long)]
    require_auth: bool,
    /// Rooms anonymous connections may join, publish to and watch presence of: an exact
    /// name or a prefix ending in `*` (repeatable; default `*`: everything). Others -> error
    /// 403 (relay: HTTP 403 on the upgrade).
    #[arg(long, value_name = "PATTERN", action = ArgAction::Append, default_value = "*")]
    anon_rooms: Vec<String>,
    /// `auth` requests per minute per connection, also the burst; beyond -> error 429 (each
    /// costs a signature check).
    #[arg(long, value_name = "N", default_value_t = defaults().auth_per_minute)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    auth_rate: u32,
}

impl AuthArgs {
    /// The auth settings of `RoomsConfig` (`auth`, `anon_rooms`, `auth_timeout`).
    pub(crate) fn apply(&self, config: &mut RoomsConfig, handshake_timeout: Duration) -> Result<(), String> {
        config.anon_rooms = auth::parse_patterns(&self.anon_rooms).map_err(|e| format!("--anon-rooms: {e}"))?;
        config.auth_timeout = handshake_timeout;
        config.auth_per_minute = self.auth_rate;
        let mut auth = AuthConfig::default();
        if let Some(secret) = self.jwt_secret.as_deref() {
            auth = auth.with_hs256_secret(secret.as_bytes()).map_err(|e| format!("--jwt-secret: {e}"))?;
        }
        if let Some(path) = &self.jwt_public_key {
            let pem = std::fs::read(path).map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
            auth = auth.with_public_key_pem(&pem).map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
        }
        if !auth.has_keys() {
            if self.require_auth {
                return Err("--require-auth needs --jwt-secret (or WSEDGE_JWT_SECRET) or --jwt-public-key".to_owned());
            }
            return Ok(());
        }
        auth.leeway = self.jwt_leeway;
        auth.audience = self.jwt_audience.clone();
        auth.issuer = self.jwt_issuer.clone();
        auth.require_auth = self.require_auth;
        let required = if self.require_auth { "required" } else { "optional" };
        log::info!("token authentication ({required}): {:?}", auth.algorithms());
        config.auth = Some(auth);
        Ok(())
    }
}
