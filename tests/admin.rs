//! The operator's live view (issue 20): `GET /admin` exists only with an API key and is
//! served with a strict Content-Security-Policy; `GET /api/admin/stream` is refused without
//! the key (401, the API's JSON error) and otherwise sends one `stats` event per tick, built
//! from the counters `/metrics` renders (every worker's) and the engine's room list; it
//! works behind an origin allow-list.
//!
//! Runs on every engine: with `WSEDGE_TEST_ENGINE=redis` the snapshot carries the store link.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::rooms::RoomClient;
use support::sse::{self, SseStream};
use support::{config, TestServer, ROOM_WORKERS};
use wsedge::rooms::RoomsConfig;
use wsedge::server::access::AccessConfig;
use wsedge::server::Config;

const AUTH: &str = "Authorization: Bearer k";

fn keyed() -> RoomsConfig {
    RoomsConfig { api_key: Some("k".to_owned()), ..RoomsConfig::default() }
}

fn stream(server: &TestServer, headers: &[&str]) -> SseStream {
    sse::open(server, "/api/admin/stream", headers).unwrap_or_else(|(h, body)| panic!("refused: {} {body}", h.status))
}

/// The next `stats` event's JSON.
fn next_stats(stream: &mut SseStream) -> Value {
    let event = stream.next_event();
    assert_eq!(event.event, "stats", "{event:?}");
    event.json()
}

fn publish(server: &TestServer, room: &str, n: u64) {
    let body = json!({"room": room, "data": {"n": n}}).to_string();
    let reply = server.http("POST", "/api/publish", &[AUTH], body.as_bytes());
    assert_eq!(reply.head.status, 200, "{}", reply.text());
}

#[test]
fn the_page_exists_only_with_a_key_and_forbids_inline_script() {
    let open = TestServer::rooms(RoomsConfig::default());
    for path in ["/admin", "/admin.js", "/admin.css"] {
        assert_eq!(open.http("GET", path, &[], b"").head.status, 404, "{path} without an API key");
    }
    let server = TestServer::rooms(keyed());
    let page = server.http("GET", "/admin", &[], b"");
    assert_eq!(page.head.status, 200, "the page is static: no key needed to load it");
    assert_eq!(page.head.header("Content-Type"), Some("text/html; charset=utf-8"));
    let csp = page.head.header("Content-Security-Policy").expect("a policy");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    assert!(page.text().contains("admin.js"));
    let script = server.http("GET", "/admin.js", &[], b"");
    assert_eq!(script.head.header("Content-Type"), Some("text/javascript; charset=utf-8"));
    assert!(script.text().contains("Authorization: `Bearer ${key}`"), "every request carries the key");
    assert!(script.text().contains("sessionStorage"), "the key is kept for the tab only");
}

#[test]
fn the_stream_is_refused_without_the_right_key() {
    let server = TestServer::rooms(keyed());
    for headers in [&[][..], &["Authorization: Bearer wrong"][..], &["Authorization: Basic k"][..]] {
        let (head, body) = sse::open(&server, "/api/admin/stream", headers).err().expect("refused");
        assert_eq!(head.status, 401, "{headers:?}");
        assert_eq!(head.header("Content-Type"), Some("application/json"));
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], 401, "{body}");
    }
    let (head, _) = sse::open(&TestServer::rooms(RoomsConfig::default()), "/api/admin/stream", &[AUTH]).err().unwrap();
    assert_eq!(head.status, 404, "no key configured: no API, no stream");
    let post = server.http("POST", "/api/admin/stream", &[AUTH], b"");
    assert_eq!((post.head.status, post.head.header("Allow")), (405, Some("GET")));
}

#[test]
fn each_tick_sends_a_snapshot_of_every_worker_and_the_busiest_rooms() {
    let server = TestServer::rooms(keyed());
    let mut admin = stream(&server, &[AUTH]);
    let first = next_stats(&mut admin);
    for field in ["at_ms", "users", "transport", "workers", "rooms", "store"] {
        assert!(first.get(field).is_some(), "{field} missing from {first}");
    }
    assert_eq!(first["workers"].as_array().map(Vec::len), Some(ROOM_WORKERS));
    for field in ["connections", "messages_in", "messages_out", "bytes_in", "bytes_out", "slow_consumer_closes"] {
        assert!(first["transport"][field].is_u64(), "{field} in {}", first["transport"]);
    }
    assert_eq!(first["transport"]["streams"], 1, "the admin stream itself");
    if std::env::var("WSEDGE_TEST_ENGINE").as_deref() == Ok("redis") {
        assert_eq!(first["store"]["up"], true, "the Redis link: {}", first["store"]);
        assert!(first["store"]["round_trips"].is_u64());
    } else {
        assert!(first["store"].is_null(), "rooms in memory: no store");
    }
    assert!(first["rooms"]["history_bytes"].is_u64());

    // Traffic: a member in "busy", three messages there; a quiet room with two members.
    let mut member = RoomClient::connect(&server);
    member.join("busy");
    let (mut a, mut b) = (RoomClient::connect(&server), RoomClient::connect(&server));
    a.join("quiet");
    b.join("quiet");
    for n in 1..=3 {
        publish(&server, "busy", n);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let s = next_stats(&mut admin);
        let traffic = s["rooms"]["top_traffic"].as_array().cloned().unwrap_or_default();
        if s["transport"]["connections"] == 3 && traffic.iter().any(|r| r["room"] == "busy") {
            break s;
        }
        assert!(Instant::now() < deadline, "no snapshot showed the traffic: {s}");
    };
    assert_eq!(seen["rooms"]["top_members"][0]["room"], "quiet");
    assert_eq!(seen["rooms"]["top_members"][0]["members"], 2);
    assert!(seen["transport"]["messages_out"].as_u64().unwrap() >= 3, "deliveries counted");
    let per_worker: u64 = seen["workers"].as_array().unwrap().iter().map(|w| w["connections"].as_u64().unwrap()).sum();
    assert_eq!(per_worker, 3, "the workers' connections add up to the total");

    // The same bookkeeping as /metrics.
    let metrics = server.http("GET", "/metrics", &[], b"");
    assert!(metrics.text().contains("\nwsedge_connections 3\n"), "{}", metrics.text());
    assert!(metrics.text().contains("wsedge_loop_busy_seconds_total "), "{}", metrics.text());
}

#[test]
fn the_stream_works_behind_an_origin_allow_list() {
    let access =
        AccessConfig { allowed_origins: vec!["https://ops.example.com".parse().unwrap()], ..Default::default() };
    let server = TestServer::rooms_with(Config { workers: 1, access, ..config() }, keyed());
    // A same-origin `fetch` GET sends no Origin; a cross-origin one the allowed origin.
    let mut plain = stream(&server, &[AUTH]);
    assert!(next_stats(&mut plain)["transport"].is_object());
    let mut allowed = stream(&server, &[AUTH, "Origin: https://ops.example.com"]);
    assert_eq!(allowed.head.header("Access-Control-Allow-Origin"), Some("https://ops.example.com"));
    assert!(next_stats(&mut allowed)["transport"].is_object());
    let (head, _) = sse::open(&server, "/api/admin/stream", &[AUTH, "Origin: https://evil.example"]).err().unwrap();
    assert_eq!(head.status, 403);
}
