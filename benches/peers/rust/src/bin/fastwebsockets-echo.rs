//! Echo server on fastwebsockets, after the crate's `examples/echo_server.rs`:
//! hyper 1 `http1` connection with upgrades, `fastwebsockets::upgrade::upgrade`
//! in the service, the WebSocket handled in its own task under
//! `tokio::task::unconstrained`, wrapped in a `FragmentCollector` so whole
//! messages are echoed. auto_close and auto_pong keep the crate's defaults
//! (on), as in the example.
//!
//! Deviations, for the benchmark: `--listen`/`--workers` flags (the example
//! hard-codes a current_thread runtime; `--workers 1` is exactly that),
//! TCP_NODELAY (Node `ws` and wsedge set it too), no println per connection
//! (`--verbose` prints errors), accept errors do not stop the server.

use fastwebsockets::upgrade;
use fastwebsockets::OpCode;
use fastwebsockets::WebSocketError;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper::Response;
use tokio::net::TcpListener;
use wsedge_peers::{accept_error, announce, Args};

const NAME: &str = "fastwebsockets-echo";

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fastwebsockets::FragmentCollector::new(fut.await?);

    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => {
                ws.write_frame(frame).await?;
            }
            _ => {}
        }
    }

    Ok(())
}

async fn server_upgrade(mut req: Request<Incoming>, verbose: bool) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;

    tokio::task::spawn(async move {
        if let Err(e) = tokio::task::unconstrained(handle_client(fut)).await {
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
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn_fut = http1::Builder::new()
                    .serve_connection(io, service_fn(move |req| server_upgrade(req, verbose)))
                    .with_upgrades();
                if let Err(e) = conn_fut.await {
                    if verbose {
                        eprintln!("An error occurred: {e:?}");
                    }
                }
            });
        }
    })
}
