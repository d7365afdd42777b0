//! Every limit and every rejected request has its defined outcome (contract: the error
//! codes; "A malformed request never closes the connection by itself; sustained abuse may
//! (1008)"): 400 for malformed requests and binary frames with the connection left open,
//! 404 without membership, 413 over the message limit, 429 over the publish rate, 503 when
//! a connection, a room or the server is full, close 1008 for sustained abuse, close 1009
//! for a frame over the transport limit, close 1013 for a member that does not read while
//! its room is flooded (and not for the members that do).
//!
//! Real time only for the rate limit and the abuse window, with small configured values.

mod support;

use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

use support::rooms::{offset_of, RoomClient};
use support::TestServer;
use wsedge::rooms::RoomsConfig;
use wsedge::server::Config;

fn server_with(rooms: RoomsConfig) -> TestServer {
    TestServer::rooms(rooms)
}

/// The error reply's code for a frame sent without an id; checks the id is null.
fn error_without_id(client: &mut RoomClient) -> u64 {
    let reply = client.next();
    assert_eq!(reply["id"], Value::Null, "{reply}");
    assert!(reply["error"]["message"].is_string(), "{reply}");
    reply["error"]["code"].as_u64().unwrap_or_else(|| panic!("not an error: {reply}"))
}

#[test]
fn malformed_requests_get_400_and_the_connection_stays_open() {
    let server = server_with(RoomsConfig::default());
    let mut a = RoomClient::connect(&server);
    for text in [
        "",
        "not json",
        "{\"op\":\"join\",\"room\":\"r\"",           // truncated
        "[{\"op\":\"ping\"}]",                       // not an object
        "\"ping\"",                                  // not an object
        "{\"op\":\"join\",\"room\":\"r\"} trailing", // two values
        "{\"id\":true,\"op\":\"ping\"}",             // id neither number nor string
        "{\"id\":[1],\"op\":\"ping\"}",
    ] {
        a.send_text(text);
        assert_eq!(error_without_id(&mut a), 400, "{text:?}");
    }
    for request in [
        json!({}),                         // no op
        json!({"op": 5}),                  // ill-typed op
        json!({"op": "dance"}),            // unknown op
        json!({"op": "join"}),             // missing room
        json!({"op": "join", "room": 7}),  // ill-typed room
        json!({"op": "join", "room": ""}), // invalid room name
        json!({"op": "join", "room": "a b"}),
        json!({"op": "join", "room": "x".repeat(129)}),
        json!({"op": "join", "room": "r", "presence": "yes"}),
        json!({"op": "join", "room": "r", "since": 3}),
        json!({"op": "join", "room": "r", "since": {"epoch": "e"}}),
        json!({"op": "join", "room": "r", "since": {"epoch": 1, "offset": 0}}),
        json!({"op": "join", "room": "r", "since": {"epoch": "e", "offset": -1}}),
        json!({"op": "leave"}),
        json!({"op": "publish", "room": "r"}), // missing data
        json!({"op": "publish", "data": 1}),   // missing room
        json!({"op": "publish", "room": "r", "data": 1, "echo": "no"}),
        json!({"op": "publish", "room": "r", "data": 1, "ephemeral": 1}),
        json!({"op": "presence"}),
        json!({"op": "history", "room": "r", "limit": "ten"}),
        json!({"op": "history", "room": "r", "limit": -1}),
        json!({"op": "history", "room": "r", "limit": 1.5}),
    ] {
        let mut with_id = request.clone();
        with_id["id"] = json!("bad");
        a.send(&with_id);
        let reply = a.next();
        assert_eq!(reply["id"], "bad", "{request}: {reply}");
        assert_eq!(reply["error"]["code"], 400, "{request}: {reply}");
        a.send(&request);
        assert_eq!(error_without_id(&mut a), 400, "{request}");
    }
    // None of it closed the connection, joined a room or made one.
    assert_eq!(a.join("r")["members"], 1);
    assert_eq!(a.publish("r", json!("still here")), 1);
}

#[test]
fn binary_frames_get_400_and_the_connection_stays_open() {
    let server = server_with(RoomsConfig::default());
    let mut a = RoomClient::connect(&server);
    a.ws().send(Message::binary(b"{\"op\":\"ping\",\"id\":1}".to_vec())).expect("send binary");
    assert_eq!(error_without_id(&mut a), 400);
    a.ws().send(Message::binary(Vec::new())).expect("send binary");
    assert_eq!(error_without_id(&mut a), 400);
    a.expect_nothing();
}

#[test]
fn publish_presence_and_history_require_membership() {
    let server = server_with(RoomsConfig::default());
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    for request in [
        json!({"op": "publish", "room": "r", "data": 1}),
        json!({"op": "publish", "room": "r", "data": 1, "ephemeral": true}),
        json!({"op": "presence", "room": "r"}),
        json!({"op": "history", "room": "r"}),
        // A room that does not exist is no different.
        json!({"op": "publish", "room": "nowhere", "data": 1}),
        json!({"op": "presence", "room": "nowhere"}),
        json!({"op": "history", "room": "nowhere"}),
    ] {
        assert_eq!(b.error(request.clone()), 404, "{request}");
    }
    a.expect_nothing(); // nothing was published
                        // After leaving, the same.
    b.join("r");
    b.ok(json!({"op": "leave", "room": "r"}));
    assert_eq!(b.error(json!({"op": "publish", "room": "r", "data": 1})), 404);
    assert_eq!(b.error(json!({"op": "leave", "room": "r"})), 404, "leaving twice");
    a.barrier();
    a.expect_nothing();
}

#[test]
fn membership_is_not_required_when_configured_so() {
    let server = server_with(RoomsConfig { require_membership: false, ..RoomsConfig::default() });
    let mut member = RoomClient::connect(&server);
    let mut outsider = RoomClient::connect(&server);
    member.join("r");
    assert_eq!(outsider.publish("r", json!("from outside")), 1);
    let message = member.next_message();
    assert_eq!(message["from"]["client"], outsider.id.as_str());
    outsider.expect_nothing(); // not a member: no copy
    let presence = outsider.ok(json!({"op": "presence", "room": "r"}));
    assert_eq!(presence["members"], json!([{"client": member.id, "user": null}]));
    let history = outsider.ok(json!({"op": "history", "room": "r"}));
    assert_eq!(history["messages"], json!([message]));
}

#[test]
fn data_over_max_message_bytes_gets_413() {
    let server = server_with(RoomsConfig { max_message_bytes: 100, ..RoomsConfig::default() });
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    // The limit is on `data` as JSON text: a string of 98 characters is 100 bytes quoted.
    let at_limit = "x".repeat(98);
    assert_eq!(a.publish("r", json!(at_limit)), 1);
    assert_eq!(b.next_message()["data"], at_limit.as_str());
    for data in [json!("x".repeat(99)), json!({"k": "y".repeat(200)}), json!("x".repeat(10_000))] {
        assert_eq!(a.error(json!({"op": "publish", "room": "r", "data": data})), 413);
        assert_eq!(a.error(json!({"op": "publish", "room": "r", "data": data, "ephemeral": true})), 413);
    }
    b.expect_nothing();
    assert_eq!(a.publish("r", json!("small")), 2, "rejected publishes took no offset");
}

#[test]
fn publishing_over_the_rate_gets_429_per_connection() {
    // Slow enough (a token per 2 s) that a loaded machine refills none between the steps.
    // The refill is a unit test that drives time (rooms::members).
    let server = server_with(RoomsConfig { publish_rate: 0.5, publish_burst: 3.0, ..RoomsConfig::default() });
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    for i in 1..=3 {
        assert_eq!(a.publish("r", json!(i)), i, "within the burst");
    }
    assert_eq!(a.error(json!({"op": "publish", "room": "r", "data": 4})), 429);
    assert_eq!(a.error(json!({"op": "publish", "room": "r", "data": 5, "ephemeral": true})), 429);
    // The limit is per connection: b is not affected.
    assert_eq!(b.publish("r", json!("b")), 4);
    // Other requests are not rate limited.
    a.ok(json!({"op": "history", "room": "r"}));
    a.barrier();
}

#[test]
fn sustained_abuse_closes_with_1008() {
    let server = server_with(RoomsConfig { abuse_limit: 5, ..RoomsConfig::default() });
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    for _ in 0..20 {
        a.write(&json!({"op": "dance"}));
    }
    a.flush();
    let (before, frame) = a.read_until_close();
    assert_eq!(before.len(), 5, "the tolerated rejections are answered: {before:?}");
    assert!(before.iter().all(|r| r["error"]["code"] == 400));
    let frame = frame.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Policy);
    // Only the abuser is closed.
    b.join("r");
}

#[test]
fn rejections_of_every_kind_count_as_abuse() {
    let server = server_with(RoomsConfig {
        abuse_limit: 3,
        max_message_bytes: 10,
        publish_rate: 0.001,
        publish_burst: 2.0, // the rejected oversized publish takes one too
        ..RoomsConfig::default()
    });
    let mut a = RoomClient::connect(&server);
    a.join("r");
    assert_eq!(a.error(json!({"op": "publish", "room": "r", "data": "x".repeat(20)})), 413);
    assert_eq!(a.publish("r", json!(1)), 1);
    assert_eq!(a.barrier().len(), 1, "its own copy");
    assert_eq!(a.error(json!({"op": "publish", "room": "r", "data": 2})), 429);
    assert_eq!(a.error(json!({"op": "nope"})), 400);
    // 404 and 503 are not the client's fault in the same way: not counted.
    for _ in 0..5 {
        assert_eq!(a.error(json!({"op": "history", "room": "other"})), 404);
    }
    a.send(&json!({"op": "nope"}));
    let (before, frame) = a.read_until_close();
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Policy));
}

#[test]
fn too_many_rooms_for_one_connection_gets_503() {
    let server = server_with(RoomsConfig { max_rooms_per_connection: 2, ..RoomsConfig::default() });
    let mut a = RoomClient::connect(&server);
    a.join("one");
    a.join("two");
    assert_eq!(a.error(json!({"op": "join", "room": "three"})), 503);
    a.join("one"); // rejoining is not a new room
    a.ok(json!({"op": "leave", "room": "one"}));
    a.join("three");
    // Another connection has its own allowance.
    let mut b = RoomClient::connect(&server);
    b.join("one");
    b.join("four");
}

#[test]
fn a_full_room_gets_503() {
    let server = server_with(RoomsConfig { max_members_per_room: 2, ..RoomsConfig::default() });
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    let mut c = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    assert_eq!(c.error(json!({"op": "join", "room": "r"})), 503);
    b.join("r"); // a member rejoining does not need a free place
    assert_eq!(a.publish("r", json!(1)), 1);
    c.expect_nothing();
    b.ok(json!({"op": "leave", "room": "r"}));
    assert_eq!(c.join("r")["members"], 2);
}

#[test]
fn a_full_server_gets_503() {
    let server = server_with(RoomsConfig { max_rooms: 2, ..RoomsConfig::default() });
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("one");
    a.join("two");
    assert_eq!(b.error(json!({"op": "join", "room": "three"})), 503);
    b.join("one"); // existing rooms can still be joined
}

#[test]
fn a_frame_over_the_transport_limit_closes_with_1009() {
    let mut config = support::config();
    config.protocol.max_message_size = 1024;
    config.protocol.max_frame_size = 1024;
    let server = TestServer::rooms_with(config, RoomsConfig::default());
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.ok(json!({"op": "join", "room": "r", "presence": true}));
    let data = "x".repeat(2000);
    a.send(&json!({"op": "publish", "room": "r", "data": data}));
    let (before, frame) = a.read_until_close();
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Size));
    // Nothing was published; the failed connection left the room.
    assert_eq!(b.next(), json!({"op": "leave", "room": "r", "member": {"client": a.id, "user": null}}));
    b.expect_nothing();
}

/// Slow consumer: a member that never reads while its room is flooded is closed with 1013
/// "slow consumer" once its queue passes `max_outbound_bytes`; the members that read get
/// every message, in order, and hear (presence) that it left.
#[test]
fn a_member_that_does_not_read_is_closed_with_1013_and_the_others_get_everything() {
    const MAX_OUTBOUND: usize = 64 * 1024;
    const PAYLOAD: usize = 8 * 1024;
    /// Enough to fill any loopback socket buffers several times over.
    const MOST: u64 = 4000;
    // A long linger: the slow member reads its close only after the flood goes on, which
    // a loaded machine may stretch past the default 2 s (the connection would be dropped
    // with the close frame unread).
    let config =
        Config { max_outbound_bytes: MAX_OUTBOUND, close_linger: Duration::from_secs(10), ..support::config() };
    let rooms = RoomsConfig { publish_rate: 1e9, publish_burst: 1e9, ..RoomsConfig::default() };
    let server = TestServer::rooms_with(config, rooms);
    let mut slow = RoomClient::connect(&server);
    slow.join("flood");
    let mut fast = RoomClient::connect(&server);
    fast.ok(json!({"op": "join", "room": "flood", "presence": true}));
    let mut publisher = RoomClient::connect(&server);
    publisher.join("other");
    publisher.join("flood");
    assert_eq!(fast.next()["op"], "join");

    // One publish per server turn (each waits for its reply) and the fast member reads each
    // message before the next is sent: only the slow member's queue grows.
    let filler = "f".repeat(PAYLOAD);
    let mut leave = None;
    let mut sent = 0;
    while leave.is_none() {
        assert!(sent < MOST, "the member that never reads was never closed");
        sent += 1;
        let ok = publisher.ok(json!({"op": "publish", "room": "flood", "data": filler, "echo": false}));
        assert_eq!(ok["offset"], sent);
        loop {
            let frame = fast.next();
            if frame["op"] == "leave" {
                leave = Some(frame);
                continue;
            }
            assert_eq!(frame["op"], "message", "{frame}");
            assert_eq!(offset_of(&frame), sent, "the fast member gets every message in order");
            break;
        }
    }
    let leave = leave.unwrap_or_default();
    assert_eq!(leave["member"]["client"], slow.id.as_str());

    // The flood goes on a little: the fast member is not affected.
    for _ in 0..20 {
        sent += 1;
        publisher.ok(json!({"op": "publish", "room": "flood", "data": filler, "echo": false}));
        assert_eq!(offset_of(&fast.next_message()), sent);
    }
    fast.expect_nothing();

    // Only now does the slow member read: a prefix of the messages, then the close.
    let (before, frame) = slow.read_until_close();
    let offsets: Vec<u64> = before.iter().map(offset_of).collect();
    assert!(!offsets.is_empty() && (offsets.len() as u64) < sent, "{} of {sent} messages", offsets.len());
    assert_eq!(offsets, (1..=offsets.len() as u64).collect::<Vec<_>>(), "what it got is whole and in order");
    let frame = frame.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Again);
    assert_eq!(frame.reason.as_str(), "slow consumer");

    // The publisher's own connection (it got only replies) was never at risk.
    assert_eq!(publisher.join("other")["room"], "other");
}

/// A member that reads as fast as it can must not be taken for a slow consumer because
/// one loop turn fanned out more than `max_outbound_bytes` to it: here one publisher's
/// pipelined burst (24 × 4 KiB, read by the server in one turn) against a 64 KiB cap.
///
/// Within one loop turn the write queue also holds frames queued earlier in the same turn
/// and not yet offered to the socket; the server flushes before judging a member slow, so
/// a burst bigger than the cap does not close a member that reads.
#[test]
fn a_reading_member_survives_a_burst_bigger_than_max_outbound_in_one_turn() {
    const BURST: u64 = 24;
    let config = Config { max_outbound_bytes: 64 * 1024, ..support::config() };
    let rooms = RoomsConfig { publish_rate: 1e9, publish_burst: 1e9, ..RoomsConfig::default() };
    let server = TestServer::rooms_with(config, rooms);
    let mut fast = RoomClient::connect(&server);
    fast.join("r");
    let mut publisher = RoomClient::connect(&server);
    publisher.join("r");
    let reader = thread::spawn(move || {
        let mut received = Vec::new();
        while (received.len() as u64) < BURST {
            match fast.ws().read() {
                Ok(Message::Text(text)) => received.push(serde_json::from_str::<Value>(text.as_str()).unwrap()),
                Ok(Message::Close(frame)) => return (received, frame),
                Ok(_) => {}
                Err(e) => panic!("reading: {e}"),
            }
        }
        (received, None)
    });
    let filler = "f".repeat(4 * 1024);
    for _ in 0..BURST {
        publisher.write(&json!({"op": "publish", "room": "r", "data": filler, "echo": false}));
    }
    publisher.flush();
    publisher.barrier();
    let (received, close) = reader.join().expect("reader thread");
    assert!(close.is_none(), "a reading member was closed with {close:?} after {} messages", received.len());
    assert_eq!(received.iter().map(offset_of).collect::<Vec<_>>(), (1..=BURST).collect::<Vec<_>>());
}
