//! TLS on the listener (`Config::tls`, `--tls-cert/--tls-key`): WebSocket and HTTP over TLS
//! 1.2 and 1.3 with ALPN `http/1.1`, against rustls clients trusting a test authority made by
//! rcgen; what a TLS port does with plaintext and garbage (ends that connection only); the
//! room server, backpressure and the slow-consumer rule over TLS; and certificate reload,
//! through the library handle and through SIGHUP to the real binary. (A stalled TLS
//! handshake meets the handshake timeout on driven time: `src/server/loop_tests.rs`.)

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ProtocolVersion;
use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use wsedge::rooms::RoomsConfig;
use wsedge::server::{Config, TlsConfig};

use support::rooms::{offset_of, RoomClient};
use support::tls::{self, ClientStream, Fixture};
use support::{TestServer, CLOSE_WITHIN, ROOM_WORKERS};

/// The test config with TLS on (the shared fixture's certificate).
fn tls_config() -> Config {
    Config { tls: Some(tls::server_tls()), ..support::config() }
}

/// Sends `message` and expects it back.
fn echo(ws: &mut WebSocket<ClientStream>, message: Message) {
    ws.send(message.clone()).expect("send");
    loop {
        match ws.read().expect("read the echo") {
            Message::Ping(_) | Message::Pong(_) => continue,
            got => {
                assert!(got == message, "echo differs ({} bytes sent, {} back)", message.len(), got.len());
                return;
            }
        }
    }
}

/// The leaf certificate a TLS client was shown.
fn peer_leaf(ws: &WebSocket<ClientStream>) -> CertificateDer<'static> {
    let session = ws.get_ref().session().expect("a TLS connection");
    session.peer_certificates().and_then(|c| c.first()).expect("a server certificate").clone().into_owned()
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// Asserts the server ends `stream` (EOF or a reset) within `within`, after at most a few
/// TLS records (an alert; encrypted in TLS 1.3); returns the bytes it sent.
fn expect_ended(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                assert!(got.len() < 64 * 1024, "the server keeps sending");
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("expected the server to end the connection within {within:?}: {e}"),
        }
    }
}

/// Asserts the server answers `stream` with at most a TLS alert record (content type 21,
/// RFC 8446 §5.1) and ends it.
fn expect_alert_and_end(stream: &mut TcpStream) {
    let got = expect_ended(stream, CLOSE_WITHIN);
    assert!(got.is_empty() || got[0] == 21, "expected at most an alert, got {:?}", &got[..got.len().min(32)]);
}

/// The value of a Prometheus counter line in `/metrics` (0 when absent).
fn counter(server: &TestServer, line_prefix: &str) -> u64 {
    let metrics = server.http("GET", "/metrics", &[], b"");
    metrics
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix).map(|v| v.trim().parse().expect("a number")))
        .unwrap_or(0)
}

#[test]
fn echoes_text_binary_and_a_large_message_over_tls() {
    let server = TestServer::start(tls_config());
    assert!(server.url().starts_with("wss://"));
    let (mut ws, response) = tls::connect(&server.url());
    assert_eq!(response.status(), 101);
    echo(&mut ws, Message::text("hello over TLS"));
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255]));
    // 1 MiB of varied bytes: many TLS records each way, and more than rustls may buffer.
    let large: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    echo(&mut ws, Message::binary(large));
    ws.close(None).expect("close");
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("after the close: {e}"),
        }
    }
}

#[test]
fn negotiates_tls_1_2_and_1_3_with_alpn_http_1_1() {
    let server = TestServer::start(tls_config());
    for (versions, expected) in [
        (&[&rustls::version::TLS12][..], ProtocolVersion::TLSv1_2),
        (&[&rustls::version::TLS13][..], ProtocolVersion::TLSv1_3),
    ] {
        let request = tungstenite::client::IntoClientRequest::into_client_request(server.url()).unwrap();
        let (mut ws, _) = tls::connect_with(request, tls::fixture().client_config_with(versions));
        let session = ws.get_ref().session().expect("TLS");
        assert_eq!(session.protocol_version(), Some(expected));
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        echo(&mut ws, Message::text(format!("over {expected:?}")));
    }
}

/// permessage-deflate works over TLS: a compressible message comes back compressed (RSV1)
/// and inflates to what was sent.
#[test]
fn permessage_deflate_over_tls() {
    let server = TestServer::start(tls_config());
    let mut stream = server.stream();
    let request = support::upgrade_request(&server.addr().to_string())
        .replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let head = support::read_head(&mut stream);
    assert_eq!(head.status, 101);
    assert!(head.header("Sec-WebSocket-Extensions").is_some_and(|v| v.starts_with("permessage-deflate")));
    let text = "compress me over TLS ".repeat(100);
    stream.write_all(&support::client_frame(0x81, text.as_bytes())).unwrap();
    let frame = support::read_frame(&mut stream);
    assert_eq!(frame.b0, 0xC1, "a final text frame with RSV1 (compressed)");
    assert!(frame.payload.len() < text.len() / 4, "{} bytes for {}", frame.payload.len(), text.len());
    let mut deflated = frame.payload.clone();
    deflated.extend_from_slice(&[0, 0, 0xff, 0xff]); // RFC 7692 §7.2.2
    let mut inflated = Vec::with_capacity(text.len() * 2);
    flate2::Decompress::new(false)
        .decompress_vec(&deflated, &mut inflated, flate2::FlushDecompress::Sync)
        .expect("inflate");
    assert_eq!(inflated, text.as_bytes());
}

/// Plain HTTP works over TLS too (health, metrics, the backend API).
#[test]
fn plain_http_over_tls() {
    let server = TestServer::start(tls_config());
    let reply = server.http("GET", "/healthz", &[], b"");
    assert_eq!(reply.head.status, 200);
    assert_eq!(reply.text(), "ok\n");
}

/// A plaintext request on a TLS port ends that connection (after at most an alert); the
/// server goes on serving, and counts the failure.
#[test]
fn a_plaintext_request_on_a_tls_port_ends_that_connection_only() {
    let server = TestServer::start(tls_config());
    let (mut bystander, _) = tls::connect(&server.url());
    let mut plain = server.tcp();
    plain.write_all(support::upgrade_request(&server.addr().to_string()).as_bytes()).unwrap();
    expect_alert_and_end(&mut plain);
    let mut plain = server.tcp();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    expect_alert_and_end(&mut plain);
    echo(&mut bystander, Message::text("still here"));
    let (mut fresh, _) = tls::connect(&server.url());
    echo(&mut fresh, Message::text("and new ones work"));
    assert_eq!(counter(&server, "wsedge_handshake_failures_total{reason=\"tls\"}"), 2);
}

/// Garbage instead of TLS records, before or after the handshake, ends that connection at
/// once (not at a timeout); the others go on.
#[test]
fn garbage_records_end_that_connection_only() {
    let server = TestServer::start(tls_config());
    let (mut bystander, _) = tls::connect(&server.url());
    // Before any handshake: not a TLS record at all.
    let mut garbage = server.tcp();
    garbage.write_all(&[0xffu8; 300]).unwrap();
    expect_alert_and_end(&mut garbage);
    // A record header claiming an impossible length.
    let mut huge = server.tcp();
    huge.write_all(&[0x16, 0x03, 0x03, 0xff, 0xff]).unwrap();
    expect_alert_and_end(&mut huge);
    // After the handshake, mid-WebSocket: an application-data record that fails to decrypt.
    let (mut victim, _) = tls::connect(&server.url());
    echo(&mut victim, Message::text("before"));
    let mut tcp = victim.get_ref().tcp().try_clone().unwrap();
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    record.extend_from_slice(&[0x5a; 0x40]);
    tcp.write_all(&record).unwrap();
    expect_ended(&mut tcp, CLOSE_WITHIN);
    echo(&mut bystander, Message::text("unaffected"));
}

/// The room server over TLS, through the harness's `RoomClient` (several workers).
#[test]
fn rooms_join_and_publish_over_tls() {
    let config = Config { workers: ROOM_WORKERS, ..tls_config() };
    let server = TestServer::rooms_with(config, RoomsConfig::default());
    let mut alice = RoomClient::connect(&server);
    let mut bob = RoomClient::connect(&server);
    assert!(alice.ws().get_ref().session().is_some(), "connected over TLS");
    alice.join("lobby");
    bob.join("lobby");
    let offset = alice.publish("lobby", json!({"text": "hi bob"}));
    let message = bob.next_message();
    assert_eq!(offset_of(&message), offset);
    assert_eq!(message["data"], json!({"text": "hi bob"}));
    assert_eq!(message["from"]["client"], alice.id.as_str());
}

/// The slow-consumer rule counts what waits in the write queue: over TLS (where rustls
/// holds at most one bounded feed) a member that never reads is still closed with 1013,
/// and the one that reads gets everything.
#[test]
fn a_member_that_does_not_read_over_tls_is_closed_with_1013() {
    const PAYLOAD: usize = 8 * 1024;
    let config = Config { max_outbound_bytes: 64 * 1024, ..tls_config() };
    let rooms = RoomsConfig { publish_rate: 1e9, publish_burst: 1e9, ..RoomsConfig::default() };
    let server = TestServer::rooms_with(config, rooms);
    let mut slow = RoomClient::connect(&server);
    slow.join("flood");
    let mut fast = RoomClient::connect(&server);
    fast.ok(json!({"op": "join", "room": "flood", "presence": true}));
    let mut publisher = RoomClient::connect(&server);
    publisher.join("flood");
    assert_eq!(fast.next()["op"], "join");
    let filler = "f".repeat(PAYLOAD);
    let mut sent = 0u64;
    loop {
        assert!(sent < 4000, "the member that never reads was never closed");
        sent += 1;
        publisher.ok(json!({"op": "publish", "room": "flood", "data": filler, "echo": false}));
        let frame = fast.next();
        if frame["op"] == "leave" {
            assert_eq!(frame["member"]["client"], slow.id.as_str());
            assert_eq!(offset_of(&fast.next_message()), sent);
            break;
        }
        assert_eq!(offset_of(&frame), sent, "the fast member gets every message in order");
    }
    let (before, close) = slow.read_until_close();
    assert!(!before.is_empty() && (before.len() as u64) < sent);
    let close = close.expect("a close frame");
    assert_eq!(close.code, CloseCode::Again);
    assert_eq!(close.reason.as_str(), "slow consumer");
}

/// A client that sends but does not read is not read from either (backpressure) and gets
/// every echo, in order, once it reads; over TLS the queue, not rustls, holds the backlog.
#[test]
fn an_echo_client_that_does_not_read_gets_everything_once_it_reads() {
    let config = Config { write_high_water: 256 * 1024, ..tls_config() };
    let server = TestServer::start(config);
    let (mut ws, _) = tls::connect(&server.url());
    const MESSAGES: usize = 200;
    let payload = vec![7u8; 16 * 1024];
    let writer_ws = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            for i in 0..MESSAGES {
                let mut p = payload.clone();
                p[0] = i as u8;
                ws.write(Message::binary(p)).expect("queue");
            }
            ws.flush().expect("flush");
            ws
        });
        sender.join().expect("sender")
    });
    let mut ws = writer_ws;
    for i in 0..MESSAGES {
        match ws.read().expect("read an echo") {
            Message::Binary(data) => {
                assert_eq!(data.len(), payload.len());
                assert_eq!(data[0], i as u8, "echoes in order");
            }
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

/// Reloading through any clone of the `TlsConfig`: new connections get the new
/// certificate, the open one keeps working; a failed reload keeps the current one.
#[test]
fn a_certificate_reload_reaches_new_connections_and_keeps_open_ones() {
    let fixture = Fixture::new();
    let handle = fixture.server_tls();
    let server =
        TestServer::start(Config { tls: Some(handle.clone()), ..support::config() }).trusting(fixture.client_config());
    let request = || tungstenite::client::IntoClientRequest::into_client_request(server.url()).unwrap();
    let (mut old, _) = tls::connect_with(request(), fixture.client_config());
    assert_eq!(peer_leaf(&old), der_of(&fixture.cert_pem));

    let (cert_b, key_b) = fixture.issue("wsedge test server B");
    handle.replace_pem(cert_b.as_bytes(), key_b.as_bytes()).expect("reload to B");
    let (mut new, _) = tls::connect_with(request(), fixture.client_config());
    assert_eq!(peer_leaf(&new), der_of(&cert_b));
    echo(&mut new, Message::text("new connection, certificate B"));
    echo(&mut old, Message::text("old connection, still on A"));

    assert!(handle.replace_pem(cert_b.as_bytes(), fixture.key_pem.as_bytes()).is_err(), "mismatched key");
    let (again, _) = tls::connect_with(request(), fixture.client_config());
    assert_eq!(peer_leaf(&again), der_of(&cert_b), "a failed reload keeps B");
}

/// The real binary: `--tls-cert/--tls-key`, then SIGHUP after the files change.
struct Binary {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// Starts `wsedge echo` on an ephemeral port and reads the address from its log.
    fn start(args: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsedge"))
            .args(["echo", "--listen", "127.0.0.1:0", "--workers", "2"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsedge");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("a listening line");
            if let Some(addr) = line.split("listening on wss://").nth(1).or(line.split("listening on ws://").nth(1)) {
                break addr.trim().parse().expect("an address");
            }
        };
        Binary { child, addr }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([name, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

#[test]
fn the_binary_serves_tls_and_reloads_the_certificate_on_sighup() {
    let fixture = Fixture::new();
    let dir = std::env::temp_dir().join(format!("wsedge-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &fixture.cert_pem).unwrap();
    std::fs::write(&key, &fixture.key_pem).unwrap();
    let server = Binary::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let url = format!("wss://{}/", server.addr);
    let request = || tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    let (mut old, _) = tls::connect_with(request(), fixture.client_config());
    assert_eq!(peer_leaf(&old), der_of(&fixture.cert_pem));

    let (cert_b, key_b) = fixture.issue("wsedge test server B");
    std::fs::write(&cert, &cert_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    server.signal("-HUP");
    // The signal is handled on the server's next loop turn: poll for the new certificate.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut new = loop {
        let (ws, _) = tls::connect_with(request(), fixture.client_config());
        if peer_leaf(&ws) == der_of(&cert_b) {
            break ws;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload the certificate");
        std::thread::sleep(Duration::from_millis(50));
    };
    echo(&mut new, Message::text("certificate B"));
    echo(&mut old, Message::text("the old connection survived the reload"));

    // A bad file on reload: logged, the current certificate stays, the server goes on.
    std::fs::write(&key, "not a key").unwrap();
    server.signal("-HUP");
    std::thread::sleep(Duration::from_millis(200));
    let (mut after, _) = tls::connect_with(request(), fixture.client_config());
    assert_eq!(peer_leaf(&after), der_of(&cert_b));
    echo(&mut after, Message::text("still B"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_without_tls_is_ignored_not_fatal() {
    let mut server = Binary::start(&[]);
    server.signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.child.try_wait().unwrap().is_none(), "SIGHUP ended a server without TLS");
    let (mut ws, _) = tls::connect(&format!("ws://{}/", server.addr));
    echo(&mut ws, Message::text("still here after SIGHUP"));
}

#[test]
fn the_binary_refuses_to_start_with_a_bad_key_and_names_the_file() {
    let fixture = Fixture::new();
    let (_, other_key) = fixture.issue("another");
    let dir = std::env::temp_dir().join(format!("wsedge-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("other-key.pem"));
    std::fs::write(&cert, &fixture.cert_pem).unwrap();
    std::fs::write(&key, other_key).unwrap();
    for (cert_arg, key_arg, named) in
        [(cert.clone(), key.clone(), key.clone()), (dir.join("missing.pem"), key.clone(), dir.join("missing.pem"))]
    {
        let output = Command::new(env!("CARGO_BIN_EXE_wsedge"))
            .args(["echo", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&cert_arg)
            .arg("--tls-key")
            .arg(&key_arg)
            .stdin(Stdio::null())
            .output()
            .expect("run wsedge");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named.to_str().unwrap()), "the error names {named:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = TlsConfig::from_pem(fixture.cert_pem.as_bytes(), fixture.key_pem.as_bytes()).expect("the good pair loads");
}

/// Keys in every PEM form `--tls-key` takes: PKCS#8 (rcgen, above), PKCS#1 RSA and SEC1
/// EC, as `openssl` writes them; each serves a TLS echo.
#[test]
fn loads_pkcs1_rsa_and_sec1_ec_keys() {
    let dir = std::env::temp_dir().join(format!("wsedge-tls-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem"]);
    for (key, header) in [("rsa.pem", "-----BEGIN RSA PRIVATE KEY-----"), ("ec.pem", "-----BEGIN EC PRIVATE KEY-----")]
    {
        let cert = format!("{key}.crt");
        openssl(
            &["req", "-x509", "-key", key, "-subj", "/CN=localhost", "-days", "1", "-out", &cert]
                .into_iter()
                .chain(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
                .collect::<Vec<_>>(),
        );
        let key_pem = std::fs::read_to_string(dir.join(key)).unwrap();
        assert!(key_pem.starts_with(header), "{key} is {}", key_pem.lines().next().unwrap_or_default());
        let tls = TlsConfig::from_files(&dir.join(&cert), &dir.join(key)).expect("load the pair");
        let server = TestServer::start(Config { tls: Some(tls), ..support::config() });
        assert!(server.url().starts_with("wss://"));
        // A self-signed leaf: trust it as its own root.
        let cert_pem = std::fs::read(dir.join(&cert)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(&cert_pem).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let request = tungstenite::client::IntoClientRequest::into_client_request(server.url()).unwrap();
        let (mut ws, _) = tls::connect_with(request, std::sync::Arc::new(client));
        echo(&mut ws, Message::text(format!("served with {key}")));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `wsedge bench` speaks wss:// too: once trusting the test CA (`--ca`), once `--insecure`;
/// every connection opens and echoes flow.
#[test]
fn the_load_generator_runs_over_tls() {
    let server = TestServer::start(tls_config());
    let dir = std::env::temp_dir().join(format!("wsedge-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, tls::fixture().ca_pem()).unwrap();
    let url = server.url();
    for trust in [vec!["--ca", ca.to_str().unwrap()], vec!["--insecure"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_wsedge"))
            .args(["bench", "echo", "--url", &url, "--connections", "4", "--duration", "0.5", "--warmup", "0.1"])
            .args(["--json"])
            .args(&trust)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run wsedge bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "bench {trust:?} failed: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
        assert_eq!(report["connections_open"], 4, "{report:#}");
        assert_eq!(report["errors"], 0, "{report:#}");
        assert!(report["messages"].as_u64().is_some_and(|m| m > 0), "{report:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tls-cert` and `tls-key` work as config-file keys too (`--config`), and one without the
/// other is a startup error naming the missing flag.
#[test]
fn the_binary_takes_tls_from_a_config_file() {
    let fixture = Fixture::new();
    let dir = std::env::temp_dir().join(format!("wsedge-tls-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, config) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("wsedge.toml"));
    std::fs::write(&cert, &fixture.cert_pem).unwrap();
    std::fs::write(&key, &fixture.key_pem).unwrap();
    let toml = format!("tls-cert = {:?}\ntls-key = {:?}\n", cert.to_str().unwrap(), key.to_str().unwrap());
    std::fs::write(&config, toml).unwrap();
    let server = Binary::start(&["--config", config.to_str().unwrap()]);
    let url = format!("wss://{}/", server.addr);
    let request = tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    let (mut ws, _) = tls::connect_with(request, fixture.client_config());
    echo(&mut ws, Message::text("configured by file"));

    let output = Command::new(env!("CARGO_BIN_EXE_wsedge"))
        .args(["echo", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run wsedge");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs --tls-key"));
    let _ = std::fs::remove_dir_all(&dir);
}
