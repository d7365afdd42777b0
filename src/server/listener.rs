//! Binding the listening socket: a real accept backlog, `SO_REUSEPORT` shared by the
//! workers of one server, and a plain "address already in use" for a second server.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;

/// Fails when another socket listens on `addr`. The workers of one server share their port
/// with SO_REUSEPORT, which would also let a second server in silently (taking part of the
/// connections): a plain bind first, before the shared ones, tells the two apart.
pub(crate) fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Socket, Type};
    if addr.port() == 0 {
        return Ok(()); // a fresh ephemeral port
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?; // a previous run's TIME_WAIT sockets do not count
    probe.bind(&addr.into()).map_err(in_use)
}

/// `EADDRINUSE`, said plainly.
fn in_use(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        return io::Error::new(e.kind(), "address already in use (is another server listening there?)");
    }
    e
}

/// A non-blocking listener with a real accept backlog: mio's `bind` uses 128, which a
/// reconnect storm overflows (the kernel then drops handshakes and clients wait for SYN
/// retransmits, a second or more). With several workers each binds the same address with
/// `SO_REUSEPORT`, and the kernel spreads incoming connections across them.
pub(super) fn bind_listener(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into()).map_err(in_use)?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}
