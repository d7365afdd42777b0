//! The demo chat served by the room server (issue 15): `GET /` is the page and
//! `GET /client.js` the JS client package's module, both embedded in the binary with their
//! content types and cache headers; with the demo off (`--no-demo`) both are 404, and a
//! server without the room protocol (`relay`) has no demo either. The flag itself is
//! checked through the real binary.

mod support;

use std::io::Write;
use std::net::TcpStream;

use support::process::Running;
use support::{http_request, read_response, TestServer};
use wsedge::rooms::RoomsConfig;

const CLIENT_MODULE: &str = include_str!("../clients/js/src/index.js");

#[test]
fn the_page_and_the_client_module_are_served() {
    let server = TestServer::rooms(RoomsConfig::default());

    let page = server.http("GET", "/", &[], b"");
    assert_eq!(page.head.status, 200, "{}", page.text());
    assert_eq!(page.head.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.head.header("Cache-Control"), Some("no-cache"));
    assert!(page.head.header("Content-Security-Policy").is_some_and(|csp| csp.contains("script-src 'self'")));
    assert!(page.text().contains("<title>wsedge demo chat</title>"), "{}", page.text());

    let module = server.http("GET", "/client.js", &[], b"");
    assert_eq!(module.head.status, 200);
    assert_eq!(module.head.header("Content-Type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(module.head.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(module.text(), CLIENT_MODULE, "the package's own module, byte for byte");

    // A query string does not change the file (the demo keeps its room and name there).
    let with_query = server.http("GET", "/?room=lobby&name=ada", &[], b"");
    assert_eq!((with_query.head.status, with_query.body.len()), (200, page.body.len()));

    for path in ["/demo.js", "/demo.css"] {
        assert_eq!(server.http("GET", path, &[], b"").head.status, 200, "{path}");
    }
    for (method, path) in [("GET", "/index.htm"), ("GET", "/client.js/x"), ("POST", "/"), ("DELETE", "/client.js")] {
        assert_eq!(server.http(method, path, &[], b"").head.status, 404, "{method} {path}");
    }
    // The other routes are unchanged.
    assert_eq!(server.http("GET", "/healthz", &[], b"").head.status, 200);
    assert_eq!(server.http("GET", "/ws", &[], b"").head.status, 426);
}

#[test]
fn no_demo_answers_404() {
    let server = TestServer::rooms(RoomsConfig { demo: false, ..RoomsConfig::default() });
    for path in ["/", "/client.js", "/demo.js", "/demo.css"] {
        let reply = server.http("GET", path, &[], b"");
        assert_eq!(reply.head.status, 404, "{path}: {}", reply.text());
    }
    assert_eq!(server.http("GET", "/healthz", &[], b"").head.status, 200);
}

#[test]
fn a_server_without_the_room_protocol_has_no_demo() {
    // As `wsedge relay` configures it: every path a relay room, no JSON endpoint.
    let relay = RoomsConfig { path: String::new(), relay_prefix: Some("/".to_owned()), ..RoomsConfig::default() };
    let server = TestServer::rooms(relay);
    assert_eq!(server.http("GET", "/client.js", &[], b"").head.status, 404);
}

/// The status `server` answers a `GET path` with.
fn status(server: &Running, path: &str) -> u16 {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream.write_all(&http_request("GET", path, &[], b"")).expect("write the request");
    read_response(&mut stream).head.status
}

#[test]
fn the_no_demo_flag_turns_the_demo_off() {
    let on = Running::serve(&["--workers", "1"]);
    assert_eq!((status(&on, "/"), status(&on, "/client.js")), (200, 200), "the demo is on by default");
    let off = Running::serve(&["--workers", "1", "--no-demo"]);
    assert_eq!((status(&off, "/"), status(&off, "/client.js")), (404, 404));
}
