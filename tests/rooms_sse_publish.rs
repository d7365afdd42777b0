//! Publishing from an event stream (issue 19): `POST /publish` names the stream by the
//! token of its `welcome` and publishes as that stream's member, with a socket publish's
//! checks and answers: membership, permissions, rate, size, `echo`, `ephemeral` and the
//! idempotency key; the reply's `ok` body, or the error with its code as the HTTP status;
//! 410 for a stream the node does not hold; origin rules and CORS for browsers. Through a
//! proxy that cuts connections, a publisher that sends again with the same key gets every
//! message published exactly once, in order.
//!
//! Runs on every engine: `.ci/run` runs the `rooms_*` tests again on Redis.

mod support;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use support::rooms::RoomClient;
use support::sse::{self, SseStream};
use support::{config, try_read_head, HttpReply, TestServer, ROOM_WORKERS};
use wsedge::rooms::auth::AuthConfig;
use wsedge::rooms::RoomsConfig;
use wsedge::server::access::AccessConfig;

const SECRET: &[u8] = b"an HS256 secret for the SSE publish tests only";

fn rooms() -> RoomsConfig {
    RoomsConfig { api_key: Some("k".to_owned()), ..RoomsConfig::default() }
}

/// A stream of `rooms`, opened and placed: its welcome (with the stream token).
fn stream(server: &TestServer, target: &str, rooms: usize) -> (SseStream, Value) {
    let mut stream = sse::open(server, target, &[]).unwrap_or_else(|(head, body)| panic!("{} {body}", head.status));
    let welcome = stream.next_event().json();
    for _ in 0..rooms {
        assert_eq!(stream.next_event().event, "joined");
    }
    (stream, welcome)
}

fn post(server: &TestServer, body: &Value, headers: &[&str]) -> HttpReply {
    server.http("POST", "/publish", headers, body.to_string().as_bytes())
}

/// The publish as a stream whose welcome is `welcome` sends it: its status and body.
fn publish(server: &TestServer, welcome: &Value, fields: Value) -> (u16, Value) {
    let mut body = fields;
    body["stream"] = welcome["stream"].clone();
    let reply = post(server, &body, &["Content-Type: text/plain;charset=UTF-8"]);
    (reply.head.status, reply.json())
}

#[test]
fn a_stream_publishes_as_its_member_with_the_sockets_answers() {
    let server = TestServer::rooms(rooms());
    let (mut events, welcome) = stream(&server, "/sse?room=chat", 1);
    let token = welcome["stream"].as_str().expect("a stream token in the welcome").to_owned();
    assert!(token.len() <= 64 && token.contains('.'), "{token}");
    let mut member = RoomClient::connect(&server);
    member.join("chat");

    let (status, reply) = publish(&server, &welcome, json!({"room": "chat", "data": {"text": "hi"}}));
    assert_eq!((status, reply), (200, json!({"room": "chat", "offset": 1})));
    let pushed = member.next_message();
    assert_eq!(pushed["from"]["client"], welcome["client"], "from the stream's own client id");
    assert_eq!(pushed["data"], json!({"text": "hi"}));
    let own = events.next_event();
    assert_eq!((own.event.as_str(), own.json()), ("message", pushed.clone()), "echo: the stream gets its own");

    // echo:false skips the stream's copy only; ephemeral has no offset; a repeated key
    // answers the first offset and publishes nothing.
    assert_eq!(publish(&server, &welcome, json!({"room": "chat", "data": 2, "echo": false})).1["offset"], 2);
    assert_eq!(member.next_message()["data"], 2);
    let (_, typing) = publish(&server, &welcome, json!({"room": "chat", "data": "t", "ephemeral": true}));
    assert_eq!(typing, json!({"room": "chat"}));
    assert_eq!(member.next_message()["data"], "t");
    let keyed = json!({"room": "chat", "data": 3, "key": "k-3"});
    assert_eq!(publish(&server, &welcome, keyed.clone()).1, json!({"room": "chat", "offset": 3}));
    assert_eq!(publish(&server, &welcome, keyed).1, json!({"room": "chat", "offset": 3, "duplicate": true}));
    assert_eq!(member.next_message()["offset"], 3);
    member.expect_nothing();
    let next = events.next_event().json();
    assert_eq!((next["data"].clone(), next["offset"].clone()), (json!("t"), Value::Null), "no echo of 2");
    assert_eq!(events.next_event().json()["offset"], 3);
}

/// What a socket asks with `presence` and `history`, a stream asks with `GET /presence`
/// and `GET /history`: the same answers, for its own rooms.
#[test]
fn a_stream_reads_presence_and_history_of_its_rooms() {
    let server = TestServer::rooms(rooms());
    let (_events, welcome) = stream(&server, "/sse?room=chat&presence=1", 1);
    let token = welcome["stream"].as_str().unwrap().to_owned();
    let mut member = RoomClient::connect(&server);
    member.join("chat");
    for n in 1..=3 {
        assert_eq!(publish(&server, &welcome, json!({"room": "chat", "data": n})).0, 200);
    }
    let get = |target: String| {
        let reply = server.http("GET", &target, &[], b"");
        (reply.head.status, reply.json())
    };
    let (status, history) = get(format!("/history?stream={token}&room=chat&limit=2"));
    assert_eq!(status, 200, "{history}");
    let offsets: Vec<u64> =
        history["messages"].as_array().unwrap().iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [2, 3], "the last two, as a socket's history request gets: {history}");
    let (status, presence) = get(format!("/presence?stream={token}&room=chat"));
    assert_eq!(status, 200, "{presence}");
    let mut clients: Vec<String> =
        presence["members"].as_array().unwrap().iter().map(|m| m["client"].as_str().unwrap().to_owned()).collect();
    clients.sort();
    let mut expected = vec![welcome["client"].as_str().unwrap().to_owned(), member.id.clone()];
    expected.sort();
    assert_eq!(clients, expected, "{presence}");
    let (status, by_user) = get(format!("/presence?stream={token}&room=chat&by=users"));
    assert_eq!((status, by_user["members"].as_array().map(Vec::len)), (200, Some(2)), "two anonymous users: {by_user}");
    // Its own rooms only; and what a socket would be refused.
    assert_eq!(get(format!("/history?stream={token}&room=other")).0, 404);
    assert_eq!(get(format!("/presence?stream={token}&room=other")).0, 404);
    assert_eq!(get(format!("/history?stream={token}&room=chat&limit=x")).0, 400);
    assert_eq!(get("/history?room=chat".to_owned()).1["error"]["message"], "missing field: stream");
    assert_eq!(get("/presence?stream=0.00&room=chat".to_owned()).0, 410);
    assert_eq!(server.http("POST", "/history", &[], b"{}").head.status, 405);
}

#[test]
fn refusals_carry_the_room_protocols_codes_and_reasons() {
    let server =
        TestServer::rooms(RoomsConfig { max_message_bytes: 64, publish_burst: 3.0, publish_rate: 0.01, ..rooms() });
    let (_events, welcome) = stream(&server, "/sse?room=chat", 1);
    let message = |(status, body): (u16, Value)| (status, body["error"]["message"].as_str().unwrap_or("").to_owned());
    let refused = |fields: Value| message(publish(&server, &welcome, fields));
    assert_eq!(refused(json!({"room": "other", "data": 1})), (404, "not a member of that room".to_owned()));
    assert_eq!(refused(json!({"room": "bad room", "data": 1})).0, 400);
    assert_eq!(refused(json!({"room": "chat"})), (400, "missing field: data".to_owned()));
    assert_eq!(refused(json!({"room": "chat", "data": "x".repeat(100)})), (413, "data over 64 bytes".to_owned()));
    assert_eq!(refused(json!({"op": "join", "room": "chat"})), (400, "unknown op: join".to_owned()));
    // A burst of three: the 404 and the 413 took one each (a socket's would too).
    assert_eq!(publish(&server, &welcome, json!({"room": "chat", "data": 0})).0, 200);
    assert_eq!(refused(json!({"room": "chat", "data": 9})), (429, "publish rate limit exceeded".to_owned()));

    let unknown = |body: Value| message((post(&server, &body, &[]).head.status, post(&server, &body, &[]).json()));
    let gone = (410, "no such stream".to_owned());
    assert_eq!(unknown(json!({"stream": "0.00", "room": "chat", "data": 1})), gone);
    assert_eq!(unknown(json!({"stream": "99.00", "room": "chat", "data": 1})), gone, "no such worker");
    assert_eq!(unknown(json!({"stream": "x", "room": "chat", "data": 1})), gone);
    assert_eq!(unknown(json!({"room": "chat", "data": 1})), (400, "missing field: stream".to_owned()));
    let reply = server.http("POST", "/publish", &[], b"not json");
    assert_eq!(reply.head.status, 400);
    let reply = server.http("GET", "/publish", &[], b"");
    assert_eq!((reply.head.status, reply.head.header("Allow")), (405, Some("POST, OPTIONS")));
}

#[test]
fn a_stream_that_ended_is_gone_and_its_tokens_permissions_hold() {
    let auth = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
    let server = TestServer::rooms(RoomsConfig { auth: Some(auth), ..rooms() });
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = json!({"sub": "ann", "exp": exp, "rooms": {"join": ["news", "chat"], "publish": ["chat"]}});
    let jwt = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
    let (events, welcome) = stream(&server, &format!("/sse?room=news&room=chat&token={jwt}"), 2);
    assert_eq!(welcome["user"], "ann");
    let (status, body) = publish(&server, &welcome, json!({"room": "news", "data": 1}));
    assert_eq!((status, body["error"]["message"].clone()), (403, json!("not allowed to publish here")));
    let mut member = RoomClient::connect(&server);
    member.join("chat");
    assert_eq!(publish(&server, &welcome, json!({"room": "chat", "data": 1})).0, 200);
    assert_eq!(member.next_message()["from"]["user"], "ann");
    drop(events);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = publish(&server, &welcome, json!({"room": "chat", "data": 2}));
        if status == 410 {
            break;
        }
        assert_eq!(status, 200, "until the server sees the stream closed");
        assert!(std::time::Instant::now() < deadline, "the ended stream's token still publishes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_worker_finds_every_stream() {
    // Streams on several workers, and each publish on a connection of its own: the
    // requests land on any worker, which hands them to the stream's.
    let server = TestServer::rooms(rooms());
    let streams: Vec<(SseStream, Value)> = (0..6).map(|_| stream(&server, "/sse?room=r", 1)).collect();
    let workers: std::collections::BTreeSet<&str> =
        streams.iter().map(|(_, w)| w["stream"].as_str().unwrap().split('.').next().unwrap()).collect();
    let mut member = RoomClient::connect(&server);
    member.join("r");
    let mut expected = 0;
    for round in 0..4 {
        for (_, welcome) in &streams {
            expected += 1;
            let (status, body) = publish(&server, welcome, json!({"room": "r", "data": round}));
            assert_eq!((status, body["offset"].as_u64()), (200, Some(expected)));
            let pushed = member.next_message();
            assert_eq!(
                (pushed["from"]["client"].clone(), pushed["offset"].as_u64()),
                (welcome["client"].clone(), Some(expected))
            );
        }
    }
    println!("streams on workers {workers:?}");
}

#[test]
fn browsers_get_the_origin_rules_and_cors() {
    let access =
        AccessConfig { allowed_origins: vec!["https://app.example.com".parse().unwrap()], ..AccessConfig::default() };
    let server = TestServer::rooms_with(wsedge::server::Config { access, workers: ROOM_WORKERS, ..config() }, rooms());
    let (_events, welcome) = stream(&server, "/sse?room=chat", 1);
    let body = json!({"stream": welcome["stream"], "room": "chat", "data": 1});
    let reply = post(&server, &body, &["Origin: https://evil.example.com"]);
    assert_eq!((reply.head.status, reply.head.header("Access-Control-Allow-Origin")), (403, None));
    assert_eq!(reply.json()["error"]["message"], "origin not allowed");
    let reply = post(&server, &body, &["Origin: https://app.example.com"]);
    assert_eq!(reply.head.status, 200);
    assert_eq!(reply.head.header("Access-Control-Allow-Origin"), Some("https://app.example.com"));
    let preflight = server.http(
        "OPTIONS",
        "/publish",
        &["Origin: https://app.example.com", "Access-Control-Request-Method: POST"],
        b"",
    );
    assert_eq!(preflight.head.status, 204);
    assert_eq!(preflight.head.header("Access-Control-Allow-Origin"), Some("https://app.example.com"));
    assert_eq!(preflight.head.header("Access-Control-Allow-Methods"), Some("POST, OPTIONS"));
    // A page reading its stream with `fetch` sends `Last-Event-ID` itself: asked first.
    let preflight = server.http(
        "OPTIONS",
        "/sse?room=chat",
        &["Origin: https://app.example.com", "Access-Control-Request-Headers: last-event-id"],
        b"",
    );
    assert_eq!(preflight.head.status, 204);
    assert_eq!(preflight.head.header("Access-Control-Allow-Origin"), Some("https://app.example.com"));
    assert_eq!(preflight.head.header("Access-Control-Allow-Headers"), Some("Last-Event-ID, Authorization"));
    let refused = server.http("OPTIONS", "/sse?room=chat", &["Origin: https://evil.example.com"], b"");
    assert_eq!(refused.head.status, 403);
}

/// Publishes through a proxy that cuts connections at random points (before the request,
/// in the middle of it, before the reply): a publisher that sends again with the same key
/// until it has an answer gets each message published once, in order, as a socket member
/// sees them.
#[test]
fn cut_at_random_points_resent_publishes_land_exactly_once_in_order() {
    use support::proxy::Proxy;
    const TOTAL: u64 = 300;
    let server = TestServer::rooms(RoomsConfig { history_size: TOTAL as usize, publish_burst: 1e6, ..rooms() });
    let proxy = Proxy::start(server.addr());
    let (_events, welcome) = stream(&server, "/sse?room=r", 1);
    let mut member = RoomClient::connect(&server);
    member.join("r");
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    println!("seed {seed}");
    let mut rng = seed;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let (mut attempts, mut duplicates) = (0, 0);
    for n in 1..=TOTAL {
        let body = json!({"stream": welcome["stream"], "room": "r", "data": n, "key": format!("m{n}")}).to_string();
        let request = support::http_request("POST", "/publish", &[], body.as_bytes());
        loop {
            attempts += 1;
            assert!(attempts < 20 * TOTAL, "too many attempts");
            let before = proxy.forwarded();
            let Ok(mut conn) = std::net::TcpStream::connect(proxy.addr()) else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let cut = next(4);
            if cut < 2 {
                proxy.wait_for_forwarded(before);
            }
            let sent = match cut {
                // Cut with half the request sent.
                0 => conn.write_all(&request[..request.len() / 2]).map(|()| proxy.cut_all()),
                // Cut right after the whole request: the reply may or may not come.
                1 => conn.write_all(&request).map(|()| proxy.cut_all()),
                _ => conn.write_all(&request),
            };
            if sent.is_err() {
                continue;
            }
            let Ok(reply) = try_read_reply(&mut conn) else { continue };
            assert_eq!(reply.head.status, 200, "{}", reply.text());
            let body = reply.json();
            assert_eq!(body["offset"], n, "the first offset, however often it was sent");
            duplicates += usize::from(body["duplicate"] == true);
            break;
        }
    }
    for n in 1..=TOTAL {
        let pushed = member.next_message();
        assert_eq!((pushed["offset"].as_u64(), pushed["data"].as_u64()), (Some(n), Some(n)), "once each, in order");
    }
    member.expect_nothing();
    println!(
        "{TOTAL} publishes once each: {attempts} attempts, {duplicates} answered as duplicates, {} cuts",
        proxy.cuts.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// A whole response, or why not (the connection was cut).
fn try_read_reply(conn: &mut std::net::TcpStream) -> Result<HttpReply, String> {
    use std::io::Read;
    let head = try_read_head(conn)?;
    let len: usize = head.header("Content-Length").and_then(|v| v.parse().ok()).ok_or("no Content-Length")?;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(HttpReply { head, body })
}
