//! Users, not just connections (issue 18), on a server of several workers, one user's
//! connections spread over them: presence by user (one entry with the number of
//! connections, one `join` for the first connection in and one `leave` for the last out),
//! messages to a user from the backend API (to every connection of that user and nobody
//! else, in the order the API accepted them, the reply counting them), and
//! `POST /api/disconnect` (every connection of that user closed with 4001).
//!
//! Runs on every engine: `.ci/run` runs the `rooms_*` tests again on Redis.

mod support;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

use support::rooms::{RoomClient, PATH};
use support::{HttpReply, TestServer};
use wsedge::rooms::auth::AuthConfig;
use wsedge::rooms::RoomsConfig;

const SECRET: &[u8] = b"an HS256 secret for the user tests only";
const AUTH: &str = "Authorization: Bearer s3cret-key";

fn server() -> TestServer {
    let rooms = RoomsConfig {
        auth: Some(AuthConfig::default().with_hs256_secret(SECRET).unwrap()),
        api_key: Some("s3cret-key".to_owned()),
        max_message_bytes: 1000,
        ..RoomsConfig::default()
    };
    TestServer::rooms(rooms)
}

fn token(sub: &str, info: Option<Value>) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
    let mut claims = json!({"sub": sub, "exp": exp});
    if let Some(info) = info {
        claims["info"] = info;
    }
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn connect_as(server: &TestServer, token: &str) -> RoomClient {
    let mut request = server.url_at(PATH).into_client_request().unwrap();
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    RoomClient::connect_with(server, request)
}

/// The worker a client id comes from (`<worker's node>-<n>`).
fn worker_of(client: &RoomClient) -> String {
    client.id.rsplit_once('-').map(|(node, _)| node.to_owned()).unwrap()
}

/// `n` connections of the user of `token`, on at least two workers (connections are spread
/// by the kernel: more are opened until that holds, and the extra ones closed).
fn spread_connections(server: &TestServer, token: &str, n: usize) -> Vec<RoomClient> {
    let mut open: Vec<RoomClient> = Vec::new();
    for _ in 0..64 {
        open.push(connect_as(server, token));
        let workers: BTreeSet<String> = open.iter().map(worker_of).collect();
        if open.len() >= n && workers.len() >= 2 {
            // Keep `n` of them, the last one opened (on another worker than some) included.
            let last = open.pop().unwrap();
            let other = open.iter().position(|c| worker_of(c) != worker_of(&last)).unwrap();
            let first = open.swap_remove(other);
            let mut kept = vec![first, last];
            kept.extend(open.drain(..).take(n - 2));
            return kept;
        }
    }
    panic!("64 connections all landed on one worker");
}

fn api(server: &TestServer, path: &str, body: &Value) -> HttpReply {
    server.http("POST", path, &[AUTH, "Content-Type: application/json"], body.to_string().as_bytes())
}

fn ann_info() -> Value {
    json!({"name": "Ann Lee", "avatar": "/a/ann.png"})
}

#[test]
fn a_user_with_three_connections_is_one_entry_with_one_join_and_one_leave() {
    let server = server();
    let mut watcher = connect_as(&server, &token("walt", None));
    watcher.ok(json!({"op": "join", "room": "r", "presence": "users"}));
    let mut by_connection = connect_as(&server, &token("cora", None));
    by_connection.ok(json!({"op": "join", "room": "r", "presence": true}));
    assert_eq!(watcher.barrier(), [json!({"op": "join", "room": "r", "member": {"user": "cora"}})]);

    let ann_token = token("ann", Some(ann_info()));
    let mut ann = spread_connections(&server, &ann_token, 3);
    for conn in &mut ann {
        conn.join("r");
    }
    let ann_entry = json!({"user": "ann", "info": ann_info()});
    let mut joined = ann_entry.clone();
    assert_eq!(watcher.barrier(), [json!({"op": "join", "room": "r", "member": joined.take()})], "one join for three");
    let events = by_connection.barrier();
    assert_eq!(events.len(), 3, "by connection, three joins: {events:?}");
    assert!(events.iter().all(|e| e["member"]["user"] == "ann" && e["member"]["client"].is_string()));

    // The list, asked by a member watching users: one entry per user, with its connections.
    let list = watcher.ok(json!({"op": "presence", "room": "r"}));
    let mut entries = list["members"].as_array().unwrap().clone();
    entries.sort_by_key(|e| e["user"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        entries,
        [
            json!({"user": "ann", "info": ann_info(), "connections": 3}),
            json!({"user": "cora", "connections": 1}),
            json!({"user": "walt", "connections": 1}),
        ]
    );
    // The backend asks the same with `?by=users`; by connection it sees five entries.
    let reply = server.http("GET", "/api/presence?room=r&by=users", &[AUTH], b"");
    let all = reply.json();
    let users: Vec<&Value> = all["members"].as_array().unwrap().iter().filter(|e| e["user"] == "ann").collect();
    assert_eq!(users, [&json!({"user": "ann", "info": ann_info(), "connections": 3})]);
    let reply = server.http("GET", "/api/presence?room=r", &[AUTH], b"");
    assert_eq!(reply.json()["members"].as_array().unwrap().len(), 5);
    assert_eq!(server.http("GET", "/api/presence?room=r&by=rooms", &[AUTH], b"").head.status, 400);

    // Two leave (one closes, one leaves): no event by user; the last one out: one leave.
    let mut last = ann.pop().unwrap();
    last.ok(json!({"op": "leave", "room": "r"}));
    drop(ann.pop());
    let mut list = watcher.ok(json!({"op": "presence", "room": "r"}));
    while list["members"].as_array().unwrap().iter().any(|e| e["user"] == "ann" && e["connections"] != 1) {
        // The closed connection's leave is on its way (the server saw the close).
        std::thread::sleep(std::time::Duration::from_millis(10));
        list = watcher.ok(json!({"op": "presence", "room": "r"}));
    }
    assert_eq!(watcher.barrier(), [] as [Value; 0], "ann is still in the room");
    ann[0].ok(json!({"op": "leave", "room": "r"}));
    assert_eq!(watcher.barrier(), [json!({"op": "leave", "room": "r", "member": ann_entry})]);
    assert_eq!(by_connection.barrier().len(), 3, "by connection, three leaves");
}

#[test]
fn anonymous_connections_are_each_a_user_of_their_own() {
    let server = TestServer::rooms(RoomsConfig::default());
    let mut watcher = RoomClient::connect(&server);
    watcher.ok(json!({"op": "join", "room": "r", "presence": "users"}));
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    let member = |c: &RoomClient| json!({"client": c.id, "user": null});
    assert_eq!(
        watcher.barrier(),
        [
            json!({"op": "join", "room": "r", "member": member(&a)}),
            json!({"op": "join", "room": "r", "member": member(&b)})
        ]
    );
    let list = watcher.ok(json!({"op": "presence", "room": "r"}));
    assert_eq!(list["members"].as_array().unwrap().len(), 3);
    assert!(list["members"].as_array().unwrap().iter().all(|e| e["connections"] == 1 && e["client"].is_string()));
    let gone = member(&a);
    drop(a);
    assert_eq!(
        watcher.next(),
        json!({"op": "leave", "room": "r", "member": gone}),
        "an anonymous user's only connection"
    );
}

#[test]
fn a_message_to_a_user_reaches_every_connection_of_that_user_in_order_and_nobody_else() {
    let server = server();
    let mut ann = spread_connections(&server, &token("ann", Some(ann_info())), 3);
    let mut bob = connect_as(&server, &token("bob", None));
    let mut anon = RoomClient::connect(&server);
    // In a room or not makes no difference.
    ann[0].join("r");
    bob.join("r");

    for n in 1..=20 {
        let reply = api(&server, "/api/publish", &json!({"user": "ann", "data": {"n": n}}));
        assert_eq!(reply.head.status, 200, "{}", reply.text());
        assert_eq!(reply.json(), json!({"user": "ann", "connections": 3}));
    }
    for conn in &mut ann {
        for n in 1..=20 {
            assert_eq!(conn.next(), json!({"op": "message", "user": "ann", "data": {"n": n}}), "in the API's order");
        }
        conn.expect_nothing();
    }
    bob.expect_nothing();
    anon.expect_nothing();

    // Nobody of that name: reached nobody. Not a room message: no room, no offset, no history.
    assert_eq!(api(&server, "/api/publish", &json!({"user": "zed", "data": 1})).json()["connections"], 0);
    assert_eq!(bob.ok(json!({"op": "history", "room": "r"}))["messages"], json!([]));

    // Refusals, with their reasons.
    for (body, status, message) in [
        (json!({"user": "ann", "room": "r", "data": 1}), 400, "name a room or a user, not both"),
        (json!({"user": "", "data": 1}), 400, "user must be a string of 1-256 bytes"),
        (json!({"user": ["ann"], "data": 1}), 400, "user must be a string of 1-256 bytes"),
        (json!({"user": "ann"}), 400, "missing field: data"),
        (
            json!({"user": "ann", "data": 1, "key": "k1"}),
            400,
            "key works with room only: messages to a user are not kept",
        ),
        (json!({"user": "ann", "data": "x".repeat(1000)}), 413, "data over 1000 bytes"),
    ] {
        let reply = api(&server, "/api/publish", &body);
        assert_eq!((reply.head.status, reply.json()["error"]["message"].clone()), (status, json!(message)), "{body}");
    }
    // A client cannot send one: `publish` needs a room.
    assert_eq!(bob.error(json!({"op": "publish", "user": "ann", "data": 1})), 400);
    for conn in &mut ann {
        conn.expect_nothing();
    }
}

#[test]
fn disconnect_closes_every_connection_of_that_user_with_4001() {
    let server = server();
    let ann_token = token("ann", None);
    let mut ann = spread_connections(&server, &ann_token, 3);
    let mut bob = connect_as(&server, &token("bob", None));
    let mut watcher = RoomClient::connect(&server);
    watcher.ok(json!({"op": "join", "room": "r", "presence": "users"}));
    for conn in &mut ann {
        conn.join("r");
    }
    bob.join("r");
    assert_eq!(watcher.barrier().len(), 2, "ann and bob joined");

    let reply = api(&server, "/api/disconnect", &json!({"user": "ann"}));
    assert_eq!((reply.head.status, reply.json()), (200, json!({"user": "ann", "connections": 3})));
    // Being closed, they are no longer ann's: not counted again, not sent her messages.
    assert_eq!(api(&server, "/api/disconnect", &json!({"user": "ann"})).json()["connections"], 0);
    assert_eq!(api(&server, "/api/publish", &json!({"user": "ann", "data": 1})).json()["connections"], 0);
    for conn in &mut ann {
        let (_, frame) = conn.read_until_close();
        let frame = frame.expect("a close frame");
        assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4001, "disconnected by the server"));
    }
    // Ann left the room with her connections; bob is untouched.
    assert_eq!(watcher.next(), json!({"op": "leave", "room": "r", "member": {"user": "ann"}}));
    bob.expect_nothing();
    assert_eq!(bob.publish("r", json!("still here")), 1);

    // Nobody left to disconnect; ann may connect again (a new token is the backend's call).
    assert_eq!(api(&server, "/api/disconnect", &json!({"user": "ann"})).json()["connections"], 0);
    let mut again = connect_as(&server, &ann_token);
    again.join("r");
    for (body, message) in
        [(json!({}), "missing field: user"), (json!({"user": 1}), "user must be a string of 1-256 bytes")]
    {
        let reply = api(&server, "/api/disconnect", &body);
        assert_eq!((reply.head.status, reply.json()["error"]["message"].clone()), (400, json!(message)));
    }
    let get = server.http("GET", "/api/disconnect", &[AUTH], b"");
    assert_eq!((get.head.status, get.head.header("Allow")), (405, Some("POST")));
    let no_key = server.http("POST", "/api/disconnect", &[], br#"{"user":"ann"}"#);
    assert_eq!(no_key.head.status, 401);
    again.expect_nothing();
}

/// The Rust client (`wsedge::client::rooms`) hands a message to its user over as its own
/// event, and stops for good on 4001: it does not undo the backend's disconnect.
#[test]
fn the_rust_client_takes_user_messages_and_stays_out_after_a_disconnect() {
    use std::time::{Duration, Instant};
    use wsedge::client::rooms::{JoinOptions, RoomClient as Client, RoomEvent};

    let server = server();
    let mut client = Client::new(&server.url_at(PATH)).unwrap().with_token(token("ann", None));
    client.join("r", JoinOptions::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = false;
    let mut got = None;
    let stopped = loop {
        assert!(Instant::now() < deadline, "never stopped (user message: {got:?})");
        match client.next_event(Duration::from_millis(50)) {
            Some(RoomEvent::Joined { .. }) if !sent => {
                sent = true;
                let reply = api(&server, "/api/publish", &json!({"user": "ann", "data": {"n": 1}}));
                assert_eq!(reply.json()["connections"], 1);
            }
            Some(RoomEvent::UserMessage { user, data }) => {
                got = Some((user, data));
                assert_eq!(api(&server, "/api/disconnect", &json!({"user": "ann"})).json()["connections"], 1);
            }
            Some(RoomEvent::Stopped { reason }) => break reason,
            _ => {}
        }
    };
    assert_eq!(got, Some(("ann".to_owned(), json!({"n": 1}))));
    assert!(stopped.contains("4001") && stopped.contains("disconnected by the server"), "{stopped}");
    assert_eq!(client.next_event(Duration::from_millis(300)), None, "no reconnect after 4001");
}

/// A raw relay connection speaks no JSON: a message to its user skips it (and does not
/// count it), but a disconnect closes it with 4001 like the others.
#[test]
fn relay_connections_are_disconnected_but_not_sent_json() {
    let server = server();
    let ann_token = token("ann", None);
    let mut protocol = connect_as(&server, &ann_token);
    let mut request = server.url_at("/relay/game").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {ann_token}")).unwrap());
    let (mut relay, _) = tungstenite::client(request, server.stream()).expect("the relay upgrade");

    let reply = api(&server, "/api/publish", &json!({"user": "ann", "data": "hi"}));
    assert_eq!(reply.json()["connections"], 1, "the relay connection is not counted");
    assert_eq!(protocol.next(), json!({"op": "message", "user": "ann", "data": "hi"}));

    assert_eq!(api(&server, "/api/disconnect", &json!({"user": "ann"})).json()["connections"], 2);
    let frame = match relay.read() {
        Ok(tungstenite::Message::Close(frame)) => frame.expect("a close frame"),
        other => panic!("the relay connection got {other:?} (nothing before its close)"),
    };
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4001, "disconnected by the server"));
    let (_, frame) = protocol.read_until_close();
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(4001));
}
