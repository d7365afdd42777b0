//! The plain-HTTP surface of the room server (contract: "Backend API"), with a minimal
//! HTTP/1.1 client over `std::net`: `POST /api/publish` and `GET /api/rooms` behind the
//! bearer key (200, 401, 400, 413, 404 when off), `/healthz`, `/metrics` and its numbers
//! moving, keep-alive, an oversized body (413, then the connection closes) and a bad
//! request line (400, never a hang).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use support::rooms::{offset_of, RoomClient};
use support::{expect_eof, http_request, read_response, HttpReply, TestServer};
use wsedge::rooms::RoomsConfig;
use wsedge::server::Config;

const KEY: &str = "s3cret-key";
const AUTH: &str = "Authorization: Bearer s3cret-key";

fn rooms_config() -> RoomsConfig {
    RoomsConfig { api_key: Some(KEY.to_owned()), max_message_bytes: 1000, ..RoomsConfig::default() }
}

fn server() -> TestServer {
    TestServer::rooms(rooms_config())
}

fn publish(server: &TestServer, body: &Value) -> HttpReply {
    server.http("POST", "/api/publish", &[AUTH, "Content-Type: application/json"], body.to_string().as_bytes())
}

fn assert_json_error(reply: &HttpReply, status: u16) {
    assert_eq!(reply.head.status, status, "{:?}", reply.text());
    assert_eq!(reply.head.header("Content-Type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"]["code"], status, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[test]
fn publish_with_the_key_reaches_members_from_nobody() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("news");
    b.join("news");
    a.publish("news", json!("first"));
    let reply = publish(&server, &json!({"room": "news", "data": {"headline": "hello", "n": [1, 2]}}));
    assert_eq!(reply.head.status, 200, "{}", reply.text());
    assert_eq!(reply.head.header("Content-Type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"room": "news", "offset": 2}));
    for client in [&mut a, &mut b] {
        assert_eq!(offset_of(&client.next_message()), 1);
        assert_eq!(
            client.next_message(),
            json!({
                "op": "message", "room": "news", "offset": 2,
                "from": {"client": null, "user": null},
                "data": {"headline": "hello", "n": [1, 2]}
            })
        );
        client.expect_nothing();
    }
}

#[test]
fn publish_into_a_room_nobody_joined_keeps_it_for_later() {
    let server = server();
    for i in 1..=3 {
        let reply = publish(&server, &json!({"room": "later", "data": i}));
        assert_eq!(reply.json(), json!({"room": "later", "offset": i}));
    }
    let mut a = RoomClient::connect(&server);
    let ok = a.join("later");
    assert_eq!(ok["offset"], 3);
    let history = a.ok(json!({"op": "history", "room": "later"}));
    let data: Vec<&Value> = history["messages"].as_array().unwrap().iter().map(|m| &m["data"]).collect();
    assert_eq!(data, [&json!(1), &json!(2), &json!(3)]);
}

#[test]
fn a_missing_or_wrong_key_gets_401() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.join("r");
    let body = json!({"room": "r", "data": 1}).to_string();
    for headers in [
        &[][..],
        &["Authorization: Bearer wrong"][..],
        &["Authorization: Bearer s3cret-ke"][..],
        &["Authorization: Bearer s3cret-key2"][..],
        &["Authorization: Basic s3cret-key"][..],
        &["Authorization: s3cret-key"][..],
    ] {
        let reply = server.http("POST", "/api/publish", headers, body.as_bytes());
        assert_json_error(&reply, 401);
        assert_eq!(reply.head.header("WWW-Authenticate"), Some("Bearer"));
        let reply = server.http("GET", "/api/rooms", headers, b"");
        assert_json_error(&reply, 401);
    }
    a.expect_nothing(); // nothing was published
}

#[test]
fn a_bad_body_gets_400() {
    let server = server();
    for body in [
        &b""[..],
        b"not json",
        b"[1, 2]",
        b"{\"room\": \"r\"}",
        b"{\"data\": 1}",
        b"{\"room\": 5, \"data\": 1}",
        b"{\"room\": \"bad room\", \"data\": 1}",
        b"{\"room\": \"\", \"data\": 1}",
        b"{\"room\": \"r\", \"data\": 1",
        b"{\"room\": \"r\", \"data\": \"\xff\"}",
    ] {
        let reply = server.http("POST", "/api/publish", &[AUTH], body);
        assert_json_error(&reply, 400);
    }
    let rooms = server.http("GET", "/api/rooms", &[AUTH], b"").json();
    assert_eq!(rooms, json!({"rooms": []}), "no room was made");
}

#[test]
fn data_over_the_room_message_limit_gets_413() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.join("r");
    let reply = publish(&server, &json!({"room": "r", "data": "x".repeat(1000)}));
    assert_json_error(&reply, 413);
    a.expect_nothing();
    let reply = publish(&server, &json!({"room": "r", "data": "x".repeat(998)}));
    assert_eq!(reply.head.status, 200, "exactly at the limit");
}

#[test]
fn publish_into_a_new_room_on_a_full_server_gets_503() {
    let server = TestServer::rooms(RoomsConfig { max_rooms: 1, ..rooms_config() });
    assert_eq!(publish(&server, &json!({"room": "one", "data": 1})).head.status, 200);
    assert_json_error(&publish(&server, &json!({"room": "two", "data": 1})), 503);
    assert_eq!(publish(&server, &json!({"room": "one", "data": 2})).json(), json!({"room": "one", "offset": 2}));
}

#[test]
fn the_api_is_off_without_a_key() {
    let server = TestServer::rooms(RoomsConfig::default());
    let body = json!({"room": "r", "data": 1}).to_string();
    for (method, path) in [("POST", "/api/publish"), ("GET", "/api/rooms")] {
        for headers in [&[][..], &[AUTH][..], &["Authorization: Bearer "][..]] {
            let reply = server.http(method, path, headers, body.as_bytes());
            assert_json_error(&reply, 404);
        }
    }
    // The rest of the surface is there.
    assert_eq!(server.http("GET", "/healthz", &[], b"").head.status, 200);
}

#[test]
fn rooms_lists_every_room_with_members_and_offset() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("beta");
    b.join("beta");
    a.join("alpha");
    a.publish("beta", json!(1));
    a.publish("beta", json!(2));
    publish(&server, &json!({"room": "gamma", "data": 1}));
    let reply = server.http("GET", "/api/rooms", &[AUTH], b"");
    assert_eq!(reply.head.status, 200);
    assert_eq!(reply.head.header("Content-Type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!({"rooms": [
            {"room": "alpha", "members": 1, "offset": 0},
            {"room": "beta", "members": 2, "offset": 2},
            {"room": "gamma", "members": 0, "offset": 1},
        ]})
    );
    drop(b); // gone: no longer counted
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let rooms = server.http("GET", "/api/rooms", &[AUTH], b"").json();
        if rooms["rooms"][1] == json!({"room": "beta", "members": 1, "offset": 2}) {
            break;
        }
        assert!(Instant::now() < deadline, "the dropped member is still listed: {rooms}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 18: the backend reads presence and history of any room, without being a member,
/// in the shapes a member's `presence` and `history` replies have.
#[test]
fn the_backend_reads_presence_and_history_of_any_room() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    a.join("chat:1");
    for n in 1..=3 {
        a.publish("chat:1", json!({ "n": n }));
    }
    a.barrier();
    let get = |target: &str| server.http("GET", target, &[AUTH], b"");

    let reply = get("/api/presence?room=chat%3A1");
    assert_eq!(reply.head.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["room"], "chat:1");
    assert_eq!(body["members"], json!([{"client": a.id, "user": null}]));
    // A room that does not exist has nobody in it.
    assert_eq!(get("/api/presence?room=empty").json(), json!({"room": "empty", "members": []}));

    let body = get("/api/history?room=chat:1&limit=2").json();
    assert_eq!(body["offset"], 3, "{body}");
    assert!(body["epoch"].is_string(), "{body}");
    let offsets: Vec<u64> = body["messages"].as_array().unwrap().iter().map(offset_of).collect();
    assert_eq!(offsets, [2, 3], "the last 2, oldest first");
    assert_eq!(body["messages"][1]["data"], json!({"n": 3}));
    assert_eq!(get("/api/history?room=chat:1").json()["messages"].as_array().unwrap().len(), 3);

    assert_json_error(&get("/api/history?room=nowhere"), 404);
    assert_eq!(get("/api/history?room=nowhere").json()["error"]["message"], "no such room");
    for bad in [
        "/api/history",
        "/api/presence?room=",
        "/api/history?room=a%zz",
        "/api/history?room=r&limit=x",
        "/api/presence?room=r&limit=1",
    ] {
        assert_json_error(&get(bad), 400);
    }
    assert_json_error(&server.http("GET", "/api/presence?room=chat:1", &[], b""), 401);
    assert_eq!(server.http("POST", "/api/history?room=r", &[AUTH], b"").head.status, 405);
    // A member still needs to be one.
    let mut b = RoomClient::connect(&server);
    assert_eq!(b.error(json!({"op": "history", "room": "chat:1"})), 404);
}

#[test]
fn wrong_methods_and_unknown_endpoints() {
    let server = server();
    let reply = server.http("GET", "/api/publish", &[AUTH], b"");
    assert_json_error(&reply, 405);
    assert_eq!(reply.head.header("Allow"), Some("POST"));
    let reply = server.http("POST", "/api/rooms", &[AUTH], b"{}");
    assert_json_error(&reply, 405);
    assert_eq!(reply.head.header("Allow"), Some("GET"));
    assert_json_error(&server.http("GET", "/api/nothing", &[AUTH], b""), 404);
    assert_eq!(server.http("GET", "/nothing", &[], b"").head.status, 404);
    // A plain GET of the WebSocket endpoint asks for an upgrade.
    let reply = server.http("GET", "/ws", &[], b"");
    assert_eq!(reply.head.status, 426);
    assert_eq!(reply.head.header("Upgrade"), Some("websocket"));
}

#[test]
fn healthz_is_200() {
    let server = server();
    let reply = server.http("GET", "/healthz", &[], b"");
    assert_eq!(reply.head.status, 200);
    assert_eq!(reply.text(), "ok\n");
}

/// `/metrics` as a map from sample name (with labels) to value.
fn metrics(server: &TestServer) -> HashMap<String, f64> {
    let reply = server.http("GET", "/metrics", &[], b"");
    assert_eq!(reply.head.status, 200);
    assert!(reply.head.header("Content-Type").is_some_and(|t| t.starts_with("text/plain")));
    let mut samples = HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in reply.text().lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap_or_default().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let family = name.split('{').next().unwrap_or_default();
        // A histogram's samples are its family name with `_bucket`, `_sum` or `_count`.
        let histogram = ["_bucket", "_sum", "_count"].iter().filter_map(|s| family.strip_suffix(s)).next();
        assert!(
            typed.contains(family) || histogram.is_some_and(|h| typed.contains(h)),
            "sample {name} without a # TYPE line"
        );
        samples.insert(name.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    samples
}

fn metric(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// Polls `/metrics` until `done` holds (the server notices a gone client asynchronously).
fn metrics_until(server: &TestServer, done: impl Fn(&HashMap<String, f64>) -> bool) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let m = metrics(server);
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metrics never reached the expected state: {m:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn metrics_are_prometheus_text_and_the_numbers_move() {
    let server = server();
    let m0 = metrics(&server);
    for name in [
        "wsedge_connections",
        "wsedge_connections_total",
        "wsedge_messages_in_total",
        "wsedge_messages_out_total",
        "wsedge_bytes_in_total",
        "wsedge_bytes_out_total",
        "wsedge_http_requests_total",
        "wsedge_slow_consumer_closes_total",
        "wsedge_rooms",
        "wsedge_room_members",
        "wsedge_history_messages",
        "wsedge_history_bytes",
    ] {
        assert!(m0.contains_key(name), "{name} missing from /metrics");
    }
    assert_eq!(metric(&m0, "wsedge_connections"), 0.0);
    assert_eq!(metric(&m0, "wsedge_rooms"), 0.0);

    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("one");
    b.join("one");
    b.join("two");
    a.publish("one", json!("hello"));
    let m1 = metrics(&server);
    assert_eq!(metric(&m1, "wsedge_connections"), 2.0);
    assert_eq!(metric(&m1, "wsedge_connections_total"), 2.0);
    assert_eq!(metric(&m1, "wsedge_rooms"), 2.0);
    assert_eq!(metric(&m1, "wsedge_room_members"), 3.0);
    assert_eq!(metric(&m1, "wsedge_history_messages"), 1.0);
    assert!(metric(&m1, "wsedge_history_bytes") > 0.0);
    assert!(metric(&m1, "wsedge_messages_in_total") >= 4.0);
    assert!(metric(&m1, "wsedge_messages_out_total") > metric(&m0, "wsedge_messages_out_total"));
    assert!(metric(&m1, "wsedge_bytes_in_total") > metric(&m0, "wsedge_bytes_in_total"));
    assert!(metric(&m1, "wsedge_bytes_out_total") > metric(&m0, "wsedge_bytes_out_total"));
    assert!(metric(&m1, "wsedge_http_requests_total") > metric(&m0, "wsedge_http_requests_total"));

    // A client close with 1000, and an abrupt one.
    a.ws().close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).expect("close");
    a.read_until_close();
    drop(a);
    drop(b);
    let closed = r#"wsedge_closes_total{code="1000",initiator="client"}"#;
    // The transport counts a connection gone at once; its leave reaches the room's owner
    // worker over the mesh a moment later.
    let m2 =
        metrics_until(&server, |m| metric(m, "wsedge_connections") == 0.0 && metric(m, "wsedge_room_members") == 0.0);
    assert_eq!(metric(&m2, closed), metric(&m1, closed) + 1.0);
    assert_eq!(metric(&m2, "wsedge_abrupt_closes_total"), metric(&m1, "wsedge_abrupt_closes_total") + 1.0);
    assert_eq!(metric(&m2, "wsedge_room_members"), 0.0);
    assert_eq!(metric(&m2, "wsedge_rooms"), 2.0, "empty rooms wait for their TTL");
    assert_eq!(metric(&m2, "wsedge_connections_total"), 2.0);
}

#[test]
fn metrics_count_server_closes_by_code() {
    let server = TestServer::rooms(RoomsConfig { abuse_limit: 0, ..rooms_config() });
    let mut a = RoomClient::connect(&server);
    a.send_text("junk");
    let (_, frame) = a.read_until_close();
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Policy));
    let m = metrics(&server);
    assert_eq!(metric(&m, r#"wsedge_closes_total{code="1008",initiator="server"}"#), 1.0);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = server();
    let mut stream = server.tcp();
    stream.write_all(&http_request("GET", "/healthz", &[], b"")).unwrap();
    let first = read_response(&mut stream);
    assert_eq!(first.head.status, 200);
    assert_eq!(first.head.header("Connection"), None, "kept alive");
    let body = json!({"room": "r", "data": 1}).to_string();
    stream.write_all(&http_request("POST", "/api/publish", &[AUTH], body.as_bytes())).unwrap();
    let second = read_response(&mut stream);
    assert_eq!(second.json(), json!({"room": "r", "offset": 1}));
    // An error response keeps the connection too.
    stream.write_all(&http_request("POST", "/api/publish", &[], body.as_bytes())).unwrap();
    assert_eq!(read_response(&mut stream).head.status, 401);

    // Pipelined: three requests in one write, three responses in order.
    let mut batch = http_request("GET", "/api/rooms", &[AUTH], b"");
    batch.extend(http_request("POST", "/api/publish", &[AUTH], body.as_bytes()));
    batch.extend(http_request("GET", "/healthz", &["Connection: close"], b""));
    stream.write_all(&batch).unwrap();
    assert_eq!(read_response(&mut stream).json(), json!({"rooms": [{"room": "r", "members": 0, "offset": 1}]}));
    assert_eq!(read_response(&mut stream).json(), json!({"room": "r", "offset": 2}));
    let last = read_response(&mut stream);
    assert_eq!(last.head.status, 200);
    assert_eq!(last.head.header("Connection"), Some("close"));
    expect_eof(&mut stream);
}

/// A client that pipelines requests without reading the responses is not read from once
/// `write_high_water` bytes of responses wait for it (memory stays bounded); once it reads,
/// every request is answered, in order, none lost.
#[test]
fn pipelined_requests_from_a_client_that_does_not_read_wait_for_it() {
    // /metrics answers are ~3 KB: 5,000 of them are far more than the kernel's socket
    // buffers can hold on the way.
    const REQUESTS: usize = 5_000;
    let config = Config { write_high_water: 16 * 1024, ..support::config() };
    let server = TestServer::rooms_with(config, rooms_config());
    let mut stream = server.tcp();
    let mut batch = Vec::new();
    for _ in 0..REQUESTS - 1 {
        batch.extend(http_request("GET", "/metrics", &[], b""));
    }
    batch.extend(http_request("GET", "/metrics", &["Connection: close"], b""));
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        thread::spawn(move || stream.write_all(&batch))
    };
    // Do not read for a while: the server must stop reading rather than queue 20,000 answers.
    thread::sleep(Duration::from_millis(300));
    let m = metrics(&server);
    assert!(metric(&m, "wsedge_http_requests_total") < REQUESTS as f64, "all requests answered with no reader");
    let mut answered = 0;
    for _ in 0..REQUESTS {
        assert_eq!(read_response(&mut stream).head.status, 200);
        answered += 1;
    }
    assert_eq!(answered, REQUESTS);
    expect_eof(&mut stream);
    writer.join().unwrap().unwrap();
}

#[test]
fn a_body_arriving_in_pieces_is_waited_for() {
    let server = server();
    let mut stream = server.tcp();
    let body = json!({"room": "r", "data": "slow"}).to_string();
    let request = http_request("POST", "/api/publish", &[AUTH], body.as_bytes());
    let (first, rest) = request.split_at(request.len() - 5);
    stream.write_all(first).unwrap();
    thread::sleep(Duration::from_millis(50));
    stream.write_all(rest).unwrap();
    assert_eq!(read_response(&mut stream).json(), json!({"room": "r", "offset": 1}));
}

#[test]
fn a_body_over_max_body_bytes_gets_413_and_the_connection_closes() {
    let config = Config { max_body_bytes: 1024, ..support::config() };
    let server = TestServer::rooms_with(config, rooms_config());
    let mut stream = server.tcp();
    // Only the head: the server must answer on the declared length, without the body.
    stream
        .write_all(
            format!("POST /api/publish HTTP/1.1\r\nHost: t\r\n{AUTH}\r\nContent-Length: 1025\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let reply = read_response(&mut stream);
    assert_eq!(reply.head.status, 413);
    assert_eq!(reply.head.header("Connection"), Some("close"));
    expect_eof(&mut stream);

    // At the limit it is served (and a 413 from the room layer keeps the connection).
    let mut stream = server.tcp();
    let body = json!({"room": "r", "data": "x".repeat(1024 - 22)}).to_string();
    assert_eq!(body.len(), 1024);
    stream.write_all(&http_request("POST", "/api/publish", &[AUTH], body.as_bytes())).unwrap();
    let reply = read_response(&mut stream);
    assert_json_error(&reply, 413); // data over the room's 1000 bytes
    stream.write_all(&http_request("GET", "/healthz", &[], b"")).unwrap();
    assert_eq!(read_response(&mut stream).head.status, 200);
}

#[test]
fn a_bad_request_line_gets_400_and_never_hangs() {
    let server = server();
    for request in [
        &b"GARBAGE\r\n\r\n"[..],
        b"NOT A REQUEST\r\n\r\n",
        b"GET /healthz HTTP/1.1 extra\r\n\r\n",
        b"GET\x01/ HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello, no line end
    ] {
        let mut stream = server.tcp();
        stream.write_all(request).unwrap();
        let start = Instant::now();
        let reply = read_response(&mut stream);
        assert_eq!(reply.head.status, 400, "{:?}", String::from_utf8_lossy(request));
        assert!(start.elapsed() < Duration::from_secs(2), "answered only after {:?}", start.elapsed());
        expect_eof(&mut stream);
    }
    // A bad request after a good one on the same connection.
    let mut stream = server.tcp();
    let mut both = http_request("GET", "/healthz", &[], b"");
    both.extend_from_slice(b"BAD REQUEST LINE\r\n\r\n");
    stream.write_all(&both).unwrap();
    assert_eq!(read_response(&mut stream).head.status, 200);
    assert_eq!(read_response(&mut stream).head.status, 400);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("the server ends the connection");
    assert!(rest.is_empty());
}

#[test]
fn a_backend_publish_retried_with_its_key_is_published_once() {
    let server = server();
    let body = json!({"room": "r", "data": 1, "key": "order-17"});
    assert_eq!(publish(&server, &body).json(), json!({"room": "r", "offset": 1}));
    assert_eq!(publish(&server, &body).json(), json!({"room": "r", "offset": 1, "duplicate": true}));
    assert_json_error(&publish(&server, &json!({"room": "r", "data": 1, "key": ""})), 400);
}
