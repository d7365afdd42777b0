//! A worker's write-side memory, shared by all its connections (none holds a write buffer
//! of its own between turns):
//!
//! - the **cork**: small frames sent to a plaintext connection while its queue is empty
//!   are placed in one contiguous buffer, each connection's frames as one run
//!   ([`Corked`]), instead of going through its queue as `Bytes` each. The end-of-turn
//!   flush writes a connection's run ahead of its queue; the cork is emptied after every
//!   flush. A frame that does not fit, or a connection whose run is no longer where the
//!   frame would go, takes the queue. Two kinds of frames go in:
//!   - one connection's own (the echo of a message just read, an ack), encoded straight
//!     into the cork ([`WriteBuffers::cork`]);
//!   - a fan-out frame, placed once ([`WriteBuffers::share`]) and joined by every member
//!     whose run ends where it starts ([`WriteBuffers::join`]): the publishes of one turn
//!     to a room lie end to end in the cork, so each member's run spans all of them and
//!     goes out in one write, with no copy, no refcount and no queue entry per member.
//! - the **gather scratch**: a flush copies the small chunks of a connection's queue
//!   (headers, small payloads, fan-out frames it could not join) into contiguous runs and
//!   passes large ones as they are.
//!
//! Both exist because the kernel copies one iovec far faster than many tiny ones: at echo
//! depth 16 a header and a 32-byte payload per message made `_copy_from_iter` a tenth of
//! the server's CPU. The copies here are a few hundred bytes per connection per turn.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::num::NonZeroU32;

use crate::proto::Transmit;

/// Chunks up to this size are copied (gathered or corked); bigger ones (large payloads,
/// shared by every receiver of a fan-out) go to the kernel as they are.
pub const COPY_MAX: usize = 2048;

/// Bytes gathered per write: a socket send buffer's worth of small frames.
const SCRATCH_BYTES: usize = 64 * 1024;

/// Bytes corked per turn, over all connections. (A fan-out frame is placed once and shared
/// by its members' runs: copying it for each of 10,000 members measured 0.89x.)
const CORK_BYTES: usize = 256 * 1024;

/// Buffers handed to one `writev` call.
pub const MAX_IOVECS: usize = 64;

/// A connection's run of corked bytes (never empty: `end` is past a frame header, so an
/// `Option<Corked>` costs a connection 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corked {
    start: u32,
    end: NonZeroU32,
}

impl Corked {
    pub fn len(self) -> usize {
        self.end.get().saturating_sub(self.start) as usize
    }
}

#[derive(Debug)]
pub struct WriteBuffers {
    scratch: Vec<u8>,
    cork: Vec<u8>,
}

impl Default for WriteBuffers {
    fn default() -> Self {
        WriteBuffers { scratch: Vec::with_capacity(SCRATCH_BYTES), cork: Vec::with_capacity(CORK_BYTES) }
    }
}

/// Where the encodings of one fan-out were placed in the cork, by the frame's address: a
/// few variants at most (plain, compressed per window), each placed once.
#[derive(Debug, Default)]
pub struct Placements {
    slots: [(usize, Option<Corked>); 4],
    len: usize,
}

impl Placements {
    /// The frame's place in the cork, placing it the first time; None when it cannot be
    /// placed (too big, the cork full, more variants than slots).
    pub fn place(&mut self, buffers: &mut WriteBuffers, frame: &[u8]) -> Option<Corked> {
        let key = frame.as_ptr().addr();
        let placed = self.slots.get(..self.len).unwrap_or_default();
        if let Some(&(_, at)) = placed.iter().find(|(k, _)| *k == key) {
            return at;
        }
        let slot = self.slots.get_mut(self.len)?;
        let at = buffers.share(frame);
        *slot = (key, at);
        self.len += 1;
        at
    }
}

/// One iovec of a gathered write: a run of the scratch, or a queued chunk as it is.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Run(usize, usize),
    Chunk(usize),
}

impl WriteBuffers {
    /// Appends one frame (`header`, then `payload`) to the run `corked` of a connection
    /// whose queue is empty. False (nothing appended) when it is too big, the cork is full,
    /// or another connection's run has started since this one's.
    pub fn cork(&mut self, corked: &mut Option<Corked>, header: &[u8], payload: &[u8]) -> bool {
        let continues = corked.is_none_or(|r| r.end.get() as usize == self.cork.len());
        continues && self.append(header, payload).is_some_and(|frame| Self::join(corked, frame))
    }

    /// Places a fan-out frame in the cork once, for members to [`join`](Self::join). None
    /// when it is too big or the cork is full (members then queue it).
    pub fn share(&mut self, frame: &[u8]) -> Option<Corked> {
        self.append(&[], frame)
    }

    /// Appends one frame (`header`, then `payload`) at the cork's end and returns where it
    /// lies; None when the payload is too big to copy, the cork is full or it is empty.
    fn append(&mut self, header: &[u8], payload: &[u8]) -> Option<Corked> {
        let at = self.cork.len();
        let len = header.len() + payload.len();
        // CORK_BYTES fits a u32; an empty frame would make an empty run.
        let end = u32::try_from(at + len).ok().and_then(NonZeroU32::new)?;
        if len == 0 || payload.len() > COPY_MAX || at + len > CORK_BYTES {
            return None;
        }
        self.cork.extend_from_slice(header);
        self.cork.extend_from_slice(payload);
        Some(Corked { start: at as u32, end })
    }

    /// Adds a shared frame to the run `corked` of a connection whose queue is empty: true
    /// when the run was empty or ends where the frame starts (false: nothing changed).
    pub fn join(corked: &mut Option<Corked>, frame: Corked) -> bool {
        match corked {
            None => *corked = Some(frame),
            Some(run) if run.end.get() == frame.start => run.end = frame.end,
            Some(_) => return false,
        }
        true
    }

    /// A run's bytes, from `skip` on.
    pub fn corked(&self, run: Corked, skip: usize) -> &[u8] {
        corked_bytes(&self.cork, run, skip)
    }

    /// Empties the cork: every run in it was written or handed to its connection's queue.
    pub fn uncork_all(&mut self) {
        self.cork.clear();
    }

    /// Fills `slices` with what a connection writes next, in order: its corked run from
    /// byte `skip` on (`head`), then the front of its `queue`, small chunks copied into contiguous
    /// runs of the scratch, big chunks as they are. Returns how many slices it filled (at
    /// least one when there is anything to write).
    pub fn gather<'a>(
        &'a mut self,
        head: Option<(Corked, usize)>,
        queue: &'a VecDeque<Transmit>,
        slices: &mut [IoSlice<'a>],
    ) -> usize {
        let head = head.map_or(&[][..], |(run, skip)| corked_bytes(&self.cork, run, skip));
        let mut pieces = [Piece::Chunk(0); MAX_IOVECS];
        let reserved = usize::from(!head.is_empty());
        let most = pieces.len().min(slices.len()).saturating_sub(reserved);
        let buf = &mut self.scratch;
        buf.clear();
        let mut count = 0;
        let mut run: Option<usize> = None;
        for (index, chunk) in queue.iter().enumerate() {
            if chunk.len() <= COPY_MAX && buf.len() + chunk.len() <= SCRATCH_BYTES {
                if run.is_none() {
                    if count == most {
                        break;
                    }
                    run = Some(buf.len());
                }
                buf.extend_from_slice(chunk);
                continue;
            }
            if let Some(start) = run.take() {
                pieces[count] = Piece::Run(start, buf.len());
                count += 1;
            }
            if count == most {
                break;
            }
            pieces[count] = Piece::Chunk(index);
            count += 1;
        }
        if let Some(start) = run {
            pieces[count] = Piece::Run(start, buf.len());
            count += 1;
        }
        let scratch: &'a [u8] = &self.scratch;
        if reserved == 1 {
            if let Some(first) = slices.first_mut() {
                *first = IoSlice::new(head);
            }
        }
        for (slot, piece) in slices.iter_mut().skip(reserved).zip(&pieces[..count]) {
            *slot = match *piece {
                Piece::Run(start, end) => IoSlice::new(scratch.get(start..end).unwrap_or_default()),
                Piece::Chunk(index) => IoSlice::new(queue.get(index).map_or(&[][..], |c| &c[..])),
            };
        }
        count + reserved
    }
}

fn corked_bytes(cork: &[u8], run: Corked, skip: usize) -> &[u8] {
    cork.get(run.start as usize + skip..run.end.get() as usize).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(chunks: &[&[u8]]) -> VecDeque<Transmit> {
        chunks.iter().map(|c| Transmit::Bytes(bytes::Bytes::copy_from_slice(c))).collect()
    }

    /// What one write of the gathered slices sends.
    fn sent(slices: &[IoSlice<'_>]) -> Vec<u8> {
        slices.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn small_chunks_are_gathered_into_one_run_and_big_ones_go_as_they_are() {
        let big = vec![7u8; COPY_MAX + 1];
        let chunks: Vec<&[u8]> = vec![b"\x81\x03", b"abc", b"\x81\x7e", &big, b"\x82\x01", b"z"];
        let queue = queue(&chunks);
        let mut buffers = WriteBuffers::default();
        let mut slices = [IoSlice::new(&[]); 8];
        let count = buffers.gather(None, &queue, &mut slices);
        assert_eq!(count, 3, "run, big chunk, run");
        assert_eq!(slices[1].as_ptr(), queue[3].as_ptr(), "the big chunk is not copied");
        assert_eq!(sent(&slices[..count]), chunks.concat(), "every byte, in order");
    }

    #[test]
    fn a_gather_stops_at_the_iovec_limit_and_the_scratch_size() {
        let big = vec![1u8; COPY_MAX + 1];
        // Small and big alternate: each small one is a run of its own.
        let chunks: Vec<&[u8]> = (0..10).flat_map(|_| [&b"s"[..], &big[..]]).collect();
        let queue = queue(&chunks);
        let mut buffers = WriteBuffers::default();
        let mut slices = [IoSlice::new(&[]); 5];
        let mut head = None;
        assert!(buffers.cork(&mut head, b"he", b"ad"));
        let count = buffers.gather(head.map(|run| (run, 0)), &queue, &mut slices);
        assert_eq!(count, 5);
        let expected = [&b"head"[..], &chunks[..4].concat()].concat();
        assert_eq!(sent(&slices[..count]), expected, "the head, then a prefix of the queue, in order");
        // More small bytes than the scratch holds: once it is full, the rest go as they are.
        let small = vec![2u8; COPY_MAX];
        let many: Vec<&[u8]> = (0..2 * SCRATCH_BYTES / COPY_MAX).map(|_| &small[..]).collect();
        let queue = super::tests::queue(&many);
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = buffers.gather(None, &queue, &mut slices);
        assert_eq!(count, 1 + many.len() - SCRATCH_BYTES / COPY_MAX, "one run, then chunk by chunk");
        assert_eq!(sent(&slices[..count]), many.concat());
        assert!(buffers.scratch.capacity() <= SCRATCH_BYTES, "the scratch never grows");
    }

    #[test]
    fn each_connection_corks_one_contiguous_run_until_another_starts() {
        let mut buffers = WriteBuffers::default();
        let (mut a, mut b) = (None, None);
        assert!(buffers.cork(&mut a, b"\x81\x02", b"a1"));
        assert!(buffers.cork(&mut a, b"\x81\x02", b"a2"));
        assert!(buffers.cork(&mut b, b"\x81\x02", b"b1"));
        assert!(!buffers.cork(&mut a, b"\x81\x02", b"a3"), "a's run is no longer at the end");
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(buffers.corked(a, 0), b"\x81\x02a1\x81\x02a2");
        assert_eq!(buffers.corked(a, 3), b"1\x81\x02a2", "the rest after a partial write");
        assert_eq!(buffers.corked(b, 0), b"\x81\x02b1");
        assert_eq!(a.len(), 8);
        let big = vec![0u8; COPY_MAX + 1];
        assert!(!buffers.cork(&mut None, b"\x82\x7e", &big), "big payloads take the queue");
    }

    #[test]
    fn fan_out_frames_are_placed_once_and_members_runs_span_consecutive_ones() {
        let mut buffers = WriteBuffers::default();
        let (mut a, mut b) = (None, None);
        // b has corked a frame of its own before the first publish.
        assert!(buffers.cork(&mut b, b"\x81\x01", b"b"));
        let mut first = Placements::default();
        let one = first.place(&mut buffers, b"\x81\x02p1").unwrap();
        assert_eq!(first.place(&mut buffers, b"\x81\x02p1").map(|p| p.start), Some(one.start), "placed once");
        assert!(WriteBuffers::join(&mut a, one));
        assert!(WriteBuffers::join(&mut b, one), "b's run ends where the frame starts");
        let two = Placements::default().place(&mut buffers, b"\x81\x02p2").unwrap();
        assert!(WriteBuffers::join(&mut a, two));
        assert!(WriteBuffers::join(&mut b, two));
        assert_eq!(buffers.corked(a.unwrap(), 0), b"\x81\x02p1\x81\x02p2", "one run, both publishes");
        assert_eq!(buffers.corked(b.unwrap(), 0), b"\x81\x01b\x81\x02p1\x81\x02p2");
        // a corks a frame of its own: b's run no longer ends where the next publish starts.
        assert!(buffers.cork(&mut a, b"\x81\x01", b"a"));
        let three = Placements::default().place(&mut buffers, b"\x81\x02p3").unwrap();
        assert!(!WriteBuffers::join(&mut b, three), "b takes its queue instead");
        assert_eq!(buffers.corked(b.unwrap(), 0), b"\x81\x01b\x81\x02p1\x81\x02p2", "unchanged");
        assert!(WriteBuffers::join(&mut a, three));
        assert_eq!(buffers.corked(a.unwrap(), 0), b"\x81\x02p1\x81\x02p2\x81\x01a\x81\x02p3");
        // Big frames and a full set of variants are not placed.
        let big = vec![0u8; COPY_MAX + 1];
        assert!(Placements::default().place(&mut buffers, &big).is_none());
        let mut variants = Placements::default();
        let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0x81, 1, i]).collect();
        let placed: Vec<bool> = frames.iter().map(|f| variants.place(&mut buffers, f).is_some()).collect();
        assert_eq!(placed, [true, true, true, true, false]);
    }

    #[test]
    fn the_cork_is_bounded_and_empties() {
        let mut buffers = WriteBuffers::default();
        let payload = vec![3u8; COPY_MAX];
        let mut corked = 0;
        let mut run = None;
        while buffers.cork(&mut run, b"hd", &payload) {
            corked += 1;
        }
        assert_eq!(corked, CORK_BYTES / (COPY_MAX + 2));
        assert!(buffers.cork.capacity() <= CORK_BYTES, "the cork never grows");
        buffers.uncork_all();
        assert!(buffers.cork(&mut None, b"hd", &payload), "room again after the flush");
    }
}
