//! A small blocking WebSocket client on `std::net`, driving the same codec as the server
//! (client role). Used by `wsedge chat`; handy in examples and tests.
//!
//! Not a production client: one connection, blocking IO with a read timeout, no TLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::proto::deflate::{self, DeflateConfig};
use crate::proto::handshake::{client_request, parse_response};
use crate::proto::{CloseCode, Config, Connection, Event, MessageKind};

pub struct Client {
    stream: TcpStream,
    codec: Connection,
    read_buf: BytesMut,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
}

/// A `ws://host:port/path` URL, split.
fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "only ws:// URLs are supported"))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Random bytes from the OS-seeded hasher (std offers no RNG; this is enough for a nonce
/// and a mask seed).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

impl Client {
    /// Connects, offering `protocols` and permessage-deflate.
    pub fn connect(url: &str, protocols: &[&str]) -> io::Result<Client> {
        let (host, path) = split_url(url)?;
        let mut stream = TcpStream::connect(host)?;
        stream.set_nodelay(true)?;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&random_u64().to_le_bytes());
        key[8..].copy_from_slice(&random_u64().to_le_bytes());
        let (mut request, key) = client_request(host, path, key, protocols);
        // Offer permessage-deflate: insert the header before the blank line.
        request.truncate(request.len() - 2);
        request.extend_from_slice(format!("Sec-WebSocket-Extensions: {}\r\n\r\n", deflate::offer()).as_bytes());
        stream.write_all(&request)?;
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 4096];
        let (response, head_len) = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed during the handshake"));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_response(&buf, &key, protocols) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) if buf.len() < 16 * 1024 => continue,
                Ok(None) => return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large")),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        };
        let _ = buf.split_to(head_len);
        let mut codec = Connection::client(Config::default(), random_u64());
        let params = deflate::accept_response(response.extensions.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if let Some(params) = params {
            let defaults = DeflateConfig::default();
            codec = codec.with_deflate(params, defaults.threshold, defaults.level);
        }
        Ok(Client { stream, codec, read_buf: buf, protocol: response.protocol })
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.codec.send_message(MessageKind::Text, Bytes::copy_from_slice(text.as_bytes()));
        self.flush()
    }

    pub fn close(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        self.codec.close(code, reason);
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(bytes) = self.codec.poll_transmit() {
            self.stream.write_all(&bytes)?;
        }
        Ok(())
    }

    /// The next event, waiting up to `timeout` (`Ok(None)` when nothing came). Pongs are
    /// sent automatically. After a close event the connection is over.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Event>> {
        self.stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        loop {
            let event = self.codec.decode(&mut self.read_buf);
            self.flush()?;
            match event {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) if self.codec.is_terminated() => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed"))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection")),
                Ok(n) => self.read_buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}
