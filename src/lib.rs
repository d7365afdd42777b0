//! wsedge: a WebSocket edge server.
//!
//! Layers, each depending only on the ones above it:
//! - [`proto`]: the sans-IO RFC 6455 codec (bytes in, events out; no sockets, no clock).
//! - [`server`]: the IO shell, a single-threaded mio event loop per worker that drives
//!   `proto` and hands complete messages to a [`server::Handler`].
//! - Handlers on top: [`echo`], the simplest (`wsedge echo`, the Autobahn testsuite), and
//!   [`rooms`], the pub/sub room layer (`wsedge serve`), whose rooms are ordered by an
//!   engine behind one seam ([`rooms::engine::Engine`]).
//! - The client side: [`client`] (a WebSocket client over the same codec, `wsedge chat`)
//!   and [`mod@bench`] (`wsedge bench`, the load generator). It shares with the server
//!   only [`wire`], what both ends of `wsedge.v1` agree on.
//! - [`config_file`]: the TOML configuration file, mapped onto the command-line flags.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod client;
pub mod config_file;
pub mod echo;
pub mod proto;
pub mod rooms;
pub mod server;
pub mod wire;
