//! The `wsedge` binary. Commands: `serve` (the default: the room server, `wsedge.v1` on
//! /ws and the backend API on /api), `echo` (every message back to its sender), `relay`
//! (the raw relay: the URL path is the room), `chat` (a terminal client of the room
//! server), `bench` (the load generator), `bench-report` (one page from saved bench
//! reports) and `config` (`--print-defaults`: a config file to start from).
//!
//! The command line, its mapping onto each layer's config and `chat` live in `cli/`; this
//! file only runs the parsed command.

/// The command line and its mapping onto the layers' configs; `chat`.
mod cli;

use std::process::ExitCode;

use log::error;

use wsedge::echo::Echo;
use wsedge::proto;
use wsedge::rooms::engine::redis::Backplane;
use wsedge::rooms::{Rooms, RoomsConfig};
use wsedge::server::{self, Handler, Mesh, Workers};
use wsedge::wire::SUBPROTOCOL;

use cli::server_flags::ROOM_SERVER_MAX_MESSAGE;
use cli::Command;

/// Binds the server's workers (one handler each, from `make_handler`) and runs them until
/// shutdown. A failed bind or a failed event loop is logged and exits non-zero.
fn run<H, M, F>(config: server::Config, make_handler: F) -> ExitCode
where
    H: Handler + Send + 'static,
    M: Send,
    F: FnMut(Mesh<M>) -> H,
{
    let listen = config.listen;
    let server = match Workers::bind(config, make_handler) {
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

/// Runs the room layer: in memory, or on the Redis at `redis` (an unreachable one is a
/// clear error and exit code 1).
fn serve_rooms(config: server::Config, rooms: RoomsConfig, redis: &[String]) -> ExitCode {
    if redis.is_empty() {
        return run(config, Rooms::for_workers(rooms));
    }
    match Backplane::connect(redis, config.workers) {
        Ok(backplane) => {
            log::info!("rooms, presence and history in Redis: {backplane:?}");
            run(config, Rooms::for_workers_on_redis(rooms, backplane))
        }
        Err(e) => {
            error!("cannot reach Redis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line (usage errors and `--help` exit inside, as clap does) and runs
/// the command: 2 for a setup error (a bad config file, bad auth flags), 1 for a failure.
fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match cli::parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("wsedge: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(command) = cli.command else {
        return ExitCode::FAILURE;
    };
    match command {
        Command::Serve { server, rooms, auth } => {
            let mut config = server.config(ROOM_SERVER_MAX_MESSAGE);
            config.subprotocols = vec![SUBPROTOCOL.to_owned()];
            let mut rooms_config = RoomsConfig { node_name: rooms.node_name(config.listen), ..rooms.config() };
            if let Err(e) = auth.apply(&mut rooms_config, config.handshake_timeout) {
                error!("{e}");
                return ExitCode::from(2);
            }
            let scheme = if config.tls.is_some() { "wss" } else { "ws" };
            log::info!(
                "room server: {scheme}://{}{} (protocol {SUBPROTOCOL}), raw relay on {scheme}://{}/relay/<room>; backend API {}",
                config.listen,
                rooms_config.path,
                config.listen,
                if rooms_config.api_key.is_some() { "on" } else { "off (set WSEDGE_API_KEY to enable)" }
            );
            serve_rooms(config, rooms_config, rooms.redis_urls())
        }
        Command::Echo(args) => run(args.config(proto::Config::default().max_message_size), |_: Mesh<()>| Echo),
        Command::Relay { server, rooms, auth } => {
            let config = server.config(ROOM_SERVER_MAX_MESSAGE);
            // Every path is a relay room; there is no JSON endpoint.
            let mut rooms_config = RoomsConfig {
                path: String::new(),
                relay_prefix: Some("/".to_owned()),
                node_name: rooms.node_name(config.listen),
                ..rooms.config()
            };
            if let Err(e) = auth.apply(&mut rooms_config, config.handshake_timeout) {
                error!("{e}");
                return ExitCode::from(2);
            }
            let scheme = if config.tls.is_some() { "wss" } else { "ws" };
            log::info!("relay: {scheme}://{}/<room> (messages forwarded verbatim to every member)", config.listen);
            serve_rooms(config, rooms_config, rooms.redis_urls())
        }
        Command::Bench(args) => wsedge::bench::main(args),
        Command::BenchReport(args) => wsedge::bench::report_page_main(args),
        Command::Config { command, .. } => {
            let mut cli = cli::server_commands();
            cli.build();
            match cli.find_subcommand(&command) {
                Some(sub) => {
                    print!("{}", wsedge::config_file::defaults_file(sub));
                    ExitCode::SUCCESS
                }
                None => ExitCode::FAILURE,
            }
        }
        Command::Chat(args) => match cli::chat::chat(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
