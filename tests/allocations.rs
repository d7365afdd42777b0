//! Heap allocations on the server's hot paths, counted: the echo path allocates nothing per
//! message, and the fan-out path nothing per subscriber (DESIGN.md, "Performance habits").
//!
//! This binary installs a counting global allocator. Only threads that opt in (a server's
//! loop thread) are counted, each into its server's own counter: the clients, driven from
//! the test thread, allocate freely, and tests running in parallel do not mix their counts.
//! The real server runs in process: `Server` with `Echo`, and with `Rooms` in relay mode.
//! Each test warms up first (buffers, queues and the pool reach their working sizes), then
//! counts a measured run. No timing is asserted: the counts do not depend on the machine's
//! speed (a loop turn that finds more or fewer messages still allocates nothing per
//! message), which keeps the test steady on a loaded 2-core machine.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tungstenite::{Message, WebSocket};
use wsedge::echo::Echo;
use wsedge::rooms::{Rooms, RoomsConfig};
use wsedge::server::{Handler, Server, ShutdownHandle};

/// Counts allocations (and reallocations, which are allocations to the hot path) made on
/// threads that called [`count_this_thread`].
struct CountingAllocator;

thread_local! {
    // Where this thread's allocations are counted, if anywhere. A const-initialized `Cell`
    // of a `Copy` value has no destructor: reading it never allocates.
    static COUNTER: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}

fn record() {
    // `try_with`: during thread teardown the slot may be gone; those allocations are not ours.
    if let Some(counter) = COUNTER.try_with(Cell::get).ok().flatten() {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only an atomic and a thread-local `Cell`, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn count_this_thread(counter: &'static AtomicU64) {
    COUNTER.with(|c| c.set(Some(counter)));
}

/// The real server on an ephemeral port, its loop on a thread whose allocations count.
struct CountedServer {
    /// Allocations made on the loop's thread so far (leaked: a few bytes per test).
    allocations: &'static AtomicU64,
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl CountedServer {
    fn start<H: Handler + Send + 'static>(handler: H) -> CountedServer {
        let mut server = Server::bind(support::config(), handler).expect("bind an ephemeral port");
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let allocations: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let thread = std::thread::spawn(move || {
            count_this_thread(allocations);
            server.run()
        });
        CountedServer { allocations, addr, shutdown, thread: Some(thread) }
    }

    /// Allocations on the server's thread so far.
    fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::SeqCst)
    }

    fn connect(&self, path: &str) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(support::IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let url = format!("ws://{}{path}", self.addr);
        let (ws, response) = tungstenite::client(url, stream).expect("WebSocket handshake");
        assert_eq!(response.status(), 101);
        ws
    }
}

impl Drop for CountedServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("server thread panicked").expect("server loop failed");
            }
        }
    }
}

/// Sends `count` messages one at a time (depth 1), each read back before the next is sent.
fn echo_round_trips(ws: &mut WebSocket<TcpStream>, message: &Message, count: usize) {
    for _ in 0..count {
        ws.send(message.clone()).expect("send");
        assert_eq!(&ws.read().expect("read the echo"), message);
    }
}

/// Server-side allocations per message for `count` echoes of `message` at depth 1, after a
/// warm-up of the same traffic.
fn echo_allocations_per_message(message: Message, count: usize) -> f64 {
    let server = CountedServer::start(Echo);
    let mut ws = server.connect("/");
    echo_round_trips(&mut ws, &message, 200);
    let before = server.allocations();
    echo_round_trips(&mut ws, &message, count);
    let allocated = server.allocations() - before;
    let per_message = allocated as f64 / count as f64;
    println!(
        "echo of {} bytes: {allocated} allocations in {count} messages ({per_message:.4} per message)",
        message.len()
    );
    per_message
}

#[test]
fn a_small_echoed_message_allocates_nothing() {
    let per_message = echo_allocations_per_message(Message::text("x".repeat(32)), 2000);
    // Steady state is zero: read buffers come from the worker's pool and frame headers are
    // queued inline. The margin absorbs a rare one-off (a queue growing once).
    assert!(per_message < 0.01, "{per_message:.4} allocations per 32-byte echo");
}

#[test]
fn a_medium_echoed_message_allocates_nothing() {
    // 1000 bytes: a 4-byte frame header (16-bit length) and still one read per message.
    let per_message = echo_allocations_per_message(Message::binary(vec![7u8; 1000]), 2000);
    assert!(per_message < 0.01, "{per_message:.4} allocations per 1000-byte echo");
}

/// Every client sends `depth` messages, then reads their echoes.
fn pipelined_round(clients: &mut [WebSocket<TcpStream>], message: &Message, depth: usize) {
    for ws in clients.iter_mut() {
        for _ in 0..depth {
            ws.write(message.clone()).expect("queue");
        }
        ws.flush().expect("send");
    }
    for ws in clients.iter_mut() {
        for _ in 0..depth {
            assert_eq!(&ws.read().expect("read the echo"), message);
        }
    }
}

#[test]
fn pipelined_echo_on_many_connections_allocates_nothing_per_message() {
    // 50 connections with 16 messages each in flight: every loop turn reads many
    // connections, so read buffers are shared between them and reused across turns.
    const CONNECTIONS: usize = 50;
    const DEPTH: usize = 16;
    let server = CountedServer::start(Echo);
    let mut clients: Vec<_> = (0..CONNECTIONS).map(|_| server.connect("/")).collect();
    let message = Message::text("z".repeat(32));
    for _ in 0..10 {
        pipelined_round(&mut clients, &message, DEPTH);
    }
    let before = server.allocations();
    let rounds = 20;
    for _ in 0..rounds {
        pipelined_round(&mut clients, &message, DEPTH);
    }
    let allocated = server.allocations() - before;
    let messages = rounds * CONNECTIONS * DEPTH;
    let per_message = allocated as f64 / messages as f64;
    println!("pipelined echo: {allocated} allocations in {messages} messages ({per_message:.4} per message)");
    // Zero in steady state: buffers filled by one turn's messages wait in the pool and
    // serve again once the echoes are written. The margin allows the pool to grow once more.
    assert!(per_message < 0.01, "{per_message:.4} allocations per pipelined echo");
}

/// Member 0 publishes `times` times; every member, the publisher included, reads each
/// delivery before the next publish, which keeps every write queue short.
fn publish(members: &mut [WebSocket<TcpStream>], message: &Message, times: usize) {
    for _ in 0..times {
        members[0].send(message.clone()).expect("publish");
        for member in members.iter_mut() {
            assert_eq!(&member.read().expect("read the delivery"), message);
        }
    }
}

/// Server-side allocations per publish into a relay room of `size` members, after a
/// warm-up of the same traffic.
fn allocations_per_publish(server: &CountedServer, room: &str, size: usize, publishes: usize) -> f64 {
    let mut members: Vec<_> = (0..size).map(|_| server.connect(room)).collect();
    let message = Message::text("y".repeat(32));
    publish(&mut members, &message, 50);
    let before = server.allocations();
    publish(&mut members, &message, publishes);
    let allocated = server.allocations() - before;
    let per_publish = allocated as f64 / publishes as f64;
    let per_delivery = per_publish / size as f64;
    println!(
        "fan-out to {size}: {allocated} allocations in {publishes} publishes \
         ({per_publish:.3} per publish, {per_delivery:.5} per delivery)"
    );
    per_publish
}

#[test]
fn fan_out_allocates_nothing_per_subscriber() {
    let relay = RoomsConfig { path: String::new(), relay_prefix: Some("/".to_owned()), ..RoomsConfig::default() };
    let server = CountedServer::start(Rooms::new(relay));
    let small = allocations_per_publish(&server, "/small", 10, 200);
    let big = allocations_per_publish(&server, "/big", 100, 200);
    // Ten times the members, the same allocations: none is per member (one per member
    // would add 90 per publish).
    assert!(big - small < 0.5, "{small:.3} allocations per publish to 10 members, {big:.3} to 100");
    // What a publish does cost: the one frame all members share, encoded once (its storage
    // and its refcount). The read path and the relay add none.
    assert!(big < 2.5, "{big:.3} allocations per publish to 100 members");
}
