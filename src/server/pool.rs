//! A worker's read-side memory: the scratch chunk every socket is read into, and a bounded
//! pool of read buffers that connections take when they have bytes to keep and give back
//! when those bytes are decoded. An idle connection holds no buffer, and a busy worker
//! reuses the same few buffers instead of allocating one per message.
//!
//! Payloads leave a read buffer as `Bytes` split off it (zero-copy), so a buffer given back
//! may still be shared with payloads in write queues or in a handler. Reuse never touches
//! those bytes: a buffer only ever writes into its own unused capacity, and
//! `BytesMut::try_reclaim` rewinds it to the start of its allocation only when no `Bytes`
//! points into it any more (documented behaviour of `bytes` since 1.7). Until then it is
//! used from where it stands, so one buffer serves the small messages of many connections in
//! a loop turn, and starts over once their echoes are written. A buffer too full for the
//! next read waits in the pool while another serves, and is ready again next turn.
//!
//! No IO here: [`Conn::read_some`](super::conn::Conn::read_some) does the reading. The
//! write side's memory is in `write_buffers.rs`.

use bytes::BytesMut;

/// Bytes asked of the socket per `read` call (the size of the scratch chunk).
const READ_CHUNK: usize = 32 * 1024;

/// Capacity of a pooled buffer: one full read chunk fits a fresh buffer. Bigger batches
/// (a large frame, or a read budget's worth of input) grow into a private buffer that is
/// freed, not pooled, once drained.
pub const BUFFER_CAPACITY: usize = READ_CHUNK;

/// Buffers kept for reuse. A loop turn cycles a few: each connection gives its buffer back
/// before the next one reads, and a buffer filled by this turn's messages (their echoes not
/// yet written) waits for the next turn while another serves. More are in use at once when
/// many connections hold the start of a big frame whose rest is still arriving. 32 absorbs
/// such a burst without freeing and reallocating, and caps the idle pool at 1 MiB per worker.
const POOL_BUFFERS: usize = 32;

/// A connection left with at most this many undecoded bytes (the start of a frame still
/// arriving) moves them into a buffer of their size and gives the pooled one back: a
/// connection that sent half a header and went quiet holds a few bytes, not a 32 KiB chunk.
/// Bigger remainders are the start of a big frame, whose rest is on its way.
pub const SMALL_REMAINDER: usize = 1024;

#[derive(Debug)]
pub struct ReadPool {
    scratch: Vec<u8>,
    free: Vec<BytesMut>,
}

impl Default for ReadPool {
    fn default() -> Self {
        ReadPool::new()
    }
}

impl ReadPool {
    pub fn new() -> Self {
        ReadPool { scratch: vec![0; READ_CHUNK], free: Vec::with_capacity(POOL_BUFFERS) }
    }

    /// Where sockets are read into before the bytes move to a connection's buffer.
    pub fn scratch(&mut self) -> &mut [u8] {
        &mut self.scratch
    }

    /// An empty buffer with room for `need` bytes (at most [`BUFFER_CAPACITY`]) without
    /// growing: the most recently given back that can make the room. One that cannot
    /// (payloads still point into it and its remaining capacity is too small) stays in the
    /// pool for a later turn.
    pub fn take(&mut self, need: usize) -> BytesMut {
        match self.free.iter_mut().rposition(|buf| buf.try_reclaim(need)) {
            Some(index) => self.free.remove(index),
            None => BytesMut::with_capacity(BUFFER_CAPACITY.max(need)),
        }
    }

    /// Gives back a buffer taken with [`ReadPool::take`]; its contents are discarded. A full
    /// pool lets its oldest buffer go (most likely one a long-lived payload still pins; its
    /// memory is freed with the last such payload).
    pub fn put(&mut self, mut buf: BytesMut) {
        buf.clear();
        if self.free.len() >= POOL_BUFFERS {
            self.free.remove(0);
        }
        self.free.push(buf);
    }

    /// Buffers waiting for reuse.
    #[cfg(test)]
    pub fn pooled(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_for_the_next_read() {
        let mut pool = ReadPool::new();
        let buf = pool.take(100);
        let ptr = buf.as_ptr();
        pool.put(buf);
        let again = pool.take(100);
        assert_eq!(again.as_ptr(), ptr, "the same allocation, not a new one");
        assert!(again.capacity() >= 100);
    }

    #[test]
    fn reuse_never_overwrites_a_payload_still_held() {
        let mut pool = ReadPool::new();
        let mut buf = pool.take(5);
        buf.extend_from_slice(b"hello");
        let payload = buf.split_to(5).freeze();
        pool.put(buf);
        // The payload is still held: the next user writes after it, not over it.
        let mut next = pool.take(5);
        next.extend_from_slice(b"world");
        assert_eq!(&payload[..], b"hello");
        let second = next.split_to(5).freeze();
        pool.put(next);
        assert_eq!(&second[..], b"world");
        // Once both payloads are gone the buffer starts over at its beginning.
        let start = payload.as_ptr();
        drop((payload, second));
        let fresh = pool.take(BUFFER_CAPACITY);
        assert_eq!(fresh.as_ptr(), start, "rewound in place");
        assert_eq!(fresh.capacity(), BUFFER_CAPACITY);
    }

    #[test]
    fn a_full_buffer_waits_in_the_pool_until_its_payloads_are_gone() {
        let mut pool = ReadPool::new();
        let mut buf = pool.take(BUFFER_CAPACITY);
        buf.extend_from_slice(&[1u8; BUFFER_CAPACITY]);
        let payload = buf.split().freeze();
        let start = payload.as_ptr();
        pool.put(buf);
        // Full and pinned: another buffer serves, the full one stays.
        let other = pool.take(10);
        assert_ne!(other.as_ptr(), start);
        assert_eq!(pool.pooled(), 1);
        assert!(payload.iter().all(|&b| b == 1));
        // Once the payload is gone, it starts over.
        drop(payload);
        let again = pool.take(10);
        assert_eq!(again.as_ptr(), start);
        assert_eq!(pool.pooled(), 0);
    }

    #[test]
    fn the_pool_is_bounded_and_lets_its_oldest_go() {
        let mut pool = ReadPool::new();
        let bufs: Vec<_> = (0..POOL_BUFFERS + 10).map(|_| pool.take(1)).collect();
        let newest = bufs.last().map(|b| b.as_ptr());
        for buf in bufs {
            pool.put(buf);
        }
        assert_eq!(pool.pooled(), POOL_BUFFERS);
        assert_eq!(pool.take(1).as_ptr(), newest.unwrap());
    }
}
