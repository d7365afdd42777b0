//! `wsedge::client::rooms::RoomClient`, the Rust client that reconnects and recovers:
//! through a TCP proxy that cuts its connection at random points while messages flow both
//! ways, it delivers every offset exactly once, in order, and every publish of its own is
//! published exactly once; over `wss://` with a token that expires, it refreshes the token
//! before `exp` and keeps its connection.
//!
//! Every wait is bounded by a deadline.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

use support::proxy::Proxy;
use support::rooms::{RoomClient as TestClient, PATH};
use support::tls::server_tls;
use support::{TestServer, ROOM_WORKERS};
use wsedge::client::rooms::{JoinOptions, Options, RoomClient, RoomEvent};
use wsedge::rooms::auth::AuthConfig;
use wsedge::rooms::RoomsConfig;

/// Messages the backend-side publisher sends, and publishes of the client's own.
const FROM_OTHERS: u64 = 1500;
const OWN: u64 = 150;

fn quick_reconnects() -> Options {
    Options {
        min_reconnect_delay: Duration::from_millis(5),
        max_reconnect_delay: Duration::from_millis(80),
        ..Options::default()
    }
}

#[test]
fn every_offset_arrives_once_in_order_through_random_cuts() {
    let rooms = RoomsConfig {
        publish_rate: 100_000.0,
        publish_burst: 100_000.0,
        history_size: 10_000,
        ..RoomsConfig::default()
    };
    let server = TestServer::rooms(rooms);
    let proxy = Proxy::start(server.addr());
    let url = format!("ws://{}{PATH}", proxy.addr());
    let mut client = RoomClient::new(&url).unwrap().with_options(quick_reconnects());
    client.join("r", JoinOptions::default());
    // The room exists before anyone publishes, so that offset 1 is after our first join.
    let started = Instant::now();
    while !matches!(client.next_event(Duration::from_millis(100)), Some(RoomEvent::Joined { .. })) {
        assert!(started.elapsed() < Duration::from_secs(10), "the first join never came");
    }

    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let mut other = TestClient::connect(&server);
        other.join("r");
        thread::spawn(move || {
            for n in 1..=FROM_OTHERS {
                other.write(&json!({"op": "publish", "room": "r", "data": {"other": n}, "echo": false}));
                // ~3 s of traffic: a few dozen cuts land in it.
                if n % 5 == 0 {
                    other.flush();
                    thread::sleep(Duration::from_millis(10));
                }
            }
            other.barrier();
        })
    };
    let cutter = {
        let (done, proxy) = (done.clone(), Arc::new(Mutex::new(proxy)));
        let handle = proxy.clone();
        let thread = thread::spawn(move || {
            let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            eprintln!("cut timings: seed {seed}");
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            while !done.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(rng.random_range(5..120)));
                handle.lock().unwrap().cut_all();
            }
        });
        (thread, proxy)
    };

    let mut offsets = Vec::new();
    let mut own_seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut others_seen = 0u64;
    let mut published: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut disconnects, mut next_own) = (0u32, 1u64);
    let deadline = Instant::now() + Duration::from_secs(90);
    while others_seen < FROM_OTHERS || (own_seen.len() as u64) < OWN || (published.len() as u64) < OWN {
        assert!(
            Instant::now() < deadline,
            "stuck: {} offsets, {others_seen} others, {} own, {} settled, {disconnects} drops",
            offsets.len(),
            own_seen.len(),
            published.len()
        );
        if next_own <= OWN && client.queued_publishes() < 5 && offsets.len() as u64 >= next_own * 8 {
            client.publish("r", json!({"own": next_own})).unwrap();
            next_own += 1;
        }
        match client.next_event(Duration::from_millis(20)) {
            Some(RoomEvent::Message { offset, message, .. }) => {
                offsets.push(offset.expect("only durable messages here"));
                if let Some(n) = message["data"]["own"].as_u64() {
                    *own_seen.entry(n).or_default() += 1;
                } else {
                    others_seen += 1;
                }
            }
            Some(RoomEvent::Published { seq, offset, .. }) => {
                assert!(published.insert(seq, offset.expect("an offset")).is_none(), "publish {seq} settled twice");
            }
            Some(RoomEvent::Disconnected { retry_in, .. }) => {
                assert!(retry_in.is_some(), "the client must not stop");
                disconnects += 1;
            }
            Some(RoomEvent::Reset { .. }) => panic!("the history covers every drop: no reset expected"),
            Some(RoomEvent::Stopped { reason }) => panic!("stopped: {reason}"),
            _ => {}
        }
    }
    done.store(true, Ordering::SeqCst);
    cutter.0.join().unwrap();
    publisher.join().unwrap();

    let total = FROM_OTHERS + OWN;
    let expected: Vec<u64> = (1..=total).collect();
    if let Some(at) = (0..offsets.len().max(expected.len())).find(|&i| offsets.get(i) != expected.get(i)) {
        let near = &offsets[at.saturating_sub(3)..(at + 3).min(offsets.len())];
        panic!("every offset once, in order: {} delivered for {total}, first wrong at #{at}: {near:?}", offsets.len());
    }
    assert!(own_seen.values().all(|&n| n == 1), "each own publish once in the room");
    let mut settled: Vec<u64> = published.values().copied().collect();
    settled.sort_unstable();
    settled.dedup();
    assert_eq!(settled.len() as u64, OWN, "each own publish got an offset of its own");
    let cuts = cutter.1.lock().unwrap().cuts.load(Ordering::Relaxed);
    assert!(disconnects >= 5, "only {disconnects} drops ({cuts} cuts): the test proved little");
    eprintln!("{total} offsets once each across {disconnects} drops ({cuts} cuts)");
}

const SECRET: &[u8] = b"an HS256 secret for the client recovery tests only";

fn token(exp_from_now: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"sub": "ann", "exp": now + exp_from_now});
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

#[test]
fn over_wss_a_token_is_refreshed_before_it_expires_and_the_connection_lives_on() {
    let mut auth = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
    auth.require_auth = true;
    let rooms = RoomsConfig { auth: Some(auth), ..RoomsConfig::default() };
    let config = wsedge::server::Config { workers: ROOM_WORKERS, tls: Some(server_tls()), ..support::config() };
    let server = TestServer::rooms_with(config, rooms);
    let handed_out = Arc::new(Mutex::new(0u32));
    let counter = handed_out.clone();
    // 4 s tokens: refreshed at half their life (2 s), each time on the open connection.
    let mut client = RoomClient::new(&server.url_at(PATH))
        .unwrap()
        .with_tls(server.client_tls().expect("a TLS server"))
        .with_token_source(move || {
            *counter.lock().unwrap() += 1;
            Some(token(4))
        });
    client.join("r", JoinOptions::default());
    let mut authenticated = 0;
    // Two refreshes take about 4 s; a loaded machine (debug TLS, tests side by side) may
    // take longer, which changes nothing here: the connection must outlive its tokens.
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && authenticated < 3 {
        match client.next_event(Duration::from_millis(100)) {
            Some(RoomEvent::Authenticated { user }) => {
                assert_eq!(user.as_deref(), Some("ann"));
                authenticated += 1;
            }
            Some(e @ (RoomEvent::Disconnected { .. } | RoomEvent::AuthRefused { .. } | RoomEvent::Stopped { .. })) => {
                panic!("the connection must outlive its first token: {e:?}")
            }
            _ => {}
        }
    }
    assert!(client.is_connected());
    assert!(authenticated >= 3, "connect + two refreshes in 15 s, got {authenticated}");
    assert_eq!(*handed_out.lock().unwrap(), authenticated);
    // Still a member: a publish goes through on the refreshed connection.
    let seq = client.publish("r", json!("still here")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the publish was never settled");
        if let Some(RoomEvent::Published { seq: s, offset: Some(_), .. }) =
            client.next_event(Duration::from_millis(100))
        {
            assert_eq!(s, seq);
            break;
        }
    }
}

/// What a refused fixed token leads to: the client stops and says why (no retry loop).
#[test]
fn a_refused_fixed_token_stops_the_client() {
    let mut auth = AuthConfig::default().with_hs256_secret(SECRET).unwrap();
    auth.require_auth = true;
    let rooms = RoomsConfig { auth: Some(auth), ..RoomsConfig::default() };
    let server = TestServer::rooms(rooms);
    let mut client = RoomClient::new(&server.url_at(PATH)).unwrap().with_token("not a token");
    client.join("r", JoinOptions::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<Value> = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "never stopped: {seen:?}");
        match client.next_event(Duration::from_millis(100)) {
            Some(RoomEvent::Stopped { reason }) => {
                assert!(reason.contains("token"), "{reason}");
                break;
            }
            Some(RoomEvent::AuthRefused { code, .. }) => seen.push(json!(code)),
            _ => {}
        }
    }
    assert_eq!(seen, [json!(401)]);
    assert_eq!(client.next_event(Duration::from_millis(50)), None, "nothing after the stop");
}
