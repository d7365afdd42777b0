//! The load generator's event-stream side (`--sse`): the request that opens a stream
//! (`GET /sse` of the room server), and its response read back into events: the head, the
//! chunked framing (or none, for a close-delimited body) and each event's `event:` and
//! `data:` lines. A stream's `message` event carries the push a socket member gets, so the
//! traffic is counted as it is on a socket.

use bytes::{Buf, BytesMut};

/// The longest response head or chunk-size line we wait for.
const MAX_LINE: usize = 8 * 1024;
/// The longest event we wait for the end of (a server that never ends one is no event
/// stream, and must not grow the client without bound).
const MAX_EVENT: usize = 1 << 20;

/// `GET target` on `host`, kept alive.
pub fn request(host: &str, target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n").into_bytes()
}

/// Where a stream's response is, and the event text not yet complete.
#[derive(Debug, Default)]
pub struct Reader {
    /// The head was read: a 200, chunked or not.
    started: bool,
    chunked: bool,
    /// Bytes of the current chunk still to come, and of the CRLF after it.
    data_left: usize,
    crlf_left: usize,
    /// Event text (de-chunked) up to the next blank line.
    events: BytesMut,
}

impl Reader {
    /// Consumes what `buf` holds: calls `each(event, data)` for every complete event (a
    /// comment, such as a heartbeat, is none). `Err`: the server refused the stream (its
    /// status line) or ended it, or sent what no event stream is.
    pub fn read(&mut self, buf: &mut BytesMut, mut each: impl FnMut(&str, &[u8])) -> Result<(), String> {
        if !self.started {
            let Some(end) = find(buf, b"\r\n\r\n") else {
                return if buf.len() > MAX_LINE { Err("response head too long".to_owned()) } else { Ok(()) };
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.lines().next().unwrap_or_default().to_owned();
            if !status.starts_with("http/1.1 200") && !status.starts_with("http/1.0 200") {
                let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
                return Err(format!("stream refused: {status} {}", body.trim()));
            }
            if !head.contains("content-type: text/event-stream") {
                return Err(format!("not an event stream: {status}"));
            }
            self.chunked = head.contains("transfer-encoding: chunked");
            self.started = true;
            buf.advance(end + 4);
        }
        if self.chunked {
            self.dechunk(buf)?;
        } else {
            self.events.extend_from_slice(buf);
            buf.clear();
        }
        while let Some(end) = find(&self.events, b"\n\n") {
            let block = self.events.split_to(end + 2);
            let (mut name, mut data) = ("message", None::<&[u8]>);
            for line in block[..end].split(|&b| b == b'\n') {
                if let Some(value) = line.strip_prefix(b"event: ") {
                    name = std::str::from_utf8(value).unwrap_or("?");
                } else if let Some(value) = line.strip_prefix(b"data: ") {
                    // wsedge writes one data line per JSON event.
                    data = Some(value);
                }
            }
            if let Some(data) = data {
                each(name, data);
            }
        }
        if self.events.len() > MAX_EVENT {
            return Err(format!("an event over {MAX_EVENT} bytes"));
        }
        Ok(())
    }

    /// Moves the chunks' data from `buf` to the event text.
    fn dechunk(&mut self, buf: &mut BytesMut) -> Result<(), String> {
        loop {
            if self.data_left > 0 {
                let n = self.data_left.min(buf.len());
                if n == 0 {
                    return Ok(());
                }
                self.events.extend_from_slice(&buf[..n]);
                buf.advance(n);
                self.data_left -= n;
            } else if self.crlf_left > 0 {
                let n = self.crlf_left.min(buf.len());
                if n == 0 {
                    return Ok(());
                }
                buf.advance(n);
                self.crlf_left -= n;
            } else {
                let Some(end) = find(buf, b"\r\n") else {
                    return if buf.len() > MAX_LINE { Err("chunk size line too long".to_owned()) } else { Ok(()) };
                };
                let line = std::str::from_utf8(&buf[..end]).unwrap_or_default();
                let hex = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size line {line:?}"))?;
                if size == 0 {
                    return Err("the server ended the stream".to_owned());
                }
                buf.advance(end + 2);
                (self.data_left, self.crlf_left) = (size, 2);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(reader: &mut Reader, input: &[u8], step: usize) -> Result<Vec<(String, String)>, String> {
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            reader.read(&mut buf, |name, data| {
                got.push((name.to_owned(), String::from_utf8_lossy(data).into_owned()));
            })?;
        }
        Ok(got)
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn chunked_events_come_out_whole_however_the_bytes_are_split() {
        let body = b"event: welcome\ndata: {\"op\":\"welcome\"}\n\n: keepalive\n\nid: r~e~1\nevent: message\ndata: {\"n\":1}\n\n";
        let mut input = HEAD.to_vec();
        for part in [&body[..20], &body[20..50], &body[50..]] {
            input.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            input.extend_from_slice(part);
            input.extend_from_slice(b"\r\n");
        }
        let expected = vec![
            ("welcome".to_owned(), "{\"op\":\"welcome\"}".to_owned()),
            ("message".to_owned(), "{\"n\":1}".to_owned()),
        ];
        for step in [1, 2, 7, 1000] {
            assert_eq!(events(&mut Reader::default(), &input, step).unwrap(), expected, "read {step} bytes at a time");
        }
        let mut ended = input.clone();
        ended.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(events(&mut Reader::default(), &ended, 1000), Err("the server ended the stream".to_owned()));
    }

    #[test]
    fn a_refusal_says_its_status_and_a_close_delimited_body_is_read_as_it_is() {
        let endless =
            [&b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: "[..], &[b'x'; MAX_EVENT + 1][..]]
                .concat();
        assert_eq!(events(&mut Reader::default(), &endless, 1 << 16), Err(format!("an event over {MAX_EVENT} bytes")));
        let refused = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            events(&mut Reader::default(), refused, 1000),
            Err("stream refused: http/1.1 403 forbidden {}".into())
        );
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\ndata: 1\n\n";
        assert_eq!(events(&mut Reader::default(), plain, 3).unwrap(), vec![("message".to_owned(), "1".to_owned())]);
    }
}
