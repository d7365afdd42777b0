//! A TCP proxy the test controls: it forwards every connection to `upstream` and can cut
//! them all at once (both directions shut down, wherever the bytes are), as a network
//! blip or a restarted load balancer would, and refuse new ones for a while (accepted and
//! closed at once), as a load balancer with no backend would.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A running proxy; it stops accepting when dropped.
pub struct Proxy {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
    refusing: Arc<AtomicBool>,
    /// Connections cut so far.
    pub cuts: Arc<AtomicU64>,
    forwarded: Arc<AtomicU64>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let (live2, stopped2, refusing2, forwarded2) =
            (live.clone(), stopped.clone(), refusing.clone(), forwarded.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if refusing2.load(Ordering::SeqCst) {
                    continue; // dropped: closed before a byte is forwarded
                }
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let pairs = [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())];
                if let Ok(mut list) = live2.lock() {
                    list.extend([client, server]);
                }
                forwarded2.fetch_add(1, Ordering::SeqCst);
                for (from, to) in pairs {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        thread::spawn(move || pump(from, to));
                    }
                }
            }
        });
        Proxy { addr, live, stopped, refusing, cuts: Arc::default(), forwarded }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, closes new connections at once (`false`: forwards them again).
    pub fn refuse(&self, refuse: bool) {
        self.refusing.store(refuse, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Waits (up to a second) until more than `before` connections were forwarded: one
    /// just made may not be yet, and a cut before then would miss it.
    pub fn wait_for_forwarded(&self, before: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.forwarded() <= before && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Cuts every connection open now.
    pub fn cut_all(&self) {
        let Ok(mut list) = self.live.lock() else { return };
        for stream in list.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.cuts.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        self.cut_all();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
