//! Applying the handler's output: messages to one connection, fan-out of one message to
//! many (encoded once), deferred HTTP answers and closes. Commands are applied in order, in
//! a loop: a command that makes the handler speak again (a close runs its `on_close`) adds
//! to the same queue, and nothing here calls back into itself.

use std::time::Instant;

use bytes::Bytes;
use log::debug;

use super::conn::{Framing, Phase};
use super::event_loop::{live_conn, Server};
use super::metrics::CloseInitiator;
use super::policy::{self, Fanout};
use super::write_buffers::Placements;
use super::writing::mark_dirty;
use super::{Command, ConnId, Handler};
use crate::proto::connection::BroadcastFrames;
use crate::proto::{CloseCode, MessageKind};

impl<H: Handler> Server<H> {
    /// Applies every command the handler queued, and those that applying them caused.
    pub(super) fn apply_outbox(&mut self, now: Instant) {
        while let Some(command) = self.outbox.commands.pop_front() {
            match command {
                Command::Message(id, kind, payload) => {
                    if let Some(payload) = self.send(id, kind, Body::Shared(payload)) {
                        self.send_chunk(id, payload, now);
                    }
                }
                Command::Copied(id, kind, at) => {
                    // Out of the outbox while sending to a socket, which calls no handler
                    // (a stream's chunk may: it is sent once the bytes are back).
                    let copied = std::mem::take(&mut self.outbox.copied);
                    let not_a_socket = self.send(id, kind, Body::Copied(copied.get(at).unwrap_or_default()));
                    self.outbox.copied = copied;
                    if let Some(payload) = not_a_socket {
                        self.send_chunk(id, payload, now);
                    }
                }
                Command::Broadcast { to, except, kind, payload } => self.broadcast(&to, except, kind, &payload, now),
                Command::Respond(id, response) => {
                    let outcome = self.respond(id, *response, now);
                    self.settle(id.index(), outcome, now);
                }
                Command::Close(id, code, reason) => {
                    if self.live_conn(id, Phase::Streaming).is_some() {
                        self.end_stream(id, now);
                    } else {
                        self.start_close(id, code, &reason, now);
                    }
                }
            }
        }
        self.last_chunk = None;
        self.outbox.applied();
    }

    /// One message to one open connection, framed by its own codec: corked when it can be
    /// (see `write_buffers.rs`), else queued. Not an open socket: the payload back, for a
    /// stream's chunk (or nobody: one lookup for sockets).
    fn send(&mut self, id: ConnId, kind: MessageKind, payload: Body<'_>) -> Option<Bytes> {
        let Some(conn) = live_conn(&mut self.conns, self.worker, id, Phase::Open) else {
            return Some(payload.into_bytes());
        };
        let codec = conn.codec.as_mut()?;
        let header = codec.plain_frame_header(kind, payload.len());
        if !header.is_some_and(|header| conn.cork(&mut self.write_buffers, &header, &payload)) {
            if let Some(codec) = conn.codec.as_mut() {
                // (A copied payload becomes a `Bytes` here: TLS, compression, a backlog.)
                codec.send_message_pooled(kind, payload.into_bytes(), Some(&mut self.compressors));
            }
            conn.queue_codec_output();
        }
        self.metrics.messages_out += 1;
        mark_dirty(&mut self.dirty, conn, id.index());
        None
    }

    /// The fan-out path: one encoding per variant (plain, or compressed for a window size),
    /// shared by every receiver of that variant: placed once in the cork, where members
    /// join it (see `write_buffers.rs`), or queued as clones of one `Bytes`. Compressing once
    /// is sound because pooled compressors reset after every message (no context
    /// takeover): the output depends on the payload alone, never on a receiver's history.
    fn broadcast(&mut self, ids: &[ConnId], except: Option<ConnId>, kind: MessageKind, payload: &Bytes, now: Instant) {
        let mut frames = BroadcastFrames::new(kind, payload.clone());
        let mut placements = Placements::default();
        let cap = self.config.max_outbound_bytes;
        for &id in ids {
            if Some(id) == except {
                continue;
            }
            let Some(conn) = live_conn(&mut self.conns, self.worker, id, Phase::Open) else { continue };
            if policy::fanout(conn.queued_bytes(), payload.len(), cap, None) != Fanout::Queue
                && !self.admit_fanout(id, payload.len(), now)
            {
                continue;
            }
            // admit_fanout checked the connection is live and open.
            let Some(conn) = self.conns.get_mut(id.index()) else { continue };
            let Some(codec) = conn.codec.as_mut() else { continue };
            match codec.broadcast_frame(&mut frames, &mut self.compressors) {
                Some(frame) => {
                    let placed = conn.may_cork().then(|| placements.place(&mut self.write_buffers, frame));
                    if !placed.flatten().is_some_and(|at| conn.join(at)) {
                        conn.queue(frame.clone());
                    }
                }
                None => conn.queue_codec_output(),
            }
            self.metrics.messages_out += 1;
            mark_dirty(&mut self.dirty, conn, id.index());
        }
    }

    /// Whether a fan-out frame of `len` bytes may be queued for `id`, which is over the cap
    /// with it (see `policy::fanout`). The queue is offered to the socket first, the one
    /// write outside the end-of-turn flush: a member that is reading must be judged by what
    /// it failed to read, not by the size of one burst. A slow consumer is closed with 1013
    /// (what it has queued still goes out ahead of the close).
    fn admit_fanout(&mut self, id: ConnId, len: usize, now: Instant) -> bool {
        let cap = self.config.max_outbound_bytes;
        let Some(conn) = live_conn(&mut self.conns, self.worker, id, Phase::Open) else { return false };
        // A socket error here is handled by the end-of-turn flush.
        let (_, written) = conn.flush(&mut self.write_buffers);
        self.metrics.bytes_out += written as u64;
        if policy::fanout(conn.queued_bytes(), len, cap, Some(written)) == Fanout::SlowConsumer {
            debug!("connection {} is a slow consumer ({} bytes queued)", id.index(), conn.queued_bytes());
            self.metrics.slow_consumer_closes += 1;
            self.start_close(id, CloseCode::TRY_AGAIN_LATER, "slow consumer", now);
            return false;
        }
        true
    }

    /// A stream's next chunk: the handler's bytes as they are. The slow-consumer rule of
    /// the fan-out (`policy::fanout`): past `max_outbound_bytes` the queue is offered to the
    /// socket first, and a client that took nothing (or is past twice the cap) does not
    /// read: it is dropped (a stream has no close frame to say why; it resumes from its
    /// `Last-Event-ID`).
    fn send_chunk(&mut self, id: ConnId, payload: Bytes, now: Instant) {
        let cap = self.config.max_outbound_bytes;
        let Some(conn) = live_conn(&mut self.conns, self.worker, id, Phase::Streaming) else { return };
        if policy::fanout(conn.queued_bytes(), payload.len(), cap, None) != Fanout::Queue {
            // A socket error here is handled by the end-of-turn flush.
            let (_, written) = conn.flush(&mut self.write_buffers);
            self.metrics.bytes_out += written as u64;
            if policy::fanout(conn.queued_bytes(), payload.len(), cap, Some(written)) == Fanout::SlowConsumer {
                debug!("stream {} is a slow consumer ({} bytes queued)", id.index(), conn.queued_bytes());
                self.metrics.slow_consumer_closes += 1;
                return self.settle(id.index(), super::event_loop::Outcome::Remove, now);
            }
        }
        let bytes = match &self.last_chunk {
            _ if conn.stream != Some(Framing::Chunked) => payload,
            Some((last, chunk)) if last.as_ptr() == payload.as_ptr() && last.len() == payload.len() => chunk.clone(),
            _ => {
                let chunk = Bytes::from(super::http::chunk(&payload));
                self.last_chunk = Some((payload, chunk.clone()));
                chunk
            }
        };
        conn.queue(bytes);
        self.metrics.messages_out += 1;
        mark_dirty(&mut self.dirty, conn, id.index());
    }

    /// Ends a stream: the last chunk, then the connection finishes (FIN once it is out).
    pub(super) fn end_stream(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = live_conn(&mut self.conns, self.worker, id, Phase::Streaming) else { return };
        if conn.stream == Some(Framing::Chunked) {
            conn.queue(Bytes::from_static(super::http::LAST_CHUNK));
        }
        self.settle(id.index(), super::event_loop::Outcome::Finish, now);
    }

    /// Sends a close frame and waits (up to the linger time) for the peer's.
    pub(super) fn start_close(&mut self, id: ConnId, code: CloseCode, reason: &str, now: Instant) {
        let Some(conn) = self.live_conn(id, Phase::Open) else { return };
        if let Some(codec) = conn.codec.as_mut() {
            codec.close(code, reason);
        }
        conn.queue_codec_output();
        conn.phase = Phase::CloseSent;
        self.metrics.count_close(code.0, CloseInitiator::Server);
        self.enter_deadline(id.index(), now);
        self.mark_dirty(id.index());
        self.leave_open(id.index());
    }
}

/// A message's bytes on their way to one connection.
enum Body<'a> {
    /// Shared with whoever else holds them (the read buffer, a room's history).
    Shared(Bytes),
    /// Copied into the outbox by the handler ([`super::Outbox::send_payload`]).
    Copied(&'a [u8]),
}

impl Body<'_> {
    fn into_bytes(self) -> Bytes {
        match self {
            Body::Shared(bytes) => bytes,
            Body::Copied(slice) => Bytes::copy_from_slice(slice),
        }
    }
}

impl std::ops::Deref for Body<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Shared(bytes) => bytes,
            Body::Copied(slice) => slice,
        }
    }
}
