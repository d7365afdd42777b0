//! permessage-deflate (RFC 7692) against an independent client: Python's `websockets`,
//! pinned to [`WEBSOCKETS_VERSION`], in a venv this file creates under the target dir on
//! first use (needs `python3` ≥ 3.11 and PyPI; without them the tests fail, never skip).
//!
//! The client (`tests/interop/deflate_client.py`) sends text and binary messages of every
//! size class, checks each echo byte for byte and reports, per message, the bytes that
//! crossed the socket each way and whether the first frame had RSV1. So these tests prove
//! what the wire carried (compressed or not, how small), not only that echoes matched:
//! negotiation per mode (§7.1), context takeover across messages (§7.1.1), window sizes
//! (§7.1.2), the size threshold, and the extension switched off.
//!
//! Never checks malformed compressed input or decompression bombs (the codec's unit tests
//! and Autobahn 12.* / 13.* do).

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use wsedge::proto::deflate::{DeflateConfig, DeflateMode};
use wsedge::server::Config;

use support::TestServer;

/// The `websockets` release the client runs on (the latest; it needs Python ≥ 3.11).
const WEBSOCKETS_VERSION: &str = "17.4";

/// Longest a client run may take (it finishes in well under a second).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest creating the venv and installing `websockets` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Messages the client sends: 7 of different sizes, then the 1 KiB JSON text 50 times.
const MESSAGES: usize = 57;
const REPEATS: usize = 50;

/// What the client saw, as `deflate_client.py` prints it.
#[derive(Debug, Deserialize)]
struct Report {
    websockets: String,
    /// The raw `Sec-WebSocket-Extensions` response header.
    response_extensions: Option<String>,
    /// The permessage-deflate parameters websockets agreed to (none if declined).
    negotiated: Vec<Negotiated>,
    messages: Vec<Exchange>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct Negotiated {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
}

/// One message and its echo.
#[derive(Debug, Deserialize)]
struct Exchange {
    name: String,
    /// Payload bytes (UTF-8 bytes for text).
    size: usize,
    /// The echo had the same type and the same bytes.
    echoed: bool,
    /// Bytes on the wire, frame headers included: client to server, and the echo back.
    wire_out: usize,
    wire_in: usize,
    /// RSV1 on the first frame: the message was compressed.
    rsv1_out: bool,
    rsv1_in: bool,
}

impl Report {
    fn message(&self, name: &str) -> &Exchange {
        self.messages.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no message {name:?} in the report"))
    }

    /// The 50 sends of the same 1 KiB text, in order.
    fn repeats(&self) -> Vec<&Exchange> {
        self.messages.iter().filter(|m| m.name.starts_with("json-1k-repeat-")).collect()
    }

    /// The parameters of the accepted extension, sorted.
    fn agreed_params(&self) -> Vec<&str> {
        let header = self.response_extensions.as_deref().expect("the server accepted permessage-deflate");
        assert!(!header.contains(','), "one extension expected in the response, got {header:?}");
        let mut parts = header.split(';').map(str::trim);
        assert_eq!(parts.next(), Some("permessage-deflate"), "response header {header:?}");
        let mut params: Vec<&str> = parts.collect();
        params.sort_unstable();
        params
    }
}

/// The client's offer.
#[derive(Debug, Clone, Copy)]
enum Offer {
    /// websockets' default: `permessage-deflate; client_max_window_bits`.
    Default,
    /// `server_max_window_bits=10; client_max_window_bits=9`.
    SmallWindows,
}

fn server_with(deflate: DeflateConfig) -> TestServer {
    TestServer::start(Config { deflate, ..support::config() })
}

fn dedicated() -> DeflateConfig {
    DeflateConfig { mode: DeflateMode::Dedicated, ..DeflateConfig::default() }
}

/// Runs the Python client against `server` and returns its report, checking that every
/// message came back identical.
fn run_client(server: &TestServer, offer: Offer) -> Report {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/deflate_client.py");
    let mut command = Command::new(client_python());
    command.arg(&script).arg(server.url());
    if let Offer::SmallWindows = offer {
        command.arg("--windows");
    }
    let run = run(&mut command, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(run.status.success(), "the Python client failed ({}):\n{}", run.status, run.stderr);
    let report: Report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("the client's report is not what we expect: {e}\n{}", run.stdout));
    assert_eq!(report.websockets, WEBSOCKETS_VERSION, "the client ran on another websockets");
    assert_eq!(report.messages.len(), MESSAGES);
    assert_eq!(report.repeats().len(), REPEATS);
    for m in &report.messages {
        assert!(m.echoed, "{} ({} bytes) came back changed", m.name, m.size);
    }
    report
}

/// Checks what travelled with the extension on: both sides compress, the server only at or
/// above its threshold, and the repetitive 100 KiB text crosses in a few hundred bytes.
/// Without server context takeover, a message that does not shrink (random bytes) goes
/// back uncompressed; with it, everything at or above the threshold is compressed.
fn assert_compressed_on_the_wire(report: &Report, server_no_context_takeover: bool) {
    let threshold = DeflateConfig::default().threshold;
    for m in &report.messages {
        if m.name == "random-1m" && server_no_context_takeover {
            assert!(!m.rsv1_in, "incompressible {} came back compressed", m.name);
            assert_eq!(m.wire_in, m.size + 10, "{}: a plain frame is a 10-byte header and the payload", m.name);
        } else if m.size < threshold {
            assert!(!m.rsv1_in, "{} ({} bytes) is below the threshold but came back compressed", m.name, m.size);
            assert_eq!(m.wire_in, m.size + 2, "{}: a plain frame is a 2-byte header and the payload", m.name);
        } else {
            assert!(m.rsv1_in, "{} ({} bytes) came back uncompressed", m.name, m.size);
        }
    }
    let text = report.message("repetitive-100k");
    assert!(text.wire_in < text.size / 20, "100 KiB of repetitive text came back in {} bytes", text.wire_in);
    // websockets compressed it too, so the server inflated it (the echo matched).
    assert!(text.rsv1_out && text.wire_out < text.size / 20, "the client did not compress: {text:?}");
    // The byte counts are real: random data cannot shrink.
    let random = report.message("random-1m");
    assert!(random.wire_in >= random.size, "1 MiB of random bytes came back in {} bytes", random.wire_in);
}

#[test]
fn shared_mode_asks_for_no_context_takeover_and_compresses() {
    let server = server_with(DeflateConfig::default());
    let report = run_client(&server, Offer::Default);

    assert_eq!(report.agreed_params(), ["client_no_context_takeover", "server_no_context_takeover"]);
    let expected = Negotiated {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    assert_eq!(report.negotiated, [expected]);
    assert_compressed_on_the_wire(&report, true);
    // No context takeover: the same message compresses to the same bytes every time.
    let json = report.message("json-1k");
    let first = json.wire_in;
    assert!(first < json.size / 2, "{} bytes of JSON came back in {first} bytes", json.size);
    let sizes: Vec<usize> = report.repeats().iter().map(|m| m.wire_in).collect();
    assert!(sizes.iter().all(|&s| s == first), "repeats of a {first}-byte echo: {sizes:?}");
}

#[test]
fn dedicated_mode_takes_context_over_across_messages() {
    let server = server_with(dedicated());
    let report = run_client(&server, Offer::Default);

    assert_eq!(report.agreed_params(), Vec::<&str>::new());
    let expected = Negotiated {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    assert_eq!(report.negotiated, [expected]);
    assert_compressed_on_the_wire(&report, false);
    // Each repeat refers back to the previous one in the sliding window, both ways: the
    // server's compressor keeps its history and its decompressor follows the client's.
    let repeats = report.repeats();
    let (first, later) = repeats.split_first().expect("repeats were sent");
    for m in later {
        assert!(
            m.wire_in < first.wire_in / 4,
            "{}: echo of {} bytes, the first took {}",
            m.name,
            m.wire_in,
            first.wire_in
        );
        assert!(
            m.wire_out < first.wire_out / 4,
            "{}: sent in {} bytes, the first in {}",
            m.name,
            m.wire_out,
            first.wire_out
        );
    }
}

#[test]
fn disabled_deflate_declines_the_offer() {
    let server = server_with(DeflateConfig { enabled: false, ..DeflateConfig::default() });
    let report = run_client(&server, Offer::Default);

    assert_eq!(report.response_extensions, None);
    assert_eq!(report.negotiated, []);
    for m in &report.messages {
        assert!(!m.rsv1_in && !m.rsv1_out, "{} was compressed without the extension", m.name);
        // RFC 6455 §5.2: 2 header bytes, plus 2 or 8 of extended length.
        let header = match m.size {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        assert_eq!(m.wire_in, header + m.size, "{}: plain echo of {} bytes", m.name, m.size);
    }
}

#[test]
fn requested_window_bits_are_echoed_and_honoured() {
    let dedicated_params = ["client_max_window_bits=9", "server_max_window_bits=10"];
    let shared_params = [
        "client_max_window_bits=9",
        "client_no_context_takeover",
        "server_max_window_bits=10",
        "server_no_context_takeover",
    ];
    for (deflate, expected) in [(DeflateConfig::default(), &shared_params[..]), (dedicated(), &dedicated_params[..])] {
        let mode = deflate.mode;
        let server = server_with(deflate);
        let report = run_client(&server, Offer::SmallWindows);

        assert_eq!(report.agreed_params(), expected, "{mode:?}");
        let negotiated = report.negotiated.first().expect("websockets agreed to permessage-deflate");
        assert_eq!((negotiated.server_max_window_bits, negotiated.client_max_window_bits), (10, 9), "{mode:?}");
        // websockets inflates with a 10-bit window, so a server that reached further back
        // would have failed the client (in dedicated mode, repeats just over 1 KiB apart tempt it).
        assert_compressed_on_the_wire(&report, mode == DeflateMode::Shared);
    }
}

/// The venv's interpreter, with `websockets` installed; created once per target dir and
/// shared by every test process (see [`create_venv`]). If that failed, every test fails
/// with the same message without trying again.
fn client_python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target dir");
        let venv = target.join("py-websockets-venv").join(format!("websockets-{WEBSOCKETS_VERSION}"));
        if !venv.exists() {
            create_venv(&venv)?;
        }
        Ok(venv.join("bin").join("python"))
    });
    python.as_deref().unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the venv in a staging dir of this process and renames it into place, so `venv`
/// exists only when complete, and two test processes racing both end up using a whole one.
fn create_venv(venv: &Path) -> Result<(), String> {
    let parent = venv.parent().expect("the venv has a parent dir");
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = parent.join(format!(".staging-{}", std::process::id()));
    // A leftover of a killed run that had the same pid.
    let _ = std::fs::remove_dir_all(&staging);
    let result = install_websockets(&staging).and_then(|()| {
        // The interpreter finds its venv through `pyvenv.cfg` beside `bin/`, so it survives
        // the move.
        match std::fs::rename(&staging, venv) {
            Ok(()) => Ok(()),
            // Another test process got there first; its venv is as good as ours.
            Err(_) if venv.exists() => Ok(()),
            Err(e) => Err(format!("cannot move the venv into {}: {e}", venv.display())),
        }
    });
    // Nothing left after a rename; otherwise a failed or redundant attempt.
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn install_websockets(venv: &Path) -> Result<(), String> {
    let requirement = format!("websockets=={WEBSOCKETS_VERSION}");
    let need =
        format!("these tests need python3 (3.11 or later, with the venv module) on PATH and {requirement} from PyPI");
    let created = run(Command::new("python3").arg("-m").arg("venv").arg(venv), INSTALL_TIMEOUT)
        .map_err(|e| format!("{need}; {e}"))?;
    if !created.status.success() {
        return Err(format!("{need}; `python3 -m venv` failed ({}):\n{}", created.status, created.stderr));
    }
    let pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input", &requirement];
    let installed = run(Command::new(venv.join("bin").join("python")).args(pip), INSTALL_TIMEOUT)
        .map_err(|e| format!("{need}; {e}"))?;
    if !installed.status.success() {
        return Err(format!(
            "{need}; pip install failed ({}):\n{}{}",
            installed.status, installed.stdout, installed.stderr
        ));
    }
    Ok(())
}

/// A finished child process.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` without stdin, collecting its output. Fails if it cannot start or takes
/// longer than `timeout` (then it is killed).
fn run(command: &mut Command, timeout: Duration) -> Result<Run, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    // Drained on their own threads, so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("waiting for {command:?}: {e}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{command:?} did not finish within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Run { status, stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader") })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
