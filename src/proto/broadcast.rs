//! Broadcast encoding: one message going to many server-side connections is encoded once
//! per variant (plain, or compressed per window size), and every receiver of a variant is
//! handed the same `Bytes` (the server writes it once where its receivers share it, or
//! queues clones: a refcount bump, never a copy per receiver).
//!
//! It owns [`BroadcastFrames`], the cache of those encodings, and the pre-encoded server
//! frame functions. Which encoding a given receiver takes is decided by its
//! [`Connection`](super::Connection) (`broadcast_frame`), which knows its negotiated
//! permessage-deflate parameters; this module never sees a connection. No IO, no clock.
//! RFC 6455 §5.2 (frames), RFC 7692 §6 (RSV1 on compressed messages).

use bytes::{Bytes, BytesMut};

use super::connection::MessageKind;
use super::deflate::CompressorPool;
use super::frame::{FrameHeader, MAX_HEADER_LEN};

/// The encodings of one broadcast message, each made at most once and shared by every
/// receiver that takes it.
#[derive(Debug)]
pub struct BroadcastFrames {
    kind: MessageKind,
    payload: Bytes,
    plain: Option<Bytes>,
    /// By window bits 8..=15; `Some(None)`: compression did not shrink it (send plain).
    compressed: [Option<Option<Bytes>>; 8],
}

impl BroadcastFrames {
    /// The broadcast of `payload`; nothing is encoded until a receiver asks.
    pub fn new(kind: MessageKind, payload: Bytes) -> Self {
        BroadcastFrames { kind, payload, plain: None, compressed: Default::default() }
    }

    /// Whether the message is text or binary.
    pub(super) fn kind(&self) -> MessageKind {
        self.kind
    }

    /// The message as given, uncompressed and unframed.
    pub(super) fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The plain (uncompressed) frame.
    pub(super) fn plain(&mut self) -> &Bytes {
        plain_frame(&mut self.plain, self.kind, &self.payload)
    }

    /// The frame compressed for a receiver with this window (plain when it does not shrink).
    pub(super) fn compressed(&mut self, window: u8, pool: &mut CompressorPool) -> &Bytes {
        // clamp: windows are 8..=15, so the slot index is 0..=7.
        let slot = &mut self.compressed[usize::from(window.clamp(8, 15) - 8)];
        let (kind, payload) = (self.kind, &self.payload);
        let frame = slot.get_or_insert_with(|| {
            pool.compress(window, payload)
                .filter(|z| z.len() < payload.len()) // incompressible: send it plain
                .map(|z| encode_compressed_server_frame(kind, &z))
        });
        match frame {
            Some(frame) => frame,
            // Not `self.plain()`: `frame` still borrows `self.compressed` on this path.
            None => plain_frame(&mut self.plain, kind, payload),
        }
    }
}

/// The plain frame of a broadcast, encoded the first time it is asked for.
fn plain_frame<'a>(plain: &'a mut Option<Bytes>, kind: MessageKind, payload: &[u8]) -> &'a Bytes {
    plain.get_or_insert_with(|| encode_server_frame(kind, payload))
}

/// Encodes one unmasked, final frame (server to client) as a single `Bytes`: the form a
/// handler sends to many connections, each write queue holding a clone (a refcount bump).
pub fn encode_server_frame(kind: MessageKind, payload: &[u8]) -> Bytes {
    encode_server_frame_rsv(kind, 0, payload)
}

/// Like [`encode_server_frame`] for a payload already compressed by a [`CompressorPool`]
/// (RSV1 set, RFC 7692 §6).
pub fn encode_compressed_server_frame(kind: MessageKind, compressed: &[u8]) -> Bytes {
    encode_server_frame_rsv(kind, 0b100, compressed)
}

fn encode_server_frame_rsv(kind: MessageKind, rsv: u8, payload: &[u8]) -> Bytes {
    let header = FrameHeader { fin: true, rsv, opcode: kind.opcode(), mask: None, payload_len: payload.len() as u64 };
    let mut buf = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut buf);
    let mut frame = BytesMut::with_capacity(n + payload.len());
    frame.extend_from_slice(&buf[..n]);
    frame.extend_from_slice(payload);
    frame.freeze()
}
