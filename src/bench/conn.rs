//! One client connection of the load generator: its socket, where it is in its life, the
//! codec (client role) and its two buffers. IO here never blocks: it stops at `WouldBlock`.
//!
//! Buffers are reused for the whole run: the read buffer is decoded in place (a message is
//! a `Bytes` split off it, dropped before the next read, so the next append reclaims the
//! same memory) and the write buffer collects every frame of a loop turn for one `write`.
//!
//! For `wss://` a `rustls::ClientConnection` sits between the buffers and the socket,
//! driven sans-IO like the server's.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::BytesMut;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use socket2::{Domain, Protocol, Socket, Type};

use crate::proto::Connection;

/// `connect(2)` on a non-blocking socket answers EINPROGRESS (Linux's errno 115; std has no
/// stable `ErrorKind` for it yet).
const EINPROGRESS: i32 = 115;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet (waits for a setup slot).
    Pending,
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent; waiting for the 101.
    Handshaking,
    /// Room protocol: join sent; waiting for its reply.
    Joining,
    /// Ready for traffic.
    Open,
    /// Our close frame is sent; waiting for the server's.
    Closing,
    /// Over: socket dropped, buffers released.
    Done,
}

impl Phase {
    pub fn in_setup(self) -> bool {
        matches!(self, Phase::Connecting | Phase::Handshaking | Phase::Joining)
    }
}

/// What a connection does in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Keeps `depth` messages in flight and times each echo.
    Echo,
    /// Publishes into the room (at a rate, or within a window acknowledged by its own copy
    /// coming back) and receives like any member.
    Publisher,
    /// Only receives.
    Subscriber,
    /// Broadcast: publishes one message, then its k+1-th once it has received k rounds'
    /// worth (k x live members) of messages. Counted cumulatively this cannot deadlock:
    /// if every member waited, the one that published least would already have received
    /// at least its rounds' worth, as everyone published at least as often as it did.
    Broadcaster,
    /// Stays connected and answers pings.
    Idle,
}

/// How reading a socket ended.
#[derive(Debug)]
pub enum ReadStatus {
    /// The socket has nothing more for now.
    Drained,
    /// Stopped at the byte budget; the socket may hold more (edge-triggered: no new event
    /// will say so).
    Budget,
    Eof,
    Failed(io::Error),
}

#[derive(Debug)]
pub struct Conn {
    /// Global number across threads (the publisher tag in payloads).
    pub id: u32,
    pub part: Part,
    pub phase: Phase,
    pub socket: Option<TcpStream>,
    /// When the setup phase times out.
    pub deadline: Instant,
    /// The `Sec-WebSocket-Key` sent, to check the accept value (handshake only).
    pub key: String,
    pub codec: Option<Connection>,
    pub read_buf: BytesMut,
    write_buf: Vec<u8>,
    /// Bytes of `write_buf` already written.
    written: usize,
    /// In the worker's list of connections to flush this turn.
    pub dirty: bool,
    /// Messages sent.
    pub sent: u64,
    /// Publisher: own copies received (or publishes refused). Broadcaster: messages
    /// received towards the next round.
    pub acked: u64,
    /// The TLS session of a `wss://` connection.
    pub tls: Option<Box<ClientConnection>>,
    /// An event stream's reader (`--sse`), instead of the codec.
    pub sse: Option<Box<super::sse::Reader>>,
}

impl Conn {
    pub fn new(id: u32, part: Part, now: Instant) -> Conn {
        Conn {
            id,
            part,
            phase: Phase::Pending,
            socket: None,
            deadline: now,
            key: String::new(),
            codec: None,
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
            written: 0,
            dirty: false,
            sent: 0,
            acked: 0,
            tls: None,
            sse: None,
        }
    }

    /// Starts a non-blocking connect to `addr`, from `bind` if given (bind before connect,
    /// so many source addresses can share the ephemeral port range).
    pub fn connect(
        &mut self,
        registry: &Registry,
        token: Token,
        addr: SocketAddr,
        bind: Option<IpAddr>,
    ) -> io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        if let Some(ip) = bind {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}: {e}")))?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        self.socket = Some(stream);
        self.phase = Phase::Connecting;
        Ok(())
    }

    /// After a writable event while connecting: `Ok(true)` once connected, `Ok(false)` if
    /// still in progress, the connect error otherwise.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        let Some(socket) = self.socket.as_ref() else { return Err(io::ErrorKind::NotConnected.into()) };
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        match socket.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads into `scratch` and appends to the read buffer until the socket is drained or
    /// `budget` bytes came in.
    pub fn read_some(&mut self, scratch: &mut [u8], budget: usize) -> ReadStatus {
        if let Some(tls) = self.tls.as_mut() {
            let Some(socket) = self.socket.as_mut() else { return ReadStatus::Eof };
            return read_tls_some(tls, socket, &mut self.read_buf, scratch, budget);
        }
        let Some(socket) = self.socket.as_mut() else { return ReadStatus::Eof };
        let mut total = 0;
        loop {
            if total >= budget {
                return ReadStatus::Budget;
            }
            match socket.read(scratch) {
                Ok(0) => return ReadStatus::Eof,
                Ok(n) => {
                    self.read_buf.extend_from_slice(scratch.get(..n).unwrap_or_default());
                    total += n;
                    if n < scratch.len() {
                        return ReadStatus::Drained;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStatus::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return ReadStatus::Failed(e),
            }
        }
    }

    /// Appends raw bytes (the upgrade request) to the write buffer.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.write_buf.extend_from_slice(bytes);
    }

    /// Moves the codec's pending frames (messages, pongs, close replies) into the write
    /// buffer.
    pub fn queue_codec_output(&mut self) {
        let Some(codec) = self.codec.as_mut() else { return };
        while let Some(bytes) = codec.poll_transmit() {
            self.write_buf.extend_from_slice(&bytes);
        }
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn unwritten(&self) -> usize {
        self.write_buf.len() - self.written
    }

    /// TLS records wait to be written (handshake messages, or what the handshake held).
    pub fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes what is queued until done or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(socket) = self.socket.as_mut() else { return Ok(()) };
        if let Some(tls) = self.tls.as_mut() {
            self.written += flush_tls(tls, socket, self.write_buf.get(self.written..).unwrap_or_default())?;
        }
        while let Some(rest) = self.write_buf.get(self.written..).filter(|r| !r.is_empty() && self.tls.is_none()) {
            match socket.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.write_buf.len() {
            self.write_buf.clear();
            self.written = 0;
        } else if self.written > self.write_buf.len() / 2 {
            // Keep appends cheap while the socket is full: drop what was written.
            self.write_buf.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// Sets up TLS for `server_name` (call before the first read or write).
    pub fn start_tls(
        &mut self,
        config: &std::sync::Arc<rustls::ClientConfig>,
        server_name: &rustls::pki_types::ServerName<'static>,
    ) -> io::Result<()> {
        let tls = ClientConnection::new(config.clone(), server_name.clone()).map_err(io::Error::other)?;
        self.tls = Some(Box::new(tls));
        Ok(())
    }

    /// Drops the socket and releases the buffers.
    pub fn finish(&mut self, registry: &Registry) {
        if let Some(mut socket) = self.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
        self.phase = Phase::Done;
        self.codec = None;
        self.read_buf = BytesMut::new();
        self.write_buf = Vec::new();
        self.written = 0;
        self.key = String::new();
        self.tls = None;
    }
}

/// `read_some` through TLS: records from the socket, plaintext into `read_buf`.
fn read_tls_some(
    tls: &mut ClientConnection,
    socket: &mut TcpStream,
    read_buf: &mut BytesMut,
    scratch: &mut [u8],
    budget: usize,
) -> ReadStatus {
    let mut total = 0;
    loop {
        loop {
            if total >= budget {
                return ReadStatus::Budget;
            }
            match tls.reader().read(scratch) {
                Ok(0) => return ReadStatus::Eof,
                Ok(n) => {
                    read_buf.extend_from_slice(scratch.get(..n).unwrap_or_default());
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return ReadStatus::Eof,
                Err(e) => return ReadStatus::Failed(e),
            }
        }
        match tls.read_tls(socket) {
            Ok(0) => return ReadStatus::Eof,
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    let _ = tls.write_tls(socket);
                    return ReadStatus::Failed(io::Error::other(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadStatus::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return ReadStatus::Failed(e),
        }
    }
}

/// `flush` through TLS: sends the records rustls holds, hands it more of `pending` once it
/// has sent everything (so it buffers at most its limit), until the socket is full. Returns
/// the bytes of `pending` it took.
fn flush_tls(tls: &mut ClientConnection, socket: &mut TcpStream, pending: &[u8]) -> io::Result<usize> {
    let mut taken = 0;
    loop {
        while tls.wants_write() {
            match tls.write_tls(socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(taken),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let rest = pending.get(taken..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(taken);
        }
        match tls.writer().write(rest)? {
            0 => return Ok(taken), // still handshaking, its buffer full: wait for it
            n => taken += n,
        }
    }
}
