//! Frame headers, RFC 6455 §5.2: parse and encode.
//!
//! A push parser in the httparse style: [`FrameHeader::parse`] returns `Ok(None)` when the
//! slice does not yet hold a whole header, the header and its length when it does, and an
//! error for bytes no valid frame can start with. It never allocates and never looks at the
//! payload. Rules that need connection state (masking direction, negotiated RSV bits, limits)
//! live in `connection.rs`.

use std::fmt;

/// Largest header: 2 bytes + 8 bytes of extended length + 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame, RFC 6455 §5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Frame opcodes, RFC 6455 §5.2 and §11.8.
/// The discriminants are the wire values, so reading one back is a cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: a further fragment of the message in progress.
    Continuation = 0x0,
    /// 0x1: the first frame of a text (UTF-8) message.
    Text = 0x1,
    /// 0x2: the first frame of a binary message.
    Binary = 0x2,
    /// 0x8: the close handshake.
    Close = 0x8,
    /// 0x9: asks the peer for a pong with the same payload.
    Ping = 0x9,
    /// 0xA: the answer to a ping (or an unsolicited heartbeat).
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value; `None` for the reserved values 0x3-0x7 and 0xB-0xF.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        match value {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The 4-bit value on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Control frames (close, ping, pong) have the high bit of the opcode set, §5.5.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of its message (always set on control frames).
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key: present on every client-to-server frame, never on the others.
    pub mask: Option<[u8; 4]>,
    /// The payload length as the header states it (7, 16 or 64 bits on the wire).
    pub payload_len: u64,
}

/// Bytes that cannot start a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Opcode 0x3-0x7 or 0xB-0xF.
    ReservedOpcode(u8),
    /// A 64-bit length with the most significant bit set, §5.2.
    LengthTooLarge,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedOpcode(op) => write!(f, "reserved opcode 0x{op:x}"),
            FrameError::LengthTooLarge => f.write_str("64-bit payload length has its top bit set"),
        }
    }
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(Some((header, header_len)))`, `Ok(None)` if more bytes are needed, or an
    /// error. Non-minimal length encodings are accepted, as Autobahn and the major peers do:
    /// rejecting them buys nothing.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::ReservedOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(bytes) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(bytes);
                    let len = u64::from_be_bytes(be);
                    if len & (1 << 63) != 0 {
                        return Err(FrameError::LengthTooLarge);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            len => (u64::from(len), 2),
        };
        let mask = if masked {
            match buf.get(pos..pos + 4) {
                Some(&[a, b, c, d]) => {
                    pos += 4;
                    Some([a, b, c, d])
                }
                _ => return Ok(None),
            }
        } else {
            None
        };
        let header = FrameHeader { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x07, opcode, mask, payload_len };
        Ok(Some((header, pos)))
    }

    /// The number of bytes [`FrameHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Encodes the header (minimal length form) into `out`, returning the bytes written.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x07) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                // Lengths come from in-memory buffers (< 2^63), so the top bit stays clear.
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        pos
    }
}

/// An encoded header held by value (2 to 14 bytes): a frame's header without an allocation
/// of its own. Every message a server sends needs one, so a header in a `Bytes` would be
/// an allocation per message; this one lives inline in the queue that sends it. Reads as
/// the bytes not yet sent ([`EncodedHeader::advance`] drops sent bytes from the front).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    start: u8,
    end: u8,
}

impl EncodedHeader {
    /// Encodes `header` into the inline buffer.
    pub fn new(header: &FrameHeader) -> Self {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let end = header.encode(&mut bytes);
        // At most MAX_HEADER_LEN (14): fits a u8.
        EncodedHeader { bytes, start: 0, end: end as u8 }
    }

    /// Drops `n` bytes (at most all of them) from the front: they were sent.
    pub fn advance(&mut self, n: usize) {
        self.start = self.end.min(self.start.saturating_add(u8::try_from(n).unwrap_or(u8::MAX)));
    }
}

impl std::ops::Deref for EncodedHeader {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes.get(usize::from(self.start)..usize::from(self.end)).unwrap_or_default()
    }
}

impl fmt::Debug for EncodedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EncodedHeader").field(&&**self).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn rfc6455_5_7_unmasked_text_hello() {
        let (h, n) = parse_all(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(n, 2);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.payload_len, 5);
        assert_eq!(h.mask, None);
    }

    #[test]
    fn rfc6455_5_7_masked_text_hello() {
        let (h, n) = parse_all(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f]);
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
    }

    #[test]
    fn rfc6455_5_7_fragmented_hello() {
        let (h, _) = parse_all(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        assert!(!h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        let (h, _) = parse_all(&[0x80, 0x02, 0x6c, 0x6f]);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Continuation);
    }

    #[test]
    fn rfc6455_5_7_ping_and_pong() {
        let (h, _) = parse_all(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(h.opcode, OpCode::Ping);
        let (h, _) = parse_all(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(h.opcode, OpCode::Pong);
        assert!(h.mask.is_some());
    }

    #[test]
    fn rfc6455_5_7_256_bytes_and_64_kib_binary() {
        let (h, n) = parse_all(&[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!((h.payload_len, n), (256, 4));
        let (h, n) = parse_all(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_all(&full).1, 14);
    }

    #[test]
    fn top_bit_of_64_bit_length_is_an_error() {
        let bytes = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&bytes), Err(FrameError::LengthTooLarge));
        // 2^62 is legal at this layer (the connection's limits reject it).
        let bytes = [0x82, 0x7F, 0x40, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_all(&bytes).0.payload_len, 1 << 62);
    }

    #[test]
    fn reserved_opcodes_are_errors() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(FrameHeader::parse(&[0x80 | op, 0]), Err(FrameError::ReservedOpcode(op)));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn encode_then_parse_roundtrips(
            fin in any::<bool>(),
            rsv in 0u8..8,
            op in prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
            mask in any::<Option<[u8; 4]>>(),
            payload_len in prop_oneof![0u64..200, 0u64..70_000, 0u64..(1 << 63)],
        ) {
            let header = FrameHeader { fin, rsv, opcode: OpCode::from_u8(op).unwrap(), mask, payload_len };
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = header.encode(&mut out);
            prop_assert_eq!(n, header.encoded_len());
            prop_assert_eq!(FrameHeader::parse(&out[..n]), Ok(Some((header, n))));
            prop_assert_eq!(&*EncodedHeader::new(&header), &out[..n]);
        }
    }

    #[test]
    fn an_encoded_header_advances_over_sent_bytes() {
        // RFC 6455 §5.2: 256 bytes take the 16-bit length form, 0x81 0x7E 0x01 0x00.
        let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: None, payload_len: 256 };
        let mut inline = EncodedHeader::new(&header);
        assert_eq!(&*inline, &[0x81, 0x7E, 0x01, 0x00]);
        inline.advance(1);
        assert_eq!(&*inline, &[0x7E, 0x01, 0x00]);
        inline.advance(10);
        assert!(inline.is_empty());
    }
}
