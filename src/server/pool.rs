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
//! a loop turn, and starts over once their echoes are written.
//!
//! No IO here: [`Conn::read_some`](super::conn::Conn::read_some) does the reading.

use bytes::BytesMut;

/// Bytes asked of the socket per `read` call (the size of the scratch chunk).
const READ_CHUNK: usize = 32 * 1024;

/// Capacity of a pooled buffer: one full read chunk fits a fresh buffer. Bigger batches
/// (a large frame, or a read budget's worth of input) grow into a private buffer that is
/// freed, not pooled, once drained.
pub const BUFFER_CAPACITY: usize = READ_CHUNK;

/// Buffers kept for reuse. A loop turn mostly cycles one or two (each connection gives its
/// buffer back before the next one reads); more are in use at once only when many
/// connections hold the start of a big frame whose rest is still arriving. 32 absorbs such
/// a burst without freeing and reallocating, and caps the idle pool at 1 MiB per worker.
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
    /// growing. A pooled buffer that cannot make the room (payloads still point into it and
    /// its remaining capacity is too small) is let go: its memory is freed when the last of
    /// those payloads is dropped.
    pub fn take(&mut self, need: usize) -> BytesMut {
        while let Some(mut buf) = self.free.pop() {
            if buf.try_reclaim(need) {
                return buf;
            }
        }
        BytesMut::with_capacity(BUFFER_CAPACITY.max(need))
    }

    /// Gives back a buffer taken with [`ReadPool::take`]; its contents are discarded.
    pub fn put(&mut self, mut buf: BytesMut) {
        buf.clear();
        if self.free.len() < POOL_BUFFERS {
            self.free.push(buf);
        }
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
    fn a_buffer_pinned_by_payloads_is_let_go_when_it_cannot_make_room() {
        let mut pool = ReadPool::new();
        let mut buf = pool.take(BUFFER_CAPACITY);
        buf.extend_from_slice(&[1u8; BUFFER_CAPACITY]);
        let payload = buf.split().freeze();
        pool.put(buf);
        assert_eq!(pool.pooled(), 1);
        let other = pool.take(10);
        assert_ne!(other.as_ptr(), payload.as_ptr());
        assert_eq!(pool.pooled(), 0, "the pinned buffer left the pool");
        assert!(payload.iter().all(|&b| b == 1));
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = ReadPool::new();
        let bufs: Vec<_> = (0..POOL_BUFFERS + 10).map(|_| pool.take(1)).collect();
        for buf in bufs {
            pool.put(buf);
        }
        assert_eq!(pool.pooled(), POOL_BUFFERS);
    }
}
