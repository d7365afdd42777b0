//! Rooms spanning workers under load: publishers and subscribers on different workers,
//! rooms owned by yet others, everyone at once. Every member gets every message of its
//! rooms published after its join exactly once, in one order (offsets 1, 2, 3, ... with
//! no gap), and each publisher's messages in the order it sent them. Also: the relay keeps
//! one order for all members across workers.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::thread;

use serde_json::{json, Value};
use tungstenite::Message;
use wsedge::rooms::RoomsConfig;
use wsedge::server::Config;

use support::rooms::{offset_of, RoomClient};
use support::TestServer;

const WORKERS: usize = 4;
const ROOMS: usize = 6;
const SUBSCRIBERS: usize = 24;
const PUBLISHERS: usize = 6;
/// Messages each publisher sends to each room.
const PER_ROOM: u64 = 60;

fn server() -> TestServer {
    let rooms = RoomsConfig { publish_rate: 1e9, publish_burst: 1e9, ..RoomsConfig::default() };
    TestServer::rooms_with(Config { workers: WORKERS, ..support::config() }, rooms)
}

fn room(i: usize) -> String {
    format!("room-{i}")
}

/// The worker-specific part of a client id or epoch (`<node>-<n>`, `<node>.<n>`): each
/// worker has its own node string.
fn node(id: &str) -> &str {
    id.split(['-', '.']).next().unwrap_or(id)
}

#[test]
fn order_and_exactly_once_hold_across_workers_under_load() {
    let server = server();
    // Subscribers join two rooms each; their join replies name each room's offset then.
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let mut client = RoomClient::connect(&server);
        let joined: BTreeMap<String, u64> = [room(s % ROOMS), room((s + 1) % ROOMS)]
            .into_iter()
            .map(|r| {
                let ok = client.join(&r);
                (r, ok["offset"].as_u64().expect("join offset"))
            })
            .collect();
        subscribers.push((client, joined));
    }
    // Publishers are members of every room (membership is required) but do not read: they
    // publish without echo, and what others publish to them stays well under the
    // slow-consumer cap.
    let mut publishers: Vec<RoomClient> = (0..PUBLISHERS).map(|_| RoomClient::connect(&server)).collect();
    let mut epochs = BTreeSet::new();
    for p in &mut publishers {
        for r in 0..ROOMS {
            epochs.insert(node(p.join(&room(r))["epoch"].as_str().expect("epoch")).to_owned());
        }
    }
    let clients: HashSet<&str> =
        subscribers.iter().map(|(c, _)| node(&c.id)).chain(publishers.iter().map(|p| node(&p.id))).collect();
    println!("{} workers hold the connections, {} own the {ROOMS} rooms", clients.len(), epochs.len());
    assert!(clients.len() >= 2, "every connection landed on one worker: nothing crossed workers");
    assert!(epochs.len() >= 2, "one worker owns every room: nothing crossed workers");

    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|(mut client, joined)| {
            thread::spawn(move || {
                let expected = PER_ROOM * PUBLISHERS as u64 * joined.len() as u64;
                let mut got: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                for _ in 0..expected {
                    let m = client.next_message();
                    got.entry(m["room"].as_str().expect("room").to_owned()).or_default().push(m);
                }
                client.expect_nothing();
                (joined, got)
            })
        })
        .collect();
    let senders: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut client)| {
            thread::spawn(move || {
                for seq in 0..PER_ROOM {
                    for r in 0..ROOMS {
                        let publish = json!({"op": "publish", "room": room(r), "echo": false,
                                             "data": {"p": p, "seq": seq}});
                        client.write(&publish);
                    }
                    client.flush();
                }
                client
            })
        })
        .collect();
    let _publishers: Vec<RoomClient> = senders.into_iter().map(|t| t.join().expect("a publisher")).collect();

    for reader in readers {
        let (joined, got) = reader.join().expect("a subscriber");
        assert_eq!(got.keys().collect::<Vec<_>>(), joined.keys().collect::<Vec<_>>(), "rooms received");
        for (r, messages) in &got {
            // One order for the room: consecutive offsets right after the join's.
            let offsets: Vec<u64> = messages.iter().map(offset_of).collect();
            let first = joined[r] + 1;
            let want: Vec<u64> = (first..first + offsets.len() as u64).collect();
            assert_eq!(offsets, want, "{r}: a gap, a repeat or a reordering");
            // Each publisher's messages in its order, each exactly once.
            for p in 0..PUBLISHERS {
                let seqs: Vec<u64> = messages
                    .iter()
                    .filter(|m| m["data"]["p"] == json!(p))
                    .map(|m| m["data"]["seq"].as_u64().expect("seq"))
                    .collect();
                assert_eq!(seqs, (0..PER_ROOM).collect::<Vec<_>>(), "{r}: publisher {p}'s messages");
            }
        }
    }
}

#[test]
fn a_relay_room_has_one_order_for_members_on_every_worker() {
    let server = TestServer::start_workers(
        Config { workers: WORKERS, ..support::config() },
        wsedge::rooms::Rooms::for_workers(RoomsConfig {
            path: String::new(),
            relay_prefix: Some("/".to_owned()),
            ..RoomsConfig::default()
        }),
    );
    const MEMBERS: usize = 12;
    const EACH: usize = 50;
    let mut members: Vec<_> = (0..MEMBERS)
        .map(|_| tungstenite::client(server.url_at("/game"), server.tcp()).expect("relay upgrade").0)
        .collect();
    // Every member sends EACH messages at once; every member (the sender too) must see the
    // same sequence of all MEMBERS * EACH messages.
    for (i, ws) in members.iter_mut().enumerate() {
        for n in 0..EACH {
            ws.write(Message::text(format!("{i}:{n}"))).expect("queue");
        }
        ws.flush().expect("flush");
    }
    let sequences: Vec<Vec<String>> = members
        .into_iter()
        .map(|mut ws| {
            thread::spawn(move || {
                (0..MEMBERS * EACH)
                    .map(|_| match ws.read().expect("read") {
                        Message::Text(t) => t.as_str().to_owned(),
                        other => panic!("expected text, got {other:?}"),
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a member"))
        .collect();
    for (i, seq) in sequences.iter().enumerate() {
        assert_eq!(seq, &sequences[0], "member {i} saw another order than member 0");
    }
    // Each sender's messages in its order.
    for i in 0..MEMBERS {
        let mine: Vec<&String> = sequences[0].iter().filter(|m| m.starts_with(&format!("{i}:"))).collect();
        let want: Vec<String> = (0..EACH).map(|n| format!("{i}:{n}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "sender {i}'s order");
    }
}

#[test]
fn a_second_server_on_the_same_address_exits_instead_of_sharing_it() {
    use support::process::{wsedge, Running};
    // The workers of one server share the port (SO_REUSEPORT); another server must not.
    let first = Running::serve(&["--workers", "2"]);
    for workers in ["1", "2"] {
        let mut second = wsedge()
            .args(["serve", "--listen", &first.addr, "--workers", workers])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run a second wsedge");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = second.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = second.kill();
                panic!("a second server with {workers} worker(s) started on {} instead of exiting", first.addr);
            }
            thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut second.stderr.take().expect("piped"), &mut stderr).expect("stderr");
        assert_eq!(status.code(), Some(1), "{workers} worker(s): {stderr}");
        assert!(stderr.contains("address already in use"), "{stderr}");
    }
}
