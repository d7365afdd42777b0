//! `wsedge bench`: a load generator on the client side of our own codec, driven by mio.
//!
//! Scenarios: `echo` (N connections, each keeping `--depth` messages in flight, every echo
//! timed), `fanout` (subscribers and publishers in one room over the raw relay or the
//! `wsedge.v1` room protocol, every delivery timed; `--all-publish` for broadcast) and
//! `idle` (N connections that only answer pings). It reports messages/s, MB/s, latency
//! percentiles (hdrhistogram) and, given the server's PID, the server's CPU per million
//! messages and its memory growth, read from `/proc` (Linux).
//!
//! Shape: `--threads` workers (`worker.rs`, their traffic in `traffic.rs`), each a
//! single-threaded mio loop owning its share of the connections; a coordinator (here) that
//! waits until every connection is set up, publishes the `Schedule` (start, end of warmup,
//! end), samples the server at the window's edges and merges the threads' counts into a
//! [`Report`]. Each message carries its send time in its first bytes (`payload.rs`), so no
//! per-message state is kept. It only ever connects as a client: nothing of the server or
//! its room layer is used.

mod conn;
mod payload;
mod process;
mod report;
mod traffic;
mod worker;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use log::{info, warn};
use serde_json::json;

use crate::client::{tls, WsUrl};
use crate::proto::{self, MessageKind};
use crate::wire::SUBPROTOCOL;
use conn::Part;
use process::{ProcessProbe, ProcessSample};
pub use report::{Latency, Report, ServerReport, Stats};
use worker::Worker;

// ---- command line ----

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
    /// The echo server (`wsedge echo` answers on any path).
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
    /// (ws://127.0.0.1:9001/ws with --rooms-protocol).
    #[arg(long)]
    pub url: Option<String>,
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
    /// Options every scenario takes.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `wsedge bench idle`'s flags.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// The server (any WebSocket endpoint that keeps connections open).
    #[arg(long, default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
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
}

/// Runs `wsedge bench` and prints its report; fails when no connection opened.
pub fn main(args: BenchArgs) -> ExitCode {
    let (plan, json) = match Plan::from_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match run(plan) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("bench: cannot write the report as JSON: {e}"),
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.connections_open == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

// ---- the plan ----

/// Why a bench could not run.
#[derive(Debug)]
pub enum BenchError {
    /// Options that do not make a run.
    Invalid(String),
    /// The URL's host does not resolve.
    Resolve(String, io::Error),
    /// `--server-pid` names no readable process.
    ServerPid(u32, io::Error),
    /// A worker thread could not start or failed.
    Worker(io::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Invalid(why) => f.write_str(why),
            BenchError::Resolve(host, e) => write!(f, "cannot resolve {host}: {e}"),
            BenchError::ServerPid(pid, e) => write!(f, "cannot read /proc/{pid} for --server-pid: {e}"),
            BenchError::Worker(e) => write!(f, "client thread failed: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

fn invalid(why: impl Into<String>) -> BenchError {
    BenchError::Invalid(why.into())
}

/// What the connections do.
#[derive(Debug, Clone, Copy)]
pub enum Scenario {
    /// Every connection keeps `depth` messages in flight to an echo server.
    Echo {
        /// Messages in flight per connection (at least 1).
        depth: u32,
    },
    /// Publishers and subscribers in one room.
    Fanout {
        /// How many of the connections publish (the first ones).
        publishers: usize,
        /// Messages per second from all publishers together; 0: window-driven.
        rate: f64,
        /// With `rate` 0: unacknowledged messages each publisher may have in flight.
        window: u64,
        /// Broadcast: every connection publishes, a round at a time.
        all_publish: bool,
    },
    /// Connections that only stay open.
    Idle,
}

/// Where to connect: the resolved address, and the Host header and path to ask for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The first address the host resolved to.
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority (host and port as written).
    pub host: String,
    /// The request target: path and query.
    pub path: String,
    /// `wss://`: the name the certificate must carry.
    pub tls_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl Target {
    /// Parses `ws[s]://host[:port][/path]` and resolves the host once.
    pub fn parse(url: &str) -> Result<Target, BenchError> {
        let parsed = WsUrl::parse(url).map_err(|e| invalid(format!("{url}: {e}")))?;
        let tls_name = if parsed.tls {
            let name = rustls::pki_types::ServerName::try_from(parsed.host.clone())
                .map_err(|e| invalid(format!("{url}: {e}")))?;
            Some(name)
        } else {
            None
        };
        let addr = (parsed.host.as_str(), parsed.port)
            .to_socket_addrs()
            .map_err(|e| BenchError::Resolve(parsed.authority.clone(), e))?
            .next()
            .ok_or_else(|| BenchError::Resolve(parsed.authority.clone(), io::ErrorKind::NotFound.into()))?;
        Ok(Target { addr, host: parsed.authority, path: parsed.path, tls_name })
    }
}

/// Everything a run needs, checked and resolved; shared read-only by the threads.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the connections do.
    pub scenario: Scenario,
    /// The URL as given (or the scenario's default), for messages and the report.
    pub url: String,
    /// Where `url` resolved to.
    pub target: Target,
    /// The room joined with the room protocol (`None`: raw messages).
    pub room: Option<String>,
    /// Text or binary messages.
    pub kind: MessageKind,
    /// Payload bytes per message.
    pub size: usize,
    /// Connections across all threads.
    pub connections: usize,
    /// Client threads, each with its own event loop.
    pub threads: usize,
    /// Connections in setup at once, per thread.
    pub connect_batch: usize,
    /// Time a connection may take to connect, upgrade and join.
    pub handshake_timeout: Duration,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// The client config for a `wss://` target.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Source addresses connections are spread over (empty: the system's choice).
    pub bind_ips: Vec<IpAddr>,
    /// Traffic before measuring starts.
    pub warmup: Duration,
    /// Measured traffic.
    pub duration: Duration,
    /// The server process to sample (CPU, memory) at the window's edges.
    pub server_pid: Option<u32>,
    /// The zero of message timestamps (process-local).
    pub epoch: Instant,
    /// What was asked for, echoed in the report.
    pub settings: BTreeMap<&'static str, serde_json::Value>,
}

impl Plan {
    /// Checks the options; returns the plan and whether to print JSON.
    pub fn from_args(args: &BenchArgs) -> Result<(Plan, bool), BenchError> {
        let mut settings = BTreeMap::new();
        let (scenario, url, room, connections, size, binary, common) = match &args.scenario {
            ScenarioArgs::Echo(a) => {
                if a.depth == 0 {
                    return Err(invalid("--depth must be at least 1"));
                }
                settings.insert("depth", json!(a.depth));
                (Scenario::Echo { depth: a.depth }, a.url.clone(), None, a.connections, a.size, a.binary, &a.common)
            }
            ScenarioArgs::Fanout(a) => {
                if !(a.rate.is_finite() && a.rate >= 0.0) {
                    return Err(invalid("--rate must be a number >= 0"));
                }
                if a.window == 0 {
                    return Err(invalid("--window must be at least 1"));
                }
                if a.rooms_protocol && a.binary {
                    return Err(invalid("the room protocol carries text only: drop --binary"));
                }
                if !a.all_publish && a.publishers == 0 {
                    return Err(invalid("--publishers must be at least 1"));
                }
                let publishers = if a.all_publish { 0 } else { a.publishers };
                let room = a.rooms_protocol.then(|| a.room.clone());
                let default_path = if a.rooms_protocol { "/ws" } else { "/relay/bench" };
                let url = a.url.clone().unwrap_or_else(|| format!("ws://127.0.0.1:9001{default_path}"));
                settings.insert("protocol", json!(if a.rooms_protocol { SUBPROTOCOL } else { "relay" }));
                settings.insert("subscribers", json!(a.subscribers));
                if a.all_publish {
                    settings.insert("all_publish", json!(true));
                } else {
                    settings.insert("publishers", json!(publishers));
                    settings.insert("rate", json!(a.rate));
                    if a.rate == 0.0 {
                        settings.insert("window", json!(a.window));
                    }
                }
                let scenario =
                    Scenario::Fanout { publishers, rate: a.rate, window: a.window, all_publish: a.all_publish };
                (scenario, url, room, a.subscribers + publishers, a.size, a.binary, &a.common)
            }
            ScenarioArgs::Idle(a) => (Scenario::Idle, a.url.clone(), None, a.connections, 0, false, &a.common),
        };
        if connections == 0 {
            return Err(invalid("no connections to open"));
        }
        // Connection numbers travel in 24 bits of each payload.
        if connections >= 1 << 24 {
            return Err(invalid("at most 16,777,215 connections"));
        }
        if !matches!(scenario, Scenario::Idle) {
            // The bench's codec has the default limits: no larger message would come back.
            let max_size = proto::Config::default().max_message_size;
            if !(payload::HEADER_LEN..=max_size).contains(&size) {
                return Err(invalid(format!("--size must be {}..={max_size} bytes", payload::HEADER_LEN)));
            }
            settings.insert("size", json!(size));
            settings.insert("binary", json!(binary));
        }
        if common.threads == 0 {
            return Err(invalid("--threads must be at least 1"));
        }
        if common.connect_batch == 0 {
            return Err(invalid("--connect-batch must be at least 1"));
        }
        let seconds = |name: &str, value: f64, allow_zero: bool| {
            let ok = value.is_finite() && (value > 0.0 || (allow_zero && value == 0.0)) && value < 1e7;
            ok.then(|| Duration::from_secs_f64(value))
                .ok_or_else(|| invalid(format!("--{name} must be a number of seconds")))
        };
        let target = Target::parse(&url)?;
        let tls = match target.tls_name {
            Some(_) => Some(common.trust.client_config().map_err(invalid)?),
            None => None,
        };
        let plan = Plan {
            scenario,
            target,
            tls,
            url,
            room,
            kind: if binary { MessageKind::Binary } else { MessageKind::Text },
            size,
            connections,
            threads: common.threads.min(connections),
            connect_batch: common.connect_batch,
            handshake_timeout: seconds("handshake-timeout", common.handshake_timeout, false)?,
            deflate: common.deflate,
            bind_ips: common.bind_ips.clone(),
            warmup: seconds("warmup", common.warmup, true)?,
            duration: seconds("duration", common.duration, false)?,
            server_pid: common.server_pid,
            epoch: Instant::now(),
            settings,
        };
        Ok((plan, common.json))
    }

    fn scenario_name(&self) -> &'static str {
        match self.scenario {
            Scenario::Echo { .. } => "echo",
            Scenario::Fanout { all_publish: true, .. } => "broadcast",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Idle => "idle",
        }
    }

    /// The part connection `id` plays: in fan-out, the first `publishers` publish.
    fn part(&self, id: u32) -> Part {
        match self.scenario {
            Scenario::Echo { .. } => Part::Echo,
            Scenario::Idle => Part::Idle,
            Scenario::Fanout { all_publish: true, .. } => Part::Broadcaster,
            Scenario::Fanout { publishers, .. } if (id as usize) < publishers => Part::Publisher,
            Scenario::Fanout { .. } => Part::Subscriber,
        }
    }

    /// Publishers sharing `--rate` (at least 1, so rates divide safely).
    fn publishers(&self) -> usize {
        match self.scenario {
            Scenario::Fanout { publishers, .. } => publishers.max(1),
            _ => 1,
        }
    }

    /// `now` as a message timestamp: nanoseconds since the bench's epoch.
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The subprotocols offered: `wsedge.v1` for the room protocol, none otherwise.
    pub fn protocols(&self) -> &'static [&'static str] {
        if self.room.is_some() {
            &[SUBPROTOCOL]
        } else {
            &[]
        }
    }
}

// ---- the run ----

/// When traffic starts, when measuring starts (after the warmup) and when it all ends.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// What the threads and the coordinator share.
#[derive(Debug, Default)]
struct Shared {
    /// Threads done with connection setup.
    threads_ready: AtomicUsize,
    /// Connections that opened, across threads.
    opened: AtomicUsize,
    /// Connections open now, across threads (the size of a broadcast round).
    live: AtomicUsize,
    /// Set by the coordinator once every thread is ready.
    schedule: OnceLock<Schedule>,
}

/// Opens the connections, runs the scenario on `plan.threads` threads, and reports.
pub fn run(plan: Plan) -> Result<Report, BenchError> {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::default());
    let server = match plan.server_pid {
        Some(pid) => Some((pid, ProcessProbe::new(pid).map_err(|e| BenchError::ServerPid(pid, e))?)),
        None => None,
    };
    let sample_server = || server.as_ref().and_then(|(_, probe)| probe.sample().ok());
    let own = ProcessProbe::own();
    let server_before = sample_server();

    // Connection i goes to thread i % threads.
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); plan.threads];
    for id in 0..plan.connections {
        ids[id % plan.threads].push(id as u32);
    }
    let mut handles = Vec::with_capacity(plan.threads);
    for (i, ids) in ids.into_iter().enumerate() {
        let worker = Worker::new(plan.clone(), shared.clone(), ids).map_err(BenchError::Worker)?;
        let handle = thread::Builder::new().name(format!("bench-{i}")).spawn(move || worker.run());
        handles.push(handle.map_err(BenchError::Worker)?);
    }

    let setup_start = Instant::now();
    info!(
        "{}: opening {} connections to {} ({} thread(s), {} in setup at once each)",
        plan.scenario_name(),
        plan.connections,
        plan.url,
        plan.threads,
        plan.connect_batch
    );
    while shared.threads_ready.load(Ordering::SeqCst) < plan.threads {
        if handles.iter().any(|h| h.is_finished()) {
            break; // a thread failed: joined below
        }
        thread::sleep(Duration::from_millis(2));
    }
    let opened = shared.opened.load(Ordering::SeqCst);
    info!("{opened} of {} connections open after {:.2} s", plan.connections, setup_start.elapsed().as_secs_f64());
    let server_connected = sample_server();

    // Nothing to measure without connections: end at once.
    let (warmup, duration) = if opened == 0 { (Duration::ZERO, Duration::ZERO) } else { (plan.warmup, plan.duration) };
    let start = Instant::now();
    let schedule = Schedule { start, measure_from: start + warmup, end: start + warmup + duration };
    let _ = shared.schedule.set(schedule);
    sleep_until(schedule.measure_from);
    let (server_from, own_from) = (sample_server(), own.sample().ok());
    sleep_until(schedule.end);
    let (server_end, own_end) = (sample_server(), own.sample().ok());

    let mut stats = Stats::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(thread_stats)) => stats.merge(thread_stats),
            Ok(Err(e)) => return Err(BenchError::Worker(e)),
            Err(_) => return Err(BenchError::Worker(io::Error::other("a client thread panicked"))),
        }
    }
    let server_report = match (&server, server_before, server_connected, server_from, server_end) {
        (Some((pid, _)), Some(before), Some(connected), Some(from), Some(end)) => {
            Some(server_report(*pid, &plan, &stats, [before, connected, from, end]))
        }
        (Some((pid, _)), ..) => {
            warn!("server {pid} could not be sampled throughout the run (did it exit?)");
            None
        }
        _ => None,
    };
    let client_cpu = match (own_from, own_end) {
        (Some(from), Some(end)) => end.cpu_seconds - from.cpu_seconds,
        _ => 0.0,
    };
    Ok(build_report(&plan, stats, [warmup, duration], client_cpu, server_report))
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// Echo counts round trips as messages; fan-out counts publishes (and deliveries apart).
fn messages(plan: &Plan, stats: &Stats) -> u64 {
    match plan.scenario {
        Scenario::Echo { .. } => stats.received,
        Scenario::Fanout { .. } => stats.sent,
        Scenario::Idle => 0,
    }
}

fn build_report(
    plan: &Plan,
    stats: Stats,
    [warmup, window]: [Duration; 2],
    client_cpu_seconds: f64,
    server: Option<ServerReport>,
) -> Report {
    let secs = window.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let messages = messages(plan, &stats);
    Report {
        scenario: plan.scenario_name(),
        url: plan.url.clone(),
        settings: plan.settings.clone(),
        threads: plan.threads,
        connections: plan.connections,
        connections_open: stats.opened,
        connections_failed: stats.failed.values().sum(),
        failures: stats.failed,
        warmup_secs: warmup.as_secs_f64(),
        duration_secs: secs,
        messages,
        messages_per_sec: per_sec(messages),
        deliveries: stats.received,
        deliveries_per_sec: per_sec(stats.received),
        mb_per_sec: per_sec(stats.received_bytes) / 1e6,
        latency_us: Latency::from_histogram(&stats.latency),
        errors: stats.errors.values().sum(),
        error_kinds: stats.errors,
        connections_dropped: stats.dropped,
        connections_open_at_end: stats.open_at_end,
        connections_closed_cleanly: stats.closed_cleanly,
        pings_answered: stats.pings,
        client_cpu_seconds,
        server,
    }
}

/// Samples: before connecting, once connected, at the start and at the end of the window.
fn server_report(pid: u32, plan: &Plan, stats: &Stats, samples: [ProcessSample; 4]) -> ServerReport {
    let [before, connected, from, end] = samples;
    let cpu_seconds = (end.cpu_seconds - from.cpu_seconds).max(0.0);
    let secs = plan.duration.as_secs_f64();
    let per_million = |n: u64| (n > 0).then(|| cpu_seconds / (n as f64 / 1e6));
    let growth = connected.rss_bytes as i64 - before.rss_bytes as i64;
    ServerReport {
        pid,
        cpu_seconds,
        cpu_cores: if secs > 0.0 { cpu_seconds / secs } else { 0.0 },
        cpu_seconds_per_million_messages: per_million(messages(plan, stats)),
        cpu_seconds_per_million_deliveries: match plan.scenario {
            Scenario::Fanout { .. } => per_million(stats.received),
            _ => None,
        },
        rss_before_bytes: before.rss_bytes,
        rss_connected_bytes: connected.rss_bytes,
        rss_end_bytes: end.rss_bytes,
        rss_growth_bytes: growth,
        rss_growth_per_connection_bytes: (stats.opened > 0).then(|| growth as f64 / stats.opened as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        scenario: ScenarioArgs,
    }

    fn plan(args: &[&str]) -> Result<Plan, BenchError> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map_err(|e| invalid(e.to_string()))?;
        Plan::from_args(&BenchArgs { scenario: cli.scenario }).map(|(p, _)| p)
    }

    #[test]
    fn urls_are_split_and_resolved() {
        let t = Target::parse("ws://127.0.0.1:9400/relay/bench").unwrap();
        assert_eq!((t.addr.port(), t.host.as_str(), t.path.as_str()), (9400, "127.0.0.1:9400", "/relay/bench"));
        let t = Target::parse("ws://127.0.0.1").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));
        let t = Target::parse("ws://[::1]:9001/x").unwrap();
        assert_eq!(t.addr.port(), 9001);
        assert!(Target::parse("http://127.0.0.1/").is_err());
        let t = Target::parse("wss://localhost:9443/x").unwrap();
        assert_eq!((t.addr.port(), t.tls_name.map(|n| n.to_str().into_owned())), (9443, Some("localhost".into())));
        assert_eq!(Target::parse("wss://127.0.0.1").unwrap().addr.port(), 443);
        assert!(plan(&["echo", "--url", "wss://127.0.0.1:9/", "--ca", "/no/such/ca.pem"]).is_err(), "an unreadable CA");
        assert!(plan(&["echo", "--url", "wss://127.0.0.1:9/", "--insecure"]).is_ok_and(|p| p.tls.is_some()));
    }

    #[test]
    fn fanout_parts_and_defaults() {
        let p = plan(&["fanout", "--subscribers", "10", "--publishers", "2"]).unwrap();
        assert_eq!(p.connections, 12);
        assert_eq!((p.part(0), p.part(1), p.part(2)), (Part::Publisher, Part::Publisher, Part::Subscriber));
        assert_eq!(p.target.path, "/relay/bench");
        let p = plan(&["fanout", "--rooms-protocol", "--all-publish", "--subscribers", "5"]).unwrap();
        assert_eq!((p.connections, p.part(0), p.target.path.as_str()), (5, Part::Broadcaster, "/ws"));
        assert_eq!(p.room.as_deref(), Some("bench"));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        assert!(plan(&["echo", "--size", "4"]).is_err());
        assert!(plan(&["echo", "--depth", "0"]).is_err());
        assert!(plan(&["echo", "--connections", "0"]).is_err());
        assert!(plan(&["fanout", "--rooms-protocol", "--binary"]).is_err());
        assert!(plan(&["fanout", "--all-publish", "--publishers", "3"]).is_err());
        assert!(plan(&["idle", "--duration", "-1"]).is_err());
    }
}
