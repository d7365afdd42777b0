//! The integration tests' harness: a server (echo, the room layer, or any handler) on an
//! ephemeral port, shut down and joined when it goes out of scope; raw-TCP tools (a
//! hand-written upgrade, masked client frames, server frames read byte-exact) for tests
//! where a WebSocket library would be in the way, because it refuses to send what the test
//! sends or hides what the server answers; a minimal HTTP/1.1 client; and, in [`rooms`], a
//! `wsedge.v1` client; in [`tls`], certificates and TLS clients (a server whose config
//! has `tls` set is reached over TLS by `url()`, `stream()`, `http()` and `RoomClient`).
//!
//! Every socket it hands out has read and write timeouts, so a server that stops answering
//! fails a test instead of hanging it. Each test binary uses a subset of these tools.

#![allow(dead_code)]

pub mod process;
pub mod proxy;
pub mod redis;
pub mod rooms;
pub mod sse;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wsedge::echo::Echo;
use wsedge::rooms::{Rooms, RoomsConfig, SUBPROTOCOL};
use wsedge::server::{Config, Handler, Mesh, Server, ShutdownHandle, Workers};

/// Longest a test waits on any socket read or write before failing.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon the server must close TCP after the close handshake or a failed connection.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// The key of RFC 6455 §1.3 and its accept value, for hand-written upgrades.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The masking key of RFC 6455 §5.7's examples.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Workers of the room servers the tests start (`TestServer::rooms`): several, so rooms
/// are owned by other workers than most of their members and every room test also tests
/// the way across workers. Three: not a power of two, unlike most hash splits.
pub const ROOM_WORKERS: usize = 3;

/// The default server config on 127.0.0.1:0. Close linger and the shutdown timeout are
/// shortened so a test that leaves a peer mid-close cannot stretch the shutdown in `Drop`
/// to the 5 s and 10 s defaults.
pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        close_linger: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// A server running its handler on its own thread.
pub struct TestServer {
    addr: SocketAddr,
    /// For a TLS server: the client config its clients use (trusting the test CA).
    client_tls: Option<Arc<rustls::ClientConfig>>,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The Redis of a room server on the Redis engine (stopped after the server).
    redis: Option<redis::RedisServer>,
}

impl TestServer {
    /// Starts an echo server with `config` (whatever its `listen`, it binds 127.0.0.1:0).
    pub fn start(config: Config) -> TestServer {
        TestServer::start_with(config, Echo)
    }

    /// Starts a server running `handler` with `config` (it binds 127.0.0.1:0).
    pub fn start_with<H: Handler + Send + 'static>(config: Config, handler: H) -> TestServer {
        let config = Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..config };
        let client_tls = config.tls.as_ref().map(|_| tls::fixture().client_config());
        let mut server = Server::bind(config, handler).expect("bind an ephemeral port");
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer { addr, client_tls, shutdown, thread: Some(thread), redis: None }
    }

    /// Starts an echo server with [`config`].
    pub fn echo() -> TestServer {
        TestServer::start(config())
    }

    /// Starts a server of `config.workers` workers, each running a handler `make` makes.
    pub fn start_workers<H, M, F>(config: Config, make: F) -> TestServer
    where
        H: Handler + Send + 'static,
        M: Send,
        F: FnMut(Mesh<M>) -> H,
    {
        let config = Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..config };
        let client_tls = config.tls.as_ref().map(|_| tls::fixture().client_config());
        let workers = Workers::bind(config, make).expect("bind an ephemeral port");
        let addr = workers.local_addr();
        let shutdown = workers.shutdown_handle();
        let thread = std::thread::spawn(move || workers.run());
        TestServer { addr, client_tls, shutdown, thread: Some(thread), redis: None }
    }

    /// Starts the room server with `config` and `rooms`, speaking `wsedge.v1` as
    /// `wsedge serve` does, on `config.workers` workers.
    ///
    /// With `WSEDGE_TEST_ENGINE=redis` the rooms live in a Redis of the server's own (the
    /// Redis engine, one node): the room tests then check that the protocol holds, word
    /// for word, whichever engine a server runs.
    pub fn rooms_with(config: Config, rooms: RoomsConfig) -> TestServer {
        let config = Config { subprotocols: vec![SUBPROTOCOL.to_owned()], ..config };
        if std::env::var("WSEDGE_TEST_ENGINE").as_deref() != Ok("redis") {
            return TestServer::start_workers(config, Rooms::for_workers(rooms));
        }
        let store = redis::RedisServer::start().expect("WSEDGE_TEST_ENGINE=redis needs redis-server");
        let workers = config.workers;
        let backplane =
            wsedge::rooms::engine::redis::Backplane::connect(&[store.url()], workers).expect("the node reaches Redis");
        let mut server = TestServer::start_workers(config, Rooms::for_workers_on_redis(rooms, backplane));
        server.redis = Some(store);
        // Its links to Redis come up on threads of their own, and until they do the engine
        // answers 503 (as it should): the tests want a server that is ready, as `/healthz`
        // says when it is.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.http("GET", "/healthz", &[], b"").head.status != 200 {
            assert!(Instant::now() < deadline, "the Redis engine never became healthy");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// Starts the room server with [`config`] and `rooms` on [`ROOM_WORKERS`] workers.
    pub fn rooms(rooms: RoomsConfig) -> TestServer {
        TestServer::rooms_with(Config { workers: ROOM_WORKERS, ..config() }, rooms)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its clients trust `config` instead of [`tls::fixture`]'s authority (a server with
    /// a certificate of another [`tls::Fixture`]).
    pub fn trusting(mut self, config: Arc<rustls::ClientConfig>) -> TestServer {
        self.client_tls = Some(config);
        self
    }

    /// The client config of a TLS server (`None`: plaintext).
    pub fn client_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.client_tls.clone()
    }

    pub fn url(&self) -> String {
        self.url_at("/")
    }

    /// The WebSocket URL of `path` on this server (`wss://` for a TLS server).
    pub fn url_at(&self, path: &str) -> String {
        let scheme = if self.client_tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// A connection ready for HTTP or WebSocket bytes: TLS (handshake done) on a TLS
    /// server, else plain TCP; with the test timeouts.
    pub fn stream(&self) -> tls::ClientStream {
        match &self.client_tls {
            Some(config) => tls::ClientStream::tls(self.tcp(), config.clone(), "127.0.0.1").expect("TLS handshake"),
            None => tls::ClientStream::Plain(self.tcp()),
        }
    }

    /// A TCP connection to the server with the test timeouts set.
    pub fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to the test server");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// A WebSocket connection by hand: sends [`upgrade_request`], checks the 101 and
    /// leaves the stream right after the response head.
    pub fn raw_ws(&self) -> TcpStream {
        let mut stream = self.tcp();
        stream.write_all(upgrade_request(&self.addr.to_string()).as_bytes()).unwrap();
        let head = read_head(&mut stream);
        assert_eq!(head.status, 101, "upgrade refused: {head:?}");
        stream
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        let Some(thread) = self.thread.take() else { return };
        let result = thread.join();
        // Do not turn a failing test's panic into an abort.
        if !std::thread::panicking() {
            result.expect("server thread panicked").expect("server loop failed");
        }
    }
}

/// A valid upgrade request for `/` with [`KEY`].
pub fn upgrade_request(host: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// An HTTP response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads a response head one byte at a time, so bytes after it stay in the socket.
pub fn read_head(stream: &mut impl Read) -> ResponseHead {
    try_read_head(stream).unwrap_or_else(|e| panic!("{e}"))
}

/// [`read_head`], with the connection ending (or failing) before the head is whole as an
/// error rather than a panic (a test cutting connections expects it).
pub fn try_read_head(stream: &mut impl Read) -> Result<ResponseHead, String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err(format!("EOF inside the response head: {:?}", String::from_utf8_lossy(&head))),
            Err(e) => {
                return Err(format!("reading the response head: {e} (so far {:?})", String::from_utf8_lossy(&head)))
            }
        }
        assert!(head.len() < 16 * 1024, "response head too long");
    }
    let text = String::from_utf8(head).expect("response head is UTF-8");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad header line {line:?}"));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Ok(ResponseHead { status, headers })
}

/// A frame header as a client sends it: `b0` is FIN|RSV|opcode as on the wire, `len`
/// the declared payload length (in the shortest encoding), masked with [`MASK`].
pub fn client_header(b0: u8, len: u64) -> Vec<u8> {
    let mut out = vec![b0];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out
}

/// A complete masked client frame; see [`client_header`] for `b0`.
pub fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = client_header(b0, payload.len() as u64);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A close frame payload: the code and the reason bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// A frame as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerFrame {
    /// FIN|RSV|opcode as on the wire.
    pub b0: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn opcode(&self) -> u8 {
        self.b0 & 0x0F
    }

    /// The status code of a close frame (`None`: not a close, or no code).
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode(), self.payload.as_slice()) {
            (0x8, [hi, lo, ..]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }
}

/// Reads one server frame, checking that it is unmasked (RFC 6455 §5.1).
pub fn read_frame(stream: &mut impl Read) -> ServerFrame {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("read a frame header");
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7F {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).expect("read a 16-bit length");
            u64::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext).expect("read a 64-bit length");
            u64::from_be_bytes(ext)
        }
        len => u64::from(len),
    };
    let mut payload = vec![0u8; usize::try_from(len).expect("frame length fits in memory")];
    stream.read_exact(&mut payload).expect("read a frame payload");
    ServerFrame { b0: head[0], payload }
}

/// Asserts the next frame is a close with `code`, then that the server ends TCP.
pub fn expect_close_then_eof(stream: &mut impl Socket, code: u16) {
    let frame = read_frame(stream);
    assert_eq!(frame.opcode(), 0x8, "expected a close frame, got {frame:?}");
    assert_eq!(frame.close_code(), Some(code), "close payload {:?}", frame.payload);
    expect_eof(stream);
}

/// A client connection, plain or TLS, and the TCP socket under it (for timeouts).
pub trait Socket: Read + Write {
    fn tcp_socket(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp_socket(&self) -> &TcpStream {
        self
    }
}

impl Socket for tls::ClientStream {
    fn tcp_socket(&self) -> &TcpStream {
        self.tcp()
    }
}

/// Asserts the server ends the TCP connection cleanly (read returns 0, not a reset) within
/// [`CLOSE_WITHIN`], with no more data before that.
pub fn expect_eof(stream: &mut impl Socket) {
    let start = Instant::now();
    stream.tcp_socket().set_read_timeout(Some(CLOSE_WITHIN)).unwrap();
    let mut buf = [0u8; 1024];
    let result = stream.read(&mut buf);
    stream.tcp_socket().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    match result {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} more bytes: {:?}", &buf[..n]),
        Err(e) => panic!("expected EOF within {CLOSE_WITHIN:?}, got {e} after {:?}", start.elapsed()),
    }
}

/// A plain HTTP response: its head and its `Content-Length` body.
#[derive(Debug)]
pub struct HttpReply {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("response body is UTF-8")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// An HTTP/1.1 request for `path` with the given extra header lines and body (a
/// `Content-Length` is added when there is a body).
pub fn http_request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one response: the head, then exactly `Content-Length` bytes of body.
pub fn read_response(stream: &mut impl Read) -> HttpReply {
    let head = read_head(stream);
    let len: usize = head.header("Content-Length").map_or(0, |v| v.parse().expect("numeric Content-Length"));
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).expect("read the response body");
    HttpReply { head, body }
}

impl TestServer {
    /// Sends one request on a new connection (TLS on a TLS server) and reads the response.
    pub fn http(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> HttpReply {
        let mut stream = self.stream();
        stream.write_all(&http_request(method, path, headers, body)).expect("write the request");
        read_response(&mut stream)
    }
}

/// A random source for a test that cuts at random points: xorshift from the clock, its seed
/// printed (a failure's log says which run it was). `next(bound)` is in `0..bound`.
pub fn seeded_rng() -> impl FnMut(u64) -> u64 {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.subsec_nanos()) as u64 | 1;
    println!("seed {seed}");
    let mut rng = seed;
    move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    }
}
