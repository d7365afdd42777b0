//! Inputs the fuzz targets (fuzz/) found, each replayed through the code path that broke.
//!
//! One `#[test]` per bug, with the exact bytes of the crashing input (or its minimal form)
//! and the behaviour the fix must keep. Tests marked `#[ignore]` document a bug that is
//! still open: drop the `ignore` together with the fix.

use wsedge::proto::handshake::{parse_request, HandshakeError, Request};

/// The server's request-head limit (`server::Config::max_head_bytes`).
const MAX_HEAD: usize = 8 * 1024;

fn content_length_of(head: &[u8]) -> Result<usize, HandshakeError> {
    match parse_request(head, MAX_HEAD)? {
        Some((Request::Plain(plain), n)) => {
            assert_eq!(n, head.len());
            Ok(plain.content_length)
        }
        other => panic!("not a plain request: {other:?}"),
    }
}

/// fuzz target `handshake`, artifact crash-4417983a8d7e02e9a7c94d1498b1ca8c7cd8139e:
/// a `Transfer-Encoding` whose value is not UTF-8 was not seen at all, so the request was
/// served as a body-less plain request instead of 411 (request smuggling bait: a proxy in
/// front may frame the body differently).
#[test]
fn transfer_encoding_that_is_not_utf8_still_gets_411() {
    let head =
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: c\xff\xff\xff\xff\xff\xff\xff.hunked\r\n\r\n";
    assert_eq!(content_length_of(head), Err(HandshakeError::LengthRequired));
}

/// fuzz target `handshake`, artifact crash-bbc2f2ba61b8fd235a9b5bfb6ab1e161b5bf52bb:
/// `Content-Length:+5555` was read as 5555 (Rust's `usize::from_str` takes a leading `+`);
/// RFC 9110 §8.6 allows digits only, and a proxy in front may frame the body differently.
#[test]
fn content_length_with_a_sign_is_malformed() {
    let crash = b"GE ws HTTP/1.1\r\nHost: n\r\nContent-Length:+5555\r\n\r\n";
    assert_eq!(content_length_of(crash), Err(HandshakeError::Malformed));
}

/// fuzz target `handshake`, artifact crash-b1eba61e8bf6474bf8a2730a56f67dd647698443: a
/// `Content-Length` whose value is not UTF-8 was skipped, so the head read as having no
/// body (length 0) and the body bytes would be taken as the next request; next to a valid
/// one, the pair was not seen as ambiguous.
#[test]
fn content_length_that_is_not_utf8_is_malformed() {
    let crash = b"GET /chat HTTP/1.1\r\nHost: seion/n\r\nContent-Length: 48\xff\xff\xff\xff\xff\xff\xff\xff\n\r\n";
    assert_eq!(content_length_of(crash), Err(HandshakeError::Malformed));
    let pair = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: \xff\r\n\r\n";
    assert_eq!(content_length_of(pair), Err(HandshakeError::Malformed));
}
