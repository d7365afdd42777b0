//! Server-Sent Events (issue 19): `GET /sse` with a raw HTTP client. A stream gets its
//! `welcome`, a `joined` event per room whose `id` places it, then every message as a
//! `message` event carrying the same JSON a socket gets and an `id` with every room's
//! epoch and offset; `Last-Event-ID` resumes each room exactly where it left off (missed
//! messages first, each once, in order), or says `reset` when that is lost; heartbeats;
//! refusals with the room protocol's codes; a stream that is not read is dropped.
//!
//! Runs on every engine: `.ci/run` runs the `rooms_*` tests again on Redis.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use support::rooms::RoomClient;
use support::sse::{self, Item, SseStream};
use support::{TestServer, ROOM_WORKERS};
use wsedge::rooms::auth::AuthConfig;
use wsedge::rooms::RoomsConfig;

const AUTH: &str = "Authorization: Bearer k";
const SECRET: &[u8] = b"an HS256 secret for the SSE tests only";

fn rooms() -> RoomsConfig {
    RoomsConfig { api_key: Some("k".to_owned()), ..RoomsConfig::default() }
}

fn server() -> TestServer {
    TestServer::rooms(rooms())
}

fn publish(server: &TestServer, room: &str, data: Value) -> u64 {
    let body = json!({"room": room, "data": data}).to_string();
    let reply = server.http("POST", "/api/publish", &[AUTH], body.as_bytes());
    assert_eq!(reply.head.status, 200, "{}", reply.text());
    reply.json()["offset"].as_u64().unwrap()
}

fn open(server: &TestServer, target: &str, headers: &[&str]) -> SseStream {
    sse::open(server, target, headers).unwrap_or_else(|(head, body)| panic!("refused: {} {body}", head.status))
}

/// The `welcome`, then one `joined` per room: the last `joined` event's id.
fn opened(stream: &mut SseStream, rooms: usize) -> String {
    let welcome = stream.next_event();
    assert_eq!((welcome.event.as_str(), welcome.json()["op"].clone()), ("welcome", json!("welcome")));
    assert!(welcome.id.is_none());
    let mut id = String::new();
    for _ in 0..rooms {
        let joined = stream.next_event();
        assert_eq!(joined.event, "joined", "{joined:?}");
        id = joined.id.expect("a joined event places the stream");
    }
    id
}

#[test]
fn a_stream_gets_every_message_with_an_id_that_says_where_it_is() {
    let server = server();
    let mut stream = open(&server, "/sse?room=news", &[]);
    let id = opened(&mut stream, 1);
    let (room, epoch, offset) = {
        let parts: Vec<&str> = id.split('~').collect();
        (parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned())
    };
    assert_eq!((room.as_str(), offset.as_str()), ("news", "0"));
    // A socket member sees the same pushes, byte for byte.
    let mut member = RoomClient::connect(&server);
    member.join("news");
    for n in 1..=5 {
        assert_eq!(publish(&server, "news", json!({"n": n})), n);
    }
    for n in 1..=5 {
        let event = stream.next_event();
        assert_eq!(event.event, "message");
        assert_eq!(event.id, Some(format!("news~{epoch}~{n}")));
        assert_eq!(event.json(), member.next_message(), "the same JSON as a socket's push");
    }
    // Data written across lines by a client stays one JSON value.
    member.send_text("{\"op\":\"publish\",\"room\":\"news\",\"data\":{\n\"text\":\n\"two lines\"}}");
    let event = stream.next_event();
    assert_eq!(event.json()["data"], json!({"text": "two lines"}));
    // Streams have gauges of their own (and are not counted as WebSocket connections).
    let metrics = |server: &TestServer| server.http("GET", "/metrics", &[], b"").text().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !metrics(&server).contains("\nwsedge_sse_streams 1\n") {
        assert!(std::time::Instant::now() < deadline, "{}", metrics(&server));
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = metrics(&server);
    assert!(text.contains("\nwsedge_sse_streams_total 1\n") && text.contains("\nwsedge_connections 1\n"), "{text}");
    assert!(
        text.contains("\nwsedge_clients{transport=\"websocket\"} 1\nwsedge_clients{transport=\"sse\"} 1\n"),
        "{text}"
    );
    drop(stream);
    while !metrics(&server).contains("\nwsedge_sse_streams 0\n") {
        assert!(std::time::Instant::now() < deadline, "{}", metrics(&server));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn last_event_id_resumes_every_room_where_it_left_off_each_message_once() {
    let server = server();
    let mut stream = open(&server, "/sse?room=a&room=b", &[]);
    opened(&mut stream, 2);
    publish(&server, "a", json!("a1"));
    publish(&server, "b", json!("b1"));
    publish(&server, "a", json!("a2"));
    let mut last = None;
    for _ in 0..3 {
        last = stream.next_event().id;
    }
    drop(stream);
    // While it is away.
    for data in ["a3", "a4"] {
        publish(&server, "a", json!(data));
    }
    publish(&server, "b", json!("b2"));
    let last = last.unwrap();
    let header = format!("Last-Event-ID: {last}");
    let mut stream = open(&server, "/sse?room=a&room=b", &[&header]);
    assert_eq!(stream.next_event().event, "welcome");
    let mut got: Vec<String> = Vec::new();
    let mut joined = 0;
    while joined < 2 {
        let event = stream.next_event();
        match event.event.as_str() {
            "message" => got.push(event.json()["data"].as_str().unwrap().to_owned()),
            "joined" => {
                joined += 1;
                assert_eq!(event.json()["recovered"], true, "{event:?}");
            }
            other => panic!("unexpected {other}: {event:?}"),
        }
    }
    // Each room's missed messages once each, in its order (rooms may interleave).
    let in_room = |room: char| got.iter().filter(|d| d.starts_with(room)).cloned().collect::<Vec<_>>();
    assert_eq!(
        (in_room('a'), in_room('b'), got.len()),
        (vec!["a3".to_owned(), "a4".to_owned()], vec!["b2".to_owned()], 3)
    );
    publish(&server, "b", json!("b3"));
    assert_eq!(stream.next_event().json()["data"], "b3");
}

#[test]
fn a_lost_position_is_a_reset_and_a_malformed_one_is_refused() {
    let server = server();
    let mut stream = open(&server, "/sse?room=r", &["Last-Event-ID: r~another.epoch~3"]);
    assert_eq!(stream.next_event().event, "welcome");
    let reset = stream.next_event();
    assert_eq!(reset.event, "reset", "{reset:?}");
    assert_eq!(reset.json()["op"], "reset");
    assert!(reset.id.is_some_and(|id| id.starts_with("r~") && id.ends_with("~0")));
    for (bad, target) in [("Last-Event-ID: r~e1", "/sse?room=r"), ("Last-Event-ID: r~e1~x", "/sse?room=r")] {
        let (head, body) = sse::open(&server, target, &[bad]).err().expect("refused");
        assert_eq!(
            (head.status, body.as_str()),
            (400, r#"{"error":{"code":400,"message":"malformed Last-Event-ID"}}"#)
        );
    }
    for (target, status, message) in [
        ("/sse", 400, "missing field: room"),
        ("/sse?room=a%20b", 400, "room must be 1-128 bytes of [A-Za-z0-9_.:-]"),
        ("/sse?room=r&presence=maybe", 400, "field presence has the wrong type"),
    ] {
        let (head, body) = sse::open(&server, target, &[]).err().expect("refused");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((head.status, body["error"]["message"].clone()), (status, json!(message)), "{target}");
    }
}

#[test]
fn a_gap_older_than_the_history_is_a_reset_with_no_message_then_delivery_goes_on() {
    let server = TestServer::rooms(RoomsConfig { history_size: 2, ..rooms() });
    let mut stream = open(&server, "/sse?room=r", &[]);
    let id = opened(&mut stream, 1);
    drop(stream);
    for n in 1..=5 {
        publish(&server, "r", json!(n));
    }
    // Offsets 1-3 have aged out of a history of 2: continuity is lost, whatever is kept.
    let header = format!("Last-Event-ID: {id}");
    let mut stream = open(&server, "/sse?room=r", &[&header]);
    assert_eq!(stream.next_event().event, "welcome");
    let reset = stream.next_event();
    assert_eq!((reset.event.as_str(), reset.json()["room"].clone()), ("reset", json!("r")), "{reset:?}");
    assert_eq!(publish(&server, "r", json!(6)), 6);
    loop {
        let event = stream.next_event();
        match event.event.as_str() {
            "message" => {
                assert_eq!(event.json()["offset"], 6, "no message from before the reset: {event:?}");
                break;
            }
            "joined" => assert_eq!(event.json()["recovered"], false, "{event:?}"),
            other => panic!("unexpected {other}: {event:?}"),
        }
    }
}

/// The transport's admission rules hold for streams as for upgrades (the per-IP count
/// 429, `max_connections` 503), so do the room layer's (`--max-rooms-per-connection`);
/// every refusal to an allowed origin carries its CORS header, so a page reading the
/// stream with `fetch` sees the status.
#[test]
fn streams_are_admitted_as_upgrades_are_and_refusals_tell_allowed_origins_why() {
    use wsedge::server::access::AccessConfig;
    const APP: &str = "Origin: https://app.example.com";
    let refusal = |server: &TestServer, target: &str, headers: &[&str]| {
        let (head, body) = sse::open(server, target, headers).err().expect("refused");
        (head.status, head.header("Access-Control-Allow-Origin").map(str::to_owned), body)
    };
    let allowed = Some("https://app.example.com".to_owned());
    let access = AccessConfig {
        allowed_origins: vec!["https://app.example.com".parse().unwrap()],
        max_conns_per_ip: Some(1),
        ..AccessConfig::default()
    };
    let rooms_limited = RoomsConfig { max_rooms_per_connection: 2, ..rooms() };
    let config = wsedge::server::Config { access, workers: ROOM_WORKERS, ..support::config() };
    let server = TestServer::rooms_with(config, rooms_limited);
    let (status, cors, body) = refusal(&server, "/sse?room=a&room=b&room=c", &[APP]);
    assert_eq!((status, cors.clone()), (503, allowed.clone()), "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["message"],
        "too many rooms for one connection (max 2)"
    );
    let (status, cors, _) = refusal(&server, "/sse", &[APP]);
    assert_eq!((status, cors), (400, allowed.clone()));
    let (status, cors, body) = refusal(&server, "/sse?room=a", &["Origin: https://evil.example.com"]);
    assert_eq!((status, cors), (403, None), "{body}");
    let mut first = open(&server, "/sse?room=a&room=b", &[APP]);
    assert_eq!(first.head.header("Access-Control-Allow-Origin"), allowed.as_deref());
    opened(&mut first, 2);
    let (status, cors, body) = refusal(&server, "/sse?room=a", &[APP]);
    assert_eq!((status, cors, body.as_str()), (429, allowed.clone(), "too many connections from this address\n"));
    drop(first);

    let config = wsedge::server::Config { max_connections: 1, workers: ROOM_WORKERS, ..support::config() };
    let server = TestServer::rooms_with(config, rooms());
    let mut first = open(&server, "/sse?room=a", &[]);
    opened(&mut first, 1);
    let (status, _, body) = refusal(&server, "/sse?room=a", &[]);
    assert_eq!((status, body.as_str()), (503, "too many connections\n"));
}

#[test]
fn heartbeats_keep_a_quiet_stream_open_and_presence_comes_when_asked() {
    assert_eq!(RoomsConfig::default().sse_heartbeat, Duration::from_secs(15), "the default docs/protocol.md names");
    let server = TestServer::rooms(RoomsConfig { sse_heartbeat: Duration::from_millis(200), ..rooms() });
    let mut watching = open(&server, "/sse?room=r&presence=1", &[]);
    opened(&mut watching, 1);
    let mut quiet = open(&server, "/sse?room=r", &[]);
    let quiet_client = quiet.next_event().json()["client"].clone();
    assert_eq!(quiet.next_event().event, "joined");
    let mut member = RoomClient::connect(&server);
    member.join("r");
    // A stream is a member as a socket is: both are seen joining.
    for client in [quiet_client, json!(member.id)] {
        let join = watching.next_event();
        assert_eq!((join.event.as_str(), join.json()["member"]["client"].clone()), ("join", client));
    }
    // Nothing for the stream that did not ask; both get heartbeats meanwhile.
    let mut heartbeats = 0;
    while heartbeats < 2 {
        match quiet.next_item() {
            Some(Item::Comment(_)) => heartbeats += 1,
            other => panic!("the quiet stream got {other:?}"),
        }
    }
}

#[test]
fn tokens_and_permissions_hold_as_on_a_socket() {
    let mut auth = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
    auth.require_auth = true;
    let rooms = RoomsConfig { auth: Some(auth), max_conns_per_user: 1, ..rooms() };
    let server = TestServer::rooms(rooms);
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = json!({"sub": "ann", "exp": exp, "rooms": {"join": ["news"], "publish": [], "presence": []}});
    let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
    let refused = |target: &str| {
        let (head, body) = sse::open(&server, target, &[]).err().expect("refused");
        (head.status, serde_json::from_str::<Value>(&body).unwrap()["error"]["message"].clone())
    };
    assert_eq!(refused("/sse?room=news"), (401, json!("a token is required (Authorization: Bearer, or ?token=)")));
    assert_eq!(refused("/sse?room=news&token=nope").0, 401);
    assert_eq!(refused(&format!("/sse?room=other&token={token}")), (403, json!("not allowed to join this room")));
    assert_eq!(refused(&format!("/sse?room=news&presence=1&token={token}")).0, 403);
    let mut stream = open(&server, &format!("/sse?room=news&token={token}"), &[]);
    let welcome = stream.next_event();
    assert_eq!(welcome.json()["user"], "ann");
    let bearer = format!("Authorization: Bearer {token}");
    let (head, _) = sse::open(&server, "/sse?room=news", &[&bearer]).err().expect("ann's one connection is open");
    assert_eq!(head.status, 429);
}

#[test]
fn a_stream_that_is_not_read_is_dropped_not_buffered_without_end() {
    let config = wsedge::server::Config { workers: ROOM_WORKERS, max_outbound_bytes: 256 * 1024, ..support::config() };
    let server = TestServer::rooms_with(config, rooms());
    let mut stream = open(&server, "/sse?room=r", &[]);
    opened(&mut stream, 1);
    let big = "x".repeat(60_000);
    // Far more than the socket buffers and the cap hold, never read meanwhile.
    for _ in 0..400 {
        publish(&server, "r", json!(big));
    }
    let mut received = 0;
    while stream.next_item_or_end().is_some() {
        received += 1;
        assert!(received < 400, "every event arrived: the stream was never dropped");
    }
    assert!(!stream.silent(), "the stream went quiet instead of ending");
    let metrics = server.http("GET", "/metrics", &[], b"").text().to_owned();
    assert!(!metrics.contains("\nwsedge_slow_consumer_closes_total 0\n"), "{metrics}");
    assert!(metrics.contains("\nwsedge_slow_consumer_closes_total "), "{metrics}");
}

/// Nothing lost, nothing twice: a stream through a proxy that cuts it at random points
/// while messages flow reconnects with its `Last-Event-ID` each time (as `EventSource`
/// does), and every offset arrives exactly once, in order.
#[test]
fn cut_at_random_points_a_resuming_stream_gets_every_offset_exactly_once_in_order() {
    use support::proxy::Proxy;
    const TOTAL: u64 = 800;
    // History covers every message: however long a reconnect takes on a loaded machine,
    // nothing ages out (that would be a `reset`, tested above).
    let server = TestServer::rooms(RoomsConfig { history_size: TOTAL as usize, ..rooms() });
    let proxy = Proxy::start(server.addr());
    let mut next = support::seeded_rng();
    let mut last_id: Option<String> = None;
    let mut got: Vec<u64> = Vec::new();
    let mut connects = 0;
    std::thread::scope(|scope| {
        let mut publisher = None;
        while (got.len() as u64) < TOTAL {
            let header = last_id.as_ref().map(|id| format!("Last-Event-ID: {id}"));
            let headers: Vec<&str> = header.iter().map(String::as_str).collect();
            connects += 1;
            assert!(connects < 2_000, "too many reconnects: {got:?}");
            let Some(mut stream) = sse::open_at(proxy.addr(), "/sse?room=r", &headers) else { continue };
            let mut seen: Vec<String> = Vec::new();
            while let Some(item) = stream.next_item_or_end() {
                let Item::Event(event) = item else { continue };
                seen.push(format!("{} {:?}", event.event, event.id));
                match event.event.as_str() {
                    "message" => {
                        let offset = event.json()["offset"].as_u64().unwrap();
                        assert_eq!(offset, got.len() as u64 + 1, "in order, once: after {:?}", got.last());
                        got.push(offset);
                    }
                    "joined" => assert!(last_id.is_none() || event.json()["recovered"] == true, "{event:?}"),
                    "welcome" => {}
                    other => panic!("unexpected {other}: {event:?}"),
                }
                if event.id.is_some() {
                    last_id = event.id;
                }
                // Once placed in the room, messages start to flow, and the cuts with them.
                if publisher.is_none() && last_id.is_some() {
                    let server = &server;
                    publisher = Some(scope.spawn(move || {
                        for n in 1..=TOTAL {
                            publish(server, "r", json!(n));
                        }
                    }));
                }
                if got.len() as u64 == TOTAL {
                    break;
                }
                if next(40) == 0 {
                    proxy.cut_all();
                }
            }
            assert!(
                !stream.silent(),
                "a stream went silent at {} of {TOTAL} (sent {headers:?}; got {seen:?})",
                got.len()
            );
        }
    });
    assert_eq!(got, (1..=TOTAL).collect::<Vec<_>>());
    println!(
        "{TOTAL} offsets once each across {} cuts, {connects} connections",
        proxy.cuts.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// A stream is one of its user's connections: a message to the user reaches it as an
/// event, and a disconnect tells it so (`close`, 4001) before its last chunk.
#[test]
fn a_stream_is_reached_as_its_users_and_told_when_disconnected() {
    let rooms = RoomsConfig { auth: Some(AuthConfig::default().with_hs256_secret(SECRET).unwrap()), ..rooms() };
    let server = TestServer::rooms(rooms);
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let token =
        encode(&Header::new(Algorithm::HS256), &json!({"sub": "ann", "exp": exp}), &EncodingKey::from_secret(SECRET))
            .unwrap();
    let mut stream = open(&server, &format!("/sse?room=r&token={token}"), &[]);
    opened(&mut stream, 1);
    let api = |path: &str, body: Value| server.http("POST", path, &[AUTH], body.to_string().as_bytes()).json();
    assert_eq!(api("/api/publish", json!({"user": "ann", "data": "hi"}))["connections"], 1);
    let event = stream.next_event();
    assert_eq!(
        (event.event.as_str(), event.id.clone(), event.json()),
        ("message", None, json!({"op": "message", "user": "ann", "data": "hi"}))
    );
    assert_eq!(api("/api/disconnect", json!({"user": "ann"}))["connections"], 1);
    let close = stream.next_event();
    assert_eq!(
        (close.event.as_str(), close.json()),
        ("close", json!({"code": 4001, "reason": "disconnected by the server"}))
    );
    assert!(stream.ends(), "then the last chunk");
}

/// A room that cannot be joined (here: full) is an `error` event with the room protocol's
/// code; a stream left in no room at all ends, and its browser tries again later.
#[test]
fn a_stream_whose_every_join_failed_ends_after_saying_why() {
    let server = TestServer::rooms(RoomsConfig { max_members_per_room: 1, ..rooms() });
    let mut member = RoomClient::connect(&server);
    member.join("full");
    let mut stream = open(&server, "/sse?room=full&room=open", &[]);
    assert_eq!(stream.next_event().event, "welcome");
    let mut events: Vec<(String, Value)> =
        (0..2).map(|_| stream.next_event()).map(|e| (e.event.clone(), e.json())).collect();
    events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(events[0], ("error".to_owned(), json!({"room": "full", "code": 503, "message": "room full"})));
    assert_eq!(events[1].0, "joined", "the other room is joined: the stream stays");
    publish(&server, "open", json!("still here"));
    assert_eq!(stream.next_event().json()["data"], "still here");
    let mut alone = open(&server, "/sse?room=full", &[]);
    assert_eq!(alone.next_event().event, "welcome");
    assert_eq!(alone.next_event().json()["code"], 503);
    assert!(alone.ends(), "in no room: the stream ends");
}
