//! The sans-IO RFC 6455 codec.
//!
//! Nothing in this module opens a socket, reads a clock or spawns a thread: every type is
//! driven with byte slices (`&[u8]` / `BytesMut`) and returns events and encoded bytes. That
//! is what lets tests, property tests and fuzz targets drive the exact code the server runs.

pub mod broadcast;
pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod mask_keys;
pub mod transmit;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Config, Connection, Decoded, Event, MessageKind, ProtocolError, Role};
pub use frame::{EncodedHeader, FrameHeader, OpCode};
pub use mask_keys::MaskKeys;
pub use transmit::Transmit;
