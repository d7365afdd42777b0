//! The flags every server command shares (`serve`, `echo`, `relay`) and their mapping onto
//! `server::Config`: transport limits and timeouts, permessage-deflate, TLS and who may
//! upgrade (`server::access`). Parsing and mapping only: nothing here opens a socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use log::error;

use wsedge::proto::deflate::DeflateMode;
use wsedge::server;
use wsedge::server::access::{AccessConfig, Cidr, OriginPattern, ProxyHeader};

use super::seconds;

/// `--max-message` of the room server (`serve`, `relay`) when not given: 1 MiB, room for
/// a publish of `--max-room-message` and its JSON envelope. `echo` takes the codec's own
/// default instead (`proto::Config`: 16 MiB, the largest messages Autobahn sends).
pub(crate) const ROOM_SERVER_MAX_MESSAGE: usize = 1 << 20;

/// The defaults the flags show and fall back to: the server layer's own, named once there.
fn defaults() -> server::Config {
    server::Config::default()
}

/// Flags shared by every server command; they map onto `server::Config`.
#[derive(Args, Clone)]
pub(crate) struct ServerArgs {
    /// A TOML file of settings: each key is one of these flags' long name (see `wsedge
    /// config --print-defaults`). The command line and the environment override it.
    #[arg(long, env = "WSEDGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value_t = defaults().listen)]
    listen: SocketAddr,
    /// Event loops (threads), each with its own SO_REUSEPORT listener; rooms span them.
    /// Default: the number of cores. At most 64.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=server::MAX_WORKERS as i64))]
    workers: Option<u16>,
    /// Largest message accepted, in bytes (bigger -> close 1009). Default: 1 MiB for
    /// `serve`, 16 MiB for `echo`.
    #[arg(long)]
    max_message: Option<usize>,
    /// Largest single frame accepted, in bytes (default: --max-message).
    #[arg(long)]
    max_frame: Option<usize>,
    /// Largest HTTP request head, in bytes (bigger -> 431).
    #[arg(long, default_value_t = defaults().max_head_bytes)]
    max_header_bytes: usize,
    /// Most open WebSocket connections (beyond -> 503 on upgrade).
    #[arg(long, default_value_t = defaults().max_connections)]
    max_connections: usize,
    /// listen(2) backlog (capped by net.core.somaxconn).
    #[arg(long, default_value_t = defaults().backlog)]
    backlog: u32,
    /// Seconds allowed to complete the HTTP handshake.
    #[arg(long, default_value_t = defaults().handshake_timeout.as_secs(), value_parser = seconds())]
    handshake_timeout: u64,
    /// Seconds to wait for the peer during the close handshake.
    #[arg(long, default_value_t = defaults().close_linger.as_secs(), value_parser = seconds())]
    close_linger: u64,
    /// Bytes queued to a connection that is not reading before it is closed with 1013
    /// "slow consumer" (fan-out) or stops being read from (its own replies).
    #[arg(long, default_value_t = defaults().max_outbound_bytes)]
    max_outbound: usize,
    /// Reads during one turn's writes: a flush of more than 512 connections reads what
    /// became ready after each 512, at most this many times a turn, so messages arriving
    /// during a big fan-out join it (more messages per write; 0: write, then poll).
    #[arg(long, default_value_t = defaults().flush_reads)]
    flush_reads: usize,
    /// Largest plain HTTP request body, in bytes (bigger -> 413).
    #[arg(long, default_value_t = defaults().max_body_bytes)]
    max_body: usize,
    /// Sockets allowed in their HTTP phase at once, on top of open connections (beyond:
    /// accepted and closed at once).
    #[arg(long, default_value_t = defaults().max_handshakes)]
    max_handshakes: usize,
    /// Seconds of silence before the server pings a connection; it is dropped after twice
    /// this. 0 disables keepalive.
    #[arg(long, default_value_t = defaults().ping_interval.as_secs(), value_parser = seconds())]
    ping_interval: u64,
    /// Seconds to wait for clients to answer close 1001 on SIGINT/SIGTERM.
    #[arg(long, default_value_t = defaults().shutdown_timeout.as_secs(), value_parser = seconds())]
    shutdown_timeout: u64,
    /// Turn permessage-deflate (RFC 7692) off.
    #[arg(long)]
    no_deflate: bool,
    /// permessage-deflate memory mode: `shared` (one compressor per worker, no idle zlib
    /// state per connection) or `dedicated` (context takeover: best ratio, ~335 KiB each).
    #[arg(long, value_enum, default_value_t = defaults().deflate.mode.into())]
    deflate_mode: ModeArg,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = defaults().deflate.threshold)]
    deflate_threshold: usize,
    /// zlib compression level, 0 (store) to 9 (smallest).
    #[arg(long, default_value_t = defaults().deflate.level, value_parser = clap::value_parser!(u32).range(0..=9))]
    deflate_level: u32,
    /// TLS on the listener.
    #[command(flatten)]
    tls: TlsArgs,
    /// Who may upgrade.
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
    #[arg(long, value_name = "N", default_value_t = defaults().access.max_tracked_ips)]
    max_tracked_ips: usize,
    /// A proxy (CIDR, repeatable: `10.0.0.0/8`, `::1/128`) whose forwarding header names
    /// the client for the per-IP limits. Default: none, the TCP peer is the client.
    #[arg(long = "trust-proxy", value_name = "CIDR", action = ArgAction::Append)]
    trust_proxies: Vec<Cidr>,
    /// The header trusted proxies name the client in: `x-forwarded-for` or `forwarded`
    /// (RFC 7239). Only one is read: a proxy passes the other through from the client.
    #[arg(long, value_enum, default_value_t = defaults().access.proxy_header.into())]
    proxy_header: ProxyHeaderArg,
}

/// `--proxy-header`'s values, one per [`ProxyHeader`].
#[derive(Clone, Copy, ValueEnum)]
enum ProxyHeaderArg {
    XForwardedFor,
    Forwarded,
}

impl From<ProxyHeader> for ProxyHeaderArg {
    fn from(header: ProxyHeader) -> Self {
        match header {
            ProxyHeader::XForwardedFor => ProxyHeaderArg::XForwardedFor,
            ProxyHeader::Forwarded => ProxyHeaderArg::Forwarded,
        }
    }
}

impl From<ProxyHeaderArg> for ProxyHeader {
    fn from(header: ProxyHeaderArg) -> Self {
        match header {
            ProxyHeaderArg::XForwardedFor => ProxyHeader::XForwardedFor,
            ProxyHeaderArg::Forwarded => ProxyHeader::Forwarded,
        }
    }
}

impl AccessArgs {
    /// The admission rules these flags describe.
    fn config(&self) -> AccessConfig {
        AccessConfig {
            allowed_origins: self.allowed_origins.clone(),
            require_origin: self.require_origin,
            max_conns_per_ip: self.max_conns_per_ip,
            handshakes_per_ip: self.handshakes_per_ip,
            max_tracked_ips: self.max_tracked_ips,
            trusted_proxies: self.trust_proxies.clone(),
            proxy_header: self.proxy_header.into(),
        }
    }
}

/// `--deflate-mode`'s values, one per [`DeflateMode`].
#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Shared,
    Dedicated,
}

impl From<DeflateMode> for ModeArg {
    fn from(mode: DeflateMode) -> Self {
        match mode {
            DeflateMode::Shared => ModeArg::Shared,
            DeflateMode::Dedicated => ModeArg::Dedicated,
        }
    }
}

impl From<ModeArg> for DeflateMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Shared => DeflateMode::Shared,
            ModeArg::Dedicated => DeflateMode::Dedicated,
        }
    }
}

impl ServerArgs {
    /// The server config these flags describe; `default_max_message` is the command's
    /// `--max-message` when none is given. A TLS file that cannot be used exits (code 2).
    pub(crate) fn config(&self, default_max_message: usize) -> server::Config {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = self.workers.map_or(cores.min(server::MAX_WORKERS), usize::from);
        let mut config = server::Config { listen: self.listen, workers, ..server::Config::default() };
        let max_message = self.max_message.unwrap_or(default_max_message);
        config.protocol.max_message_size = max_message;
        config.protocol.max_frame_size = self.max_frame.unwrap_or(max_message);
        config.max_outbound_bytes = self.max_outbound;
        config.write_high_water = self.max_outbound;
        config.max_body_bytes = self.max_body;
        config.flush_reads = self.flush_reads;
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
        config.deflate.mode = self.deflate_mode.into();
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

#[cfg(test)]
mod tests {
    use wsedge::proto;

    use super::*;

    /// The help texts that name a limit in words (clap cannot put a constant in a doc
    /// comment) say the limit in force.
    #[test]
    fn help_texts_name_the_limits_in_force() {
        let cli = crate::cli::server_commands();
        let serve = cli.find_subcommand("serve").expect("serve");
        let help = |id: &str| {
            let arg = serve.get_arguments().find(|a| a.get_id() == id).expect(id);
            arg.get_help().map(ToString::to_string).unwrap_or_default()
        };
        assert!(help("workers").ends_with(&format!("At most {}", server::MAX_WORKERS)), "{}", help("workers"));
        let max_message = help("max_message");
        assert!(max_message.contains(&format!("{} MiB for `serve`", ROOM_SERVER_MAX_MESSAGE >> 20)), "{max_message}");
        let echo = proto::Config::default().max_message_size >> 20;
        assert!(max_message.contains(&format!("{echo} MiB for `echo`")), "{max_message}");
    }
}
