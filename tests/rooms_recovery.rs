//! Recovery and history (contract: "Ordering and recovery"): a client that dropped and
//! rejoins with `since` gets exactly the messages it missed, in order, then live ones,
//! never one twice nor one before its join reply; partial recovery when history is short
//! or aged out; nothing from another epoch; `history` with and without `limit`; an empty
//! room dropped after its TTL comes back with a new epoch.
//!
//! Real time only for the TTL, with a 1 s TTL and a 50 ms tick.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::rooms::{offset_of, RoomClient};
use support::TestServer;
use wsedge::rooms::RoomsConfig;
use wsedge::server::Config;

const KEY: &str = "recovery-key";

fn rooms_config() -> RoomsConfig {
    RoomsConfig { publish_rate: 10_000.0, publish_burst: 10_000.0, ..RoomsConfig::default() }
}

fn server() -> TestServer {
    TestServer::rooms(rooms_config())
}

/// Joins `room` with `since` and returns the `ok` body.
fn join_since(client: &mut RoomClient, room: &str, epoch: &str, offset: u64) -> Value {
    client.ok(json!({"op": "join", "room": room, "since": {"epoch": epoch, "offset": offset}}))
}

fn epoch_of(ok: &Value) -> String {
    ok["epoch"].as_str().unwrap_or_else(|| panic!("no epoch in {ok}")).to_owned()
}

fn offsets(messages: &Value) -> Vec<u64> {
    messages.as_array().unwrap_or_else(|| panic!("not an array: {messages}")).iter().map(offset_of).collect()
}

#[test]
fn rejoin_with_since_recovers_exactly_the_missed_messages() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    let epoch = epoch_of(&a.join("r"));
    b.join("r");
    for i in 1..=3 {
        b.publish("r", json!({"n": i}));
    }
    assert_eq!(b.barrier().len(), 3, "b's own copies");
    let seen: Vec<Value> = (0..3).map(|_| a.next_message()).collect();
    let last = offset_of(&seen[2]);
    assert_eq!(last, 3);
    drop(a); // gone without a close

    let mut published = Vec::new();
    for i in 4..=8 {
        b.publish("r", json!({"n": i}));
        published.push(b.next_message());
    }
    // b's own copies are exactly what a missed.
    b.expect_nothing();

    let mut a = RoomClient::connect(&server);
    let ok = join_since(&mut a, "r", &epoch, last);
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(ok["epoch"], epoch.as_str());
    assert_eq!(ok["offset"], 8);
    assert_eq!(ok["missed"], Value::Array(published), "missed holds the live messages byte for byte");
    a.expect_nothing();

    // Live again, from the next offset.
    b.publish("r", json!({"n": 9}));
    assert_eq!(offset_of(&a.next_message()), 9);
}

#[test]
fn since_the_current_offset_recovers_nothing_and_is_complete() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let epoch = epoch_of(&a.join("r"));
    a.publish("r", json!(1));
    let mut b = RoomClient::connect(&server);
    let ok = join_since(&mut b, "r", &epoch, 1);
    assert_eq!(ok["recovered"], true);
    assert_eq!(ok["missed"], json!([]));
}

#[test]
fn live_messages_during_the_rejoin_arrive_after_the_reply_once_each() {
    let server = TestServer::rooms(RoomsConfig { history_size: 1000, ..rooms_config() });
    let mut watcher = RoomClient::connect(&server);
    let epoch = epoch_of(&watcher.join("r"));
    let mut publisher = RoomClient::connect(&server);
    publisher.join("r");
    for i in 0..10 {
        publisher.publish("r", json!(i));
    }
    let since = 10;
    drop(watcher);

    // The publisher keeps publishing on its own thread while the client rejoins.
    const MORE: u64 = 300;
    let stream = thread::spawn(move || {
        for i in 0..MORE {
            publisher.write(&json!({"op": "publish", "room": "r", "data": i, "echo": false}));
            if i % 10 == 0 {
                publisher.flush();
                thread::sleep(Duration::from_micros(200));
            }
        }
        publisher.flush();
        publisher.barrier(); // every publish handled
    });
    thread::sleep(Duration::from_millis(5)); // let some of them be missed
    let mut client = RoomClient::connect(&server);
    client.send(&json!({"id": "rejoin", "op": "join", "room": "r", "since": {"epoch": epoch, "offset": since}}));
    // Nothing of the room may come before the reply: it is the first frame.
    let reply = client.next();
    assert_eq!(reply["id"], "rejoin", "the join reply must come first, got {reply}");
    let ok = &reply["ok"];
    assert_eq!(ok["recovered"], true, "{reply}");
    let mut got = offsets(&ok["missed"]);
    assert_eq!(got.last().copied().unwrap_or(since), ok["offset"].as_u64().unwrap(), "missed ends at the offset");
    stream.join().expect("publisher thread");
    let last = since + MORE;
    while got.last().copied().unwrap_or(since) < last {
        got.push(offset_of(&client.next_message()));
    }
    assert_eq!(got, (since + 1..=last).collect::<Vec<_>>(), "every message once, in order");
    client.expect_nothing();
}

#[test]
fn short_history_recovers_partially_with_what_is_kept() {
    let server = TestServer::rooms(RoomsConfig { history_size: 3, ..rooms_config() });
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    let epoch = epoch_of(&a.join("r"));
    b.join("r");
    b.publish("r", json!(1));
    assert_eq!(offset_of(&a.next_message()), 1);
    drop(a);
    for i in 2..=10 {
        b.publish("r", json!(i));
    }
    let mut a = RoomClient::connect(&server);
    let ok = join_since(&mut a, "r", &epoch, 1);
    assert_eq!(ok["recovered"], false, "offsets 2..=7 were dropped: {ok}");
    assert_eq!(offsets(&ok["missed"]), [8, 9, 10], "the kept ones after since, in order");
    assert_eq!(ok["offset"], 10);

    // From an offset whose successors are all kept, recovery is complete again.
    let mut c = RoomClient::connect(&server);
    let ok = join_since(&mut c, "r", &epoch, 7);
    assert_eq!(ok["recovered"], true, "{ok}");
    assert_eq!(offsets(&ok["missed"]), [8, 9, 10]);
}

#[test]
fn another_epoch_recovers_nothing() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let epoch = epoch_of(&a.join("r"));
    for i in 0..3 {
        a.publish("r", json!(i));
    }
    let mut b = RoomClient::connect(&server);
    let ok = join_since(&mut b, "r", "some-other-epoch", 1);
    assert_eq!(ok["recovered"], false);
    assert_eq!(ok["missed"], json!([]));
    assert_eq!(ok["epoch"], epoch.as_str(), "the reply names the current epoch");
    assert_eq!(ok["offset"], 3);
    // b is a member all the same.
    a.publish("r", json!("live"));
    assert_eq!(b.next_message()["data"], "live");

    // An offset from the future of this epoch means nothing either.
    let mut c = RoomClient::connect(&server);
    let ok = join_since(&mut c, "r", &epoch, 99);
    assert_eq!(ok["recovered"], false);
    assert_eq!(ok["missed"], json!([]));
}

#[test]
fn history_returns_the_last_messages_oldest_first() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let epoch = epoch_of(&a.join("r"));
    for i in 1..=5 {
        a.publish("r", json!(i));
    }
    let seen: Vec<Value> = (0..5).map(|_| a.next_message()).collect();
    let ok = a.ok(json!({"op": "history", "room": "r", "limit": 2}));
    assert_eq!(ok["room"], "r");
    assert_eq!(ok["epoch"], epoch.as_str());
    assert_eq!(ok["offset"], 5);
    assert_eq!(ok["messages"], json!([seen[3], seen[4]]));
    let ok = a.ok(json!({"op": "history", "room": "r"}));
    assert_eq!(ok["messages"], Value::Array(seen.clone()));
    let ok = a.ok(json!({"op": "history", "room": "r", "limit": 0}));
    assert_eq!(ok["messages"], json!([]));
    let ok = a.ok(json!({"op": "history", "room": "r", "limit": 1000}));
    assert_eq!(ok["messages"], Value::Array(seen));
}

#[test]
fn history_limit_defaults_to_100() {
    // The contract: `limit` (default 100), whatever the history size.
    let server = TestServer::rooms(RoomsConfig { history_size: 150, ..rooms_config() });
    let mut a = RoomClient::connect(&server);
    a.join("r");
    for i in 0..120 {
        a.write(&json!({"op": "publish", "room": "r", "data": i, "echo": false}));
    }
    a.flush();
    let ok = a.ok(json!({"op": "history", "room": "r"}));
    assert_eq!(offsets(&ok["messages"]), (21..=120).collect::<Vec<_>>());
    let ok = a.ok(json!({"op": "history", "room": "r", "limit": 150}));
    assert_eq!(ok["messages"].as_array().unwrap().len(), 120);
}

/// The history TTL of [`ttl_server`]: long enough that a loaded machine finishes the steps
/// a test expects to happen within it.
const TTL: Duration = Duration::from_millis(1000);

/// A server with a [`TTL`] history TTL, a 50 ms tick and the backend API on (to watch the
/// room list).
fn ttl_server() -> TestServer {
    let config = Config { tick_interval: Duration::from_millis(50), ..support::config() };
    let rooms = RoomsConfig { history_ttl: TTL, api_key: Some(KEY.to_owned()), ..rooms_config() };
    TestServer::rooms_with(config, rooms)
}

/// The room's entry in `GET /api/rooms`, if it exists.
fn listed(server: &TestServer, room: &str) -> Option<Value> {
    let reply = server.http("GET", "/api/rooms", &[&format!("Authorization: Bearer {KEY}")], b"");
    assert_eq!(reply.head.status, 200);
    reply.json()["rooms"].as_array().unwrap().iter().find(|r| r["room"] == room).cloned()
}

#[test]
fn an_empty_room_is_dropped_after_its_ttl_and_returns_with_a_new_epoch() {
    let server = ttl_server();
    let mut a = RoomClient::connect(&server);
    let epoch = epoch_of(&a.join("r"));
    a.publish("r", json!(1));
    a.publish("r", json!(2));
    let left = Instant::now();
    a.ok(json!({"op": "leave", "room": "r"}));
    assert_eq!(listed(&server, "r"), Some(json!({"room": "r", "members": 0, "offset": 2})), "kept while empty");

    let deadline = left + TTL * 3;
    while listed(&server, "r").is_some() {
        assert!(Instant::now() < deadline, "the empty room was never dropped");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(left.elapsed() >= TTL, "dropped before its TTL: {:?}", left.elapsed());

    let ok = join_since(&mut a, "r", &epoch, 2);
    assert_ne!(epoch_of(&ok), epoch, "a recreated room has a new epoch");
    assert_eq!(ok["offset"], 0);
    assert_eq!(ok["recovered"], false);
    assert_eq!(ok["missed"], json!([]));
    let history = a.ok(json!({"op": "history", "room": "r"}));
    assert_eq!(history["messages"], json!([]));
}
