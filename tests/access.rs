//! Who gets in, on the wire: the `Origin` allow-list (403), per-IP connection and handshake
//! limits (429, shared by every worker), and the client address behind trusted proxies.
//!
//! Raw upgrades over TLS (the server's certificate from `support::tls`), because the tests
//! set `Origin` and forwarding headers freely and read the refusal's status line, headers
//! and body. Every connection goes through [`open_stream`].

mod support;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use support::tls::{server_tls, ClientStream};
use support::{client_frame, close_payload, config, expect_close_then_eof, read_head, ResponseHead, TestServer};
use wsedge::server::access::{AccessConfig, ProxyHeader};
use wsedge::server::Config;

/// The transport every test connection uses: TLS, handshake done.
fn open_stream(server: &TestServer) -> ClientStream {
    server.stream()
}

/// A server running echo with `access` on `workers` workers.
fn server(access: AccessConfig, workers: usize) -> TestServer {
    TestServer::start_workers(
        Config { workers, access, tls: Some(server_tls()), ..config() },
        |_: wsedge::server::Mesh<()>| wsedge::echo::Echo,
    )
}

fn access() -> AccessConfig {
    AccessConfig::default()
}

/// An upgrade request with extra header lines.
fn request(server: &TestServer, headers: &[&str]) -> Vec<u8> {
    let mut text = support::upgrade_request(&server.addr().to_string());
    text.truncate(text.len() - 2);
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// What the server answered an upgrade: the stream (open after a 101), the head, and for
/// a refusal the body (read to the server's EOF: refusals close the connection).
struct Answer {
    stream: ClientStream,
    head: ResponseHead,
    body: String,
}

fn upgrade(server: &TestServer, headers: &[&str]) -> Answer {
    let mut stream = open_stream(server);
    stream.write_all(&request(server, headers)).expect("write the upgrade");
    let head = read_head(&mut stream);
    let mut body = String::new();
    if head.status != 101 {
        stream.read_to_string(&mut body).expect("a refusal ends with the server's EOF");
    }
    Answer { stream, head, body }
}

fn status(server: &TestServer, headers: &[&str]) -> u16 {
    upgrade(server, headers).head.status
}

/// Closes an open connection with the close handshake (the server then drops it).
fn close(mut stream: ClientStream) {
    stream.write_all(&client_frame(0x88, &close_payload(1000, b""))).unwrap();
    expect_close_then_eof(&mut stream, 1000);
}

/// The `wsedge_handshake_failures_total` count for `reason` (0 when absent).
fn refusals(server: &TestServer, reason: &str) -> u64 {
    let metrics = server.http("GET", "/metrics", &[], b"");
    let prefix = format!("wsedge_handshake_failures_total{{reason=\"{reason}\"}} ");
    metrics.text().lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
}

#[test]
fn a_disallowed_origin_gets_403_and_is_counted() {
    let server =
        server(AccessConfig { allowed_origins: vec!["https://app.example.com".parse().unwrap()], ..access() }, 1);
    for origin in ["https://evil.example", "https://app.example.com.evil.example", "http://app.example.com", "null"] {
        let answer = upgrade(&server, &[&format!("Origin: {origin}")]);
        assert_eq!(answer.head.status, 403, "{origin}: {:?}", answer.head);
        assert_eq!(answer.head.header("Connection"), Some("close"));
        assert_eq!(answer.body, "origin not allowed\n");
    }
    assert_eq!(refusals(&server, "origin_not_allowed"), 4);
}

#[test]
fn allowed_exact_and_wildcard_origins_upgrade() {
    let allowed = ["https://app.example.com", "http://localhost:3000", "https://*.example.org"];
    let server =
        server(AccessConfig { allowed_origins: allowed.iter().map(|o| o.parse().unwrap()).collect(), ..access() }, 1);
    for origin in [
        "https://app.example.com",
        "https://APP.example.com:443",
        "http://localhost:3000",
        "https://a.example.org",
        "https://a.b.example.org",
    ] {
        assert_eq!(status(&server, &[&format!("Origin: {origin}")]), 101, "{origin}");
    }
    for origin in ["https://example.org", "https://evil-example.org", "http://a.example.org", "http://localhost:3001"] {
        assert_eq!(status(&server, &[&format!("Origin: {origin}")]), 403, "{origin}");
    }
}

#[test]
fn a_missing_origin_is_allowed_unless_required() {
    let listed = vec!["https://app.example.com".parse().unwrap()];
    let lenient = server(AccessConfig { allowed_origins: listed.clone(), ..access() }, 1);
    assert_eq!(status(&lenient, &[]), 101, "non-browser clients send no Origin");
    let strict = server(AccessConfig { allowed_origins: listed, require_origin: true, ..access() }, 1);
    let answer = upgrade(&strict, &[]);
    assert_eq!(answer.head.status, 403);
    assert_eq!(answer.body, "origin required\n");
    assert_eq!(status(&strict, &["Origin: https://app.example.com"]), 101);
    assert_eq!(refusals(&strict, "origin_missing"), 1);
}

#[test]
fn max_conns_per_ip_answers_429_across_workers_and_frees_a_slot_on_close() {
    // Two workers: the count is the server's, whichever worker the kernel picks.
    let server = server(AccessConfig { max_conns_per_ip: Some(3), ..access() }, 2);
    let mut open: Vec<ClientStream> = (0..3).map(|_| upgrade(&server, &[]).stream).collect();
    let answer = upgrade(&server, &[]);
    assert_eq!(answer.head.status, 429, "{:?}", answer.head);
    assert_eq!(answer.body, "too many connections from this address\n");
    close(open.pop().unwrap());
    // The slot comes back when the server drops the connection (right after our FIN).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = 0;
    while Instant::now() < deadline {
        let answer = upgrade(&server, &[]);
        last = answer.head.status;
        if last == 101 {
            open.push(answer.stream);
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(last, 101, "a closed connection's slot was not freed");
    assert_eq!(status(&server, &[]), 429, "and the limit still holds");
    assert!(refusals(&server, "ip_connections") >= 2);
}

#[test]
fn a_connection_dropped_without_a_close_handshake_frees_its_slot() {
    let server = server(AccessConfig { max_conns_per_ip: Some(1), ..access() }, 1);
    let first = upgrade(&server, &[]);
    assert_eq!(first.head.status, 101);
    assert_eq!(status(&server, &[]), 429);
    drop(first.stream);
    let deadline = Instant::now() + Duration::from_secs(3);
    while status(&server, &[]) != 101 {
        assert!(Instant::now() < deadline, "the slot of a connection gone at EOF was not freed");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn handshakes_per_ip_answers_429_then_allows_again_after_refill() {
    const RATE: u32 = 4;
    let server = server(AccessConfig { handshakes_per_ip: Some(RATE), ..access() }, 1);
    let start = Instant::now();
    let mut allowed = 0u32;
    let refused = loop {
        let answer = upgrade(&server, &[]);
        if answer.head.status != 101 {
            break answer;
        }
        allowed += 1;
        assert!(allowed <= 10 * RATE, "never refused");
    };
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(refused.head.status, 429, "{:?}", refused.head);
    assert_eq!(refused.body, "too many handshakes from this address\n");
    let retry_after: u64 = refused.head.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    // The burst, plus what refilled while the test ran (a slow machine refills more).
    assert!(allowed >= RATE, "only {allowed} of a burst of {RATE}");
    assert!(f64::from(allowed) <= f64::from(RATE) + elapsed * f64::from(RATE) + 1.0, "{allowed} in {elapsed} s");
    // One token comes back every 1/RATE s.
    thread::sleep(Duration::from_millis(1000 / u64::from(RATE) + 50));
    assert_eq!(status(&server, &[]), 101, "the bucket did not refill");
    assert!(refusals(&server, "ip_handshake_rate") >= 1);
}

#[test]
fn x_forwarded_for_from_a_trusted_proxy_names_the_client() {
    let access =
        AccessConfig { max_conns_per_ip: Some(1), trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()], ..access() };
    let server = server(access, 1);
    let a = upgrade(&server, &["X-Forwarded-For: 203.0.113.1"]);
    assert_eq!(a.head.status, 101);
    // A different client behind the same proxy has its own count...
    let b = upgrade(&server, &["X-Forwarded-For: 198.51.100.7, 127.0.0.1"]);
    assert_eq!(b.head.status, 101, "trusted hops are skipped");
    // ...and the same client is over its limit, whatever it claims to the left.
    assert_eq!(status(&server, &["X-Forwarded-For: 198.51.100.99, 203.0.113.1"]), 429);
    drop((a, b));
}

#[test]
fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let access =
        AccessConfig { max_conns_per_ip: Some(1), trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()], ..access() };
    let server = server(access, 1);
    let a = upgrade(&server, &["X-Forwarded-For: 203.0.113.1"]);
    assert_eq!(a.head.status, 101);
    // 127.0.0.1 is not a trusted proxy: both are 127.0.0.1, whatever they claim.
    assert_eq!(status(&server, &["X-Forwarded-For: 198.51.100.7"]), 429);
    drop(a);
}

#[test]
fn rfc7239_forwarded_from_a_trusted_proxy_names_the_client() {
    let access = AccessConfig {
        max_conns_per_ip: Some(1),
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        proxy_header: ProxyHeader::Forwarded,
        ..access()
    };
    let server = server(access, 1);
    let a = upgrade(&server, &["Forwarded: for=\"[2001:db8::1]:1234\";proto=https"]);
    assert_eq!(a.head.status, 101);
    // Same /64: the same client for the limits.
    assert_eq!(status(&server, &["Forwarded: for=\"[2001:db8::2]\""]), 429);
    let b = upgrade(&server, &["Forwarded: for=\"[2001:db8:0:1::1]\""]);
    assert_eq!(b.head.status, 101, "another /64");
    // X-Forwarded-For is not the configured header: ignored, so this is 127.0.0.1.
    let c = upgrade(&server, &["X-Forwarded-For: 192.0.2.1"]);
    assert_eq!(c.head.status, 101);
    assert_eq!(status(&server, &["X-Forwarded-For: 192.0.2.2"]), 429);
    drop((a, b, c));
}
