//! The `wsedge bench` command line, as clap parses it: one struct of flags per scenario
//! and the flags they share. Checking and resolving them into a run is `plan.rs`'s;
//! nothing here opens a connection.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand};

use crate::client::tls;

/// `wsedge bench SCENARIO [OPTIONS]`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What load to generate.
    #[command(subcommand)]
    pub scenario: ScenarioArgs,
}

/// The scenarios, each with its own flags.
#[derive(Subcommand, Debug, Clone)]
pub enum ScenarioArgs {
    /// Connections that each keep --depth messages in flight to an echo server (`wsedge
    /// echo`); every echo is timed.
    Echo(EchoArgs),
    /// Subscribers and publishers in one room (the raw relay, or the wsedge.v1 room protocol
    /// with --rooms-protocol); every delivery is timed. --all-publish: broadcast.
    Fanout(FanoutArgs),
    /// Connections that only stay open (pings are answered); reports whether they all
    /// stayed up and the server's memory per connection.
    Idle(IdleArgs),
}

/// `wsedge bench echo`'s flags.
#[derive(Args, Debug, Clone)]
pub struct EchoArgs {
    /// The echo server (`wsedge echo` answers on any path). A server that sends anything
    /// but echoes (a room server's welcome, another connection's message) stops the run
    /// with exit code 1.
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Payload bytes per message (at least 12: send time and sender come first).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: u32,
    /// Send binary messages (default: text).
    #[arg(long)]
    pub binary: bool,
    /// Options every scenario takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `wsedge bench fanout`'s flags.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// The room: ws://HOST/relay/ROOM on `wsedge serve`, ws://HOST/ROOM on `wsedge relay`;
    /// with --rooms-protocol the /ws endpoint. Default: ws://127.0.0.1:9001/relay/bench
    /// (ws://127.0.0.1:9001/ws with --rooms-protocol). Repeatable, for nodes that share
    /// rooms (`serve --redis`): the publishers connect to the first URL, the subscribers
    /// (with --all-publish, every connection) round-robin to all of them. A server that is
    /// no room of that kind (an echo server, the room protocol's endpoint without
    /// --rooms-protocol) stops the run with exit code 1.
    #[arg(long, value_name = "URL", action = ArgAction::Append)]
    pub url: Vec<String>,
    /// Join and publish with the wsedge.v1 room protocol (JSON) instead of the raw relay.
    /// The server's publish rate limit applies per connection (`serve --publish-rate`).
    #[arg(long)]
    pub rooms_protocol: bool,
    /// The room joined with --rooms-protocol.
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Connections that only receive.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Connections that publish into the room (and receive like any member).
    #[arg(long, default_value_t = 1, conflicts_with = "all_publish")]
    pub publishers: usize,
    /// Messages per second from all publishers together; 0: as fast as --window allows.
    #[arg(long, default_value_t = 0.0, conflicts_with = "all_publish")]
    pub rate: f64,
    /// With --rate 0: messages each publisher may have in flight (sent, and its own copy
    /// not back yet).
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Payload bytes per message (at least 12; with --rooms-protocol, the length of the
    /// `data` string).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Send binary messages (default: text; the room protocol is text only).
    #[arg(long)]
    pub binary: bool,
    /// Broadcast: each of the --subscribers connections publishes too, one message per
    /// round (its next once it has received as many messages as there are members).
    #[arg(long)]
    pub all_publish: bool,
    /// The subscribers read Server-Sent Events (`GET /sse?room=ROOM` on the same server)
    /// instead of a WebSocket; the publishers stay on WebSocket. Needs --rooms-protocol.
    #[arg(long, requires = "rooms_protocol", conflicts_with = "all_publish")]
    pub sse: bool,
    /// Options every scenario takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `wsedge bench idle`'s flags.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// The server (any WebSocket endpoint that keeps connections open; what it sends is
    /// ignored). The default is `wsedge serve`'s room endpoint at its default address;
    /// `wsedge echo` and `wsedge relay` accept that path too.
    #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
    pub url: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Hold event streams (`GET /sse?room=idle` on the URL's server, `wsedge serve`)
    /// instead of WebSockets: each counts once it has joined.
    #[arg(long)]
    pub sse: bool,
    /// Options every scenario takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Client threads, each with its own event loop (leave the server a core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds of measured traffic.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of traffic before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// The server's process id: report its CPU seconds per million messages and its memory
    /// growth (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Source addresses to spread connections over, e.g. 127.0.0.2,127.0.0.3 (each has its
    /// own ~28,000 ephemeral ports).
    #[arg(long, value_delimiter = ',')]
    pub bind_ips: Vec<IpAddr>,
    /// Connections in setup (TCP connect, upgrade, join) at once, per thread.
    #[arg(long, default_value_t = 256)]
    pub connect_batch: usize,
    /// Seconds a connection may take to connect, upgrade and join.
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Offer permessage-deflate.
    #[arg(long)]
    pub deflate: bool,
    /// Which certificates a `wss://` server may present.
    #[command(flatten)]
    pub trust: tls::TrustArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a web page: one self-contained HTML file with the settings,
    /// throughput over time and latency by percentile (p50 ... p99.999).
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
}

/// `wsedge bench-report`'s flags: one page from saved `wsedge bench --json` reports.
#[derive(Args, Debug, Clone)]
pub struct ReportPageArgs {
    /// The page to write.
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,
    /// The page's heading.
    #[arg(long, default_value = "wsedge bench")]
    pub title: String,
    /// Reports of `wsedge bench --json`, each named GROUP.LABEL.json (as benches/compare.sh
    /// names them: SCENARIO.SERVER.json): the runs of a group are overlaid in its charts,
    /// each line named LABEL. A file that cannot be read is listed on the page, not drawn.
    #[arg(required = true, value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,
}
