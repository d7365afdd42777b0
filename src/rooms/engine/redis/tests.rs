//! The Redis store against a real `redis-server`, started by the tests on a free port with
//! persistence off. Without `redis-server` on the PATH these tests say so and pass, unless
//! `WSEDGE_REQUIRE_REDIS` is set (`.ci/run` sets it, after installing Redis).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::Value;

use super::store::{self, Push, Retention, RoomKeys, Scripts};

/// A `redis-server` of the test's own, stopped on drop.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if std::env::var_os("WSEDGE_REQUIRE_REDIS").is_none() => {
                eprintln!("skipping: redis-server could not start ({e}); set WSEDGE_REQUIRE_REDIS to fail instead");
                return None;
            }
            Err(e) => panic!("redis-server could not start: {e}"),
        };
        let server = RedisServer { child, url: format!("redis://127.0.0.1:{port}/") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.connection().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// A connection with the scripts loaded.
    fn connection(&self) -> Option<redis::Connection> {
        let mut con = redis::Client::open(self.url.as_str()).ok()?.get_connection().ok()?;
        for cmd in Scripts::default().load_commands() {
            cmd.query::<String>(&mut con).ok()?;
        }
        Some(con)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RETAIN: Retention = Retention { history_size: 3, ttl_ms: 60_000, presence_ms: 10_000, max_rooms: 100 };
const HEAD: &str = r#"{"op":"message","room":"r""#;

fn tail(n: u32) -> String {
    format!(r#","from":{{"client":null,"user":null}},"data":{n}}}"#)
}

fn publish_as(
    con: &mut redis::Connection,
    keys: &RoomKeys,
    epoch: &str,
    tail: &str,
    ephemeral: bool,
    now_ms: u64,
) -> store::Published {
    let push = Push { head: HEAD, tail };
    let msg = store::Outgoing { push, ephemeral, except: None, key: None };
    let cmd = Scripts::default().publish(keys, epoch, msg, RETAIN, now_ms);
    store::parse_published(cmd.query::<Value>(con).expect("publish")).expect("a publish reply").expect("room")
}

fn publish(con: &mut redis::Connection, keys: &RoomKeys, n: u32, now_ms: u64) -> store::Published {
    publish_as(con, keys, "e1", &tail(n), false, now_ms)
}

fn read(con: &mut redis::Connection, keys: &RoomKeys, after: u64, now_ms: u64) -> store::Snapshot {
    let cmd = Scripts::default().read(keys, None, after, None, now_ms);
    store::parse_snapshot(cmd.query::<Value>(con).expect("read"), RETAIN.ttl_ms, now_ms).expect("a read reply")
}

fn offsets(snapshot: &store::Snapshot) -> Vec<u64> {
    snapshot.entries.iter().map(|e| e.offset).collect()
}

#[test]
fn publishes_get_offsets_one_by_one_and_the_stream_keeps_the_last_few() {
    let Some(redis) = RedisServer::start() else { return };
    let mut con = redis.connection().unwrap();
    let keys = RoomKeys::new("r");
    let mut pubsub_con = redis.connection().unwrap();
    let mut pubsub = pubsub_con.as_pubsub();
    pubsub.subscribe(&keys.channel).unwrap();
    for n in 1..=5 {
        let published = publish(&mut con, &keys, n, 1_000);
        assert_eq!(published, store::Published { epoch: "e1".into(), offset: u64::from(n), duplicate: false });
    }
    // The push members receive: the same bytes as the in-memory engine writes.
    let kept = read(&mut con, &keys, 0, 1_000);
    assert_eq!(kept.epoch.as_deref(), Some("e1"));
    assert_eq!(kept.offset, 5);
    let expected = |n: u64| {
        let member = crate::rooms::protocol::Member::BACKEND;
        (n, crate::rooms::protocol::message("r", Some(n), member, &n.to_string()))
    };
    let pushes = |s: &store::Snapshot| s.entries.iter().map(|e| (e.offset, e.push.clone())).collect::<Vec<_>>();
    assert_eq!(pushes(&kept), [expected(3), expected(4), expected(5)], "history size 3");
    assert_eq!(pushes(&read(&mut con, &keys, 4, 1_000)), [expected(5)]);
    // Every publish reached the channel, in order, with its epoch and offset.
    pubsub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for n in 1..=5u64 {
        let msg = pubsub.get_message().unwrap();
        let payload: Vec<u8> = msg.get_payload().unwrap();
        let parsed = store::parse_channel_message(&payload).expect("our format");
        assert_eq!((parsed.epoch, parsed.kind, parsed.push), ("e1", store::Kind::Message(n), expected(n).1.as_str()));
    }
}

#[test]
fn messages_age_out_and_an_ephemeral_one_is_not_kept() {
    let Some(redis) = RedisServer::start() else { return };
    let mut con = redis.connection().unwrap();
    let keys = RoomKeys::new("r");
    publish(&mut con, &keys, 1, 1_000);
    publish(&mut con, &keys, 2, 30_000);
    assert_eq!(publish_as(&mut con, &keys, "e1", &tail(9), true, 30_000).offset, 0);
    // At 61 s message 1 (published at 1 s) is past the 60 s TTL: reads skip it ...
    let kept = read(&mut con, &keys, 0, 61_001);
    assert_eq!(offsets(&kept), [2]);
    assert_eq!(kept.offset, 2, "the ephemeral message took no offset");
    // ... and the next publish drops it from the stream.
    publish(&mut con, &keys, 3, 61_001);
    let len: usize = redis::cmd("XLEN").arg(&keys.stream).query(&mut con).unwrap();
    assert_eq!(len, 2);
}

#[test]
fn a_flushed_redis_gives_a_new_epoch_and_offsets_start_again() {
    let Some(redis) = RedisServer::start() else { return };
    let mut con = redis.connection().unwrap();
    let keys = RoomKeys::new("r");
    publish(&mut con, &keys, 1, 1_000);
    redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap();
    let after = publish_as(&mut con, &keys, "e2", &tail(2), false, 2_000);
    assert_eq!(after, store::Published { epoch: "e2".into(), offset: 1, duplicate: false });
    let missing = read(&mut con, &RoomKeys::new("nobody"), 0, 0);
    assert_eq!((missing.epoch, missing.offset, missing.entries.len()), (None, 0, 0));
}

#[test]
fn malformed_stream_entries_and_channel_messages_are_skipped() {
    let Some(redis) = RedisServer::start() else { return };
    let mut con = redis.connection().unwrap();
    let keys = RoomKeys::new("r");
    publish(&mut con, &keys, 1, 1_000);
    // Another program writes entries of its own shape.
    redis::cmd("XADD").arg(&keys.stream).arg("2-0").arg("x").arg("y").query::<String>(&mut con).unwrap();
    redis::cmd("XADD")
        .arg(&keys.stream)
        .arg("3-0")
        .arg("t")
        .arg("soon")
        .arg("m")
        .arg("{}")
        .query::<String>(&mut con)
        .unwrap();
    assert_eq!(offsets(&read(&mut con, &keys, 0, 1_000)), [1]);
    for junk in [&b""[..], b"e1", b"e1 x - {}", b" 1 - {}", b"e1 -1 - {}", b"\xff 1 - {}", b"e1 1 - x", b"e1 1  {}"] {
        assert_eq!(store::parse_channel_message(junk), None, "{junk:?}");
    }
    assert!(store::parse_channel_message(b"e1 0 - {}").is_some());
    assert!(store::parse_channel_message(b"- p c1 {}").is_some());
    let by_user = store::parse_channel_message(br#"- u c1 {"op":"join"}"#).map(|m| (m.kind, m.except));
    assert_eq!(by_user, Some((store::Kind::UserPresence, Some("c1"))), "a presence event by user is not a marker");
}

/// Presence by user counts only live members: a member whose entry expired (its node
/// died) is swept, with its user's leave, before a join counts the user again; and a count
/// that was lost (evicted, or never written by an older wsedge) is counted again from the
/// members present instead of telling a leave while the user is still there.
#[test]
fn user_counts_follow_the_live_members_even_after_a_loss() {
    let Some(redis) = RedisServer::start() else { return };
    let mut con = redis.connection().unwrap();
    let keys = RoomKeys::new("u");
    let mut events = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    events.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut events = events.as_pubsub();
    events.subscribe(&keys.channel).unwrap();
    let scripts = Scripts::default();
    let member = |client: &str, user: &str| format!(r#"{{"client":"{client}","user":"{user}"}}"#);
    let join = |con: &mut redis::Connection, client: &str, user: &str, now_ms: u64| {
        let m = member(client, user);
        let args = store::JoinArgs { client, member_json: &m, event: "{}", since: None, max_members: 100 };
        scripts.join(&keys, "e1", args, RETAIN, now_ms).query::<Value>(con).expect("join");
    };
    // The presence events by user the channel carried since the last look, in order (a
    // marker published on the channel ends the look).
    let mut by_user = |con: &mut redis::Connection| -> Vec<String> {
        redis::cmd("PUBLISH").arg(&keys.channel).arg("end").query::<()>(con).unwrap();
        let mut got = Vec::new();
        loop {
            let payload: String = events.get_message().expect("a channel message").get_payload().unwrap();
            match payload.strip_prefix("- u ") {
                _ if payload == "end" => return got,
                Some(rest) => got.push(rest.split_once(' ').unwrap().1.to_owned()),
                None => {}
            }
        }
    };
    let (ann_joins, ann_leaves) =
        (r#"{"op":"join","room":"u","member":{"user":"ann"}}"#, r#"{"op":"leave","room":"u","member":{"user":"ann"}}"#);
    let t0 = 1_800_000_000_000;
    join(&mut con, "a1", "ann", t0);
    assert_eq!(by_user(&mut con), [ann_joins]);
    // a1's node died: its entry expires. ann's next connection sweeps it first, so ann
    // leaves and comes again, rather than being counted twice and never seen.
    join(&mut con, "a2", "ann", t0 + RETAIN.presence_ms + 1);
    assert_eq!(by_user(&mut con), [ann_leaves, ann_joins]);
    let later = t0 + RETAIN.presence_ms + 2;
    join(&mut con, "a3", "ann", later);
    assert_eq!(by_user(&mut con), [] as [&str; 0], "ann's second connection");
    redis::cmd("DEL").arg(&keys.users).query::<()>(&mut con).unwrap(); // the counts are lost
    scripts.leave(&keys, "u", "a2", later).query::<Value>(&mut con).unwrap();
    assert_eq!(by_user(&mut con), [] as [&str; 0], "ann is still there");
    scripts.leave(&keys, "u", "a3", later).query::<Value>(&mut con).unwrap();
    assert_eq!(by_user(&mut con), [ann_leaves], "the last of ann's connections went");
}

/// Each node's report is kept under its id, the latest wins, a node silent for the forget
/// time goes at the next report, and entries another program wrote are skipped.
#[test]
fn node_reports_are_kept_by_id_and_silent_nodes_forgotten() {
    let Some(redis) = RedisServer::start() else { return };
    let mut con = redis.connection().unwrap();
    let scripts = Scripts::default();
    let mut report = |id: &str, name: &str, at_ms: u64, connections: u64| {
        let node = super::NodeReport { id: id.into(), name: name.into(), at_ms, connections, ..Default::default() };
        let json = serde_json::to_string(&node).unwrap();
        let reply = scripts.report_node(id, &json, at_ms, 10_000).query::<Value>(&mut con).expect("report");
        store::parse_nodes(reply).expect("a list of reports")
    };
    let names = |nodes: &[super::NodeReport]| nodes.iter().map(|n| (n.name.clone(), n.connections)).collect::<Vec<_>>();
    let t0 = 1_800_000_000_000;
    assert_eq!(names(&report("b1", "edge-b", t0, 1)), [("edge-b".to_owned(), 1)]);
    assert_eq!(names(&report("a1", "edge-a", t0 + 1_000, 2)), [("edge-a".to_owned(), 2), ("edge-b".to_owned(), 1)]);
    assert_eq!(names(&report("b1", "edge-b", t0 + 2_000, 5)), [("edge-a".to_owned(), 2), ("edge-b".to_owned(), 5)]);
    // Something else in the hash is not a report.
    let mut other = redis.connection().unwrap();
    redis::cmd("HSET").arg(store::NODES).arg("junk").arg("{not json").query::<()>(&mut other).unwrap();
    assert_eq!(report("b1", "edge-b", t0 + 3_000, 5).len(), 2);
    // a1 last reported at t0 + 1 s: gone once 10 s have passed since.
    assert_eq!(names(&report("b1", "edge-b", t0 + 11_000, 6)), [("edge-a".to_owned(), 2), ("edge-b".to_owned(), 6)]);
    assert_eq!(names(&report("b1", "edge-b", t0 + 11_001, 6)), [("edge-b".to_owned(), 6)]);
    let ttl: i64 = redis::cmd("PTTL").arg(store::NODES).query(&mut other).unwrap();
    assert!(ttl > 0 && ttl <= 10_000, "the list goes when every node has: {ttl}");
}
