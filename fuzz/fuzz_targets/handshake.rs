//! `handshake::parse_request` on arbitrary bytes with an 8 KiB head limit, and the client's
//! `parse_response` on the same bytes.
//!
//! Checks: a complete head is within the input and the limit, depends on its own bytes
//! only, and one byte less of it asks for more; an upgrade has a key of 16 base64 bytes and
//! the 101 `accept()` builds (with a negotiated subprotocol and permessage-deflate answer)
//! is accepted by `parse_response` with the same key, giving back the same protocol and
//! extensions, whose deflate parameters the client side accepts unchanged; errors carry
//! status 400/405/411/426/431 and their responses parse as HTTP with that status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsedge::proto::deflate::{self, DeflateConfig, DeflateMode};
use wsedge::proto::handshake::{self, parse_request, parse_response, Request};

const MAX_HEAD: usize = 8 * 1024;
const SUPPORTED: [&str; 2] = ["wsedge.v1", "chat"];

fuzz_target!(|data: &[u8]| {
    match parse_request(data, MAX_HEAD) {
        Ok(None) => assert!(data.len() <= MAX_HEAD, "incomplete head of {} bytes not refused", data.len()),
        Ok(Some((request, n))) => {
            assert!(n <= data.len() && n <= MAX_HEAD, "head of {n} bytes");
            assert_eq!(parse_request(&data[..n], MAX_HEAD), Ok(Some((request.clone(), n))));
            assert_eq!(parse_request(&data[..n - 1], MAX_HEAD), Ok(None), "one byte short of a head");
            match request {
                Request::Upgrade(upgrade) => check_upgrade(&upgrade),
                Request::Plain(plain) => check_content_length(&data[..n], plain.content_length),
            }
        }
        Err(e) => {
            let (status, _) = e.status();
            assert!(matches!(status, 400 | 405 | 411 | 426 | 431), "{e:?} -> {status}");
            let response = e.response();
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Response::new(&mut headers);
            assert!(matches!(parsed.parse(&response), Ok(httparse::Status::Complete(_))));
            assert_eq!(parsed.code, Some(status));
        }
    }
    // The client side on the same bytes: any answer but a panic.
    if let Ok(Some((response, n))) = parse_response(data, "dGhlIHNhbXBsZSBub25jZQ==", &SUPPORTED) {
        assert!(n <= data.len());
        let _ = deflate::accept_response(response.extensions.as_deref());
    }
});

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`. A body length read from anything else
/// (`+5`, bytes that are not UTF-8) is one a proxy in front may read differently: request
/// smuggling bait. The same goes for a `Transfer-Encoding` the parser did not see.
fn check_content_length(head: &[u8], content_length: usize) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    assert!(matches!(request.parse(head), Ok(httparse::Status::Complete(_))));
    assert!(
        !request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")),
        "a plain request with Transfer-Encoding was accepted (411 expected)"
    );
    let values: Vec<&[u8]> =
        request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")).map(|h| h.value).collect();
    match values.as_slice() {
        [] => assert_eq!(content_length, 0),
        [value] => {
            let value = value.trim_ascii();
            assert!(
                !value.is_empty() && value.iter().all(u8::is_ascii_digit),
                "Content-Length {:?} accepted as {content_length}",
                String::from_utf8_lossy(value)
            );
        }
        more => panic!("{} Content-Length headers accepted", more.len()),
    }
}

fn check_upgrade(upgrade: &handshake::UpgradeRequest) {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(&upgrade.key);
    assert_eq!(raw.map(|k| k.len()).ok(), Some(16), "accepted key {:?}", upgrade.key);
    let protocol = upgrade.select_protocol(&SUPPORTED);
    if let Some(p) = protocol {
        assert!(upgrade.protocols.iter().any(|o| o == p));
    }
    for mode in [DeflateMode::Shared, DeflateMode::Dedicated] {
        let config = DeflateConfig { mode, ..DeflateConfig::default() };
        let negotiated = upgrade.extensions.as_deref().and_then(|e| deflate::negotiate(e, &config));
        let extensions = negotiated.as_ref().map(|(_, r)| r.as_str());
        let response = upgrade.accept(protocol, extensions);
        let parsed = parse_response(&response, &upgrade.key, &SUPPORTED);
        let Ok(Some((answer, n))) = parsed else {
            panic!("our own 101 is refused: {parsed:?}\n{}", String::from_utf8_lossy(&response));
        };
        assert_eq!(n, response.len());
        assert_eq!(answer.protocol.as_deref(), protocol);
        assert_eq!(answer.extensions.as_deref(), extensions);
        assert_eq!(deflate::accept_response(extensions), Ok(negotiated.map(|(p, _)| p)));
    }
}
