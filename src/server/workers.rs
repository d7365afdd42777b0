//! Several event loops in one process: `--workers N`, each worker a single-threaded mio
//! loop with its own `SO_REUSEPORT` listener on the same address (the kernel spreads new
//! connections across them), and a [`Mesh`] over which handlers pass messages to each other.
//!
//! Nothing on the hot path is locked. Workers share only: the shutdown flags, a count of
//! open connections and of sockets handshaking (one atomic add per connection opened or
//! closed, so `max_connections` and `max_handshakes` hold for the whole server), the
//! per-IP table (`access::IpLimits`, locked per shard on upgrade and close only), and a
//! board of transport counters each worker copies its own into at the end of each loop
//! turn (an uncontended lock and a copy of a few integers, for `/metrics`).
//!
//! The mesh carries handler-defined messages. A worker buffers what it posts during one
//! loop turn per destination and sends each destination one batch at the end of the turn
//! (one channel operation, at most one wake-up syscall), so per pair of workers messages
//! arrive in the order they were posted: the room layer builds its per-room ordering on that.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use log::warn;
use mio::{Poll, Waker};

use super::access::IpLimits;
use super::event_loop::{Server, WAKER};
use super::{Config, Handler, Metrics};

/// The most workers one server runs (handlers may keep a set of workers in a `u64`).
pub const MAX_WORKERS: usize = 64;

/// Messages in flight to one worker beyond which the workers sending to it stop reading
/// their sockets until it catches up (`Mesh::congested`): memory stays bounded when one
/// worker falls behind, and the clients feel it as TCP backpressure, not as loss.
const MESH_HIGH_WATER: usize = 4096;

/// State every worker of one server sees.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Graceful shutdown requested (close 1001 to everyone, then exit).
    pub shutdown: AtomicBool,
    /// Exit now, without waiting for clients (a second signal).
    pub abort: AtomicBool,
    /// Open WebSocket connections across all workers (`max_connections`).
    pub open: AtomicUsize,
    /// Sockets in their HTTP phase across all workers (`max_handshakes`).
    pub handshaking: AtomicUsize,
    /// Per-IP connection counts and handshake buckets (`Config::access`), touched on
    /// upgrade and on close only.
    pub ip_limits: Arc<IpLimits>,
    /// Each worker's transport counters as of its last copy.
    metrics: Vec<Mutex<Metrics>>,
    wakers: Vec<Arc<Waker>>,
}

impl Shared {
    pub(crate) fn new(wakers: Vec<Arc<Waker>>, ip_limits: IpLimits) -> Self {
        Shared {
            ip_limits: Arc::new(ip_limits),
            shutdown: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            metrics: wakers.iter().map(|_| Mutex::new(Metrics::default())).collect(),
            wakers,
        }
    }

    pub(crate) fn workers(&self) -> usize {
        self.wakers.len()
    }

    /// Sets `flag` and wakes every worker so it notices.
    pub(crate) fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                warn!("could not wake a worker: {e}");
            }
        }
    }

    /// Records worker `index`'s counters for the others' `/metrics`.
    pub(crate) fn publish_metrics(&self, index: usize, metrics: &Metrics) {
        if let Some(slot) = self.metrics.get(index) {
            if let Ok(mut slot) = slot.lock() {
                slot.copy_from(metrics);
            }
        }
    }

    /// Every worker's counters by index: `own` (live) for worker `index`, the others' last
    /// copies (the handler's `on_stats`).
    pub(crate) fn worker_metrics(&self, index: usize, own: &Metrics) -> Vec<Metrics> {
        let copy = |(i, slot): (usize, &Mutex<Metrics>)| match slot.lock() {
            _ if i == index => own.clone(),
            Ok(slot) => slot.clone(),
            Err(_) => Metrics::default(),
        };
        self.metrics.iter().enumerate().map(copy).collect()
    }

    /// The whole server's counters: `own` (live) plus every other worker's last copy.
    pub(crate) fn total_metrics(&self, index: usize, own: &Metrics) -> Metrics {
        let mut total = own.clone();
        for (i, slot) in self.metrics.iter().enumerate() {
            if i != index {
                if let Ok(slot) = slot.lock() {
                    total.add(&slot);
                }
            }
        }
        total
    }
}

/// Stops a running server (every worker) from another thread: open connections get
/// close 1001, then the loops exit.
#[derive(Clone)]
pub struct ShutdownHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown (as SIGTERM does); returns at once.
    pub fn shutdown(&self) {
        self.shared.raise(&self.shared.shutdown);
    }
}

/// Wakes one worker's loop from another thread: its handler's `on_wake` runs. (A mesh of
/// one worker made by `Mesh::single` has none: ringing it does nothing.)
#[derive(Debug, Clone)]
pub struct Doorbell {
    waker: Option<Arc<Waker>>,
}

impl Doorbell {
    /// Wakes the worker.
    pub fn ring(&self) {
        if let Some(waker) = &self.waker {
            if let Err(e) = waker.wake() {
                warn!("could not wake a worker: {e}");
            }
        }
    }
}

/// One worker's end of the message mesh between handlers.
pub struct Mesh<M> {
    me: usize,
    inbox: Receiver<Vec<M>>,
    links: Arc<[Link<M>]>,
    /// Posted this turn, per destination; sent by `flush`.
    outgoing: Vec<Vec<M>>,
}

impl<M> std::fmt::Debug for Mesh<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("me", &self.me).field("workers", &self.links.len()).finish_non_exhaustive()
    }
}

struct Link<M> {
    tx: Sender<Vec<M>>,
    waker: Option<Arc<Waker>>,
    /// A wake-up is on its way and the receiver has not drained since: no need for another.
    pending: AtomicBool,
    /// Messages sent to this worker and not yet taken by it.
    queued: AtomicUsize,
}

impl<M: Send> Mesh<M> {
    /// A mesh of one worker: nothing to send anywhere (a handler run by `Server::bind`).
    pub fn single() -> Mesh<M> {
        let mut meshes = Mesh::build(vec![None]);
        meshes.pop().unwrap_or_else(|| unreachable!("build returns one mesh per waker"))
    }

    fn build(wakers: Vec<Option<Arc<Waker>>>) -> Vec<Mesh<M>> {
        let (txs, rxs): (Vec<_>, Vec<_>) = wakers.iter().map(|_| mpsc::channel()).unzip();
        let links: Arc<[Link<M>]> = txs
            .into_iter()
            .zip(wakers)
            .map(|(tx, waker)| Link { tx, waker, pending: AtomicBool::new(false), queued: AtomicUsize::new(0) })
            .collect();
        rxs.into_iter()
            .enumerate()
            .map(|(me, inbox)| Mesh {
                me,
                inbox,
                outgoing: links.iter().map(|_| Vec::new()).collect(),
                links: links.clone(),
            })
            .collect()
    }

    /// This worker's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// What wakes this worker from another thread (a store's link thread).
    pub fn doorbell(&self) -> Doorbell {
        Doorbell { waker: self.links.get(self.me).and_then(|link| link.waker.clone()) }
    }

    /// How many workers the mesh joins (this one included).
    pub fn workers(&self) -> usize {
        self.links.len()
    }

    /// Queues `message` for worker `to` (sent at the end of this loop turn). A handler
    /// handles messages to itself directly instead.
    pub fn post(&mut self, to: usize, message: M) {
        if let Some(queue) = self.outgoing.get_mut(to) {
            queue.push(message);
        }
    }

    /// Sends this turn's batches and wakes their receivers (the loop calls this through
    /// `Handler::end_turn`).
    pub fn flush(&mut self) {
        for (to, queue) in self.outgoing.iter_mut().enumerate() {
            if queue.is_empty() {
                continue;
            }
            let Some(link) = self.links.get(to) else { continue };
            let count = queue.len();
            if link.tx.send(std::mem::take(queue)).is_err() {
                continue; // that worker has exited (shutdown): nobody left to tell
            }
            link.queued.fetch_add(count, Ordering::Relaxed);
            // SeqCst pairs with `receive`: either the receiver's reset comes after this
            // swap (and its drain sees the batch), or the swap sees the reset and wakes it.
            if !link.pending.swap(true, Ordering::SeqCst) {
                if let Some(waker) = &link.waker {
                    if let Err(e) = waker.wake() {
                        warn!("could not wake worker {to}: {e}");
                    }
                }
            }
        }
    }

    /// Takes every batch sent to this worker so far, oldest first.
    pub fn receive(&mut self) -> impl Iterator<Item = Vec<M>> + '_ {
        let link = self.links.get(self.me);
        if let Some(link) = link {
            link.pending.store(false, Ordering::SeqCst);
        }
        self.inbox.try_iter().inspect(move |batch| {
            if let Some(link) = link {
                link.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            }
        })
    }

    /// Whether some other worker has more than `MESH_HIGH_WATER` messages waiting: then
    /// this one should stop taking new input (`Handler::accepting_input`).
    pub fn congested(&self) -> bool {
        self.links
            .iter()
            .enumerate()
            .any(|(i, link)| i != self.me && link.queued.load(Ordering::Relaxed) > MESH_HIGH_WATER)
    }
}

/// A server of `config.workers` event loops bound to one address.
pub struct Workers<H: Handler> {
    servers: Vec<Server<H>>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl<H: Handler + Send + 'static> Workers<H> {
    /// Binds every worker's listener and builds one handler per worker; `make_handler`
    /// gets the worker's end of the mesh.
    pub fn bind<M: Send, F>(config: Config, mut make_handler: F) -> io::Result<Self>
    where
        F: FnMut(Mesh<M>) -> H,
    {
        let count = config.workers.max(1);
        if count > MAX_WORKERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("at most {MAX_WORKERS} workers")));
        }
        super::listener::ensure_free(config.listen)?;
        let mut polls = Vec::with_capacity(count);
        let mut wakers = Vec::with_capacity(count);
        for _ in 0..count {
            let poll = Poll::new()?;
            wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
            polls.push(poll);
        }
        let shared = Arc::new(Shared::new(wakers.clone(), IpLimits::new(&config.access)));
        let meshes = Mesh::build(wakers.iter().cloned().map(Some).collect());
        let mut servers = Vec::with_capacity(count);
        let mut listen = config.listen;
        for (index, (poll, mesh)) in polls.into_iter().zip(meshes).enumerate() {
            let worker_config = Config { listen, ..config.clone() };
            let server = Server::worker(worker_config, index, poll, shared.clone(), make_handler(mesh))?;
            // Port 0 picks a port once; the other workers join that one.
            listen = server.local_addr();
            servers.push(server);
        }
        Ok(Workers { local_addr: listen, servers, shared })
    }

    /// The address every worker listens on (the port chosen, when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops every worker from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { shared: self.shared.clone() }
    }

    /// Runs every worker (worker 0 on this thread) until shutdown completes everywhere.
    pub fn run(self) -> io::Result<()> {
        let mut servers = self.servers.into_iter();
        let Some(first) = servers.next() else { return Ok(()) };
        let mut others = Vec::new();
        for (i, server) in servers.enumerate() {
            let shared = self.shared.clone();
            let spawned = thread::Builder::new()
                .name(format!("wsedge-worker-{}", i + 1))
                .spawn(move || run_worker(server, &shared));
            match spawned {
                Ok(handle) => others.push(handle),
                Err(e) => {
                    self.shared.raise(&self.shared.abort);
                    return Err(e);
                }
            }
        }
        let mut result = run_worker(first, &self.shared);
        for handle in others {
            let outcome = handle.join().unwrap_or_else(|_| Err(io::Error::other("a worker panicked")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

/// Runs one worker; if it fails or panics, every other worker stops too. A server missing
/// a worker would silently lose what the others send it (requests for the rooms it owns).
fn run_worker<H: Handler>(mut server: Server<H>, shared: &Arc<Shared>) -> io::Result<()> {
    struct AbortOnPanic<'a>(&'a Shared);
    impl Drop for AbortOnPanic<'_> {
        fn drop(&mut self) {
            if thread::panicking() {
                self.0.raise(&self.0.abort);
            }
        }
    }
    let _guard = AbortOnPanic(shared);
    let result = server.run();
    if result.is_err() {
        shared.raise(&shared.abort);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_arrive_in_order_with_one_wake() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let mut meshes: Vec<Mesh<u32>> = Mesh::build(vec![None, Some(waker)]);
        let mut b = meshes.pop().unwrap();
        let mut a = meshes.pop().unwrap();
        for turn in 0..3 {
            for i in 0..4 {
                a.post(1, turn * 10 + i);
            }
            a.flush();
        }
        assert!(b.links[1].pending.load(Ordering::SeqCst), "first flush woke b; later ones did not need to");
        let got: Vec<u32> = b.receive().flatten().collect();
        assert_eq!(got, [0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23]);
        assert!(!b.links[1].pending.load(Ordering::SeqCst));
        assert_eq!(b.receive().count(), 0);
    }

    #[test]
    fn a_worker_far_behind_congests_its_senders() {
        let mut meshes: Vec<Mesh<usize>> = Mesh::build(vec![None, None]);
        let mut b = meshes.pop().unwrap();
        let mut a = meshes.pop().unwrap();
        for i in 0..=MESH_HIGH_WATER {
            a.post(1, i);
        }
        a.flush();
        assert!(a.congested(), "b has {} messages waiting", MESH_HIGH_WATER + 1);
        assert!(!b.congested(), "a has nothing waiting");
        assert_eq!(b.receive().flatten().count(), MESH_HIGH_WATER + 1);
        assert!(!a.congested());
    }
}
