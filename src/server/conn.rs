//! One accepted socket: its read buffer, its queue of outgoing chunks ([`Transmit`]: shared
//! `Bytes`, or a frame header held inline), its codec and the phase of its life. Reading and
//! writing here never block: they stop at `WouldBlock`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;

use crate::proto::{Connection, Transmit};

/// Bytes asked of the socket per `read` call (the size of the loop's scratch buffer).
pub const READ_CHUNK: usize = 32 * 1024;
/// Buffers handed to one `writev` call.
const MAX_IOVECS: usize = 64;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the HTTP request head (deadline: handshake timeout).
    Handshake,
    /// WebSocket open.
    Open,
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

#[derive(Debug)]
pub struct Conn {
    pub socket: TcpStream,
    pub generation: u32,
    pub phase: Phase,
    /// When the current phase times out, if it does.
    pub deadline: Option<Instant>,
    pub read_buf: BytesMut,
    write_queue: VecDeque<Transmit>,
    queued_bytes: usize,
    /// The codec, from the 101 response on.
    pub codec: Option<Connection>,
    /// The handler saw `on_open` and not yet `on_close`.
    pub opened: bool,
    /// Counted against `max_connections` as an open WebSocket.
    pub counted: bool,
    /// The peer's FIN arrived.
    pub peer_eof: bool,
    /// When bytes last arrived (keepalive: pings and the idle timeout count from here).
    pub last_heard: Instant,
    /// In the loop's list of connections to flush this turn.
    pub dirty: bool,
    /// Reading stopped because the write queue is over the high-water mark.
    pub read_paused: bool,
    /// A plain HTTP request is with the handler, which answers later (`Outbox::respond`);
    /// the value is whether the connection stays open after the response.
    pub awaiting_response: Option<bool>,
}

impl Conn {
    pub fn new(socket: TcpStream, generation: u32, deadline: Instant) -> Self {
        Conn {
            socket,
            generation,
            phase: Phase::Handshake,
            deadline: Some(deadline),
            read_buf: BytesMut::new(),
            write_queue: VecDeque::new(),
            queued_bytes: 0,
            codec: None,
            opened: false,
            counted: false,
            peer_eof: false,
            last_heard: deadline,
            dirty: false,
            read_paused: false,
            awaiting_response: None,
        }
    }

    /// Reads until `WouldBlock`, EOF, an error, or about `budget` more bytes (a chunk's
    /// worth at most over it), so input is decoded in bounded batches. Returns the status
    /// and the bytes read.
    ///
    /// The socket is read into the loop's `scratch` buffer and only the bytes that arrived
    /// are appended to the connection's buffer: a connection holding a few bytes of a
    /// partial frame holds a few bytes, not a 32 KiB chunk.
    pub fn read_some(&mut self, budget: usize, scratch: &mut [u8]) -> (IoStatus, usize) {
        let start_len = self.read_buf.len();
        let limit = start_len.saturating_add(budget);
        let status = loop {
            if self.read_buf.len() >= limit {
                break IoStatus::More;
            }
            match self.socket.read(scratch) {
                Ok(0) => break IoStatus::Eof,
                Ok(n) => {
                    self.read_buf.extend_from_slice(scratch.get(..n).unwrap_or_default());
                    if n < scratch.len() {
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

    pub fn queue(&mut self, bytes: Bytes) {
        self.queue_transmit(Transmit::Bytes(bytes));
    }

    fn queue_transmit(&mut self, chunk: Transmit) {
        if !chunk.is_empty() {
            self.queued_bytes += chunk.len();
            self.write_queue.push_back(chunk);
        }
    }

    /// Moves the codec's pending frames into the write queue.
    pub fn queue_codec_output(&mut self) {
        while let Some(chunk) = self.codec.as_mut().and_then(Connection::poll_transmit) {
            self.queue_transmit(chunk);
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Writes queued bytes with vectored writes until the queue is empty or the socket
    /// would block. Returns the status and the bytes written.
    pub fn flush(&mut self) -> (IoStatus, usize) {
        let before = self.queued_bytes;
        let status = self.flush_queue();
        (status, before.saturating_sub(self.queued_bytes))
    }

    fn flush_queue(&mut self) -> IoStatus {
        while !self.write_queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(self.write_queue.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            let written = match self.socket.write_vectored(&slices[..count]) {
                Ok(0) => return IoStatus::Error,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return IoStatus::Ok,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return IoStatus::Error,
            };
            self.consume_written(written);
        }
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
}
