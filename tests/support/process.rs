//! `wsedge` as a process of its own, for what only the real binary shows (flags, the
//! environment, exit codes, a SIGKILL): started without the environment's `WSEDGE_*`
//! settings, its address read from its `listening on` log line, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `wsedge` binary with none of the environment's `WSEDGE_*` settings (only those the
/// test chooses) and `RUST_LOG=info` (its `listening on` line).
pub fn wsedge() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsedge"));
    for (name, _) in std::env::vars() {
        if name.starts_with("WSEDGE_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info").stdin(Stdio::null());
    command
}

/// A running server, killed (SIGKILL) and reaped when dropped; `addr` is where it listens.
pub struct Running {
    child: Child,
    /// `HOST:PORT`.
    pub addr: String,
}

impl Running {
    /// Starts `command` (a server command) and waits for its `listening on` line.
    pub fn start(mut command: Command) -> Running {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start wsedge");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ws://").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("a `listening on` line");
        Running { child, addr }
    }

    /// `wsedge serve` on an ephemeral port of 127.0.0.1, with `args`.
    pub fn serve(args: &[&str]) -> Running {
        let mut command = wsedge();
        command.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        Running::start(command)
    }

    /// `ws://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Kills it at once (SIGKILL: no close frames, no goodbye to anyone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}
