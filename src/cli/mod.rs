//! The `wsedge` command line: the command tree ([`Cli`], [`Command`]) and how a command line,
//! the environment (`WSEDGE_<NAME>`) and a config file (`--config`) become one parsed
//! [`Cli`]. The flags of each layer, and what they map onto, live in the submodules; the
//! `chat` client in [`chat`]. Nothing here starts a server: `main.rs` runs the command.

pub(crate) mod chat;
pub(crate) mod room_flags;
pub(crate) mod server_flags;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use wsedge::config_file;

use chat::ChatArgs;
use room_flags::{AuthArgs, RoomArgs};
use server_flags::ServerArgs;

/// The whole command line: one command. (`wsedge` alone is `wsedge serve`:
/// [`parse_command_line`] adds it.)
#[derive(Parser)]
#[command(name = "wsedge", version, about = "A WebSocket edge server", long_about = None)]
pub(crate) struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The commands; each one's doc comment is its `--help` text.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the room server: the `wsedge.v1` protocol on /ws, the backend API on /api
    /// (the default command).
    Serve {
        /// Transport flags (`server::Config`).
        #[command(flatten)]
        server: ServerArgs,
        /// Room-layer limits (`rooms::RoomsConfig`).
        #[command(flatten)]
        rooms: RoomArgs,
        /// Token authentication and room permissions.
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// Echo every text and binary message back to its sender, on any path.
    Echo(ServerArgs),
    /// Raw relay: every connection joins the room named by its URL path, and every message
    /// goes verbatim to all members of that room, the sender included.
    Relay {
        /// Transport flags (`server::Config`).
        #[command(flatten)]
        server: ServerArgs,
        /// Room-layer limits (`rooms::RoomsConfig`).
        #[command(flatten)]
        rooms: RoomArgs,
        /// Token authentication and room permissions.
        #[command(flatten)]
        auth: AuthArgs,
    },
    /// A terminal chat client for the room server: joins a room (printing its last
    /// messages), publishes each line you type, prints what others say; reconnects by itself.
    Chat(ChatArgs),
    /// Load generator: drives a server with echo, fan-out or idle connections and reports
    /// messages/s, latency percentiles and (with --server-pid) the server's CPU per message.
    Bench(wsedge::bench::BenchArgs),
    /// One web page from saved `wsedge bench --json` reports: per group of runs, their
    /// numbers, latency by percentile and throughput over time overlaid (benches/compare.sh).
    BenchReport(wsedge::bench::ReportPageArgs),
    /// About the config file: `wsedge config --print-defaults` prints a complete one.
    Config {
        /// Print every setting of the server command with its help, its environment
        /// variable and its default, as a TOML file to start from.
        #[arg(long, required = true)]
        print_defaults: bool,
        /// The command whose settings to print.
        #[arg(long = "for", value_name = "COMMAND", default_value = "serve", value_parser = ["serve", "echo", "relay"])]
        command: String,
    },
}

/// The longest any seconds-valued knob may be: a week. Far beyond any sensible timeout,
/// and small enough that adding it to a clock reading cannot overflow (which would panic).
const MAX_SECONDS: u64 = 7 * 24 * 3600;

/// The parser of a seconds-valued flag: 0 to [`MAX_SECONDS`].
pub(crate) fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=MAX_SECONDS)
}

/// A rate or burst flag: a finite number, 0 or more.
pub(crate) fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        Ok(_) => Err(format!("{text} is not a finite number of 0 or more")),
        Err(e) => Err(e.to_string()),
    }
}

/// The server commands, whose settings may also come from the environment and a file.
const SERVER_COMMANDS: [&str; 3] = ["serve", "echo", "relay"];

/// The command line with every server setting readable from `WSEDGE_<NAME>`.
pub(crate) fn server_commands() -> clap::Command {
    let mut cli = Cli::command();
    for name in SERVER_COMMANDS {
        cli = cli.mut_subcommand(name, config_file::with_env);
    }
    cli
}

/// Parses the command line, the environment and the config file (`--config`), in that
/// order of precedence. `wsedge` alone is `wsedge serve`. Usage errors and `--help` exit
/// here, as clap does; a config file that cannot be used is an `Err` naming file and key.
pub(crate) fn parse_command_line() -> Result<Cli, config_file::ConfigError> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    if argv.len() == 1 {
        argv.push("serve".into());
    }
    let mut cli = server_commands();
    let mut matches = cli.try_get_matches_from_mut(&argv).unwrap_or_else(|e| e.exit());
    if let Some((name, sub)) = matches.subcommand() {
        let file = if SERVER_COMMANDS.contains(&name) { sub.get_one::<PathBuf>("config").cloned() } else { None };
        if let (Some(path), Some(command)) = (file, cli.find_subcommand(name)) {
            argv.extend(config_file::file_args(command, sub, &path)?);
            matches = cli.try_get_matches_from_mut(&argv).unwrap_or_else(|e| e.exit());
        }
    }
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}
