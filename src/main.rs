//! The `wsedge` command line: `serve` (the default), `echo`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use log::error;

use wsedge::echo::Echo;
use wsedge::proto::deflate::DeflateMode;
use wsedge::server::{self, Handler, Server};

#[derive(Parser)]
#[command(name = "wsedge", version, about = "A WebSocket edge server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge server (the default command).
    Serve(ServerArgs),
    /// Echo every text and binary message back to its sender, on any path.
    Echo(ServerArgs),
}

/// Flags shared by every server command; they map onto `server::Config`.
#[derive(Args, Clone)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Largest message accepted, in bytes (bigger -> close 1009).
    #[arg(long, default_value_t = 16 << 20)]
    max_message: usize,
    /// Largest single frame accepted, in bytes (default: --max-message).
    #[arg(long)]
    max_frame: Option<usize>,
    /// Largest HTTP request head, in bytes (bigger -> 431).
    #[arg(long, default_value_t = 8 * 1024)]
    max_header_bytes: usize,
    /// Most open WebSocket connections (beyond -> 503 on upgrade).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Seconds allowed to complete the HTTP handshake.
    #[arg(long, default_value_t = 10)]
    handshake_timeout: u64,
    /// Seconds to wait for the peer during the close handshake.
    #[arg(long, default_value_t = 5)]
    close_linger: u64,
    /// Turn permessage-deflate (RFC 7692) off.
    #[arg(long)]
    no_deflate: bool,
    /// permessage-deflate memory mode: `shared` (one compressor per worker, no idle zlib
    /// state per connection) or `dedicated` (context takeover: best ratio, ~300 KiB each).
    #[arg(long, value_enum, default_value_t = ModeArg::Shared)]
    deflate_mode: ModeArg,
    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, default_value_t = 64)]
    deflate_threshold: usize,
    /// zlib compression level, 0 (store) to 9 (smallest).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    deflate_level: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Shared,
    Dedicated,
}

impl ServerArgs {
    fn config(&self) -> server::Config {
        let mut config = server::Config { listen: self.listen, ..server::Config::default() };
        config.protocol.max_message_size = self.max_message;
        config.protocol.max_frame_size = self.max_frame.unwrap_or(self.max_message);
        config.max_head_bytes = self.max_header_bytes;
        config.max_connections = self.max_connections;
        config.handshake_timeout = std::time::Duration::from_secs(self.handshake_timeout);
        config.close_linger = std::time::Duration::from_secs(self.close_linger);
        config.deflate.enabled = !self.no_deflate;
        config.deflate.mode = match self.deflate_mode {
            ModeArg::Shared => DeflateMode::Shared,
            ModeArg::Dedicated => DeflateMode::Dedicated,
        };
        config.deflate.threshold = self.deflate_threshold;
        config.deflate.level = self.deflate_level;
        config
    }
}

fn run<H: Handler>(config: server::Config, handler: H) -> ExitCode {
    let listen = config.listen;
    let mut server = match Server::bind(config, handler) {
        Ok(server) => server,
        Err(e) => {
            error!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // `wsedge` with no subcommand is `wsedge serve` with its defaults.
    let cli = match std::env::args_os().nth(1) {
        None => Cli::parse_from(["wsedge", "serve"]),
        Some(_) => Cli::parse(),
    };
    let Some(command) = cli.command else {
        return ExitCode::FAILURE;
    };
    match command {
        // Until the room layer lands, `serve` echoes too.
        Command::Serve(args) | Command::Echo(args) => run(args.config(), Echo),
    }
}
