//! The loop's deadlines end to end, on driven time: a real `Server` and real loopback
//! sockets, but every turn runs at a time the test chooses (`Server::drive`), so crossing a
//! 10-second handshake timeout or two keepalive intervals takes no sleeping. The rules
//! themselves are unit-tested in `policy.rs`; these pin down that the loop applies them.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{Config, ConnId, Now, Outbox, Payload, Server, ShutdownHandle, TlsConfig};
use crate::echo::Echo;
use crate::proto::MessageKind;

/// Real time a turn waits for the sockets' readiness (loopback is quick; this is slack).
const SETTLE: Duration = Duration::from_millis(20);

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        handshake_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(30),
        close_linger: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(60),
        ..Config::default()
    }
}

struct Harness {
    server: Server<Echo>,
    start: Now,
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness { server: Server::bind(config, Echo).unwrap(), start: Now::read() }
    }

    fn connect(&mut self) -> TcpStream {
        let stream = TcpStream::connect(self.server.local_addr()).unwrap();
        stream.set_nonblocking(true).unwrap();
        self.at(Duration::ZERO);
        stream
    }

    /// Runs a turn `after` the start, in driven time. False once the loop would exit.
    fn at(&mut self, after: Duration) -> bool {
        self.server.drive(self.start.after(after), SETTLE)
    }

    fn handle(&self) -> ShutdownHandle {
        self.server.shutdown_handle()
    }
}

/// What the peer sees now: bytes, the end of the connection (`None`), or nothing yet.
fn read_now(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Some(Vec::new()),
        Err(_) => None,
    }
}

/// Whether the peer has ended the connection (reading past whatever it sent first).
fn ended(stream: &mut TcpStream) -> bool {
    loop {
        match read_now(stream) {
            None => return true,
            Some(bytes) if bytes.is_empty() => return false,
            Some(_) => {}
        }
    }
}

/// A self-signed certificate for 127.0.0.1: the server's TLS config, and a client's that
/// trusts it.
fn self_signed_tls() -> (TlsConfig, Arc<ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let server = TlsConfig::from_pem(certified.cert.pem().as_bytes(), certified.signing_key.serialize_pem().as_bytes());
    let mut roots = RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server.unwrap(), Arc::new(client))
}

fn upgrade(h: &mut Harness) -> TcpStream {
    let mut stream = h.connect();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        h.server.local_addr()
    );
    stream.write_all(request.as_bytes()).unwrap();
    h.at(Duration::ZERO);
    let response = read_now(&mut stream).expect("upgraded");
    assert!(response.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&response));
    stream
}

#[test]
fn a_silent_socket_is_dropped_at_the_handshake_timeout_and_not_before() {
    let mut h = Harness::new(config());
    let mut stream = h.connect();
    h.at(Duration::from_millis(9_999));
    assert_eq!(read_now(&mut stream), Some(Vec::new()), "still open just before the timeout");
    h.at(Duration::from_secs(10));
    assert_eq!(read_now(&mut stream), None, "dropped at the timeout");
}

#[test]
fn a_trickling_request_does_not_move_the_handshake_deadline() {
    // The timeout runs from accept, not from the last byte (slowloris).
    let mut h = Harness::new(config());
    let mut stream = h.connect();
    for (second, byte) in b"GET / HTTP/1.1\r\n".iter().take(9).enumerate() {
        stream.write_all(&[*byte]).unwrap();
        h.at(Duration::from_secs(second as u64));
        assert_eq!(read_now(&mut stream), Some(Vec::new()), "open at {second} s");
    }
    h.at(Duration::from_secs(10));
    assert_eq!(read_now(&mut stream), None);
}

#[test]
fn a_silent_websocket_is_pinged_after_one_interval_and_dropped_after_two() {
    let mut h = Harness::new(config());
    let mut stream = upgrade(&mut h);
    h.at(Duration::from_secs(29));
    assert_eq!(read_now(&mut stream), Some(Vec::new()), "no ping before the interval");
    h.at(Duration::from_secs(30));
    assert_eq!(read_now(&mut stream), Some(vec![0x89, 0x00]), "an empty ping");
    h.at(Duration::from_secs(59));
    assert_eq!(read_now(&mut stream), Some(Vec::new()), "a whole interval to answer");
    h.at(Duration::from_secs(60));
    assert_eq!(read_now(&mut stream), None, "dropped after two silent intervals");
}

#[test]
fn a_peer_that_answers_the_ping_is_kept() {
    let mut h = Harness::new(config());
    let mut stream = upgrade(&mut h);
    h.at(Duration::from_secs(30));
    assert_eq!(read_now(&mut stream), Some(vec![0x89, 0x00]));
    // A masked, empty pong.
    stream.write_all(&[0x8a, 0x80, 1, 2, 3, 4]).unwrap();
    h.at(Duration::from_secs(31));
    h.at(Duration::from_secs(60));
    assert_eq!(read_now(&mut stream), Some(Vec::new()), "heard at 31 s: pinged again at 61 s, not dropped");
    h.at(Duration::from_secs(61));
    assert_eq!(read_now(&mut stream), Some(vec![0x89, 0x00]));
}

#[test]
fn an_unanswered_close_lingers_then_the_connection_is_dropped() {
    let mut h = Harness::new(config());
    let mut stream = upgrade(&mut h);
    h.handle().shutdown();
    assert!(h.at(Duration::from_secs(1)), "the loop waits for the close handshake");
    let close = read_now(&mut stream).expect("a close frame");
    assert_eq!(close.get(..4), Some(&[0x88, close[1], 0x03, 0xe9][..]), "close 1001");
    assert!(h.at(Duration::from_millis(5_999)), "within the linger");
    assert_eq!(read_now(&mut stream), Some(Vec::new()));
    assert!(!h.at(Duration::from_secs(6)), "linger over: dropped, and the loop is done");
    assert_eq!(read_now(&mut stream), None);
}

/// The handshake timeout covers TLS too (accept to request head): a ClientHello that stalls
/// and a TLS session that never sends a request are both dropped at it, and counted.
#[test]
fn stalled_tls_is_dropped_at_the_handshake_timeout() {
    let (tls, client_config) = self_signed_tls();
    let mut h = Harness::new(Config { tls: Some(tls), ..config() });
    let mut stalled = h.connect();
    // The first 5 bytes of a ClientHello record, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8]).unwrap();
    let mut silent = h.connect();
    let mut session = ClientConnection::new(client_config, "127.0.0.1".try_into().unwrap()).unwrap();
    for _ in 0..50 {
        if !session.is_handshaking() {
            break;
        }
        while session.wants_write() {
            session.write_tls(&mut silent).unwrap();
        }
        h.at(Duration::ZERO);
        match session.read_tls(&mut silent) {
            Ok(0) => panic!("the server ended the TLS handshake"),
            Ok(_) => {
                session.process_new_packets().unwrap();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(!session.is_handshaking(), "the TLS handshake completed, on driven time 0");
    h.at(Duration::from_millis(9_999));
    assert!(!ended(&mut stalled) && !ended(&mut silent), "both open just before the timeout");
    h.at(Duration::from_secs(10));
    assert!(ended(&mut stalled), "the stalled ClientHello is dropped at the timeout");
    assert!(ended(&mut silent), "the silent session is dropped at the timeout");
    let mut metrics = String::new();
    h.server.metrics.render(&mut metrics);
    assert!(metrics.contains("wsedge_handshake_failures_total{reason=\"timeout\"} 2"), "{metrics}");
}

/// A handler that answers every plain request 20 s later (as a backend call waiting on
/// other nodes would, only slower).
#[derive(Default)]
struct Deferring {
    waiting: Vec<(super::ConnId, std::time::Instant)>,
}

impl super::Handler for Deferring {
    type Admission = ();

    fn accept(&mut self, _: &crate::proto::handshake::UpgradeRequest, _: Now) -> Result<(), super::HttpResponse> {
        Ok(())
    }

    fn on_message(&mut self, _: &mut Outbox, _: ConnId, _: MessageKind, _: Payload<'_>) {}

    fn on_http(
        &mut self,
        out: &mut super::Outbox,
        conn: super::ConnId,
        _: &crate::proto::handshake::PlainRequest,
        _: &[u8],
        _: &super::Metrics,
    ) -> Option<super::HttpResponse> {
        self.waiting.push((conn, out.now().mono + Duration::from_secs(20)));
        None
    }

    fn on_tick(&mut self, out: &mut super::Outbox) {
        let now = out.now().mono;
        for (conn, _) in self.waiting.iter().filter(|(_, at)| *at <= now) {
            out.respond(*conn, super::HttpResponse::text(200, "late\n"));
        }
        self.waiting.retain(|(_, at)| *at > now);
    }
}

#[test]
fn a_deferred_answer_outlives_the_handshake_timeout_of_a_kept_alive_connection() {
    let mut server = Server::bind(config(), Deferring::default()).unwrap();
    let start = Now::read();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_nonblocking(true).unwrap();
    server.drive(start, SETTLE);
    // Idle on a kept-alive connection for most of the handshake timeout, then ask.
    server.drive(start.after(Duration::from_secs(8)), SETTLE);
    stream.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    server.drive(start.after(Duration::from_secs(9)), SETTLE);
    for secs in [12, 20, 28] {
        server.drive(start.after(Duration::from_secs(secs)), SETTLE);
        assert_eq!(read_now(&mut stream), Some(Vec::new()), "still waiting at {secs} s, not dropped");
    }
    server.drive(start.after(Duration::from_secs(30)), SETTLE);
    let answer = read_now(&mut stream).expect("the connection is open");
    assert!(String::from_utf8_lossy(&answer).ends_with("late\n"), "{:?}", String::from_utf8_lossy(&answer));
}

/// A handler that streams: `GET /stream` gets an event stream with one event at once and
/// one per tick; `GET /end` ends every stream. It records the streams it was told closed.
#[derive(Default)]
struct Streamer {
    streams: Vec<super::ConnId>,
    closed: std::sync::Arc<std::sync::Mutex<Vec<super::ConnId>>>,
    ticks: u32,
    /// Events of 16 KiB each (to fill a client that does not read).
    big: bool,
}

impl super::Handler for Streamer {
    type Admission = ();

    fn accept(&mut self, _: &crate::proto::handshake::UpgradeRequest, _: Now) -> Result<(), super::HttpResponse> {
        Ok(())
    }

    fn on_message(&mut self, _: &mut Outbox, _: ConnId, _: MessageKind, _: Payload<'_>) {}

    fn on_close(&mut self, _: &mut super::Outbox, conn: super::ConnId) {
        self.streams.retain(|&c| c != conn);
        self.closed.lock().unwrap().push(conn);
    }

    fn on_http(
        &mut self,
        out: &mut super::Outbox,
        conn: super::ConnId,
        request: &crate::proto::handshake::PlainRequest,
        _: &[u8],
        _: &super::Metrics,
    ) -> Option<super::HttpResponse> {
        match request.path.as_str() {
            "/stream" => {
                self.streams.push(conn);
                out.send(conn, crate::proto::MessageKind::Text, bytes::Bytes::from_static(b"data: hello\n\n"));
                Some(super::HttpResponse::event_stream())
            }
            "/end" => {
                for &stream in &self.streams {
                    out.close(stream, crate::proto::CloseCode::NORMAL, "");
                }
                Some(super::HttpResponse::text(200, "ended\n"))
            }
            _ => Some(super::HttpResponse::text(404, "no\n")),
        }
    }

    fn on_tick(&mut self, out: &mut super::Outbox) {
        self.ticks += 1;
        let padding = if self.big { "x".repeat(16 * 1024) } else { String::new() };
        let event = bytes::Bytes::from(format!("data: tick {}{padding}\n\n", self.ticks));
        for &stream in &self.streams {
            out.send(stream, crate::proto::MessageKind::Text, event.clone());
        }
    }
}

/// Reads what is there now, as text (waiting a little for it to arrive).
fn read_text(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    for _ in 0..20 {
        match read_now(stream) {
            Some(bytes) if bytes.is_empty() && !got.is_empty() => break,
            Some(bytes) => got.extend(bytes),
            None => break,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_stream_outlives_every_deadline_sends_chunks_and_ends_with_the_last_one() {
    let mut server = Server::bind(config(), Streamer::default()).unwrap();
    let start = Now::read();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_nonblocking(true).unwrap();
    server.drive(start, SETTLE);
    stream.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    server.drive(start.after(Duration::from_millis(10)), SETTLE);
    let head = read_text(&mut stream);
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"),
        "{head}"
    );
    assert!(!head.contains("Content-Length"), "{head}");
    assert!(head.ends_with("\r\n\r\nd\r\ndata: hello\n\n\r\n"), "the first event as the first chunk: {head:?}");
    // Past the handshake timeout and the keepalive interval: a stream has no deadline.
    let mut ticks = String::new();
    for secs in [5, 11, 40, 70] {
        server.drive(start.after(Duration::from_secs(secs)), SETTLE);
        ticks += &read_text(&mut stream);
    }
    assert!(ticks.contains("data: tick 1\n\n\r\n") && ticks.contains("data: tick 4\n\n\r\n"), "{ticks:?}");
    // The handler ends it: the last chunk, then our FIN.
    let mut other = TcpStream::connect(server.local_addr()).unwrap();
    other.set_nonblocking(true).unwrap();
    server.drive(start.after(Duration::from_secs(71)), SETTLE);
    other.write_all(b"GET /end HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    server.drive(start.after(Duration::from_secs(72)), SETTLE);
    server.drive(start.after(Duration::from_secs(72)), SETTLE);
    let end = read_text(&mut stream);
    assert!(end.ends_with("0\r\n\r\n"), "{end:?}");
    assert!(ended(&mut stream), "our FIN after the last chunk");
}

#[test]
fn an_http_1_0_stream_is_close_delimited_not_chunked() {
    let mut server = Server::bind(config(), Streamer::default()).unwrap();
    let start = Now::read();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_nonblocking(true).unwrap();
    server.drive(start, SETTLE);
    stream.write_all(b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    server.drive(start.after(Duration::from_millis(10)), SETTLE);
    let head = read_text(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"), "{head}");
    assert!(!head.contains("Transfer-Encoding") && !head.contains("Content-Length"), "{head}");
    assert!(head.ends_with("\r\n\r\ndata: hello\n\n"), "the event as it is: {head:?}");
    server.drive(start.after(Duration::from_secs(5)), SETTLE);
    assert_eq!(read_text(&mut stream), "data: tick 1\n\n");
    let mut other = TcpStream::connect(server.local_addr()).unwrap();
    other.set_nonblocking(true).unwrap();
    server.drive(start.after(Duration::from_secs(6)), SETTLE);
    other.write_all(b"GET /end HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    server.drive(start.after(Duration::from_secs(7)), SETTLE);
    server.drive(start.after(Duration::from_secs(7)), SETTLE);
    let rest = read_text(&mut stream);
    assert!(!rest.contains('\r'), "no chunk framing, no last chunk: the end is our FIN: {rest:?}");
    assert!(ended(&mut stream));
}

#[test]
fn a_client_leaving_its_stream_is_its_close_and_a_stream_that_is_not_read_is_dropped() {
    let handler = Streamer { big: true, ..Streamer::default() };
    let closed = handler.closed.clone();
    let mut server = Server::bind(Config { max_outbound_bytes: 64 * 1024, ..config() }, handler).unwrap();
    let start = Now::read();
    let connect = |server: &mut Server<Streamer>| {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_nonblocking(true).unwrap();
        server.drive(start, SETTLE);
        s.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        server.drive(start, SETTLE);
        s
    };
    let leaving = connect(&mut server);
    drop(leaving);
    server.drive(start.after(Duration::from_millis(50)), SETTLE);
    assert_eq!(closed.lock().unwrap().len(), 1, "on_close for the client that left");
    // A client that never reads: its socket buffers fill, then its queue passes the cap.
    let _idle = connect(&mut server);
    let mut secs = 1;
    while closed.lock().unwrap().len() < 2 {
        assert!(secs < 10_000, "a stream that is never read was never dropped");
        server.drive(start.after(Duration::from_secs(secs)), Duration::ZERO);
        secs += 1;
    }
}

#[test]
fn a_stream_is_admitted_as_an_upgrade_is_its_origin_checked_and_echoed_for_cors() {
    let mut config = config();
    config.access.allowed_origins = vec!["https://good.example".parse().unwrap()];
    let handler = Streamer::default();
    let closed = handler.closed.clone();
    let mut server = Server::bind(config, handler).unwrap();
    let start = Now::read();
    let mut ask = |origin: &str| {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_nonblocking(true).unwrap();
        server.drive(start, SETTLE);
        s.write_all(format!("GET /stream HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n").as_bytes()).unwrap();
        server.drive(start, SETTLE);
        server.drive(start, SETTLE);
        let text = read_text(&mut s);
        (s, text)
    };
    let (_kept, good) = ask("https://good.example");
    assert!(good.starts_with("HTTP/1.1 200 OK\r\n"), "{good}");
    assert!(good.contains("\r\nAccess-Control-Allow-Origin: https://good.example\r\nVary: Origin\r\n"), "{good}");
    let (_, evil) = ask("https://evil.example");
    assert!(evil.starts_with("HTTP/1.1 403 "), "{evil}");
    assert!(!evil.contains("data: hello"), "no event for a refused stream: {evil}");
    assert_eq!(closed.lock().unwrap().len(), 1, "the handler hears the refused stream is gone");
}

/// A handler that asks for every worker's counters while `watching`, and keeps what each
/// tick gave it.
#[derive(Default)]
struct Watcher {
    watching: bool,
    seen: Vec<Vec<super::Metrics>>,
}

impl super::Handler for Watcher {
    type Admission = ();

    fn accept(&mut self, _: &crate::proto::handshake::UpgradeRequest, _: Now) -> Result<(), super::HttpResponse> {
        Ok(())
    }

    fn on_message(&mut self, _: &mut Outbox, _: ConnId, _: MessageKind, _: Payload<'_>) {}

    fn wants_stats(&self) -> bool {
        self.watching
    }

    fn on_stats(&mut self, _: &mut super::Outbox, workers: &[super::Metrics]) {
        self.seen.push(workers.to_vec());
    }
}

#[test]
fn only_a_handler_that_asks_gets_the_counters_each_tick() {
    let mut server = Server::bind(config(), Watcher::default()).unwrap();
    let start = Now::read();
    server.drive(start.after(Duration::from_secs(2)), SETTLE);
    assert!(server.handler.seen.is_empty(), "not watching: no copy made");
    server.handler.watching = true;
    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    client.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.drive(start.after(Duration::from_secs(2)), SETTLE);
    server.drive(start.after(Duration::from_secs(4)), SETTLE);
    assert_eq!(server.handler.seen.len(), 1, "one per tick");
    let workers = &server.handler.seen[0];
    assert_eq!(workers.len(), 1, "every worker's (one here)");
    assert_eq!(workers[0].http_requests, 1, "this worker's live counters");
}

/// A handler that fans every message out to every open connection. The first message it
/// handles also makes another client speak (the test's end of its socket is written to
/// from inside the handler), so that client's message arrives while the turn is writing.
struct FanOut {
    members: Vec<ConnId>,
    trigger: Option<(TcpStream, Vec<u8>)>,
    /// The publisher's end, and whether its own copy had reached it when the second
    /// message was handled (talkers are written first).
    publisher: Option<TcpStream>,
    publisher_had_copy: Option<bool>,
}

impl super::Handler for FanOut {
    type Admission = ();

    fn accept(&mut self, _: &crate::proto::handshake::UpgradeRequest, _: Now) -> Result<(), super::HttpResponse> {
        Ok(())
    }

    fn on_open(&mut self, _: &mut Outbox, conn: ConnId, _: &crate::proto::handshake::UpgradeRequest, _: ()) {
        self.members.push(conn);
    }

    fn on_message(&mut self, out: &mut Outbox, _: ConnId, kind: MessageKind, data: Payload<'_>) {
        out.broadcast(self.members.clone().into(), None, kind, data.into_bytes());
        match self.trigger.take() {
            Some((mut client, frame)) => client.write_all(&frame).unwrap(),
            None if self.publisher_had_copy.is_none() => {
                let mut byte = [0u8; 1];
                let peeked = self.publisher.as_ref().map(|p| p.peek(&mut byte));
                self.publisher_had_copy = Some(matches!(peeked, Some(Ok(1))));
            }
            None => {}
        }
    }
}

/// A masked one-frame text message, as a client sends it.
fn client_text(text: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Members of one fan-out (more than one slice of the flush), upgraded; the first one
/// publishes, the second is made to speak during the first one's turn.
fn fan_out_members(flush_reads: usize, count: usize) -> Option<(Server<FanOut>, Now, Vec<TcpStream>)> {
    if !enough_open_files(4 * count) {
        eprintln!("skipped: fewer than {} open files allowed (ulimit -n)", 4 * count);
        return None;
    }
    let config = Config { flush_reads, max_connections: 2 * count, ..config() };
    let handler = FanOut { members: Vec::new(), trigger: None, publisher: None, publisher_had_copy: None };
    let mut server = Server::bind(config, handler).unwrap();
    let start = Now::read();
    let mut clients: Vec<TcpStream> = (0..count).map(|_| TcpStream::connect(server.local_addr()).unwrap()).collect();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.local_addr()
    );
    for client in &mut clients {
        client.set_nonblocking(true).unwrap();
        client.write_all(request.as_bytes()).unwrap();
    }
    let mut upgraded = vec![false; count];
    for _ in 0..200 {
        server.drive(start, SETTLE);
        for (client, done) in clients.iter_mut().zip(&mut upgraded) {
            if !*done {
                let response = read_now(client).expect("open");
                assert!(response.is_empty() || response.starts_with(b"HTTP/1.1 101"), "{response:?}");
                *done = !response.is_empty();
            }
        }
        if upgraded.iter().all(|&done| done) {
            break;
        }
    }
    assert!(upgraded.iter().all(|&done| done), "every member upgraded");
    server.handler.trigger = Some((clients[1].try_clone().unwrap(), client_text(b"b")));
    server.handler.publisher = Some(clients[0].try_clone().unwrap());
    Some((server, start, clients))
}

/// Whether this process may hold `needed` open files (both ends of every test socket).
fn enough_open_files(needed: usize) -> bool {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3));
    soft.is_none_or(|n| n == "unlimited" || n.parse::<usize>().is_ok_and(|n| n >= needed))
}

/// What each member has been sent so far.
fn received(clients: &mut [TcpStream]) -> Vec<Vec<u8>> {
    clients.iter_mut().map(|c| read_now(c).expect("open")).collect()
}

#[test]
fn a_message_that_arrives_while_a_big_fan_out_is_written_joins_it_in_the_same_turn() {
    let count = super::writing::FLUSH_SLICE + 100;
    let Some((mut server, start, mut clients)) = fan_out_members(1, count) else { return };
    clients[0].write_all(&client_text(b"a")).unwrap();
    server.drive(start, SETTLE);
    // One turn: "a" read and written to all, to its publisher first; "b" came while the
    // writes ran, was read between two slices, and reached every member too, after "a".
    assert_eq!(server.handler.publisher_had_copy, Some(true), "the talker was written first");
    let both = [0x81, 1, b'a', 0x81, 1, b'b'].to_vec();
    let got = received(&mut clients);
    let missing = got.iter().filter(|bytes| **bytes != both).count();
    assert_eq!(missing, 0, "members without both, in order, after one turn (first: {:?})", got.first());
    server.drive(start, SETTLE);
    assert!(received(&mut clients).iter().all(Vec::is_empty), "nothing twice");
}

#[test]
fn without_reads_between_slices_the_late_message_waits_for_the_next_turn() {
    let count = super::writing::FLUSH_SLICE + 100;
    let Some((mut server, start, mut clients)) = fan_out_members(0, count) else { return };
    clients[0].write_all(&client_text(b"a")).unwrap();
    server.drive(start, SETTLE);
    assert!(received(&mut clients).iter().all(|bytes| *bytes == [0x81, 1, b'a']), "only a, this turn");
    server.drive(start, SETTLE);
    assert!(received(&mut clients).iter().all(|bytes| *bytes == [0x81, 1, b'b']), "b, next turn");
}
