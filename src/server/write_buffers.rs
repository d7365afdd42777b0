//! A worker's write-side memory, shared by all its connections (none holds a write buffer
//! of its own between turns):
//!
//! - the **cork**: small frames sent to a plaintext connection while its queue is empty
//!   (the echo of a message just read, an ack) are encoded straight into one contiguous
//!   buffer, each connection's frames as one run ([`Corked`]), instead of going through
//!   its queue as a header and a payload each. The end-of-turn flush writes a connection's
//!   run ahead of its queue; the cork is emptied after every flush. A frame that does not
//!   fit, or a connection whose run is no longer at the cork's end, takes the queue.
//! - the **gather scratch**: a flush copies the small chunks of a connection's queue
//!   (headers, small payloads, fan-out frames) into contiguous runs and passes large ones
//!   as they are.
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

/// Bytes corked per turn, over all connections. (Fan-out frames are not corked: one shared
/// frame stays hot in the cache, while 10,000 copies of it would not; measured 0.89x.)
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
        let len = header.len() + payload.len();
        let at = self.cork.len();
        let continues = corked.is_none_or(|r| r.end.get() as usize == at);
        // CORK_BYTES fits a u32; an empty frame would make an empty run.
        let end = u32::try_from(at + len).ok().and_then(NonZeroU32::new);
        let Some(end) = end.filter(|_| len > 0 && payload.len() <= COPY_MAX && at + len <= CORK_BYTES && continues)
        else {
            return false;
        };
        self.cork.extend_from_slice(header);
        self.cork.extend_from_slice(payload);
        *corked = Some(Corked { start: corked.map_or(at as u32, |r| r.start), end });
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
