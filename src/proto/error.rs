//! The codec's errors: what a peer can do wrong on an open connection (RFC 6455 §5-§8,
//! RFC 7692 §8), and the close code each one is answered with, decided in one place
//! ([`ProtocolError::close_code`]); the close's reason is the error's text (`Display`).
//! Detecting them is `connection.rs`'s; this module only names them (and never sends
//! anything).

use std::fmt;

use super::close::CloseCode;
use super::frame::FrameError;

/// A protocol violation by the peer. Each maps to the close code sent before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A frame header that cannot be valid (reserved opcode, non-minimal length, ...).
    Frame(FrameError),
    /// RSV bits set that no negotiated extension defines.
    ReservedBits,
    /// A server got an unmasked frame (§5.1).
    UnmaskedFrame,
    /// A client got a masked frame (§5.1).
    MaskedFrame,
    /// A control frame with FIN clear (§5.5).
    FragmentedControl,
    /// A control frame payload over 125 bytes (§5.5).
    ControlTooLong,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress (§5.4).
    ExpectedContinuation,
    /// A 1-byte close payload or a close code that may not be sent (§7.4).
    InvalidCloseCode,
    /// A close reason that is not UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// A text message that is not UTF-8 (§8.1).
    InvalidUtf8,
    /// A frame over `Config::max_frame_size`.
    FrameTooBig {
        /// The limit.
        max: usize,
    },
    /// A message over `Config::max_message_size` (after inflating, if compressed).
    MessageTooBig {
        /// The limit.
        max: usize,
    },
    /// A compressed message that is not a valid deflate stream (RFC 7692 §8).
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code this error is answered with: the one place that decides it.
    pub fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooBig { .. } | ProtocolError::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => write!(f, "bad frame header: {e}"),
            ProtocolError::ReservedBits => f.write_str("RSV bits set without a negotiated extension"),
            ProtocolError::UnmaskedFrame => f.write_str("client frame not masked"),
            ProtocolError::MaskedFrame => f.write_str("server frame masked"),
            ProtocolError::FragmentedControl => f.write_str("fragmented control frame"),
            ProtocolError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            ProtocolError::UnexpectedContinuation => f.write_str("continuation frame without a message"),
            ProtocolError::ExpectedContinuation => f.write_str("new message inside a fragmented message"),
            ProtocolError::InvalidCloseCode => f.write_str("invalid close code"),
            ProtocolError::InvalidCloseReason => f.write_str("close reason is not UTF-8"),
            ProtocolError::InvalidUtf8 => f.write_str("text message is not UTF-8"),
            ProtocolError::FrameTooBig { max } => write!(f, "frame over {max} bytes"),
            ProtocolError::MessageTooBig { max } => write!(f, "message over {max} bytes"),
            ProtocolError::InvalidCompressedData => f.write_str("compressed message does not inflate"),
        }
    }
}

impl std::error::Error for ProtocolError {}
