//! `wsedge bench` end to end: each scenario runs for about a second against a server on an
//! ephemeral port (in this process, so `--server-pid` is this process), and its JSON report
//! must be sane: connections open, messages counted and timed, no errors.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use wsedge::rooms::RoomsConfig;
use wsedge::server::Config;

use support::TestServer;

fn run_bench(args: &[&str]) -> Output {
    let pid = std::process::id().to_string();
    Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .arg("bench")
        .args(args)
        .args(["--json", "--duration", "1", "--warmup", "0.2", "--server-pid", &pid])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wsedge bench")
}

/// Runs a scenario that must succeed and returns its report.
fn bench(args: &[&str]) -> Value {
    let out = run_bench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wsedge bench {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stderr}"))
}

/// Every connection opened, none failed or dropped, nothing went wrong.
fn assert_clean(report: &Value, connections: u64) {
    assert_eq!(report["connections_open"], connections, "{report:#}");
    assert_eq!(report["connections_failed"], 0, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["connections_dropped"], 0, "{report:#}");
    assert_eq!(report["connections_open_at_end"], connections, "{report:#}");
    let server = &report["server"];
    assert!(server["cpu_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{report:#}");
    assert!(server["rss_before_bytes"].as_u64().is_some_and(|b| b > 0), "{report:#}");
}

/// Messages flowed and every delivery was timed.
fn assert_traffic(report: &Value) {
    let messages = report["messages"].as_u64().unwrap_or(0);
    let deliveries = report["deliveries"].as_u64().unwrap_or(0);
    assert!(messages > 0 && deliveries >= messages, "{report:#}");
    assert!(report["messages_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{report:#}");
    assert!(report["mb_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{report:#}");
    let latency = &report["latency_us"];
    assert_eq!(latency["samples"].as_u64(), Some(deliveries), "{report:#}");
    let (p50, p99, max) = (latency["p50"].as_f64(), latency["p99"].as_f64(), latency["max"].as_f64());
    assert!(matches!((p50, p99, max), (Some(a), Some(b), Some(c)) if 0.0 < a && a <= b && b <= c), "{report:#}");
    assert!(report["server"]["cpu_seconds_per_million_messages"].as_f64().is_some(), "{report:#}");
}

#[test]
fn echo_times_every_round_trip() {
    let server = TestServer::echo();
    let report = bench(&["echo", "--url", &server.url(), "--connections", "20", "--depth", "4", "--size", "32"]);
    assert_clean(&report, 20);
    assert_traffic(&report);
    assert_eq!(report["messages"], report["deliveries"]);
    let report =
        bench(&["echo", "--url", &server.url(), "--connections", "2", "--size", "16384", "--binary", "--threads", "2"]);
    assert_clean(&report, 2);
    assert_traffic(&report);
}

#[test]
fn fanout_over_the_relay_reaches_every_member() {
    let server = TestServer::rooms(RoomsConfig::default());
    let url = server.url_at("/relay/bench");
    let report = bench(&["fanout", "--url", &url, "--subscribers", "20", "--publishers", "2", "--size", "64"]);
    assert_clean(&report, 22);
    assert_traffic(&report);
    // Every publish reaches all 22 members (the relay includes the sender); the window's
    // edges cut a few either way.
    let (messages, deliveries) = (report["messages"].as_f64().unwrap(), report["deliveries"].as_f64().unwrap());
    assert!(deliveries > messages * 15.0 && deliveries < messages * 30.0, "{report:#}");
    assert!(report["server"]["cpu_seconds_per_million_deliveries"].as_f64().is_some(), "{report:#}");
    let server = &report["server"];
    assert_eq!(server["cpu_seconds_per_million_publishes"], server["cpu_seconds_per_million_messages"], "{report:#}");
}

#[test]
fn broadcast_has_every_member_publish() {
    let server = TestServer::rooms(RoomsConfig::default());
    let url = server.url_at("/relay/all");
    let report = bench(&["fanout", "--all-publish", "--url", &url, "--subscribers", "10", "--size", "20"]);
    assert_eq!(report["scenario"], "broadcast");
    assert_clean(&report, 10);
    assert_traffic(&report);
}

#[test]
fn fanout_over_the_room_protocol_holds_its_rate() {
    let rooms = RoomsConfig { publish_rate: 1e9, publish_burst: 1e9, ..RoomsConfig::default() };
    let server = TestServer::rooms(rooms);
    let url = server.url_at("/ws");
    let report = bench(&["fanout", "--rooms-protocol", "--url", &url, "--subscribers", "10", "--rate", "200"]);
    assert_clean(&report, 11);
    assert_traffic(&report);
    let rate = report["messages_per_sec"].as_f64().unwrap();
    assert!((140.0..=260.0).contains(&rate), "asked for 200/s: {report:#}");
}

#[test]
fn event_streams_subscribe_and_hold_as_sockets_do() {
    let rooms = RoomsConfig { publish_rate: 1e9, publish_burst: 1e9, ..RoomsConfig::default() };
    let server = TestServer::rooms(rooms);
    let url = server.url_at("/ws");
    // Every subscriber reads `GET /sse`: every delivery to it is timed.
    let report = bench(&["fanout", "--rooms-protocol", "--sse", "--url", &url, "--subscribers", "10", "--rate", "200"]);
    assert_eq!(report["settings"]["transport"], "sse", "{report:#}");
    assert_clean(&report, 11);
    assert_traffic(&report);
    let (messages, deliveries) = (report["messages"].as_f64().unwrap(), report["deliveries"].as_f64().unwrap());
    assert!(deliveries > messages * 8.0, "each publish reaches the 10 streams and the publisher: {report:#}");
    let report = bench(&["idle", "--sse", "--url", &url, "--connections", "30"]);
    assert_clean(&report, 30);
    assert!(report["server"]["rss_growth_per_connection_bytes"].is_number(), "{report:#}");
}

#[test]
fn idle_connections_stay_up_and_answer_pings() {
    // Pings every 400 ms, and a connection silent for 800 ms is dropped: only answered
    // pings keep these connections (the bench runs 1.2 s).
    let config = Config { ping_interval: Duration::from_millis(400), ..support::config() };
    let server = TestServer::start(config);
    let report = bench(&["idle", "--url", &server.url(), "--connections", "50"]);
    assert_clean(&report, 50);
    assert!(report["pings_answered"].as_u64().is_some_and(|n| n >= 50), "{report:#}");
    assert!(report["server"]["rss_growth_per_connection_bytes"].is_number(), "{report:#}");
}

#[test]
fn a_server_that_is_not_there_is_reported_as_failed_connections() {
    // A port bound but not listening: connects are refused, and no other test's server can
    // take it meanwhile (as it could a port bound and released).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    let out = run_bench(&["echo", "--url", &format!("ws://127.0.0.1:{port}/"), "--connections", "3"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("a report even when nothing connected");
    assert_eq!(report["connections_failed"], 3, "{report:#}");
    let reasons = report["failures"].as_object().unwrap();
    assert!(reasons.keys().any(|r| r.contains("refused")), "{report:#}");
}
