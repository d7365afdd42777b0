//! A `redis-server` of the test's own (Debian's package; `.ci/run` installs it), on a free
//! port with persistence off, stopped on drop; and room-server nodes that share it.
//! Without `redis-server` on the PATH a test says so and passes, unless
//! `WSEDGE_REQUIRE_REDIS` is set (`.ci/run` sets it).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wsedge::rooms::engine::redis::Backplane;
use wsedge::rooms::{Rooms, RoomsConfig, SUBPROTOCOL};
use wsedge::server::Config;

use super::TestServer;

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port (kept across `restart`).
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port; `None` (after saying why) when there is no
    /// `redis-server` and the environment does not require one.
    pub fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut server = RedisServer { child: None, port };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(e) if std::env::var_os("WSEDGE_REQUIRE_REDIS").is_none() => {
                eprintln!("skipping: redis-server could not start ({e}); set WSEDGE_REQUIRE_REDIS to fail instead");
                None
            }
            Err(e) => panic!("redis-server could not start: {e}"),
        }
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connection().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain connection, for the test's own commands.
    pub fn connection(&self) -> Option<redis::Connection> {
        let mut con = redis::Client::open(self.url()).ok()?.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        Some(con)
    }

    /// Runs one command.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        let mut con = self.connection().expect("a connection to the test's Redis");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut con).expect("a Redis command")
    }

    /// Kills it (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("redis-server restarts");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A room-server node on `redis` with `workers` workers and `rooms` settings.
pub fn node_with(redis: &RedisServer, workers: usize, rooms: RoomsConfig) -> TestServer {
    node_at(&redis.url(), workers, rooms)
}

/// A room-server node on the Redis at `url` (a proxy in front of one, say).
pub fn node_at(url: &str, workers: usize, rooms: RoomsConfig) -> TestServer {
    let backplane = Backplane::connect(&[url.to_owned()], workers).expect("the node reaches Redis");
    let config = Config { workers, subprotocols: vec![SUBPROTOCOL.to_owned()], ..super::config() };
    let server = TestServer::start_workers(config, Rooms::for_workers_on_redis(rooms, backplane));
    // Ready as `/healthz` says: links up, channels subscribed (a node behind a proxy that
    // refuses is left to its test).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.http("GET", "/healthz", &[], b"").head.status != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server
}

/// A node with default settings and two workers.
pub fn node(redis: &RedisServer) -> TestServer {
    node_with(redis, 2, RoomsConfig::default())
}
