//! The config file and the environment, through the real binary: precedence (command line >
//! environment > file > defaults), startup errors that name the key, and the file printed
//! by `wsedge config --print-defaults` starting a server.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::process::{wsedge, Running};

/// A file in a fresh temporary directory.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsedge-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn fails(mut command: Command) -> String {
    let Output { status, stderr, .. } = command.stdout(Stdio::null()).output().unwrap();
    assert_eq!(status.code(), Some(2), "a bad config file stops the server: {}", String::from_utf8_lossy(&stderr));
    String::from_utf8(stderr).unwrap()
}

#[test]
fn command_line_beats_environment_beats_file_beats_defaults() {
    // Each source names a different loopback address; the `listening on` line tells which won.
    let config = file("precedence.toml", "listen = \"127.0.0.2:0\"\nworkers = 1\n");
    let run = |env: bool, cli: bool| {
        let mut command = wsedge();
        command.args(["echo", "--config"]).arg(&config);
        if env {
            command.env("WSEDGE_LISTEN", "127.0.0.3:0");
        }
        if cli {
            command.args(["--listen", "127.0.0.4:0"]);
        }
        Running::start(command).addr.clone()
    };
    assert!(run(true, true).starts_with("127.0.0.4:"));
    assert!(run(true, false).starts_with("127.0.0.3:"));
    assert!(run(false, false).starts_with("127.0.0.2:"), "the file beats the default 127.0.0.1:9001");
}

#[test]
fn environment_variables_exist_for_every_setting_including_switches() {
    // WSEDGE_NO_DEFLATE=true turns permessage-deflate off: the 101 carries no extension.
    let mut command = wsedge();
    command.args(["echo", "--workers", "1", "--listen", "127.0.0.1:0"]).env("WSEDGE_NO_DEFLATE", "true");
    let server = Running::start(command);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the server answers the upgrade");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("permessage-deflate"), "deflate is off: {head}");
}

#[test]
fn unknown_keys_and_bad_values_are_startup_errors_naming_the_key() {
    let typo = file("typo.toml", "max-connection = 10\n");
    let err = fails({
        let mut c = wsedge();
        c.args(["serve", "--config"]).arg(&typo);
        c
    });
    assert!(err.contains("unknown key `max-connection`") && err.contains("typo.toml"), "{err}");

    let bad = file("bad.toml", "handshake-timeout = \"ten\"\n");
    let err = fails({
        let mut c = wsedge();
        c.args(["serve", "--config"]).arg(&bad);
        c
    });
    assert!(err.contains("key `handshake-timeout`") && err.contains("ten"), "{err}");

    // A timeout so long that a clock reading plus it would overflow is refused up front.
    let huge = file("huge.toml", "ping-interval = 99999999999\n");
    let err = fails({
        let mut c = wsedge();
        c.args(["serve", "--config"]).arg(&huge);
        c
    });
    assert!(err.contains("key `ping-interval`") && err.contains("0..=604800"), "{err}");

    let missing = std::env::temp_dir().join("wsedge-config-no-such-file.toml");
    let err = fails({
        let mut c = wsedge();
        c.args(["serve", "--config"]).arg(&missing);
        c
    });
    assert!(err.contains("no-such-file"), "{err}");
}

#[test]
fn the_printed_defaults_are_a_complete_file_that_starts_the_server() {
    let output = wsedge().args(["config", "--print-defaults"]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let help = String::from_utf8(wsedge().args(["serve", "--help"]).output().unwrap().stdout).unwrap();
    // Every long flag of `serve --help` but help and config appears as a key.
    let flags = help.lines().filter_map(|line| {
        let line = line.trim_start();
        // `  -h, --help` or `      --listen <LISTEN>`: the flag opens its line.
        let line = if line.starts_with('-') && !line.starts_with("--") { line.get(4..)? } else { line };
        line.strip_prefix("--")
    });
    let mut keys = 0;
    for flag in flags {
        let key = flag.split(['=', ' ', '<', ',']).next().unwrap();
        keys += 1;
        if key.is_empty() || key == "help" || key == "config" || key == "version" {
            continue;
        }
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key} =")) || l.starts_with(&format!("# {key} ="))),
            "`--{key}` is missing from the printed defaults"
        );
    }
    assert!(keys > 30, "all of serve's flags were read from its help ({keys})");
    let config = file("defaults.toml", &text);
    let mut command = wsedge();
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--config"]).arg(&config);
    let server = Running::start(command);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
