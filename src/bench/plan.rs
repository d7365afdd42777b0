//! What a bench run is to do: the command line checked (sizes, counts, rates that make a
//! run) and resolved (the URLs to addresses, the TLS config) into a [`Plan`] the threads
//! share read-only, plus what each connection plays in it and where it connects. Nothing
//! here opens a connection or starts a thread; a bad option is a [`BenchError`] naming it.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::args::{BenchArgs, ScenarioArgs};
use super::conn::Part;
use super::payload;
use super::verdict::WrongKind;
use crate::client::WsUrl;
use crate::proto::{self, MessageKind};
use crate::wire::SUBPROTOCOL;

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
    /// The server is not the kind the scenario drives (what it sent shows it).
    WrongKind(WrongKind),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Invalid(why) => f.write_str(why),
            BenchError::Resolve(host, e) => write!(f, "cannot resolve {host}: {e}"),
            BenchError::ServerPid(pid, e) => write!(f, "cannot read /proc/{pid} for --server-pid: {e}"),
            BenchError::Worker(e) => write!(f, "client thread failed: {e}"),
            BenchError::WrongKind(wrong) => wrong.fmt(f),
        }
    }
}

impl std::error::Error for BenchError {}

/// Throughput is counted per interval of this length ...
const THROUGHPUT_INTERVAL: Duration = Duration::from_millis(100);
/// ... or longer, so that a long window has at most this many intervals.
const MAX_THROUGHPUT_INTERVALS: u32 = 600;

pub(super) fn invalid(why: impl Into<String>) -> BenchError {
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

/// Where the report goes besides the terminal's text.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Print the report as JSON instead of text.
    pub json: bool,
    /// Also write the report's page here (`--report`).
    pub page: Option<PathBuf>,
}

/// Everything a run needs, checked and resolved; shared read-only by the threads.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the connections do.
    pub scenario: Scenario,
    /// The URLs as given (or the scenario's default), for messages and the report; at
    /// least one, several only in fan-out.
    pub urls: Vec<String>,
    /// Where each of `urls` resolved to, in the same order.
    pub targets: Vec<Target>,
    /// The room joined with the room protocol (`None`: raw messages).
    pub room: Option<String>,
    /// `--sse`: the request target of the event stream subscribers (or idle connections)
    /// open instead of a WebSocket.
    pub sse: Option<String>,
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
    /// Deliveries are counted per interval of this length for the throughput over time.
    pub throughput_interval: Duration,
    /// The server process to sample (CPU, memory) at the window's edges.
    pub server_pid: Option<u32>,
    /// The zero of message timestamps (process-local).
    pub epoch: Instant,
    /// What was asked for, echoed in the report.
    pub settings: BTreeMap<&'static str, serde_json::Value>,
}

impl Plan {
    /// Checks the options; returns the plan and where its report goes.
    pub fn from_args(args: &BenchArgs) -> Result<(Plan, Output), BenchError> {
        let mut settings = BTreeMap::new();
        let mut sse = None;
        let (scenario, urls, room, connections, size, binary, common) = match &args.scenario {
            ScenarioArgs::Echo(a) => {
                if a.depth == 0 {
                    return Err(invalid("--depth must be at least 1"));
                }
                settings.insert("depth", json!(a.depth));
                let scenario = Scenario::Echo { depth: a.depth };
                (scenario, vec![a.url.clone()], None, a.connections, a.size, a.binary, &a.common)
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
                let urls =
                    if a.url.is_empty() { vec![format!("ws://127.0.0.1:9001{default_path}")] } else { a.url.clone() };
                if urls.len() > 1 {
                    settings.insert("urls", json!(urls));
                }
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
                if a.sse {
                    sse = Some(format!("/sse?room={}", a.room));
                }
                let scenario =
                    Scenario::Fanout { publishers, rate: a.rate, window: a.window, all_publish: a.all_publish };
                (scenario, urls, room, a.subscribers + publishers, a.size, a.binary, &a.common)
            }
            ScenarioArgs::Idle(a) => {
                if a.sse {
                    sse = Some("/sse?room=idle".to_owned());
                }
                (Scenario::Idle, vec![a.url.clone()], None, a.connections, 0, false, &a.common)
            }
        };
        if connections == 0 {
            return Err(invalid("no connections to open"));
        }
        if sse.is_some() {
            settings.insert("transport", json!("sse"));
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
        let duration = seconds("duration", common.duration, false)?;
        let targets = urls.iter().map(|url| Target::parse(url)).collect::<Result<Vec<_>, _>>()?;
        let tls = if targets.iter().any(|t| t.tls_name.is_some()) {
            Some(common.trust.client_config().map_err(invalid)?)
        } else {
            None
        };
        let plan = Plan {
            scenario,
            targets,
            tls,
            urls,
            room,
            sse,
            kind: if binary { MessageKind::Binary } else { MessageKind::Text },
            size,
            connections,
            threads: common.threads.min(connections),
            connect_batch: common.connect_batch,
            handshake_timeout: seconds("handshake-timeout", common.handshake_timeout, false)?,
            deflate: common.deflate,
            bind_ips: common.bind_ips.clone(),
            warmup: seconds("warmup", common.warmup, true)?,
            duration,
            throughput_interval: THROUGHPUT_INTERVAL.max(duration / MAX_THROUGHPUT_INTERVALS),
            server_pid: common.server_pid,
            epoch: Instant::now(),
            settings,
        };
        Ok((plan, Output { json: common.json, page: common.report.clone() }))
    }

    pub(super) fn scenario_name(&self) -> &'static str {
        match self.scenario {
            Scenario::Echo { .. } => "echo",
            Scenario::Fanout { all_publish: true, .. } => "broadcast",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Idle => "idle",
        }
    }

    /// The part connection `id` plays: in fan-out, the first `publishers` publish.
    pub(super) fn part(&self, id: u32) -> Part {
        match self.scenario {
            Scenario::Echo { .. } => Part::Echo,
            Scenario::Idle => Part::Idle,
            Scenario::Fanout { all_publish: true, .. } => Part::Broadcaster,
            Scenario::Fanout { publishers, .. } if (id as usize) < publishers => Part::Publisher,
            Scenario::Fanout { .. } => Part::Subscriber,
        }
    }

    /// The event stream connection `part` opens instead of a WebSocket (`--sse`: the
    /// subscribers and idle connections), as a request target.
    pub(super) fn sse_target(&self, part: Part) -> Option<&str> {
        self.sse.as_deref().filter(|_| matches!(part, Part::Subscriber | Part::Idle))
    }

    /// Where connection `id` connects: publishers to the first target, the other
    /// connections round-robin to all of them.
    pub(super) fn target(&self, id: u32) -> &Target {
        &self.targets[self.target_index(id)]
    }

    /// The URL connection `id` connects to, as given.
    pub(super) fn url(&self, id: u32) -> &str {
        &self.urls[self.target_index(id)]
    }

    fn target_index(&self, id: u32) -> usize {
        let publishers = match self.scenario {
            Scenario::Fanout { publishers, .. } => publishers,
            _ => 0,
        };
        // Publishers come first (ids below `publishers`): they all count as 0, the first.
        (id as usize).saturating_sub(publishers) % self.targets.len()
    }

    /// Publishers sharing `--rate` (at least 1, so rates divide safely).
    pub(super) fn publishers(&self) -> usize {
        match self.scenario {
            Scenario::Fanout { publishers, .. } => publishers.max(1),
            _ => 1,
        }
    }

    /// `now` as a message timestamp: nanoseconds since the bench's epoch.
    pub(super) fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// How many throughput intervals the window has (the last one may be shorter).
    pub(super) fn throughput_intervals(&self) -> usize {
        let (window, interval) = (self.duration.as_nanos(), self.throughput_interval.as_nanos().max(1));
        usize::try_from(window.div_ceil(interval)).unwrap_or(usize::MAX)
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
        assert_eq!(p.target(0).path, "/relay/bench");
        let p = plan(&["fanout", "--rooms-protocol", "--all-publish", "--subscribers", "5"]).unwrap();
        assert_eq!((p.connections, p.part(0), p.target(0).path.as_str()), (5, Part::Broadcaster, "/ws"));
        assert_eq!(p.urls, ["ws://127.0.0.1:9001/ws"]);
        assert!(!p.settings.contains_key("urls"), "one URL: the report is as before");
        assert_eq!(p.room.as_deref(), Some("bench"));
    }

    #[test]
    fn subscribers_spread_round_robin_publishers_on_the_first_url() {
        let (a, b, c) = ("ws://127.0.0.1:9401/ws", "ws://127.0.0.1:9402/ws", "ws://127.0.0.1:9403/ws");
        let args = ["fanout", "--rooms-protocol", "--url", a, "--url", b, "--url", c];
        let p = plan(&[&args[..], &["--subscribers", "7", "--publishers", "2"]].concat()).unwrap();
        let ports: Vec<u16> = (0..p.connections as u32).map(|id| p.target(id).addr.port()).collect();
        assert_eq!(ports, [9401, 9401, 9401, 9402, 9403, 9401, 9402, 9403, 9401]);
        assert_eq!(p.settings["urls"], json!([a, b, c]));
        // Broadcast: everyone publishes, everyone is spread.
        let p = plan(&[&args[..], &["--all-publish", "--subscribers", "4"]].concat()).unwrap();
        let ports: Vec<u16> = (0..4).map(|id| p.target(id).addr.port()).collect();
        assert_eq!(ports, [9401, 9402, 9403, 9401]);
        assert!(plan(&[&args[..], &["--url", "http://127.0.0.1/"]].concat()).is_err(), "every URL is checked");
    }

    #[test]
    fn idle_connects_where_wsedge_serve_accepts_by_default() {
        let p = plan(&["idle"]).unwrap();
        assert_eq!(p.urls, ["ws://127.0.0.1:9001/ws"]);
    }

    /// Every `wsedge bench` line of the README's example block is a valid command line.
    #[test]
    fn readme_bench_examples_are_valid_plans() {
        let readme = include_str!("../../README.md");
        let examples: Vec<Vec<&str>> = readme
            .lines()
            .filter_map(|line| line.split_once("wsedge bench "))
            .filter(|(before, _)| before.ends_with("target/release/"))
            .map(|(_, args)| {
                let args = args.split_once(" #").map_or(args, |(args, _)| args);
                args.split_whitespace().map(|a| if a == "$!" { "1" } else { a }).collect()
            })
            .collect();
        assert!(examples.len() >= 5, "the README's bench examples: {examples:?}");
        for args in examples {
            assert!(plan(&args).is_ok(), "README: wsedge bench {}", args.join(" "));
        }
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
