//! Ordering within a room (contract: "Ordering and recovery", first point; "Server ->
//! client pushes", the publisher's own copy): with several publishers on their own threads,
//! every member sees the same messages in the same order, with offsets 1, 2, 3, … and no
//! gap; each publisher's messages keep the order it sent them in, carry the offsets its
//! replies named, and come back to it too.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::{json, Value};

use support::rooms::{offset_of, RoomClient};
use support::TestServer;
use wsedge::rooms::RoomsConfig;

const PUBLISHERS: usize = 4;
const PER_PUBLISHER: usize = 60;
const LISTENERS: usize = 2;
const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;

fn server() -> TestServer {
    // Every publisher sends its whole burst at once: allow it.
    TestServer::rooms(RoomsConfig { publish_rate: 10_000.0, publish_burst: 10_000.0, ..RoomsConfig::default() })
}

/// What one member saw: the room's messages, in order.
struct Seen {
    client: String,
    messages: Vec<Value>,
    /// For a publisher: the offsets its publish replies named, in sending order.
    reply_offsets: Vec<u64>,
}

/// Reads frames until `TOTAL` messages arrived, sorting replies out of the pushes.
fn read_all(client: &mut RoomClient, replies_expected: usize) -> (Vec<Value>, Vec<u64>) {
    let mut messages = Vec::new();
    let mut replies = Vec::new();
    while messages.len() < TOTAL || replies.len() < replies_expected {
        let frame = client.next();
        if frame["op"] == "message" {
            messages.push(frame);
        } else {
            let ok = frame.get("ok").unwrap_or_else(|| panic!("a publish failed: {frame}"));
            replies.push((frame["id"].as_u64().expect("numeric id"), offset_of(ok)));
        }
    }
    replies.sort_unstable();
    (messages, replies.into_iter().map(|(_, offset)| offset).collect())
}

#[test]
fn concurrent_publishers_every_member_sees_one_order() {
    let server = server();
    // Everyone joins before anyone publishes, so every member sees every message.
    let joined = Arc::new(Barrier::new(PUBLISHERS + LISTENERS));
    let seen: Vec<Seen> = thread::scope(|scope| {
        let mut handles = Vec::new();
        for p in 0..PUBLISHERS {
            let (server, joined) = (&server, joined.clone());
            handles.push(scope.spawn(move || {
                let mut client = RoomClient::connect(server);
                client.join("race");
                joined.wait();
                // All at once, pipelined, with ids: the replies name the offsets.
                for i in 0..PER_PUBLISHER {
                    client.write(&json!({"id": i, "op": "publish", "room": "race", "data": {"p": p, "i": i}}));
                }
                client.flush();
                let (messages, reply_offsets) = read_all(&mut client, PER_PUBLISHER);
                Seen { client: client.id.clone(), messages, reply_offsets }
            }));
        }
        for _ in 0..LISTENERS {
            let (server, joined) = (&server, joined.clone());
            handles.push(scope.spawn(move || {
                let mut client = RoomClient::connect(server);
                client.join("race");
                joined.wait();
                let (messages, _) = read_all(&mut client, 0);
                client.expect_nothing();
                Seen { client: client.id.clone(), messages, reply_offsets: Vec::new() }
            }));
        }
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });

    // The same order everywhere, offsets 1..=TOTAL.
    let reference = &seen[0].messages;
    let offsets: Vec<u64> = reference.iter().map(offset_of).collect();
    assert_eq!(offsets, (1..=TOTAL as u64).collect::<Vec<_>>(), "offsets must be 1, 2, 3, … without gaps");
    for other in &seen[1..] {
        assert!(
            other.messages == *reference,
            "member {} saw another order than member {}",
            other.client,
            seen[0].client
        );
    }

    // Publisher by publisher: its messages in the order it sent them, at the offsets its
    // replies named, and from it.
    let by_client: HashMap<&str, usize> =
        seen[..PUBLISHERS].iter().enumerate().map(|(p, s)| (s.client.as_str(), p)).collect();
    for (p, publisher) in seen[..PUBLISHERS].iter().enumerate() {
        let mine: Vec<&Value> = reference.iter().filter(|m| m["data"]["p"] == p).collect();
        assert_eq!(mine.len(), PER_PUBLISHER);
        for (i, message) in mine.iter().enumerate() {
            assert_eq!(message["data"]["i"], i, "publisher {p}'s messages out of order");
            assert_eq!(message["from"]["client"], publisher.client.as_str());
        }
        let offsets: Vec<u64> = mine.iter().map(|m| offset_of(m)).collect();
        assert_eq!(publisher.reply_offsets, offsets, "publisher {p}'s replies name its messages' offsets");
    }
    for message in reference {
        let from = message["from"]["client"].as_str().unwrap();
        assert_eq!(by_client.get(from), message["data"]["p"].as_u64().map(|p| p as usize).as_ref());
    }
}

#[test]
fn history_holds_the_order_members_saw() {
    let server = server();
    let mut a = RoomClient::connect(&server);
    let mut b = RoomClient::connect(&server);
    a.join("r");
    b.join("r");
    for i in 0..20 {
        let publisher = if i % 3 == 0 { &mut a } else { &mut b };
        publisher.write(&json!({"op": "publish", "room": "r", "data": i}));
        publisher.flush();
    }
    let seen: Vec<Value> = (0..20).map(|_| a.next_message()).collect();
    let history = a.ok(json!({"op": "history", "room": "r"}));
    assert_eq!(history["messages"], Value::Array(seen.clone()));
    assert_eq!(history["offset"], 20);
    let seen_by_b: Vec<Value> = (0..20).map(|_| b.next_message()).collect();
    assert_eq!(seen_by_b, seen);
}
