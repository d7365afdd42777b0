//! Outgoing wire data as the codec hands it out: one [`Transmit`] chunk is either a frame
//! header held inline or a payload (or whole pre-encoded frame) as `Bytes`.
//!
//! It owns only the representation a write queue holds and its `Buf` reading (a partial
//! write advances it). It never copies a payload and never allocates for a header; it does
//! no IO (RFC 6455 §5.2 framing is encoded in `frame.rs`).

use bytes::{Buf, Bytes};

use super::frame::EncodedHeader;

/// One piece of outgoing wire data, in order: what
/// [`Connection::poll_transmit`](super::Connection::poll_transmit) hands out and a
/// server's write queue holds. Reads as the bytes still to send; `Buf::advance`
/// drops the ones a partial write took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A frame header, inline: one per frame, so it must not cost an allocation.
    Header(EncodedHeader),
    /// A payload, or a whole frame encoded once and shared (a broadcast): never copied.
    Bytes(Bytes),
}

impl From<Bytes> for Transmit {
    fn from(bytes: Bytes) -> Self {
        Transmit::Bytes(bytes)
    }
}

impl std::ops::Deref for Transmit {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Transmit::Header(header) => header,
            Transmit::Bytes(bytes) => bytes,
        }
    }
}

impl Buf for Transmit {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        self
    }

    fn advance(&mut self, n: usize) {
        match self {
            Transmit::Header(header) => header.advance(n),
            // `Bytes::advance` panics past the end; a caller advancing further than what
            // remains gets an empty chunk, as with the header.
            Transmit::Bytes(bytes) => bytes.advance(n.min(bytes.len())),
        }
    }
}
