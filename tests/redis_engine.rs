//! The Redis engine against a real `redis-server` (started by the test, see
//! `support/redis.rs`) and several nodes sharing it: per-room order and exactly-once
//! across nodes, recovery on another node, presence across nodes, a flushed Redis as
//! `reset`/`recovered:false`, Redis down as 503 and `/healthz` degraded, and a dropped
//! channel connection whose gap is read back from the stream.

mod support;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::process::{wsedge, Running};
use support::proxy::Proxy;
use support::redis::{node, node_at, node_with, RedisServer};
use support::rooms::{offset_of, RoomClient};
use support::sse;
use support::TestServer;
use wsedge::rooms::RoomsConfig;

/// Reads pushes until `room` has `count` messages; fails on a duplicate or out-of-order
/// offset. Other pushes (presence events) are skipped.
fn collect_messages(client: &mut RoomClient, count: usize) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    while got.len() < count {
        let push = client.next();
        if push["op"] != "message" {
            continue;
        }
        if let Some(last) = got.last() {
            assert_eq!(offset_of(&push), offset_of(last) + 1, "in order, once: {push} after {last}");
        }
        got.push(push);
    }
    got
}

/// Polls `/healthz` until it answers `status`.
fn wait_health(server: &TestServer, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = server.http("GET", "/healthz", &[], b"");
        if reply.head.status == status {
            return;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {} ({})", reply.head.status, reply.text());
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn concurrent_publishers_on_three_nodes_reach_every_member_in_one_order() {
    let Some(redis) = RedisServer::start() else { return };
    let nodes: Vec<TestServer> = (0..3).map(|_| node(&redis)).collect();
    let mut members: Vec<RoomClient> = nodes.iter().map(RoomClient::connect).collect();
    for m in &mut members {
        m.join("chat");
    }
    const EACH: usize = 100;
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, server)| {
            let mut client = RoomClient::connect(server);
            client.join("chat");
            thread::spawn(move || {
                for i in 0..EACH {
                    client.publish("chat", json!({"node": n, "i": i}));
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().expect("a publisher");
    }
    let total = 3 * EACH;
    let seen: Vec<Vec<Value>> = members.iter_mut().map(|m| collect_messages(m, total)).collect();
    let first = offset_of(&seen[0][0]);
    assert_eq!(first, 1, "the room starts at offset 1");
    for other in &seen[1..] {
        assert_eq!(other, &seen[0], "every member sees the same messages in the same order");
    }
    // Each publisher's own messages stay in its order.
    let mut next: HashMap<u64, u64> = HashMap::new();
    for m in &seen[0] {
        let (n, i) = (m["data"]["node"].as_u64().unwrap(), m["data"]["i"].as_u64().unwrap());
        assert_eq!(next.insert(n, i + 1).unwrap_or(0), i, "publisher {n} in order");
    }
}

#[test]
fn a_client_recovers_on_another_node_and_history_outlives_the_node() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (node(&redis), node(&redis));
    let mut first = RoomClient::connect(&a);
    let joined = first.join("news");
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let mut publisher = RoomClient::connect(&b);
    publisher.join("news");
    for i in 1..=3 {
        publisher.publish("news", json!(i));
    }
    assert_eq!(collect_messages(&mut first, 3).len(), 3);
    drop(first);
    drop(a);
    for i in 4..=6 {
        publisher.publish("news", json!(i));
    }
    // A new node, as after a deploy: the client comes back there with where it left off.
    let c = node(&redis);
    let mut again = RoomClient::connect(&c);
    let back = again.ok(json!({"op": "join", "room": "news", "since": {"epoch": epoch, "offset": 3}}));
    assert_eq!((back["epoch"].as_str(), back["recovered"].as_bool()), (Some(epoch.as_str()), Some(true)), "{back}");
    let missed: Vec<u64> = back["missed"].as_array().unwrap().iter().map(offset_of).collect();
    assert_eq!(missed, [4, 5, 6]);
    let history = again.ok(json!({"op": "history", "room": "news"}));
    assert_eq!(history["messages"].as_array().unwrap().len(), 6, "{history}");
    assert_eq!(history["epoch"].as_str(), Some(epoch.as_str()));
}

#[test]
fn presence_and_its_events_span_nodes() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (node(&redis), node(&redis));
    let mut watcher = RoomClient::connect(&a);
    watcher.ok(json!({"op": "join", "room": "lobby", "presence": true}));
    let mut other = RoomClient::connect(&b);
    assert_eq!(other.join("lobby")["members"], 2, "the join counts members on every node");
    let event = watcher.next();
    assert_eq!((event["op"].as_str(), event["member"]["client"].as_str()), (Some("join"), Some(other.id.as_str())));
    let presence = watcher.ok(json!({"op": "presence", "room": "lobby"}));
    let mut clients: Vec<&str> =
        presence["members"].as_array().unwrap().iter().map(|m| m["client"].as_str().unwrap()).collect();
    clients.sort_unstable();
    let mut expected = vec![watcher.id.as_str(), other.id.as_str()];
    expected.sort_unstable();
    assert_eq!(clients, expected);
    other.ok(json!({"op": "leave", "room": "lobby"}));
    let event = watcher.next();
    assert_eq!((event["op"].as_str(), event["member"]["client"].as_str()), (Some("leave"), Some(other.id.as_str())));
}

#[test]
fn a_flushed_redis_is_a_reset_and_recovery_across_it_is_partial() {
    let Some(redis) = RedisServer::start() else { return };
    let server = node(&redis);
    let mut member = RoomClient::connect(&server);
    let epoch = member.join("r")["epoch"].as_str().unwrap().to_owned();
    // An event stream in the room is told as the socket is.
    let mut stream = sse::open(&server, "/sse?room=r", &[]).map_err(|(head, _)| head.status).unwrap();
    assert_eq!((stream.next_event().event, stream.next_event().event), ("welcome".to_owned(), "joined".to_owned()));
    member.publish("r", json!(1));
    collect_messages(&mut member, 1);
    assert_eq!(stream.next_event().json()["data"], 1);
    redis.cmd(&["FLUSHALL"]);
    // The next publish starts a new epoch: the member is told continuity is lost.
    let mut publisher = RoomClient::connect(&server);
    publisher.join("r");
    publisher.publish("r", json!(2));
    let reset = loop {
        let push = member.next();
        if push["op"] == "reset" {
            break push;
        }
    };
    assert_ne!(reset["epoch"].as_str(), Some(epoch.as_str()), "{reset}");
    let next = member.next();
    assert_eq!((next["op"].as_str(), next["data"].as_u64()), (Some("message"), Some(2)), "{next}");
    let event = stream.next_event();
    assert_eq!((event.event.as_str(), event.json()["epoch"].clone()), ("reset", reset["epoch"].clone()), "{event:?}");
    let id = event.id.expect("a reset places the stream at the new epoch");
    assert!(id.starts_with(&format!("r~{}~", reset["epoch"].as_str().unwrap())), "{id}");
    let event = stream.next_event();
    assert_eq!((event.event.as_str(), event.json()["data"].clone()), ("message", json!(2)), "{event:?}");
    let mut late = RoomClient::connect(&server);
    let back = late.ok(json!({"op": "join", "room": "r", "since": {"epoch": epoch, "offset": 1}}));
    assert_eq!(back["recovered"], json!(false), "{back}");
    let metrics = server.http("GET", "/metrics", &[], b"").text().to_owned();
    assert!(metrics.contains("\nwsedge_redis_resets_total 1\n"), "{metrics}");
}

#[test]
fn redis_down_refuses_with_503_and_the_node_heals_by_itself() {
    let Some(mut redis) = RedisServer::start() else { return };
    let server = node_with(&redis, 2, RoomsConfig { api_key: Some("k".to_owned()), ..RoomsConfig::default() });
    let mut member = RoomClient::connect(&server);
    member.join("r");
    wait_health(&server, 200);
    redis.stop();
    wait_health(&server, 503);
    let reply = member.request(json!({"op": "publish", "room": "r", "data": 1}));
    assert_eq!(reply["error"]["code"], 503, "{reply}");
    assert_eq!(reply["error"]["message"], "backplane unavailable");
    // Nor can the backend reach a user (or say it did) while Redis is away.
    for (path, body) in
        [("/api/publish", &br#"{"user":"ann","data":1}"#[..]), ("/api/disconnect", br#"{"user":"ann"}"#)]
    {
        let reply = server.http("POST", path, &["Authorization: Bearer k"], body);
        assert_eq!(
            (reply.head.status, reply.json()["error"]["message"].clone()),
            (503, json!("backplane unavailable"))
        );
    }
    let reply = member.request(json!({"op": "join", "room": "other"}));
    assert_eq!(reply["error"]["code"], 503, "{reply}");
    redis.restart();
    wait_health(&server, 200);
    // Redis came back empty: the member's room is reset, then works again.
    member.publish("r", json!(2));
    let mut pushes = Vec::new();
    while pushes.iter().all(|p: &Value| p["op"] != "message") {
        pushes.push(member.next());
    }
    assert!(pushes.iter().any(|p| p["op"] == "reset"), "{pushes:?}");
}

#[test]
fn messages_published_while_a_node_s_channel_is_down_arrive_in_order() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (node(&redis), node(&redis));
    let mut member = RoomClient::connect(&a);
    member.join("r");
    let mut publisher = RoomClient::connect(&b);
    publisher.join("r");
    for round in 0..5 {
        // Cut every subscriber connection (both nodes'), then publish straight away.
        redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        for i in 0..20 {
            publisher.publish("r", json!(round * 20 + i));
        }
    }
    let got = collect_messages(&mut member, 100);
    assert_eq!(offset_of(&got[0]), 1);
    let data: Vec<u64> = got.iter().map(|m| m["data"].as_u64().unwrap()).collect();
    assert_eq!(data, (0..100).collect::<Vec<_>>());
}

#[test]
fn members_of_a_node_killed_with_sigkill_leave_within_the_presence_ttl() {
    let Some(redis) = RedisServer::start() else { return };
    let rooms = RoomsConfig { presence_ttl: Duration::from_secs(4), ..RoomsConfig::default() };
    let watching = node_with(&redis, 1, rooms);
    let mut watcher = RoomClient::connect(&watching);
    watcher.ok(json!({"op": "join", "room": "lobby", "presence": true}));
    // The other node is a process of its own, so that it can die without a word.
    let mut doomed = Running::serve(&["--redis", &redis.url(), "--presence-ttl", "4"]);
    let url = doomed.url("/ws");
    let mut member = RoomClient::connect_url(&url);
    member.join("lobby");
    let event = watcher.next();
    assert_eq!((event["op"].as_str(), event["member"]["client"].as_str()), (Some("join"), Some(member.id.as_str())));
    doomed.kill();
    let killed = Instant::now();
    let event = watcher.next();
    assert_eq!((event["op"].as_str(), event["member"]["client"].as_str()), (Some("leave"), Some(member.id.as_str())));
    assert!(killed.elapsed() <= Duration::from_secs(4), "left after {:?}", killed.elapsed());
    let presence = watcher.ok(json!({"op": "presence", "room": "lobby"}));
    assert_eq!(presence["members"].as_array().map(Vec::len), Some(1), "{presence}");
}

#[test]
fn ephemeral_messages_and_the_backend_api_act_on_the_whole_cluster() {
    let Some(redis) = RedisServer::start() else { return };
    const KEY: &str = "test-key";
    let rooms = || RoomsConfig { api_key: Some(KEY.into()), ..RoomsConfig::default() };
    let (a, b) = (node_with(&redis, 2, rooms()), node_with(&redis, 2, rooms()));
    let mut member = RoomClient::connect(&a);
    member.join("r");
    let mut typist = RoomClient::connect(&b);
    typist.join("r");
    typist.ok(json!({"op": "publish", "room": "r", "data": {"typing": true}, "ephemeral": true}));
    let push = member.next();
    assert_eq!((push["op"].as_str(), push.get("offset")), (Some("message"), None), "{push}");
    let auth = format!("Authorization: Bearer {KEY}");
    let body = br#"{"room":"r","data":{"from":"backend"}}"#;
    let reply = b.http("POST", "/api/publish", &[&auth, "Content-Type: application/json"], body);
    assert_eq!(reply.head.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["offset"], 1);
    let push = member.next();
    assert_eq!((push["data"]["from"].as_str(), offset_of(&push)), (Some("backend"), 1));
    let rooms = a.http("GET", "/api/rooms", &[&auth], b"").json();
    let r = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "r").cloned();
    assert_eq!(r.map(|r| (r["members"].clone(), r["offset"].clone())), Some((json!(2), json!(1))), "{rooms}");
}

#[test]
fn cutting_a_node_s_redis_connections_at_random_loses_and_repeats_nothing() {
    let Some(redis) = RedisServer::start() else { return };
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port).into());
    let rooms =
        || RoomsConfig { history_size: 10_000, publish_rate: 1e6, publish_burst: 1e6, ..RoomsConfig::default() };
    let cut = node_at(&format!("redis://{}/", proxy.addr()), 2, rooms());
    let steady = node_with(&redis, 2, rooms());
    let mut members = [RoomClient::connect(&cut), RoomClient::connect(&steady)];
    for m in &mut members {
        m.join("r");
    }
    // Publishers on both nodes; the one behind the proxy retries what got 503.
    const EACH: u64 = 1000;
    let publishers: Vec<_> = [&cut, &steady]
        .into_iter()
        .enumerate()
        .map(|(n, server)| {
            let mut client = RoomClient::connect(server);
            client.join("r");
            thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..EACH {
                    let data = json!({"n": n, "i": i});
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        // The same key on every try: one that Redis took while its reply
                        // was cut is not published twice.
                        let key = format!("{n}-{i}");
                        let reply = client.request(json!({"op": "publish", "room": "r", "data": data, "key": key}));
                        if let Some(offset) = reply["ok"]["offset"].as_u64() {
                            acked.push((offset, data));
                            break;
                        }
                        assert_eq!(reply["error"]["code"], 503, "{reply}");
                        assert!(Instant::now() < deadline, "Redis never came back through the proxy");
                        thread::sleep(Duration::from_millis(5));
                    }
                }
                acked
            })
        })
        .collect();
    // Cut at random moments (xorshift: repeatable from the seed printed on failure).
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("seed {seed}");
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while !publishers.iter().all(|p| p.is_finished()) {
        thread::sleep(Duration::from_millis(5 + rng() % 60));
        proxy.cut_all();
    }
    let acked: Vec<(u64, Value)> = publishers.into_iter().flat_map(|p| p.join().expect("a publisher")).collect();
    let last = acked.iter().map(|(o, _)| *o).max().unwrap();
    for m in &mut members {
        // Every offset once, in order; every acknowledged publish at its offset.
        let got = collect_messages(m, last as usize);
        assert_eq!(offset_of(&got[0]), 1);
        for (offset, data) in &acked {
            assert_eq!(&got[*offset as usize - 1]["data"], data, "offset {offset}");
        }
    }
    let cuts = proxy.cuts.load(std::sync::atomic::Ordering::Relaxed);
    println!("{cuts} cuts, {} publishes acknowledged, last offset {last}", acked.len());
    assert!(cuts > 3, "the test cut some connections");
    assert_eq!(last, 2 * EACH, "every publish exactly once (retries carried their key)");
}

#[test]
fn metrics_show_the_link_to_redis() {
    let Some(redis) = RedisServer::start() else { return };
    let server = node(&redis);
    let mut member = RoomClient::connect(&server);
    member.join("r");
    member.publish("r", json!(1));
    let text = server.http("GET", "/metrics", &[], b"").text().to_owned();
    for line in
        ["wsedge_redis_up 1", "wsedge_redis_round_trip_seconds_bucket{le=\"+Inf\"}", "wsedge_redis_resets_total 0"]
    {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let count = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(count("wsedge_redis_round_trip_seconds_count") >= 2, "a join and a publish at least");
}

#[test]
fn a_publisher_gets_its_own_message_before_the_reply_and_ping_waits_for_both() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (node(&redis), node(&redis));
    let mut member = RoomClient::connect(&a);
    member.join("r");
    let mut other = RoomClient::connect(&b);
    other.join("r");
    let noise = thread::spawn(move || {
        for i in 0..100 {
            other.publish("r", json!({"other": i}));
        }
    });
    for i in 0..100 {
        let reply = member.request(json!({"op": "publish", "room": "r", "data": {"mine": i}}));
        let offset = reply["ok"]["offset"].as_u64().unwrap_or_else(|| panic!("{reply}"));
        let before = member.take_pending();
        assert!(before.iter().any(|m| m.get("offset") == Some(&json!(offset))), "message {offset} after its reply");
        // A publish without waiting, then a ping: its reply comes after the publish's.
        member.send(&json!({"id": "p", "op": "publish", "room": "r", "data": {"mine": i, "quick": true}}));
        member.send(&json!({"id": "q", "op": "ping"}));
        let mut pushes = Vec::new();
        while pushes.last().is_none_or(|p: &Value| p["id"] != "q") {
            pushes.push(member.next());
        }
        let replied = pushes.iter().position(|p| p["id"] == "p").expect("the publish reply before the ping's");
        let own = pushes.iter().position(|p| p["data"]["quick"] == json!(true) && p["data"]["mine"] == json!(i));
        assert!(own.is_some_and(|own| own < replied), "{pushes:?}");
    }
    noise.join().expect("the other publisher");
}

#[test]
fn a_relay_room_spans_nodes_in_one_order() {
    use tungstenite::Message;
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (node(&redis), node(&redis));
    let (mut on_a, _) = support::tls::connect(&a.url_at("/relay/game"));
    let (mut on_b, _) = support::tls::connect(&b.url_at("/relay/game"));
    // Both nodes subscribed before anything is sent: wait until a message goes around.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        on_a.send(Message::text("probe")).unwrap();
        set_read_timeout(&mut on_b, Duration::from_millis(200));
        match on_b.read() {
            Ok(Message::Text(t)) if t.as_str() == "probe" => break,
            _ => assert!(Instant::now() < deadline, "the relay never crossed nodes"),
        }
    }
    set_read_timeout(&mut on_b, Duration::from_secs(10));
    for i in 0..50u8 {
        let (from, data) = if i % 2 == 0 { (&mut on_a, vec![0, i]) } else { (&mut on_b, vec![1, i]) };
        from.send(Message::binary(data)).unwrap();
    }
    let read_all = |ws: &mut tungstenite::WebSocket<support::tls::ClientStream>| {
        let mut got = Vec::new();
        while got.len() < 50 {
            match ws.read().expect("a relayed message") {
                Message::Binary(b) => got.push(b.to_vec()),
                _ => continue, // leftover probes
            }
        }
        got
    };
    let (seen_a, seen_b) = (read_all(&mut on_a), read_all(&mut on_b));
    assert_eq!(seen_a, seen_b, "one order on both nodes");
    let mut sorted = seen_a.clone();
    sorted.sort_by_key(|m| m[1]);
    assert_eq!(sorted.iter().map(|m| m[1]).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>(), "each once");
}

fn set_read_timeout(ws: &mut tungstenite::WebSocket<support::tls::ClientStream>, timeout: Duration) {
    if let support::tls::ClientStream::Plain(tcp) = ws.get_mut() {
        tcp.set_read_timeout(Some(timeout)).expect("set a read timeout");
    }
}

#[test]
fn an_unreachable_redis_at_startup_is_a_clear_error_and_exit_code_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = wsedge()
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &format!("redis://127.0.0.1:{port}/")])
        .output()
        .expect("run wsedge");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
}

/// Issue 18 across nodes: one user's connections on three nodes are one person in
/// presence by user, a message to that user from any node's API reaches every one of them
/// (in the API's order, counted), and a disconnect from any node closes them all with 4001.
#[test]
fn a_user_is_one_person_and_reached_on_every_node() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use tungstenite::client::IntoClientRequest;
    use wsedge::rooms::auth::AuthConfig;

    let Some(redis) = RedisServer::start() else { return };
    const SECRET: &[u8] = b"an HS256 secret for the user tests on Redis";
    let rooms = || RoomsConfig {
        auth: Some(AuthConfig::default().with_hs256_secret(SECRET).unwrap()),
        api_key: Some("k".to_owned()),
        ..RoomsConfig::default()
    };
    let nodes: Vec<TestServer> = (0..3).map(|_| node_with(&redis, 2, rooms())).collect();
    let connect = |server: &TestServer, sub: &str| {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
        let claims = json!({"sub": sub, "exp": exp, "info": {"name": sub.to_uppercase()}});
        let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap();
        let mut request = server.url_at("/ws").into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        RoomClient::connect_with(server, request)
    };
    let api = |server: &TestServer, path: &str, body: Value| {
        let reply = server.http("POST", path, &["Authorization: Bearer k"], body.to_string().as_bytes());
        assert_eq!(reply.head.status, 200, "{}", reply.text());
        reply.json()
    };

    let mut watcher = connect(&nodes[1], "walt");
    watcher.ok(json!({"op": "join", "room": "r", "presence": "users"}));
    let mut ann: Vec<RoomClient> = [0, 1, 2, 2].iter().map(|&n| connect(&nodes[n], "ann")).collect();
    for conn in &mut ann {
        conn.join("r");
    }
    let mut bob = connect(&nodes[0], "bob");
    let ann_member = json!({"user": "ann", "info": {"name": "ANN"}});
    assert_eq!(watcher.next(), json!({"op": "join", "room": "r", "member": ann_member}));
    let list = watcher.ok(json!({"op": "presence", "room": "r"}));
    let entry = list["members"].as_array().unwrap().iter().find(|m| m["user"] == "ann").cloned();
    assert_eq!(entry, Some(json!({"user": "ann", "info": {"name": "ANN"}, "connections": 4})), "{list}");
    watcher.expect_nothing();

    for n in 1..=10 {
        let from = &nodes[n % 3];
        assert_eq!(
            api(from, "/api/publish", json!({"user": "ann", "data": n})),
            json!({"user": "ann", "connections": 4})
        );
    }
    for conn in &mut ann {
        for n in 1..=10 {
            assert_eq!(conn.next(), json!({"op": "message", "user": "ann", "data": n}), "in the API's order");
        }
    }
    bob.expect_nothing();
    watcher.expect_nothing();

    assert_eq!(api(&nodes[2], "/api/disconnect", json!({"user": "ann"})), json!({"user": "ann", "connections": 4}));
    for conn in &mut ann {
        let (_, frame) = conn.read_until_close();
        assert_eq!(frame.map(|f| u16::from(f.code)), Some(4001));
    }
    assert_eq!(watcher.next(), json!({"op": "leave", "room": "r", "member": ann_member}), "one leave for four");
    assert_eq!(api(&nodes[0], "/api/disconnect", json!({"user": "ann"}))["connections"], 0);
    bob.expect_nothing();
}

/// A node that gets a user request and never answers (here a bare subscriber) does not
/// hold the API call forever: after `REMOTE_TIMEOUT` it is answered with what came, and
/// says it is not complete.
#[test]
fn a_node_that_never_answers_a_user_request_makes_the_reply_incomplete_not_stuck() {
    let Some(redis) = RedisServer::start() else { return };
    let rooms = RoomsConfig { api_key: Some("k".to_owned()), ..RoomsConfig::default() };
    let server = node_with(&redis, 2, rooms);
    let mut silent = redis.connection().expect("a Redis connection");
    let mut pubsub = silent.as_pubsub();
    pubsub.subscribe("wsedge:users").unwrap();
    let started = Instant::now();
    let reply = server.http("POST", "/api/publish", &["Authorization: Bearer k"], br#"{"user":"ann","data":1}"#);
    assert_eq!(reply.json(), json!({"user": "ann", "connections": 0, "complete": false}));
    let waited = started.elapsed();
    assert!(waited >= wsedge::rooms::reach::REMOTE_TIMEOUT, "answered after {waited:?}");
    drop(pubsub);
}

/// Shards are servers: two databases of one Redis would hear every channel twice (pub/sub
/// ignores the database), so a node refuses to start on them.
#[test]
fn two_databases_of_one_redis_are_not_two_shards() {
    let Some(redis) = RedisServer::start() else { return };
    let urls = [format!("{}0", redis.url()), format!("{}1", redis.url())];
    let error = wsedge::rooms::engine::redis::Backplane::connect(&urls, 1).expect_err("refused");
    assert!(error.contains("named twice"), "{error}");
}

/// The admin view lists every node on the Redis (issue 20): each reports itself every
/// second with its counters and its Redis round trips, whichever node serves the page; a
/// node that dies leaves the list within the presence TTL, as its members leave rooms.
#[test]
fn the_admin_view_lists_every_node_and_forgets_a_dead_one() {
    let Some(redis) = RedisServer::start() else { return };
    let rooms = RoomsConfig {
        presence_ttl: Duration::from_secs(4),
        api_key: Some("k".to_owned()),
        node_name: "edge-a".to_owned(),
        ..RoomsConfig::default()
    };
    let a = node_with(&redis, 2, rooms);
    let mut b = Running::serve(&["--redis", &redis.url(), "--presence-ttl", "4", "--node-name", "edge-b"]);
    let members: Vec<RoomClient> = (0..3)
        .map(|_| {
            let mut member = RoomClient::connect_url(&b.url("/ws"));
            member.join("r");
            member
        })
        .collect();
    let mut admin = support::sse::open(&a, "/api/admin/stream", &["Authorization: Bearer k"])
        .unwrap_or_else(|(head, body)| panic!("refused: {} {body}", head.status));
    let mut next = || {
        let event = admin.next_event();
        assert_eq!(event.event, "stats", "{event:?}");
        event.json()
    };
    let names = |s: &Value| -> Vec<String> {
        s["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let s = loop {
        let s = next();
        let both = names(&s) == ["edge-a", "edge-b"];
        if both && s["nodes"][1]["connections"] == 3 && s["nodes"][1]["store"]["round_trips"].as_u64() > Some(0) {
            break s;
        }
        assert!(Instant::now() < deadline, "no snapshot listed both nodes and b's members: {s}");
    };
    assert_eq!(s["node"]["name"], "edge-a", "the node serving the page");
    assert_eq!(s["nodes"][0]["id"], s["node"]["id"]);
    assert_eq!(s["nodes"][0]["workers"], 2);
    assert_eq!(s["nodes"][1]["store"]["up"], true);
    assert!(s["nodes"][1]["store"]["round_trip_us"].as_u64() > Some(0), "{s}");
    let (b_seen, b_started) = (s["nodes"][1]["at_ms"].as_u64().unwrap(), s["nodes"][1]["started_ms"].as_u64().unwrap());
    assert!(b_started <= b_seen);
    // b keeps reporting while it lives.
    let deadline = Instant::now() + Duration::from_secs(5);
    while next()["nodes"][1]["at_ms"].as_u64().unwrap() <= b_seen {
        assert!(Instant::now() < deadline, "b stopped reporting");
    }

    b.kill();
    let killed = Instant::now();
    drop(members);
    loop {
        let s = next();
        if names(&s) == ["edge-a"] {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "a dead node stayed listed: {s}");
    }
    // Forgotten once silent for the presence TTL (4 s), at a's next report (every second).
    assert!(killed.elapsed() <= Duration::from_secs(4 + 3), "listed {:?} after its death", killed.elapsed());
    assert!(killed.elapsed() >= Duration::from_secs(3), "forgotten {:?} after its death", killed.elapsed());
}
