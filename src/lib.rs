//! wsedge: a WebSocket edge server.
//!
//! Layers, each depending only on the ones above it:
//! - [`proto`]: the sans-IO RFC 6455 codec (bytes in, events out; no sockets, no clock).
//! - [`server`]: the IO shell, a single-threaded mio event loop per worker that drives
//!   `proto` and hands complete messages to a [`server::Handler`].
//! - [`echo`]: the simplest handler, used by `wsedge echo` and the Autobahn testsuite.
//! - [`bench`]: `wsedge bench`, a load generator on the client side of the codec.

#![forbid(unsafe_code)]

pub mod bench;
pub mod client;
pub mod config_file;
pub mod echo;
pub mod proto;
pub mod rooms;
pub mod server;
pub mod wire;
