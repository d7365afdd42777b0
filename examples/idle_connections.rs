//! Resident memory per idle WebSocket connection of a running wsedge server.
//!
//! ```sh
//! cargo run --release --example idle_connections -- \
//!     --server-pid PID --addr 127.0.0.1:PORT [--connections 10000] [--idle-secs 2]
//! ```
//!
//! Reads the server's `VmRSS` (`/proc/PID/status`), then:
//! 1. opens N connections, each offering `permessage-deflate; client_max_window_bits`
//!    (the response is checked with `handshake::parse_response` and
//!    `deflate::accept_response`), waits `--idle-secs`, reads `VmRSS`;
//! 2. sends one compressible ~1 KiB text message on every connection and reads its echo
//!    (so every zlib state and buffer the server keeps between messages exists), checks
//!    that the echo came back compressed (RSV1) whenever deflate was negotiated, leaves all
//!    connections idle for `--idle-secs`, reads `VmRSS`;
//! 3. closes every connection with a close handshake and reads `VmRSS` once more.
//!
//! The last line (`RESULT ...`) is what `benches/idle_memory.sh` reads. Only the wsedge
//! codec (client role) and blocking `std::net` sockets are used. Every connection is one
//! file descriptor here and one in the server, so N must stay below `ulimit -n` in both.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use wsedge::proto::deflate;
use wsedge::proto::frame::FrameHeader;
use wsedge::proto::handshake;
use wsedge::proto::{CloseCode, Config, Connection, Event, MaskKeys, MessageKind};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Args {
    server_pid: u32,
    addr: SocketAddr,
    connections: usize,
    idle: Duration,
}

fn parse_args() -> Result<Args> {
    let mut server_pid = None;
    let mut addr = None;
    let mut connections = 10_000;
    let mut idle = Duration::from_secs(2);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server-pid" => server_pid = Some(value()?.parse()?),
            "--addr" => addr = Some(value()?.parse()?),
            "--connections" => connections = value()?.parse()?,
            "--idle-secs" => idle = Duration::from_secs_f64(value()?.parse()?),
            _ => {
                return Err(format!(
                    "unknown argument {flag}\nusage: idle_connections --server-pid PID --addr HOST:PORT \
                     [--connections N] [--idle-secs S]"
                )
                .into())
            }
        }
    }
    Ok(Args {
        server_pid: server_pid.ok_or("--server-pid is required")?,
        addr: addr.ok_or("--addr is required")?,
        connections,
        idle,
    })
}

/// `VmRSS` of a process, in KiB.
fn vm_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS line")?;
    Ok(line.split_whitespace().nth(1).ok_or("malformed VmRSS line")?.parse()?)
}

/// CPU time (user + system) a process has used, in seconds (`/proc/PID/stat`, 100 ticks/s).
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return f64::NAN };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// The soft `RLIMIT_NOFILE` of this process.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// splitmix64: handshake nonces (a benchmark, not a security need).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A JSON-like chat batch of ~1 KiB: repetitive, so it deflates well (~5x).
fn message(conn: usize) -> Bytes {
    let mut s = String::from("[");
    let mut j = 0;
    while s.len() < 1000 {
        s.push_str(&format!(
            r#"{{"id":{j},"conn":{conn},"room":"lobby","user":"user-{:05}","type":"chat","text":"hello from the idle connections benchmark"}},"#,
            (conn * 7 + j) % 100_000
        ));
        j += 1;
    }
    s.pop();
    s.push(']');
    Bytes::from(s)
}

struct Client {
    stream: TcpStream,
    codec: Connection,
    buf: BytesMut,
    /// The server's answer in `Sec-WebSocket-Extensions`, if any.
    extensions: Option<String>,
}

impl Client {
    /// Reads whatever the socket has into `buf` (blocking, with the stream's timeout).
    fn read_more(&mut self) -> Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn flush_codec(&mut self) -> Result<usize> {
        let mut sent = 0;
        while let Some(bytes) = self.codec.poll_transmit() {
            self.stream.write_all(&bytes)?;
            sent += bytes.len();
        }
        Ok(sent)
    }

    fn connect(addr: SocketAddr, rng: &mut u64) -> Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&splitmix(rng).to_le_bytes());
        nonce[8..].copy_from_slice(&splitmix(rng).to_le_bytes());
        let (mut request, key) = handshake::client_request(&addr.to_string(), "/", nonce, &[]);
        // client_request ends the head with an empty line; put the extension offer before it.
        request.truncate(request.len() - 2);
        request.extend_from_slice(format!("Sec-WebSocket-Extensions: {}\r\n\r\n", deflate::offer()).as_bytes());
        let mut client = Client {
            stream,
            codec: Connection::client(Config::default(), MaskKeys::from_os()?),
            buf: BytesMut::new(),
            extensions: None,
        };
        client.stream.write_all(&request)?;
        let (response, head_len) = loop {
            if let Some(parsed) = handshake::parse_response(&client.buf, &key, &[])? {
                break parsed;
            }
            if client.read_more()? == 0 {
                return Err("server closed during the handshake".into());
            }
        };
        client.buf.advance(head_len);
        let params = deflate::accept_response(response.extensions.as_deref())?;
        let mut codec = Connection::client(Config::default(), MaskKeys::from_os()?);
        if let Some(params) = params {
            codec = codec.with_deflate(params, 64, 6);
        }
        client.codec = codec;
        client.extensions = response.extensions;
        Ok(client)
    }

    /// Sends `payload` as text and reads its echo. Returns (echo came with RSV1, its
    /// payload length on the wire, bytes we sent on the wire).
    fn exchange(&mut self, payload: Bytes) -> Result<(bool, u64, usize)> {
        self.codec.send_message(MessageKind::Text, payload.clone());
        let sent = self.flush_codec()?;
        let mut first_header: Option<FrameHeader> = None;
        loop {
            if first_header.is_none() {
                // Peek at the header before `decode` consumes it: RSV1 = compressed.
                if let Ok(Some((header, _))) = FrameHeader::parse(&self.buf) {
                    first_header = Some(header);
                }
            }
            match self.codec.decode(&mut self.buf)? {
                Some(Event::Message { kind: MessageKind::Text, data }) if data == payload => {
                    let header = first_header.ok_or("echo without a frame header")?;
                    return Ok((header.rsv & 0b100 != 0, header.payload_len, sent));
                }
                Some(Event::Ping(_)) => {
                    self.flush_codec()?; // the pong
                    first_header = None;
                }
                Some(other) => return Err(format!("unexpected event instead of the echo: {other:?}").into()),
                None => {
                    if self.read_more()? == 0 {
                        return Err("server closed before echoing".into());
                    }
                }
            }
        }
    }

    /// Close handshake: our close frame, then wait for the server's. `true` if it came.
    fn close(mut self) -> Result<bool> {
        self.codec.close(CloseCode::NORMAL, "");
        self.flush_codec()?;
        loop {
            match self.codec.decode(&mut self.buf)? {
                Some(Event::Close(_)) => return Ok(true),
                Some(_) => continue,
                None => {
                    if self.read_more()? == 0 {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

fn per_conn_bytes(before_kib: u64, after_kib: u64, n: usize) -> i64 {
    (after_kib as i64 - before_kib as i64) * 1024 / n.max(1) as i64
}

fn run(args: Args) -> Result<()> {
    let n = args.connections;
    if let Some(limit) = open_files_limit() {
        if n + 16 > limit {
            return Err(format!("{n} connections need {n}+ file descriptors; ulimit -n is {limit}").into());
        }
    }
    let mut rng =
        u64::from(std::process::id()) ^ SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let pid = args.server_pid;

    let rss_before = vm_rss_kib(pid)?;
    println!("server pid {pid}: VmRSS before: {rss_before} KiB");

    // 1. Handshakes only.
    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let client = Client::connect(args.addr, &mut rng).map_err(|e| format!("connection {i}: handshake: {e}"))?;
        clients.push(client);
    }
    let negotiated = clients.first().and_then(|c| c.extensions.clone());
    println!(
        "opened {n} connections in {:.2} s; server's Sec-WebSocket-Extensions: {}",
        started.elapsed().as_secs_f64(),
        negotiated.as_deref().unwrap_or("(none: deflate declined)")
    );
    if clients.iter().any(|c| c.extensions != negotiated) {
        return Err("connections negotiated different extensions".into());
    }
    std::thread::sleep(args.idle);
    let rss_open = vm_rss_kib(pid)?;
    println!(
        "VmRSS after handshakes, idle {:.1} s: {rss_open} KiB ({} B/conn)",
        args.idle.as_secs_f64(),
        per_conn_bytes(rss_before, rss_open, n)
    );

    // 2. One message each way on every connection, then idle.
    let started = Instant::now();
    let (server_cpu, client_cpu) = (cpu_secs(&pid.to_string()), cpu_secs("self"));
    let (mut compressed, mut wire_in, mut wire_out, mut plain) = (0usize, 0u64, 0usize, 0usize);
    for (i, client) in clients.iter_mut().enumerate() {
        let payload = message(i);
        plain += payload.len();
        let (rsv1, wire_len, sent) = client.exchange(payload).map_err(|e| format!("connection {i}: echo: {e}"))?;
        compressed += usize::from(rsv1);
        wire_in += wire_len;
        wire_out += sent;
    }
    println!(
        "echoed 1 message per connection in {:.2} s (CPU: server {:.2} s, this client {:.2} s): {} B text each \
         on average; echo payload on the wire {} B (compressed frames: {compressed}/{n}); we sent {} B per \
         message incl. header",
        started.elapsed().as_secs_f64(),
        cpu_secs(&pid.to_string()) - server_cpu,
        cpu_secs("self") - client_cpu,
        plain / n.max(1),
        wire_in / n.max(1) as u64,
        wire_out / n.max(1)
    );
    if negotiated.is_some() && compressed != n {
        return Err(format!("deflate was negotiated but only {compressed}/{n} echoes had RSV1").into());
    }
    // The client keeps only what the close handshake needs: no zlib state of its own while
    // idle (close frames are never compressed), so 10k dedicated-mode clients stay small.
    for client in &mut clients {
        client.codec = Connection::client(Config::default(), MaskKeys::from_os()?);
    }
    std::thread::sleep(args.idle);
    let rss_after = vm_rss_kib(pid)?;
    println!(
        "VmRSS after 1 message each, idle {:.1} s: {rss_after} KiB ({} B/conn)",
        args.idle.as_secs_f64(),
        per_conn_bytes(rss_before, rss_after, n)
    );

    // 3. Close handshakes.
    let mut clean = 0;
    for (i, client) in clients.into_iter().enumerate() {
        clean += usize::from(client.close().map_err(|e| format!("connection {i}: close: {e}"))?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_closed = vm_rss_kib(pid)?;
    println!("closed {clean}/{n} connections with a close handshake; VmRSS after: {rss_closed} KiB");

    let deflate = match &negotiated {
        None => "none".to_owned(),
        Some(e) => e.replace("; ", ";").replace(' ', ""),
    };
    println!(
        "RESULT connections={n} deflate={deflate} compressed_echoes={compressed} rss_before_kib={rss_before} \
         rss_open_kib={rss_open} rss_after_kib={rss_after} rss_closed_kib={rss_closed} \
         open_bytes_per_conn={} idle_bytes_per_conn={}",
        per_conn_bytes(rss_before, rss_open, n),
        per_conn_bytes(rss_before, rss_after, n)
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle_connections: {e}");
            ExitCode::FAILURE
        }
    }
}
