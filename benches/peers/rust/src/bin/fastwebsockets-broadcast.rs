//! Relay/broadcast server on fastwebsockets. fastwebsockets ships no chat or
//! broadcast example, so this combines its two server examples with the
//! room map of tokio-tungstenite's chat example:
//!
//! - hyper 1 upgrade exactly as `examples/echo_server.rs` (service_fn,
//!   `upgrade::upgrade`, the WebSocket in its own `unconstrained` task);
//! - the socket split as in `examples/echo_server_split.rs`
//!   (`ws.split(tokio::io::split)`, `FragmentCollectorRead` on the read half),
//!   because a member must read and be written to at the same time and
//!   `read_frame` is not cancel-safe (no `select!` over it);
//! - a writer task per connection drains an unbounded channel into the write
//!   half; the reader pushes each whole message, once, as `Bytes` (a refcount
//!   bump per member) to every member of the room, sender included.
//!
//! The room is the URL path of the upgrade request (`/` is a room too).
//! auto_close and auto_pong keep the crate's defaults (on): with a split
//! socket the frames they oblige us to send (pong, close reply) arrive through
//! `read_frame`'s `send_fn`, which queues them on the same writer channel.
//!
//! Deviations, for the benchmark: `--listen`/`--workers` flags, TCP_NODELAY,
//! no println per connection (`--verbose` prints errors), accept errors do not
//! stop the server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fastwebsockets::upgrade;
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper::Response;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use wsedge_peers::{accept_error, announce, Args};

const NAME: &str = "fastwebsockets-broadcast";

/// One outgoing frame: opcode and payload, shared between all members.
type Out = (OpCode, Bytes);
type Tx = UnboundedSender<Out>;
/// room (URL path) -> member id -> that member's writer channel.
type RoomMap = Arc<Mutex<HashMap<String, HashMap<u64, Tx>>>>;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn lock(rooms: &RoomMap) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Tx>>> {
    // Nothing panics while the lock is held; recover the map if that changes.
    rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn into_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(b) => b.freeze(),
        Payload::Owned(v) => Bytes::from(v),
        Payload::Borrowed(s) => Bytes::copy_from_slice(s),
        Payload::BorrowedMut(s) => Bytes::copy_from_slice(s),
    }
}

async fn handle_client(fut: upgrade::UpgradeFut, rooms: RoomMap, room: String) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (rx, mut tx) = ws.split(tokio::io::split);
    let mut rx = FragmentCollectorRead::new(rx);

    let (out_tx, mut out_rx) = unbounded_channel::<Out>();
    let writer = tokio::spawn(async move {
        while let Some((opcode, payload)) = out_rx.recv().await {
            tx.write_frame(Frame::new(true, opcode, None, Payload::Borrowed(&payload))).await?;
            if opcode == OpCode::Close {
                break;
            }
        }
        Ok::<(), WebSocketError>(())
    });

    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&rooms).entry(room.clone()).or_default().insert(id, out_tx.clone());

    let read_result = async {
        loop {
            let obligated = out_tx.clone();
            let frame = rx
                .read_frame::<_, WebSocketError>(&mut move |frame: Frame<'_>| {
                    let sent = obligated.send((frame.opcode, into_bytes(frame.payload)));
                    async move { sent.map_err(|_| WebSocketError::ConnectionClosed) }
                })
                .await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => {
                    let msg = (frame.opcode, into_bytes(frame.payload));
                    let rooms = lock(&rooms);
                    // Everyone in the room, ourselves included.
                    if let Some(members) = rooms.get(&room) {
                        for member in members.values() {
                            let _ = member.send(msg.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok::<(), WebSocketError>(())
    }
    .await;

    {
        let mut rooms = lock(&rooms);
        if let Some(members) = rooms.get_mut(&room) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(&room);
            }
        }
    }
    // Our last sender goes away here; the writer flushes what is queued
    // (including a close reply) and ends.
    drop(out_tx);
    let write_result = writer.await.unwrap_or(Ok(()));
    read_result.and(write_result)
}

async fn server_upgrade(
    mut req: Request<Incoming>,
    rooms: RoomMap,
    verbose: bool,
) -> Result<Response<Empty<hyper::body::Bytes>>, WebSocketError> {
    let room = req.uri().path().to_owned();
    let (response, fut) = upgrade::upgrade(&mut req)?;

    tokio::task::spawn(async move {
        if let Err(e) = tokio::task::unconstrained(handle_client(fut, rooms, room)).await {
            if verbose {
                eprintln!("Error in websocket connection: {e}");
            }
        }
    });

    Ok(response)
}

fn main() -> Result<(), WebSocketError> {
    let args = Args::parse(NAME);
    let verbose = args.verbose;
    let rooms = RoomMap::default();
    args.runtime().block_on(async move {
        let listener = TcpListener::bind(&args.listen).await?;
        announce(NAME, listener.local_addr());
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let rooms = rooms.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let service = service_fn(move |req| server_upgrade(req, rooms.clone(), verbose));
                let conn_fut = http1::Builder::new().serve_connection(io, service).with_upgrades();
                if let Err(e) = conn_fut.await {
                    if verbose {
                        eprintln!("An error occurred: {e:?}");
                    }
                }
            });
        }
    })
}
