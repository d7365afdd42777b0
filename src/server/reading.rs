//! Reading a connection and decoding what it sent: the read gate (backpressure, held
//! input), the per-turn budget, EOF and socket errors, and the frames of an open
//! connection, whose messages go to the handler. Each step returns an [`Outcome`].

use std::time::Instant;

use log::debug;

use super::conn::{IoStatus, Phase};
use super::event_loop::{Outcome, Server};
use super::metrics::{CloseInitiator, HandshakeFailure};
use super::policy::{self, ReadGate};
use super::writing::mark_dirty;
use super::{ConnId, Handler, Payload};
use crate::proto::{CloseCode, Decoded, Event};

impl<H: Handler> Server<H> {
    /// Reads what a connection sent (up to the turn's budget) and acts on it: HTTP
    /// requests, frames, or nothing when it is finishing.
    pub(super) fn read_conn(&mut self, index: usize, now: Instant) -> Outcome {
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        match policy::read_gate(conn.phase, conn.queued_bytes(), self.config.write_high_water, self.hold_input) {
            ReadGate::Read => {}
            // Flushing resumes it (`writing.rs`).
            ReadGate::Pause => {
                conn.read_paused = true;
                return Outcome::Keep;
            }
            ReadGate::Hold => {
                conn.read_paused = true;
                if !conn.held {
                    conn.held = true;
                    self.held.push(index);
                }
                return Outcome::Keep;
            }
        }
        let budget = policy::read_budget(conn.phase, conn.read_buf.len(), &self.config);
        let (status, n) = conn.read_some(budget, &mut self.read_pool);
        self.metrics.bytes_in += n as u64;
        let decoded = match conn.phase {
            Phase::Handshake => self.process_http(index, now),
            Phase::Open | Phase::CloseSent => {
                if n > 0 {
                    conn.liveness.heard(now);
                }
                self.process_frames(index, now)
            }
            // A stream's client has nothing to say: its input is read to notice it leave.
            Phase::Streaming | Phase::Finishing | Phase::Draining => {
                conn.discard_input();
                Outcome::Keep
            }
        };
        self.settle(index, decoded, now);
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        if status != IoStatus::More {
            // An idle connection holds no read buffer (see `Conn::release_read_buf`).
            conn.release_read_buf(&mut self.read_pool);
        }
        // TLS: handshake messages, tickets and alerts go out even when nothing was queued.
        if conn.tls_wants_write() {
            self.mark_dirty(index);
        }
        match status {
            // Fairness: one connection's flood waits for the next turn while the rest are
            // served, and what it caused is flushed (and handed to other workers) in
            // between, so a burst reaches receivers as a stream, not all at once.
            IoStatus::More => {
                self.more_input.push(index);
                Outcome::Keep
            }
            IoStatus::Ok => Outcome::Keep,
            IoStatus::Eof => self.on_eof(index),
            IoStatus::Error => {
                self.count_abrupt(index);
                Outcome::Remove
            }
        }
    }

    /// The peer's FIN (or TLS close_notify).
    fn on_eof(&mut self, index: usize) -> Outcome {
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        conn.peer_eof = true;
        match conn.phase {
            // Peer's FIN after we finished: done. While we still flush: dropped once flushed.
            // A stream's client going away is how a stream ends, most of the time.
            Phase::Draining | Phase::Streaming => Outcome::Remove,
            Phase::Finishing => Outcome::Keep,
            // Gone without a close handshake (abrupt close, reset, half-open).
            Phase::Handshake | Phase::Open | Phase::CloseSent => {
                debug!("peer closed {index} without a close handshake");
                self.count_abrupt(index);
                Outcome::Remove
            }
        }
    }

    /// Counts a connection that ends without a close handshake.
    pub(super) fn count_abrupt(&mut self, index: usize) {
        let Some(conn) = self.conns.get(index) else { return };
        match conn.phase {
            Phase::Open | Phase::CloseSent => self.metrics.abrupt_closes += 1,
            Phase::Handshake if conn.tls_handshaking() => self.metrics.count_handshake_failure(HandshakeFailure::Tls),
            Phase::Handshake if !conn.read_buf.is_empty() => {
                self.metrics.count_handshake_failure(HandshakeFailure::Incomplete)
            }
            _ => {}
        }
    }

    /// Decodes buffered frames and hands messages to the handler, applying what it asks
    /// for after each one (a close it asks for stops delivery of the rest).
    pub(super) fn process_frames(&mut self, index: usize, now: Instant) -> Outcome {
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        let Some(id) = ConnId::new(self.worker, index, conn.generation) else { return Outcome::Keep };
        loop {
            let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
            let Some(codec) = conn.codec.as_mut() else { return Outcome::Keep };
            let result = codec.decode_in_place(&mut conn.read_buf);
            let terminated = codec.is_terminated();
            // Control frames the codec answers (pongs, the close reply) go out with the rest.
            if codec.has_output() {
                conn.queue_codec_output();
                mark_dirty(&mut self.dirty, conn, index);
            }
            let deliver = conn.phase == Phase::Open;
            let needs_input = matches!(result, Ok(None));
            match result {
                // Still in the read buffer, which the payload consumes when the handler is done.
                Ok(Some(Decoded::InPlace { kind, len })) => {
                    self.metrics.messages_in += 1;
                    let data = Payload::in_place(&mut conn.read_buf, len);
                    if deliver {
                        self.handler.on_message(&mut self.outbox, id, kind, data);
                        self.apply_outbox(now);
                    }
                }
                Ok(Some(Decoded::Event(Event::Message { kind, data }))) => {
                    self.metrics.messages_in += 1;
                    if deliver {
                        self.handler.on_message(&mut self.outbox, id, kind, data.into());
                        self.apply_outbox(now);
                    }
                }
                Ok(Some(Decoded::Event(Event::Close(frame)))) => {
                    debug!("{index}: close received {:?}", frame.as_ref().map(|f| f.code));
                    if deliver {
                        // The client started the close handshake (else it answered ours).
                        let code = frame.as_ref().map_or(CloseCode::NO_STATUS, |f| f.code);
                        self.metrics.count_close(code.0, CloseInitiator::Client);
                    }
                }
                Ok(Some(Decoded::Event(Event::Ping(_) | Event::Pong(_)))) | Ok(None) => {}
                Err(e) => {
                    debug!("{index}: failing connection: {e} (close {})", e.close_code().0);
                    if deliver {
                        self.metrics.count_close(e.close_code().0, CloseInitiator::Server);
                    }
                }
            }
            if terminated {
                return Outcome::Finish;
            }
            if needs_input {
                return Outcome::Keep; // read_conn gives the drained buffer back to the pool
            }
        }
    }
}
