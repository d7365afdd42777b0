//! A message's payload as a handler receives it: borrowed from the connection's read
//! buffer when it arrived in one uncompressed frame (the common case), or owned when it
//! was reassembled from fragments or inflated.
//!
//! Why borrowed: making every message a `Bytes` that shares the read buffer costs an
//! atomic increment (the split) and an atomic decrement (the drop) per message, about 6 %
//! of the CPU of an echo at depth 16. A handler that only reads a message, or sends it on
//! with `Outbox::send_payload` (small ones are copied, into the cork in the end), never
//! pays it; one that keeps it takes it with [`Payload::into_bytes`], without a copy.

use std::fmt;
use std::ops::Deref;

use bytes::{Buf, Bytes, BytesMut};

/// A received message's bytes (valid UTF-8 for text). Dereferences to `[u8]`.
pub struct Payload<'a>(Inner<'a>);

enum Inner<'a> {
    /// The first `len` bytes of the read buffer; skipped when the payload is dropped.
    InPlace {
        buf: &'a mut BytesMut,
        len: usize,
    },
    Owned(Bytes),
}

impl<'a> Payload<'a> {
    /// The first `len` bytes of `buf` (all of it, if shorter), which the payload consumes:
    /// they are gone from `buf` once it is dropped or taken.
    pub(super) fn in_place(buf: &'a mut BytesMut, len: usize) -> Self {
        let len = len.min(buf.len());
        Payload(Inner::InPlace { buf, len })
    }

    /// The payload as a `Bytes` of its own: the same memory, shared (no copy).
    pub fn into_bytes(mut self) -> Bytes {
        match std::mem::replace(&mut self.0, Inner::Owned(Bytes::new())) {
            Inner::InPlace { buf, len } => buf.split_to(len).freeze(),
            Inner::Owned(bytes) => bytes,
        }
    }
}

impl From<Bytes> for Payload<'static> {
    fn from(bytes: Bytes) -> Self {
        Payload(Inner::Owned(bytes))
    }
}

impl Deref for Payload<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Inner::InPlace { buf, len } => buf.get(..*len).unwrap_or_default(),
            Inner::Owned(bytes) => bytes,
        }
    }
}

impl Drop for Payload<'_> {
    fn drop(&mut self) {
        if let Inner::InPlace { buf, len } = &mut self.0 {
            buf.advance(*len);
        }
    }
}

impl fmt::Debug for Payload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Payload").field(&Bytes::copy_from_slice(self)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_in_place_is_consumed_whether_it_is_read_or_taken() {
        let mut buf = BytesMut::from(&b"hello world"[..]);
        let read = Payload::in_place(&mut buf, 5);
        assert_eq!(&*read, b"hello");
        drop(read);
        assert_eq!(&buf[..], b" world", "skipped once dropped");
        let taken = Payload::in_place(&mut buf, 1).into_bytes();
        assert_eq!((&taken[..], &buf[..]), (&b" "[..], &b"world"[..]), "split off when taken");
        let all = Payload::in_place(&mut buf, 99);
        assert_eq!(all.len(), 5, "never past the buffer");
        drop(all);
        assert!(buf.is_empty());
        let owned = Payload::from(Bytes::from_static(b"abc"));
        assert_eq!(&*owned, b"abc");
        assert_eq!(owned.into_bytes(), Bytes::from_static(b"abc"));
    }
}
