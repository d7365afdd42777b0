//! Shared plumbing for the peer servers: the command line (`--listen ADDR`,
//! `--workers N`, `--verbose`), the tokio runtime, and the "listening on" line.
//!
//! Everything WebSocket-specific lives in the binaries under `src/bin/`, each
//! written after the upstream crate's own example (see README.md).

use std::io;
use std::net::SocketAddr;
use std::process;
use std::time::Duration;

pub struct Args {
    /// Address to bind, e.g. `127.0.0.1:9300`.
    pub listen: String,
    /// `None`: tokio's multi-threaded runtime with its default worker count
    /// (one per core). `Some(1)`: a current_thread runtime. `Some(n)`: a
    /// multi-threaded runtime with `n` workers.
    pub workers: Option<usize>,
    /// Print per-connection errors to stderr.
    pub verbose: bool,
}

impl Args {
    pub fn parse(name: &str) -> Args {
        let usage = [
            format!("usage: {name} --listen ADDR [--workers N] [--verbose]"),
            "  --listen ADDR   address to bind (default 127.0.0.1:9300; port 0 picks one)".into(),
            "  --workers N     tokio worker threads; 1 = current_thread runtime".into(),
            "                  (default: multi-threaded runtime, one worker per core)".into(),
            "  --verbose       print per-connection errors to stderr".into(),
        ]
        .join("\n");
        let fail = |msg: &str| -> ! {
            eprintln!("{name}: {msg}\n{usage}");
            process::exit(2)
        };
        let mut args = Args { listen: "127.0.0.1:9300".into(), workers: None, verbose: false };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |flag: &str| {
                inline.clone().or_else(|| it.next()).unwrap_or_else(|| fail(&format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--listen" => args.listen = value("--listen"),
                "--workers" => {
                    let v = value("--workers");
                    match v.parse::<usize>() {
                        Ok(n) if n >= 1 => args.workers = Some(n),
                        _ => fail(&format!("--workers wants a positive integer, got {v:?}")),
                    }
                }
                "--verbose" | "-v" => args.verbose = true,
                "--help" | "-h" => {
                    println!("{usage}");
                    process::exit(0)
                }
                other => fail(&format!("unknown argument {other:?}")),
            }
        }
        args
    }

    /// Builds the runtime `--workers` asks for.
    pub fn runtime(&self) -> tokio::runtime::Runtime {
        let built = match self.workers {
            Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
            None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        };
        built.unwrap_or_else(|e| {
            eprintln!("cannot build the tokio runtime: {e}");
            process::exit(1)
        })
    }
}

/// Prints `listening on ADDR` (the bound address, so `--listen 127.0.0.1:0`
/// reports the port it got). Scripts wait for this line before driving load.
pub fn announce(name: &str, local: io::Result<SocketAddr>) {
    match local {
        Ok(addr) => println!("{name}: listening on {addr}"),
        Err(e) => println!("{name}: listening (local address unknown: {e})"),
    }
}

/// What to do when `accept` fails: the upstream examples stop the accept loop
/// (`while let Ok(..) = listener.accept().await`), which would end a benchmark
/// run at the first EMFILE. Keep serving instead, after a short pause so a
/// full fd table does not turn into a busy loop.
pub async fn accept_error(e: io::Error) {
    eprintln!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
