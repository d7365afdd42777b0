//! The `wsedge` command line: `serve` (the default: the room server), `echo`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use log::error;

use wsedge::client::tls::TrustArgs;
use wsedge::config_file;
use wsedge::echo::Echo;
use wsedge::proto::deflate::DeflateMode;
use wsedge::rooms::auth::{self, AuthConfig};
use wsedge::rooms::{Rooms, RoomsConfig, SUBPROTOCOL};
use wsedge::server::access::{AccessConfig, Cidr, OriginPattern, ProxyHeader};
use wsedge::server::{self, Handler, Mesh, Workers};

#[derive(Parser)]
#[command(name = "wsedge", version, about = "A WebSocket edge server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the room server: the `wsedge.v1` protocol on /ws, the backend API on /api
    /// (the default command).
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        rooms: RoomArgs,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// Echo every text and binary message back to its sender, on any path.
    Echo(ServerArgs),
    /// Raw relay: every connection joins the room named by its URL path, and every message
    /// goes verbatim to all members of that room, the sender included.
    Relay {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        rooms: RoomArgs,
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// A terminal chat client for the room server: joins a room, publishes each line you
    /// type, prints what others say.
    Chat(ChatArgs),
    /// Load generator: drives a server with echo, fan-out or idle connections and reports
    /// messages/s, latency percentiles and (with --server-pid) the server's CPU per message.
    Bench(wsedge::bench::BenchArgs),
    /// About the config file: `wsedge config --print-defaults` prints a complete one.
    Config {
        /// Print every setting of the server command with its help, its environment
        /// variable and its default, as a TOML file to start from.
        #[arg(long, required = true)]
        print_defaults: bool,
        /// The command whose settings to print.
        #[arg(long = "for", value_name = "COMMAND", default_value = "serve", value_parser = ["serve", "echo", "relay"])]
        command: String,
    },
}

/// `wsedge chat`'s flags.
#[derive(Args)]
struct ChatArgs {
    /// The room server's WebSocket URL (ws:// or wss://).
    #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
    url: String,
    /// The room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// A JWT to authenticate with, sent in an `auth` request before the join (default:
    /// none, anonymous). Prefer the environment variable: command lines are visible to
    /// other users. A token the server refuses ends the chat.
    #[arg(long, env = "WSEDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    trust: TrustArgs,
}

/// Room-layer flags; they map onto `rooms::RoomsConfig`.
#[derive(Args, Clone)]
struct RoomArgs {
    /// Key for the backend HTTP API (`Authorization: Bearer KEY`); without one the API is off.
    #[arg(long, env = "WSEDGE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Messages kept per room for recovery and `history`.
    #[arg(long, default_value_t = 100)]
    history_size: usize,
    /// Seconds a message is kept; an empty room is dropped after this long.
    #[arg(long, default_value_t = 300, value_parser = seconds())]
    history_ttl: u64,
    /// Bytes of history kept across all rooms; beyond it, publishing rooms keep fewer.
    #[arg(long, default_value_t = 256 << 20)]
    max_history_bytes: usize,
    /// Largest `data` of a publish, in bytes of JSON (bigger -> error 413).
    #[arg(long, default_value_t = 64 * 1024)]
    max_room_message: usize,
    /// Rooms one connection may join (beyond -> error 503).
    #[arg(long, default_value_t = 64)]
    max_rooms_per_connection: usize,
    /// Members per room (beyond -> error 503).
    #[arg(long, default_value_t = 100_000)]
    max_members_per_room: usize,
    /// Rooms in the server (beyond -> error 503).
    #[arg(long, default_value_t = 100_000)]
    max_rooms: usize,
    /// Publishes per second per connection (beyond the burst -> error 429).
    #[arg(long, default_value_t = 100.0, value_parser = non_negative)]
    publish_rate: f64,
    /// Publishes allowed in a burst.
    #[arg(long, default_value_t = 200.0, value_parser = non_negative)]
    publish_burst: f64,
    /// Rejected requests within 10 s after which a connection is closed with 1008.
    #[arg(long, default_value_t = 200)]
    abuse_limit: u32,
    /// Let connections publish to, and read presence and history of, rooms they have not
    /// joined (by default these need membership: error 404).
    #[arg(long)]
    no_membership_required: bool,
}

impl RoomArgs {
    fn config(&self) -> RoomsConfig {
        RoomsConfig {
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            history_size: self.history_size,
            history_ttl: Duration::from_secs(self.history_ttl),
            max_history_bytes: self.max_history_bytes,
            max_message_bytes: self.max_room_message,
            max_rooms_per_connection: self.max_rooms_per_connection,
            max_members_per_room: self.max_members_per_room,
            max_rooms: self.max_rooms,
            publish_rate: self.publish_rate,
            publish_burst: self.publish_burst,
            abuse_limit: self.abuse_limit,
            require_membership: !self.no_membership_required,
            ..RoomsConfig::default()
        }
    }
}

/// Token authentication and room permissions; they map onto `RoomsConfig::auth` and
/// `RoomsConfig::anon_rooms`. Authentication is on when a secret or a public key is given.
#[derive(Args, Clone)]
struct AuthArgs {
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
    #[arg(long, default_value_t = 0, value_parser = seconds())]
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
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    auth_rate: u32,
}

impl AuthArgs {
    /// The auth settings of `RoomsConfig` (`auth`, `anon_rooms`, `auth_timeout`).
    fn apply(&self, config: &mut RoomsConfig, handshake_timeout: Duration) -> Result<(), String> {
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

/// Flags shared by every server command; they map onto `server::Config`.
#[derive(Args, Clone)]
struct ServerArgs {
    /// A TOML file of settings: each key is one of these flags' long name (see `wsedge
    /// config --print-defaults`). The command line and the environment override it.
    #[arg(long, env = "WSEDGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Event loops (threads), each with its own SO_REUSEPORT listener; rooms span them.
    /// Default: the number of cores. At most 64.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: Option<u16>,
    /// Largest message accepted, in bytes (bigger -> close 1009). Default: 1 MiB for
    /// `serve`, 16 MiB for `echo`.
    #[arg(long)]
    max_message: Option<usize>,
    /// Largest single frame accepted, in bytes (default: --max-message).
    #[arg(long)]
    max_frame: Option<usize>,
    /// Largest HTTP request head, in bytes (bigger -> 431).
    #[arg(long, default_value_t = 8 * 1024)]
    max_header_bytes: usize,
    /// Most open WebSocket connections (beyond -> 503 on upgrade).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// listen(2) backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 4096)]
    backlog: u32,
    /// Seconds allowed to complete the HTTP handshake.
    #[arg(long, default_value_t = 10, value_parser = seconds())]
    handshake_timeout: u64,
    /// Seconds to wait for the peer during the close handshake.
    #[arg(long, default_value_t = 5, value_parser = seconds())]
    close_linger: u64,
    /// Bytes queued to a connection that is not reading before it is closed with 1013
    /// "slow consumer" (fan-out) or stops being read from (its own replies).
    #[arg(long, default_value_t = 4 << 20)]
    max_outbound: usize,
    /// Largest plain HTTP request body, in bytes (bigger -> 413).
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Sockets allowed in their HTTP phase at once, on top of open connections (beyond:
    /// accepted and closed at once).
    #[arg(long, default_value_t = 2048)]
    max_handshakes: usize,
    /// Seconds of silence before the server pings a connection; it is dropped after twice
    /// this. 0 disables keepalive.
    #[arg(long, default_value_t = 30, value_parser = seconds())]
    ping_interval: u64,
    /// Seconds to wait for clients to answer close 1001 on SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10, value_parser = seconds())]
    shutdown_timeout: u64,
    /// Turn permessage-deflate (RFC 7692) off.
    #[arg(long)]
    no_deflate: bool,
    /// permessage-deflate memory mode: `shared` (one compressor per worker, no idle zlib
    /// state per connection) or `dedicated` (context takeover: best ratio, ~300 KiB each).
    #[arg(long, value_enum, default_value_t = ModeArg::Shared)]
    deflate_mode: ModeArg,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = 64)]
    deflate_threshold: usize,
    /// zlib compression level, 0 (store) to 9 (smallest).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    deflate_level: u32,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    access: AccessArgs,
}

/// TLS flags; they map onto `server::Config::tls`.
#[derive(Args, Clone)]
struct TlsArgs {
    /// PEM certificate chain (leaf first) to serve wss:// and https:// with; needs
    /// --tls-key. Default: none (plaintext ws://). A TLS failure (plaintext on the port,
    /// garbage, no common version) ends that connection only; the files are read again on
    /// SIGHUP (a failed reload keeps the current certificate).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Default: none.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Loads the certificate and key; a bad or missing file, or a key that does not match,
    /// is a startup error naming the file. (The pairing is checked here, not with clap's
    /// `requires`: the flags may come from a config file or the environment too.)
    fn load(&self) -> Result<Option<server::TlsConfig>, server::TlsError> {
        let alone = |given: &str, missing: &str| server::TlsError {
            source_name: format!("--{given}"),
            problem: format!("needs --{missing} as well"),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => server::TlsConfig::from_files(cert, key).map(Some),
            (Some(_), None) => Err(alone("tls-cert", "tls-key")),
            (None, Some(_)) => Err(alone("tls-key", "tls-cert")),
            (None, None) => Ok(None),
        }
    }
}

/// Who may upgrade; maps onto `server::access::AccessConfig` (checked before the handler).
#[derive(Args, Clone)]
struct AccessArgs {
    /// An origin allowed to open WebSockets (repeatable): exact (`https://app.example.com`,
    /// `http://localhost:3000`), subdomains (`https://*.example.com`), or `null`. Default:
    /// none listed, every origin allowed. An upgrade whose Origin matches none -> 403.
    #[arg(long = "allowed-origin", value_name = "ORIGIN", action = ArgAction::Append)]
    allowed_origins: Vec<OriginPattern>,
    /// Refuse upgrades without an Origin header (non-browser clients send none) -> 403.
    /// Default: off.
    #[arg(long)]
    require_origin: bool,
    /// Open WebSocket connections per client IP (IPv6: per /64), all workers together;
    /// beyond -> 429. Default: unlimited.
    #[arg(long, value_name = "N")]
    max_conns_per_ip: Option<u32>,
    /// Upgrades per second per client IP (IPv6: per /64), a token bucket with a burst of N;
    /// beyond -> 429 with Retry-After. Default: unlimited.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    handshakes_per_ip: Option<u32>,
    /// Client IPs the per-IP limits track at once; a new IP beyond it -> 503 with
    /// Retry-After: 1 until entries expire.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_tracked_ips: usize,
    /// A proxy (CIDR, repeatable: `10.0.0.0/8`, `::1/128`) whose forwarding header names
    /// the client for the per-IP limits. Default: none, the TCP peer is the client.
    #[arg(long = "trust-proxy", value_name = "CIDR", action = ArgAction::Append)]
    trust_proxies: Vec<Cidr>,
    /// The header trusted proxies name the client in: `x-forwarded-for` or `forwarded`
    /// (RFC 7239). Only one is read: a proxy passes the other through from the client.
    #[arg(long, value_enum, default_value_t = ProxyHeaderArg::XForwardedFor)]
    proxy_header: ProxyHeaderArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProxyHeaderArg {
    XForwardedFor,
    Forwarded,
}

impl AccessArgs {
    fn config(&self) -> AccessConfig {
        AccessConfig {
            allowed_origins: self.allowed_origins.clone(),
            require_origin: self.require_origin,
            max_conns_per_ip: self.max_conns_per_ip,
            handshakes_per_ip: self.handshakes_per_ip,
            max_tracked_ips: self.max_tracked_ips,
            trusted_proxies: self.trust_proxies.clone(),
            proxy_header: match self.proxy_header {
                ProxyHeaderArg::XForwardedFor => ProxyHeader::XForwardedFor,
                ProxyHeaderArg::Forwarded => ProxyHeader::Forwarded,
            },
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Shared,
    Dedicated,
}

impl ServerArgs {
    fn config(&self, default_max_message: usize) -> server::Config {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = self.workers.map_or(cores.min(64), usize::from);
        let mut config = server::Config { listen: self.listen, workers, ..server::Config::default() };
        let max_message = self.max_message.unwrap_or(default_max_message);
        config.protocol.max_message_size = max_message;
        config.protocol.max_frame_size = self.max_frame.unwrap_or(max_message);
        config.max_outbound_bytes = self.max_outbound;
        config.write_high_water = self.max_outbound;
        config.max_body_bytes = self.max_body;
        config.max_handshakes = self.max_handshakes;
        config.ping_interval = Duration::from_secs(self.ping_interval);
        config.shutdown_timeout = Duration::from_secs(self.shutdown_timeout);
        config.handle_signals = true;
        config.max_head_bytes = self.max_header_bytes;
        config.max_connections = self.max_connections;
        config.backlog = self.backlog;
        config.handshake_timeout = Duration::from_secs(self.handshake_timeout);
        config.close_linger = Duration::from_secs(self.close_linger);
        config.deflate.enabled = !self.no_deflate;
        config.deflate.mode = match self.deflate_mode {
            ModeArg::Shared => DeflateMode::Shared,
            ModeArg::Dedicated => DeflateMode::Dedicated,
        };
        config.deflate.threshold = self.deflate_threshold;
        config.deflate.level = self.deflate_level;
        config.tls = match self.tls.load() {
            Ok(tls) => tls,
            Err(e) => {
                error!("TLS: {e}");
                std::process::exit(2);
            }
        };
        config.access = self.access.config();
        config
    }
}

/// The longest any seconds-valued knob may be: a week. Far beyond any sensible timeout,
/// and small enough that adding it to a clock reading cannot overflow (which would panic).
const MAX_SECONDS: u64 = 7 * 24 * 3600;

/// The parser of a seconds-valued flag: 0 to [`MAX_SECONDS`].
fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_SECONDS)
}

/// A rate or burst flag: a finite number, 0 or more.
fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        Ok(_) => Err(format!("{text} is not a finite number of 0 or more")),
        Err(e) => Err(e.to_string()),
    }
}

/// The server commands, whose settings may also come from the environment and a file.
const SERVER_COMMANDS: [&str; 3] = ["serve", "echo", "relay"];

/// The command line with every server setting readable from `WSEDGE_<NAME>`.
fn server_commands() -> clap::Command {
    let mut cli = Cli::command();
    for name in SERVER_COMMANDS {
        cli = cli.mut_subcommand(name, config_file::with_env);
    }
    cli
}

/// Parses the command line, the environment and the config file (`--config`), in that
/// order of precedence. `wsedge` alone is `wsedge serve`. Usage errors and `--help` exit
/// here, as clap does; a config file that cannot be used is an `Err` naming file and key.
fn parse_command_line() -> Result<Cli, config_file::ConfigError> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if argv.len() == 1 {
        argv.push("serve".into());
    }
    let mut cli = server_commands();
    let mut matches = cli.try_get_matches_from_mut(&argv).unwrap_or_else(|e| e.exit());
    if let Some((name, sub)) = matches.subcommand() {
        let file = if SERVER_COMMANDS.contains(&name) { sub.get_one::<PathBuf>("config").cloned() } else { None };
        if let (Some(path), Some(command)) = (file, cli.find_subcommand(name)) {
            argv.extend(config_file::file_args(command, sub, &path)?);
            matches = cli.try_get_matches_from_mut(&argv).unwrap_or_else(|e| e.exit());
        }
    }
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

fn run<H, M, F>(config: server::Config, make_handler: F) -> ExitCode
where
    H: Handler + Send + 'static,
    M: Send,
    F: FnMut(Mesh<M>) -> H,
{
    let listen = config.listen;
    let server = match Workers::bind(config, make_handler) {
        Ok(server) => server,
        Err(e) => {
            error!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("wsedge: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(command) = cli.command else {
        return ExitCode::FAILURE;
    };
    match command {
        Command::Serve { server, rooms, auth } => {
            let mut config = server.config(1 << 20);
            config.subprotocols = vec![SUBPROTOCOL.to_owned()];
            let mut rooms_config = rooms.config();
            if let Err(e) = auth.apply(&mut rooms_config, config.handshake_timeout) {
                error!("{e}");
                return ExitCode::from(2);
            }
            let scheme = if config.tls.is_some() { "wss" } else { "ws" };
            log::info!(
                "room server: {scheme}://{}{} (protocol {SUBPROTOCOL}), raw relay on {scheme}://{}/relay/<room>; backend API {}",
                config.listen,
                rooms_config.path,
                config.listen,
                if rooms_config.api_key.is_some() { "on" } else { "off (set WSEDGE_API_KEY to enable)" }
            );
            run(config, Rooms::for_workers(rooms_config))
        }
        Command::Echo(args) => run(args.config(16 << 20), |_: Mesh<()>| Echo),
        Command::Relay { server, rooms, auth } => {
            let config = server.config(1 << 20);
            // Every path is a relay room; there is no JSON endpoint.
            let mut rooms_config =
                RoomsConfig { path: String::new(), relay_prefix: Some("/".to_owned()), ..rooms.config() };
            if let Err(e) = auth.apply(&mut rooms_config, config.handshake_timeout) {
                error!("{e}");
                return ExitCode::from(2);
            }
            let scheme = if config.tls.is_some() { "wss" } else { "ws" };
            log::info!("relay: {scheme}://{}/<room> (messages forwarded verbatim to every member)", config.listen);
            run(config, Rooms::for_workers(rooms_config))
        }
        Command::Bench(args) => wsedge::bench::main(args),
        Command::Config { command, .. } => {
            let mut cli = server_commands();
            cli.build();
            match cli.find_subcommand(&command) {
                Some(sub) => {
                    print!("{}", config_file::defaults_file(sub));
                    ExitCode::SUCCESS
                }
                None => ExitCode::FAILURE,
            }
        }
        Command::Chat(args) => match chat(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `wsedge chat`: stdin lines become publishes; pushes are printed as they arrive. With a
/// token, `auth` goes first; a refused `auth` or `join` ends the chat (an `Err`).
fn chat(args: &ChatArgs) -> Result<(), String> {
    use std::sync::mpsc;
    use wsedge::client::{Client, WsUrl};
    use wsedge::proto::{CloseCode, Event};

    let io_error = |e: std::io::Error| e.to_string();
    // Messages name the URL without its query, which may hold a `?token=`.
    let shown = args.url.split('?').next().unwrap_or_default();
    let url = WsUrl::parse(&args.url).map_err(|e| format!("{shown}: {e}"))?;
    let token = args.token.as_deref().filter(|t| !t.is_empty());
    let loopback = url.host == "localhost" || url.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if token.is_some() && !url.tls && !loopback {
        eprintln!(
            "chat: warning: sending a token over ws:// to {}: anyone on the path can read it (use wss://)",
            url.host
        );
    }
    let tls = if url.tls { Some(args.trust.client_config()?) } else { None };
    let mut client = Client::connect(&args.url, &[SUBPROTOCOL], tls).map_err(|e| format!("{shown}: {e}"))?;
    if let Some(token) = token {
        // The server answers requests in order: the auth reply comes before the join's.
        let auth = serde_json::json!({"id": "auth", "op": "auth", "token": token});
        client.send_text(&auth.to_string()).map_err(io_error)?;
    }
    let join = serde_json::json!({"id": "join", "op": "join", "room": args.room, "presence": true});
    client.send_text(&join.to_string()).map_err(io_error)?;
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match lines.try_recv() {
            Ok(line) if !line.trim().is_empty() => {
                let publish = serde_json::json!({"op": "publish", "room": args.room, "data": {"text": line}});
                client.send_text(&publish.to_string()).map_err(io_error)?;
            }
            Ok(_) => {}
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => {
                return client.close(CloseCode::NORMAL, "bye").map_err(io_error);
            }
        }
        match client.recv(Duration::from_millis(50)).map_err(io_error)? {
            Some(Event::Message { data, .. }) => {
                let pushed = print_push(&String::from_utf8_lossy(&data));
                if let Err(Refused::Presence) = pushed {
                    // The token may join but not watch presence: join without it.
                    println!("* joining without presence (not allowed here)");
                    let join = serde_json::json!({"id": "join-quiet", "op": "join", "room": args.room});
                    client.send_text(&join.to_string()).map_err(io_error)?;
                } else if let Err(refused) = pushed {
                    let _ = client.close(CloseCode::NORMAL, "bye");
                    return Err(match refused {
                        Refused::Auth => "authentication failed".to_owned(),
                        Refused::Join | Refused::Presence => format!("cannot join {}", args.room),
                    });
                }
            }
            Some(Event::Close(frame)) => {
                match frame {
                    Some(f) if f.reason.is_empty() => println!("* server closed the connection ({})", f.code.0),
                    Some(f) => println!(
                        "* server closed the connection ({}: {})",
                        f.code.0,
                        String::from_utf8_lossy(&f.reason)
                    ),
                    None => println!("* server closed the connection (no code)"),
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Which of chat's first requests the server refused.
enum Refused {
    Auth,
    /// The join with presence got 403: it may still join without.
    Presence,
    Join,
}

/// Prints one frame from the server for a person to read. A refused `auth` or `join` (our
/// first requests) is an `Err` saying which: the chat cannot go on as asked.
fn print_push(text: &str) -> Result<(), Refused> {
    use serde_json::Value;

    let Ok(v) = serde_json::from_str::<Value>(text) else {
        println!("{text}");
        return Ok(());
    };
    let str_or = |v: &Value, default: &'static str| v.as_str().unwrap_or(default).to_owned();
    // A member by its user when it has one, else its client id; no client: the backend.
    let who = |m: &Value| m["user"].as_str().or(m["client"].as_str()).unwrap_or("backend").to_owned();
    if let Some(error) = v.get("error") {
        let message = error["message"].as_str().map_or_else(|| error["message"].to_string(), str::to_owned);
        println!("! error {}: {message}", error["code"]);
        return match v["id"].as_str() {
            Some("auth") => Err(Refused::Auth),
            // "not allowed to see presence in this room" (docs/protocol.md, Errors).
            Some("join") if error["code"] == 403 && message.contains("presence") => Err(Refused::Presence),
            Some("join" | "join-quiet") => Err(Refused::Join),
            _ => Ok(()),
        };
    }
    match (v["op"].as_str(), v["id"].as_str()) {
        (Some("welcome"), _) => match v["user"].as_str() {
            Some(user) => println!("* connected as {} (user {user})", str_or(&v["client"], "?")),
            None => println!("* connected as {}", str_or(&v["client"], "?")),
        },
        (Some("message"), _) => {
            let data = &v["data"];
            let body = data["text"].as_str().map_or_else(|| data.to_string(), str::to_owned);
            // Ephemeral messages have no offset.
            let offset = v["offset"].as_u64().map_or_else(String::new, |o| format!(" #{o}"));
            println!("[{}{offset}] {}: {}", str_or(&v["room"], "?"), who(&v["from"]), body);
        }
        (Some(op @ ("join" | "leave")), _) => {
            let verb = if op == "join" { "joined" } else { "left" };
            println!("* {} {verb} {}", who(&v["member"]), str_or(&v["room"], "?"));
        }
        (_, Some("auth")) => println!("* authenticated as {}", str_or(&v["ok"]["user"], "?")),
        (_, Some("join" | "join-quiet")) => {
            let members = &v["ok"]["members"];
            let count = members.as_array().map_or_else(|| members.to_string(), |m| m.len().to_string());
            println!("* joined {} ({count} members)", str_or(&v["ok"]["room"], "?"));
        }
        _ => {}
    }
    Ok(())
}
