//! Close codes and close frame payloads, RFC 6455 §5.5.1, §7.4 and the IANA registry.
//!
//! Which codes may appear on the wire is decided here and nowhere else; which code answers
//! which protocol error is `ProtocolError::close_code`'s. No IO.

use bytes::{BufMut, Bytes, BytesMut};

/// A close status code (RFC 6455 §7.4). Named constants for the codes wsedge sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// The purpose of the connection is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// An endpoint is going away: a server shutting down, a browser leaving the page.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// The peer broke the protocol (a `ProtocolError` other than the ones below).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A kind of data the endpoint cannot accept (e.g. binary where only text makes sense).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Reserved: "no status code was present". Never sent on the wire.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Reserved: "closed abnormally" (no close frame). Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// Data inconsistent with the message type: text that is not UTF-8, a message that
    /// does not inflate.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// A message or behaviour the endpoint's policy forbids (abuse, authentication).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// A frame or message over the configured limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// Overload or a slow consumer: reconnecting later may work.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may send this code in a close frame: 1000-1003 and 1007-1014 (the
    /// IANA registry as Autobahn checks it), 3000-3999 (registered) and 4000-4999 (private).
    /// 1004-1006 and 1015 are reserved for local use, the rest of 0-2999 is unassigned.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A decoded close frame payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code (valid on the wire: checked on decode).
    pub code: CloseCode,

    /// UTF-8, validated on decode.
    pub reason: Bytes,
}

/// Why a close payload was rejected; maps to the close code we answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosePayloadError {
    /// A 1-byte payload, or a code that may not be sent (-> 1002).
    InvalidCode,
    /// The reason is not UTF-8 (-> 1007).
    InvalidReason,
}

impl CloseFrame {
    /// Decodes a close frame payload: empty (no code), or a 2-byte code and a UTF-8 reason.
    pub fn decode(payload: &Bytes) -> Result<Option<CloseFrame>, ClosePayloadError> {
        match payload[..] {
            [] => Ok(None),
            [_] => Err(ClosePayloadError::InvalidCode),
            [hi, lo, ..] => {
                let code = CloseCode(u16::from_be_bytes([hi, lo]));
                if !code.is_valid_on_wire() {
                    return Err(ClosePayloadError::InvalidCode);
                }
                let reason = payload.slice(2..);
                if simdutf8::basic::from_utf8(&reason).is_err() {
                    return Err(ClosePayloadError::InvalidReason);
                }
                Ok(Some(CloseFrame { code, reason }))
            }
        }
    }

    /// Encodes a close payload. The reason is cut (at a char boundary) to fit the 125-byte
    /// control frame limit.
    pub fn encode_payload(code: CloseCode, reason: &str) -> Bytes {
        let mut end = reason.len().min(super::frame::MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = BytesMut::with_capacity(2 + end);
        out.put_u16(code.0);
        out.put_slice(&reason.as_bytes()[..end]);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_matches_the_registry() {
        let valid = |c: u16| CloseCode(c).is_valid_on_wire();
        for c in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
            assert!(valid(c), "{c} should be valid");
        }
        for c in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!valid(c), "{c} should be invalid");
        }
    }

    #[test]
    fn decode_rules() {
        assert_eq!(CloseFrame::decode(&Bytes::new()), Ok(None));
        assert_eq!(CloseFrame::decode(&Bytes::from_static(&[3])), Err(ClosePayloadError::InvalidCode));
        assert_eq!(CloseFrame::decode(&Bytes::from_static(&[0x03, 0xED])), Err(ClosePayloadError::InvalidCode));
        assert_eq!(CloseFrame::decode(&Bytes::from_static(&[0x03, 0xE8, 0xFF])), Err(ClosePayloadError::InvalidReason));
        let ok = CloseFrame::decode(&Bytes::from_static(b"\x03\xe8bye")).unwrap().unwrap();
        assert_eq!(ok.code, CloseCode::NORMAL);
        assert_eq!(&ok.reason[..], b"bye");
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let payload = CloseFrame::encode_payload(CloseCode::NORMAL, &reason);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
