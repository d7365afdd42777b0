//! The end of a turn: every connection with output is flushed, one vectored write each.
//! A connection that finished sends its FIN once its queue is out; one whose reading was
//! paused (backpressure) is read again next turn once its queue is down.
//!
//! Two rules make a big fan-out cheaper per message (a flush of more than [`FLUSH_SLICE`]
//! connections, with `Config::flush_reads` above 0; smaller ones are written in one pass,
//! the list popped from its end):
//! - **Talkers first.** The connections read this turn are written first: a publisher gets
//!   its own copy (or its ack) before the 10,000 members of its room get theirs, so its
//!   next messages are on their way while the rest is written.
//! - **Reads between slices.** After each slice of [`FLUSH_SLICE`] connections, what became
//!   ready is read (at most `Config::flush_reads` times a turn). A message that arrived
//!   meanwhile is fanned out at once: it joins the corked run of every member not written
//!   yet, so one write carries both; only the members already written get it in a write
//!   of its own. Without this, the loop would write everything, then sleep in `poll` until
//!   the publisher's next message came.
//!
//! Measured on fan-out 1 -> 10,000 (benches/compare.sh): 1.5x the deliveries/s, with
//! half the writes per delivery. At a fixed rate its p99 falls; a saturated room's
//! p99 rises (more of the backlog waits in the runs of a longer turn).

use std::time::Instant;

use super::conn::{Conn, IoStatus, Phase};
use super::event_loop::{Flow, Outcome, Server};
use super::policy;
use super::Handler;

/// Connections written between two reads of a long flush (see the module header): a few
/// hundred microseconds of writes.
pub const FLUSH_SLICE: usize = 512;

impl<H: Handler> Server<H> {
    /// Flushes every dirty connection (talkers first when it will read between slices).
    /// Connections removed here tell the handler, whose answers (goodbyes to others) are
    /// applied and flushed in the same turn. The list is popped from its end (measured: in
    /// order it cost 4-6 % of fan-out deliveries/s). Exit: a read between slices found the
    /// loop must stop.
    pub(super) fn flush_dirty(&mut self, now: Instant) -> Flow {
        self.share_metrics();
        let mut reads_left = self.config.flush_reads;
        if self.dirty.len() > FLUSH_SLICE && reads_left > 0 {
            self.flush_talkers(now);
        } else {
            // A flush that reads nothing before it ends: the order does not matter.
            self.talkers.clear();
        }
        let mut in_slice = 0;
        loop {
            while let Some(index) = self.dirty.pop() {
                if !self.conns.get(index).is_some_and(|c| c.dirty) {
                    continue; // written already (a talker), or gone
                }
                let outcome = self.flush_conn(index, now);
                self.settle(index, outcome, now);
                in_slice += 1;
                if in_slice == FLUSH_SLICE && reads_left > 0 {
                    (in_slice, reads_left) = (0, reads_left - 1);
                    if self.read_between_slices(now) == Flow::Exit {
                        return Flow::Exit;
                    }
                }
            }
            if self.outbox.commands.is_empty() {
                break;
            }
            self.apply_outbox(now);
        }
        // Every corked run went out with its connection's flush (or moved to its queue).
        self.write_buffers.uncork_all();
        // What on_close posted to other workers (a connection removed or closed as a slow
        // consumer here) goes out now, not a turn later.
        self.handler.end_turn();
        Flow::Continue
    }

    /// Writes the connections read since the last time (each once: the flag says whether
    /// it still has something to write).
    fn flush_talkers(&mut self, now: Instant) {
        let mut talkers = std::mem::take(&mut self.talkers);
        for &index in &talkers {
            if self.conns.get(index).is_some_and(|c| c.dirty) {
                let outcome = self.flush_conn(index, now);
                self.settle(index, outcome, now);
            }
        }
        talkers.clear();
        self.talkers = talkers;
    }

    /// Between two slices of a long flush: whatever is ready now (no wait), handled as a
    /// turn handles its events; then the talkers among them are written. Nothing is read
    /// while the handler cannot take input (the events wait for the next turn).
    fn read_between_slices(&mut self, now: Instant) -> Flow {
        if !self.handler.accepting_input() {
            return Flow::Continue;
        }
        let Some(mut events) = self.slice_events.take() else { return Flow::Continue };
        let mut flow = Flow::Continue;
        if self.poll.poll(&mut events, Some(std::time::Duration::ZERO)).is_ok() {
            for event in events.iter() {
                if self.dispatch(event, now) == Flow::Exit {
                    flow = Flow::Exit;
                    break;
                }
            }
        }
        self.slice_events = Some(events);
        if flow == Flow::Exit {
            return Flow::Exit; // the loop ends: what is left unwritten goes with it
        }
        // Requests pipelined behind an answer given just now (`on_wake`), as a turn does.
        self.resume_deferred_http(now);
        self.apply_outbox(now);
        self.share_metrics();
        self.flush_talkers(now);
        Flow::Continue
    }

    /// Before writes: a client that sees this turn's effects finds them counted in any
    /// worker's `/metrics`.
    fn share_metrics(&self) {
        if self.shared.workers() > 1 {
            self.shared.publish_metrics(usize::from(self.worker), &self.metrics);
        }
    }

    /// Puts connection `index` on the list to flush this turn, once.
    pub(super) fn mark_dirty(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index) {
            mark_dirty(&mut self.dirty, conn, index);
        }
    }

    fn flush_conn(&mut self, index: usize, now: Instant) -> Outcome {
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        conn.dirty = false;
        let (status, written) = conn.flush(&mut self.write_buffers);
        self.metrics.bytes_out += written as u64;
        if status == IoStatus::Error {
            self.count_abrupt(index);
            return Outcome::Remove;
        }
        let Some(conn) = self.conns.get_mut(index) else { return Outcome::Keep };
        let mut drained = conn.is_drained();
        if drained && conn.phase == Phase::Finishing && conn.queue_close_notify() {
            // TLS: close_notify goes out ahead of our FIN.
            if conn.flush(&mut self.write_buffers).0 == IoStatus::Error {
                return Outcome::Remove;
            }
            drained = conn.is_drained();
        }
        if drained && conn.phase == Phase::Finishing {
            conn.shutdown_write();
            conn.phase = Phase::Draining;
            if conn.peer_eof {
                return Outcome::Remove;
            }
            if std::mem::replace(&mut conn.read_paused, false) {
                // Its input went unread while it was paused: read (and discard) it next turn,
                // so a FIN that came meanwhile ends it now rather than at the linger deadline.
                self.more_input.push(index);
            }
            self.enter_deadline(index, now);
        } else if conn.read_paused
            && !conn.held
            && policy::may_resume_reading(conn.queued_bytes(), self.config.write_high_water)
        {
            conn.read_paused = false;
            self.more_input.push(index);
        }
        Outcome::Keep
    }
}

/// Puts connection `index` (`conn`) on the list to flush this turn, once.
pub(super) fn mark_dirty(dirty: &mut Vec<usize>, conn: &mut Conn, index: usize) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(index);
    }
}
