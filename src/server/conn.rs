//! One accepted socket: its read buffer, its queue of outgoing chunks ([`Transmit`]: shared
//! `Bytes`, or a frame header held inline), its codec and the phase of its life. Reading and
//! writing here never block: they stop at `WouldBlock`.
//!
//! A TLS connection has a `rustls::ServerConnection` beside the socket, driven sans-IO:
//! socket -> `read_tls` -> `process_new_packets` -> plaintext into the read buffer, and
//! write queue -> rustls writer -> `write_tls` -> socket. Everything above sees plaintext.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use rustls::ServerConnection;

use super::access::IpSlot;
use super::policy::Liveness;
use super::pool::{ReadPool, BUFFER_CAPACITY, SMALL_REMAINDER};
use super::write_buffers::{Corked, WriteBuffers, MAX_IOVECS};
use crate::proto::{Connection, Transmit};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head (deadline: handshake timeout).
    Handshake,
    /// WebSocket open.
    Open,
    /// An HTTP response streams (server-sent events): the handler's sends go out as
    /// chunks; input is read only to notice the client leaving. No deadline: the handler's
    /// heartbeats keep proxies from timing it out.
    Streaming,
    /// We sent a close and wait for the peer's (deadline: close linger).
    CloseSent,
    /// Nothing more to say: flush the queue, then shut down our side.
    Finishing,
    /// Our FIN is sent; discard input until the peer's FIN (deadline: close linger).
    Draining,
}

/// Outcome of an IO attempt that the loop acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// Nothing wrong; the socket has nothing more for now (or took everything queued).
    Ok,
    /// Reading stopped at its budget; the socket may hold more.
    More,
    /// The peer closed its side (EOF).
    Eof,
    /// The socket failed (reset, broken pipe, ...): drop the connection.
    Error,
}

/// How an event stream's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1: in chunks, the last one ending it.
    Chunked,
    /// HTTP/1.0: the bytes as they are, ended by closing the connection.
    CloseDelimited,
}

#[derive(Debug)]
pub struct Conn {
    pub socket: TcpStream,
    /// The TCP peer's address (a proxy's, behind one: see `access::client_ip`).
    pub peer: IpAddr,
    /// This connection's place in its client IP's count (`--max-conns-per-ip`), given
    /// back when the `Conn` is dropped, on every path. Boxed: one pointer in every `Conn`
    /// (the limit is off by default), not the slot's 32 bytes.
    pub ip_slot: Option<Box<IpSlot>>,
    pub generation: u32,
    pub phase: Phase,
    /// When the current phase times out, if it does.
    pub deadline: Option<Instant>,
    /// Bytes read and not yet decoded. Between reads it is empty and holds no memory,
    /// unless the start of a frame is waiting for the rest.
    pub read_buf: BytesMut,
    write_queue: VecDeque<Transmit>,
    queued_bytes: usize,
    /// Frames corked this turn, written ahead of the queue (see `write_buffers.rs`).
    corked: Option<Corked>,
    /// The codec, from the 101 response on.
    pub codec: Option<Connection>,
    /// The handler saw `on_open` and not yet `on_close`.
    pub opened: bool,
    /// Counted against `max_connections` as an open WebSocket (or event stream).
    pub counted: bool,
    /// An event stream (a streaming HTTP response), not a WebSocket: how its body is framed.
    pub stream: Option<Framing>,
    /// The peer's FIN arrived.
    pub peer_eof: bool,
    /// When the peer was last heard from, and whether it was pinged since.
    pub liveness: Liveness,
    /// In the loop's list of connections to flush this turn.
    pub dirty: bool,
    /// Reading stopped because the write queue is over the high-water mark (or input is
    /// held, below).
    pub read_paused: bool,
    /// In the loop's list of connections whose input is held (`Handler::accepting_input`).
    pub held: bool,
    /// A plain HTTP request is with the handler, which answers later (`Outbox::respond`);
    /// the value is whether the connection stays open after the response.
    pub awaiting_response: Option<bool>,
    /// `read_buf` came from the worker's pool (and goes back to it); else it is the
    /// connection's own (a small remainder, or grown past a pooled buffer) and is freed.
    read_buf_pooled: bool,
    /// The socket took less than was queued (the peer is not keeping up); cleared once the
    /// queue is empty.
    write_blocked: bool,
    /// The TLS session of a TLS listener's connection (boxed: a plaintext connection pays
    /// one pointer for it).
    tls: Option<Box<ServerConnection>>,
}

impl Conn {
    /// A socket accepted at `now`; the loop gives it its first deadline.
    pub fn new(
        socket: TcpStream,
        peer: IpAddr,
        generation: u32,
        now: Instant,
        tls: Option<Box<ServerConnection>>,
    ) -> Self {
        Conn {
            socket,
            peer,
            ip_slot: None,
            generation,
            phase: Phase::Handshake,
            deadline: None,
            read_buf: BytesMut::new(),
            write_queue: VecDeque::new(),
            queued_bytes: 0,
            corked: None,
            codec: None,
            opened: false,
            counted: false,
            stream: None,
            peer_eof: false,
            liveness: Liveness::new(now),
            dirty: false,
            read_paused: false,
            held: false,
            awaiting_response: None,
            read_buf_pooled: false,
            write_blocked: false,
            tls,
        }
    }

    /// Reads until `WouldBlock`, EOF, an error, or about `budget` more bytes (a chunk's
    /// worth at most over it), so input is decoded in bounded batches. Returns the status
    /// and the bytes read.
    ///
    /// The socket is read into the worker's scratch chunk, and only when bytes arrived does
    /// the connection take a buffer from the pool for them (see [`Conn::release_read_buf`]
    /// for giving it back).
    pub fn read_some(&mut self, budget: usize, pool: &mut ReadPool) -> (IoStatus, usize) {
        let start_len = self.read_buf.len();
        let limit = start_len.saturating_add(budget);
        if let Some(mut tls) = self.tls.take() {
            let status = self.read_tls_some(&mut tls, limit, pool);
            self.tls = Some(tls);
            return (status, self.read_buf.len().saturating_sub(start_len));
        }
        let status = loop {
            if self.read_buf.len() >= limit {
                break IoStatus::More;
            }
            let chunk = pool.scratch().len();
            match self.socket.read(pool.scratch()) {
                Ok(0) => break IoStatus::Eof,
                Ok(n) => {
                    self.make_room(n, pool);
                    self.read_buf.extend_from_slice(pool.scratch().get(..n).unwrap_or_default());
                    if n < chunk {
                        break IoStatus::Ok; // drained for now
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break IoStatus::Ok,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break IoStatus::Error,
            }
        };
        (status, self.read_buf.len().saturating_sub(start_len))
    }

    /// `read_some` through TLS: decrypted bytes go to the read buffer (by way of the pool's
    /// scratch chunk) until `limit`; records rustls cannot process end the connection.
    fn read_tls_some(&mut self, tls: &mut ServerConnection, limit: usize, pool: &mut ReadPool) -> IoStatus {
        loop {
            // Plaintext rustls holds comes first: it reads no more records while it is full.
            loop {
                if self.read_buf.len() >= limit {
                    return IoStatus::More;
                }
                match tls.reader().read(pool.scratch()) {
                    // The peer's close_notify: its side is closed, like a FIN.
                    Ok(0) => return IoStatus::Eof,
                    Ok(n) => {
                        self.make_room(n, pool);
                        self.read_buf.extend_from_slice(pool.scratch().get(..n).unwrap_or_default());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A FIN without close_notify: the same to us (RFC 8446 §6.1 allows it
                    // to be treated as a truncation; the WebSocket close handshake, not
                    // TLS, says whether the conversation was complete).
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return IoStatus::Eof,
                    Err(_) => return IoStatus::Error,
                }
            }
            match tls.read_tls(&mut self.socket) {
                Ok(0) => return IoStatus::Eof,
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Garbage, plaintext HTTP, a failed handshake: rustls queued an
                        // alert; offer it to the socket once and end this connection.
                        log::debug!("TLS error: {e}");
                        let _ = tls.write_tls(&mut self.socket);
                        return IoStatus::Error;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return IoStatus::Ok,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return IoStatus::Error,
            }
        }
    }

    /// TLS records (handshake messages, alerts, tickets) wait to be written: the loop must
    /// flush this connection even if nothing was queued.
    pub fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// The TLS handshake has not finished (the peer has sent no complete request yet).
    pub fn tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Everything queued, and every TLS record, has gone to the socket.
    pub fn is_drained(&self) -> bool {
        self.queued_bytes == 0 && self.corked.is_none() && !self.tls_wants_write()
    }

    /// TLS: queues close_notify ahead of our FIN (RFC 8446 §6.1), once. Returns whether it
    /// queued one now, which is then to be flushed before the FIN.
    pub fn queue_close_notify(&mut self) -> bool {
        let Some(tls) = self.tls.as_mut() else { return false };
        if tls.is_handshaking() {
            return false; // no session to close; rustls would send nothing useful
        }
        tls.send_close_notify(); // a no-op when it went out before
        tls.wants_write()
    }

    /// Makes room for `n` more bytes in the read buffer without disturbing payloads split
    /// off it earlier: in place if it can (`try_reclaim`), else in a pooled buffer (the
    /// undecoded bytes move along), else, past a pooled buffer's size, in the connection's
    /// own buffer, which grows.
    fn make_room(&mut self, n: usize, pool: &mut ReadPool) {
        if self.read_buf.try_reclaim(n) {
            return;
        }
        let held = self.read_buf.len();
        let need = held.saturating_add(n);
        if need <= BUFFER_CAPACITY {
            let mut buf = pool.take(need);
            buf.extend_from_slice(&self.read_buf);
            self.replace_read_buf(buf, true, pool);
        } else if self.read_buf_pooled {
            let mut buf = BytesMut::with_capacity(need.max(2 * BUFFER_CAPACITY));
            buf.extend_from_slice(&self.read_buf);
            self.replace_read_buf(buf, false, pool);
        } else {
            self.read_buf.reserve(n);
        }
    }

    fn replace_read_buf(&mut self, buf: BytesMut, pooled: bool, pool: &mut ReadPool) {
        let old = std::mem::replace(&mut self.read_buf, buf);
        if std::mem::replace(&mut self.read_buf_pooled, pooled) {
            pool.put(old);
        }
    }

    /// After decoding: gives the read buffer back to the pool when everything in it was
    /// decoded, so an idle connection holds none. A small remainder (the start of a frame
    /// still arriving) moves to a buffer of its own size first, out of a pooled buffer or
    /// a big one it grew.
    pub fn release_read_buf(&mut self, pool: &mut ReadPool) {
        let held = self.read_buf.len();
        if held == 0 {
            self.replace_read_buf(BytesMut::new(), false, pool);
        } else if held <= SMALL_REMAINDER && (self.read_buf_pooled || self.read_buf.capacity() > held) {
            let own = BytesMut::from(&self.read_buf[..]);
            self.replace_read_buf(own, false, pool);
        }
    }

    pub fn queue(&mut self, bytes: Bytes) {
        self.queue_transmit(Transmit::Bytes(bytes));
    }

    fn queue_transmit(&mut self, chunk: Transmit) {
        if chunk.is_empty() {
            return;
        }
        if self.write_queue.capacity() == 0 {
            // Room for one chunk, not the four a first push makes: most connections queue
            // one (the 101 response) and then idle, keeping whatever the queue holds.
            self.write_queue.reserve_exact(1);
        }
        self.queued_bytes += chunk.len();
        self.write_queue.push_back(chunk);
    }

    /// Moves the codec's pending frames into the write queue.
    ///
    /// While the socket is full, a payload is queued as a copy, not as the slice of a read
    /// buffer it arrived in: pooled buffers are shared by many connections' messages, and a
    /// 40-byte echo waiting behind a peer that does not read would keep a whole 32 KiB
    /// buffer alive (one per message, up to the high-water mark). A connection that is not
    /// keeping up holds its own bytes; one that is pays no copy.
    pub fn queue_codec_output(&mut self) {
        while let Some(chunk) = self.codec.as_mut().and_then(Connection::poll_transmit) {
            let chunk = match chunk {
                Transmit::Bytes(bytes) if self.write_blocked && bytes.len() <= BUFFER_CAPACITY => {
                    Transmit::Bytes(Bytes::copy_from_slice(&bytes))
                }
                chunk => chunk,
            };
            self.queue_transmit(chunk);
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Writes this turn's corked run (see `write_buffers.rs`), then the queue, until both
    /// are out or the socket would block; small chunks go gathered into contiguous runs.
    /// What is left of the run then moves to the front of the queue. Returns the status and
    /// the bytes written.
    pub fn flush(&mut self, buffers: &mut WriteBuffers) -> (IoStatus, usize) {
        let before = self.queued_bytes;
        let (status, from_cork) = match self.tls.take() {
            Some(mut tls) => {
                let status = self.flush_tls(&mut tls);
                self.tls = Some(tls);
                (status, 0)
            }
            None => self.flush_plain(buffers),
        };
        (status, before.saturating_sub(self.queued_bytes) + from_cork)
    }

    /// `flush` for a plaintext socket; also returns the corked bytes written.
    fn flush_plain(&mut self, buffers: &mut WriteBuffers) -> (IoStatus, usize) {
        let run = self.corked.take();
        debug_assert!(run.is_none_or(|r| buffers.corked(r, 0).len() == r.len()), "a run outlived its cork");
        if self.write_blocked && run.is_none() {
            // The socket was full last time: offer it one chunk before gathering a batch
            // (a member that lags behind a busy room is flushed every turn).
            if let Some(front) = self.write_queue.front() {
                match self.socket.write(front) {
                    Ok(0) => return (IoStatus::Error, 0),
                    Ok(n) => self.consume_written(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (IoStatus::Ok, 0),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return (IoStatus::Error, 0),
                }
            }
        }
        let mut from_cork = 0;
        loop {
            let rest = run.map_or(0, |r| r.len() - from_cork);
            if rest == 0 && self.write_queue.is_empty() {
                self.write_blocked = false;
                return (IoStatus::Ok, from_cork);
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let head = run.filter(|_| rest > 0).map(|r| (r, from_cork));
            let count = buffers.gather(head, &self.write_queue, &mut slices);
            let result = match slices.get(..count) {
                Some([one]) => self.socket.write(one),
                Some(some) => self.socket.write_vectored(some),
                None => Ok(0),
            };
            match result {
                Ok(0) => return (IoStatus::Error, from_cork),
                Ok(n) => {
                    let taken = n.min(rest);
                    from_cork += taken;
                    self.consume_written(n - taken);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(r) = run.filter(|_| rest > 0) {
                        // The cork is emptied after this flush: the rest waits in the queue.
                        let left = Bytes::copy_from_slice(buffers.corked(r, from_cork));
                        self.queued_bytes += left.len();
                        self.write_queue.push_front(Transmit::Bytes(left));
                    }
                    self.write_blocked = true;
                    return (IoStatus::Ok, from_cork);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return (IoStatus::Error, from_cork),
            }
        }
    }

    /// Corks a frame for this connection, if it may (see [`Conn::may_cork`]).
    pub fn cork(&mut self, buffers: &mut WriteBuffers, header: &[u8], payload: &[u8]) -> bool {
        self.may_cork() && buffers.cork(&mut self.corked, header, payload)
    }

    /// Whether frames sent now may go in the cork (see `write_buffers.rs`): a plaintext
    /// connection with nothing queued, so its run goes out ahead of nothing sent earlier.
    pub fn may_cork(&self) -> bool {
        self.tls.is_none() && self.write_queue.is_empty()
    }

    /// Adds a fan-out frame placed in the cork to this connection's run, if it can go there.
    pub fn join(&mut self, frame: Corked) -> bool {
        self.may_cork() && WriteBuffers::join(&mut self.corked, frame)
    }

    /// `flush_queue` through TLS. Queued chunks are handed to rustls only once it has sent
    /// everything it held, so what it buffers stays within one feed (`TLS_BUFFER_LIMIT`);
    /// the rest waits in the queue, where backpressure and the slow-consumer rule count it.
    fn flush_tls(&mut self, tls: &mut ServerConnection) -> IoStatus {
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.socket) {
                    Ok(0) => return IoStatus::Error,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.write_blocked = true;
                        return IoStatus::Ok;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return IoStatus::Error,
                }
            }
            if self.write_queue.is_empty() {
                break;
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(self.write_queue.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            match tls.writer().write_vectored(&slices[..count]) {
                // Nothing taken though nothing is pending: the handshake is not done (the
                // queue waits for it) or the session is closed.
                Ok(0) => break,
                Ok(n) => self.consume_written(n),
                Err(_) => return IoStatus::Error,
            }
        }
        self.write_blocked = false;
        IoStatus::Ok
    }

    fn consume_written(&mut self, mut written: usize) {
        self.queued_bytes = self.queued_bytes.saturating_sub(written);
        while written > 0 {
            let Some(front) = self.write_queue.front_mut() else { return };
            if written >= front.len() {
                written -= front.len();
                self.write_queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }

    /// Sends our FIN; the peer's comes back as EOF.
    pub fn shutdown_write(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Write);
    }

    /// Releases buffer memory a connection no longer needs while draining.
    pub fn discard_input(&mut self) {
        self.read_buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-connection memory is a budget (idle connections must stay cheap): these sizes
    /// are measured, and a change that grows them should be a decision, not an accident.
    #[test]
    fn per_connection_state_stays_small() {
        let conn = std::mem::size_of::<Conn>();
        let codec = std::mem::size_of::<Connection>();
        println!("Conn: {conn} bytes, of which codec Connection: {codec} bytes");
        assert!(codec <= 160, "proto::Connection is {codec} bytes");
        assert!(conn <= 320, "server Conn is {conn} bytes");
        // A queued chunk is no bigger than the `Bytes` it may hold: a header kept inline
        // costs queue space the size of a pointer to it.
        let chunk = std::mem::size_of::<Transmit>();
        assert!(chunk <= std::mem::size_of::<Bytes>(), "Transmit is {chunk} bytes");
    }

    /// A connected pair: our side as a `Conn`, the peer as a blocking std stream.
    fn pair() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Conn::new(TcpStream::from_std(ours), IpAddr::from([127, 0, 0, 1]), 0, Instant::now(), None), peer)
    }

    /// Reads until `len` bytes are buffered (the peer's bytes may take a moment).
    fn read_until(conn: &mut Conn, pool: &mut ReadPool, len: usize) {
        for _ in 0..1000 {
            if conn.read_buf.len() >= len {
                return;
            }
            let _ = conn.read_some(usize::MAX, pool);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("only {} of {len} bytes arrived", conn.read_buf.len());
    }

    #[test]
    fn an_idle_connection_holds_no_read_buffer() {
        let (mut conn, mut peer) = pair();
        let mut pool = ReadPool::new();
        peer.write_all(&[1u8; 100]).unwrap();
        read_until(&mut conn, &mut pool, 100);
        assert!(conn.read_buf.capacity() >= 100);
        // A payload split off (as the codec does) outlives the buffer's return to the pool.
        let payload = conn.read_buf.split_to(60).freeze();
        // 40 bytes left, the start of a frame: kept in a buffer of their own size.
        conn.release_read_buf(&mut pool);
        assert_eq!(conn.read_buf.capacity(), 40);
        assert_eq!(pool.pooled(), 1);
        // The rest arrives; decoded, everything goes and the connection holds nothing.
        peer.write_all(&[2u8; 10]).unwrap();
        read_until(&mut conn, &mut pool, 50);
        assert_eq!(&conn.read_buf[..], [[1u8; 40].as_slice(), &[2u8; 10]].concat());
        let _ = conn.read_buf.split();
        conn.release_read_buf(&mut pool);
        assert_eq!(conn.read_buf.capacity(), 0);
        assert_eq!(pool.pooled(), 1);
        assert_eq!(&payload[..], [1u8; 60]);
    }

    #[test]
    fn a_peer_that_does_not_read_gets_copies_not_slices_of_shared_buffers() {
        let (mut conn, peer) = pair();
        conn.codec = Some(Connection::server(crate::proto::Config::default()));
        let mut read = BytesMut::from(&b"payload one payload two"[..]);
        let (one, two) = (read.split_to(11).freeze(), read.split_off(1).freeze());
        let queued_slice = |conn: &mut Conn, payload: &Bytes| {
            conn.codec.as_mut().unwrap().send_message(crate::proto::MessageKind::Text, payload.clone());
            conn.queue_codec_output();
            matches!(conn.write_queue.back(), Some(Transmit::Bytes(b)) if b.as_ptr() == payload.as_ptr())
        };
        // Keeping up: the payload is queued as it is (zero-copy).
        assert!(queued_slice(&mut conn, &one));
        assert_eq!(conn.flush(&mut WriteBuffers::default()).0, IoStatus::Ok);
        // The peer stops reading: fill its socket until the kernel refuses more.
        while !conn.write_blocked {
            conn.queue(Bytes::from(vec![0u8; 1 << 20]));
            assert_eq!(conn.flush(&mut WriteBuffers::default()).0, IoStatus::Ok);
        }
        assert!(!queued_slice(&mut conn, &two), "queued behind a full socket: copied");
        assert_eq!(conn.write_queue.back().map(|c| c.to_vec()), Some(two.to_vec()));
        drop(peer);
    }

    #[test]
    fn input_beyond_a_pooled_buffer_grows_a_buffer_of_its_own() {
        let (mut conn, mut peer) = pair();
        let mut pool = ReadPool::new();
        let big = vec![3u8; 3 * BUFFER_CAPACITY];
        let writer = std::thread::spawn(move || peer.write_all(&big).map(|()| peer));
        read_until(&mut conn, &mut pool, 3 * BUFFER_CAPACITY);
        assert!(conn.read_buf.iter().all(|&b| b == 3));
        // The start of the next frame stays behind: it keeps its bytes, not the big buffer.
        let _ = conn.read_buf.split_to(3 * BUFFER_CAPACITY - 10);
        conn.release_read_buf(&mut pool);
        assert_eq!((conn.read_buf.len(), conn.read_buf.capacity()), (10, 10));
        conn.read_buf.clear();
        conn.release_read_buf(&mut pool);
        // The grown buffer is freed, not pooled: the pool holds only buffers of its size.
        assert_eq!(conn.read_buf.capacity(), 0);
        assert!(pool.pooled() <= 1);
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_corked_run_the_socket_refuses_moves_to_the_front_of_the_queue_in_order() {
        let (mut conn, mut peer) = pair();
        let mut buffers = WriteBuffers::default();
        // Fill the socket first (no queue: the connection may still cork).
        let filler = vec![0u8; 1 << 16];
        let mut sent = 0;
        while let Ok(n) = conn.socket.write(&filler) {
            sent += n;
        }
        assert!(conn.cork(&mut buffers, b"\x81\x02", b"a1"));
        assert!(conn.cork(&mut buffers, b"\x81\x02", b"a2"));
        assert_eq!(conn.flush(&mut buffers), (IoStatus::Ok, 0), "nothing taken: the socket is full");
        assert_eq!(conn.queued_bytes(), 8, "the run waits in the queue");
        assert!(!conn.is_drained());
        buffers.uncork_all(); // the end of the turn: the run no longer lives in the cork
        conn.queue(Bytes::from_static(b"\x81\x01b"));
        // The peer reads: the filler, then the run, then what was queued after it.
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut received = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while received.len() < sent + 11 {
            let n = peer.read(&mut buf).unwrap();
            received.extend_from_slice(&buf[..n]);
            let _ = conn.flush(&mut buffers);
        }
        assert_eq!(&received[sent..], b"\x81\x02a1\x81\x02a2\x81\x01b");
        assert!(conn.is_drained());
    }
}
