//! Deadlines as they come due: the accept back-off, and each connection's deadline, whose
//! meaning depends on its phase (`policy::expiry`): keepalive for open connections, a
//! timeout for the others.

use std::time::Instant;

use bytes::Bytes;
use log::debug;

use super::conn::Phase;
use super::event_loop::{Outcome, Server};
use super::metrics::HandshakeFailure;
use super::policy::{self, Expiry, Keepalive};
use super::{ConnId, Handler};

impl<H: Handler> Server<H> {
    pub(super) fn fire_deadlines(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.accept(now);
        }
        while let Some((deadline, id)) = self.deadlines.pop_due(now) {
            let outcome = self.expire(id, deadline, now);
            self.settle(id.index(), outcome, now);
        }
        self.apply_outbox(now);
    }

    /// Connection `id`'s deadline `deadline` came.
    fn expire(&mut self, id: ConnId, deadline: Instant, now: Instant) -> Outcome {
        let Some(conn) = self.conns.get(id.index()) else { return Outcome::Keep };
        if conn.generation != id.generation() || conn.deadline != Some(deadline) {
            return Outcome::Keep; // stale: the connection moved on
        }
        let expiry = policy::expiry(conn.phase);
        if expiry != Expiry::Keepalive {
            debug!("connection {} timed out in {:?}", id.index(), conn.phase);
        }
        match expiry {
            Expiry::Keepalive => return self.keepalive(id.index(), now),
            Expiry::HandshakeTimeout => self.metrics.count_handshake_failure(HandshakeFailure::Timeout),
            Expiry::CloseUnanswered => self.metrics.abrupt_closes += 1,
            Expiry::Linger => {}
        }
        Outcome::Remove
    }

    /// An open connection's keepalive deadline came: see `policy::Liveness`.
    fn keepalive(&mut self, index: usize, now: Instant) -> Outcome {
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        debug_assert_eq!(conn.phase, Phase::Open);
        let interval = self.config.ping_interval;
        let next = match conn.liveness.check(now, interval) {
            Keepalive::Drop => {
                let socket = &conn.socket;
                let waiting = || socket.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
                if !policy::spare_silent(conn.held, conn.read_paused, waiting) {
                    debug!("connection {index} silent for {:?}: dropping it", conn.liveness.silent(now));
                    self.metrics.idle_timeouts += 1;
                    return Outcome::Remove;
                }
                conn.liveness.heard(now);
                now + interval
            }
            Keepalive::Ping(next) => {
                if let Some(codec) = conn.codec.as_mut() {
                    codec.send_ping(Bytes::new());
                }
                conn.queue_codec_output();
                self.mark_dirty(index);
                next
            }
            Keepalive::Wait(next) => next,
        };
        self.set_deadline(index, Some(next));
        Outcome::Keep
    }
}
