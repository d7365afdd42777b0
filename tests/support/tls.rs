//! The TLS kit for integration tests: a certificate authority and a `localhost` /
//! `127.0.0.1` certificate made by rcgen ([`Fixture`]), the server side of it
//! ([`server_tls`], for `Config::tls`), and clients that trust it ([`connect`] for a
//! tungstenite client on a `wss://` URL, [`ClientStream`] for raw bytes over TLS).
//!
//! A server started by the harness with `config.tls` set is a TLS server: its `url()` is
//! `wss://`, `stream()` and `http()` speak TLS, and `RoomClient::connect` connects over TLS,
//! all trusting [`fixture`]'s authority. So switching a test to TLS is one line:
//! `Config { tls: Some(support::tls::server_tls()), ..support::config() }`.

use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tungstenite::client::IntoClientRequest;
use tungstenite::WebSocket;

use wsedge::server::TlsConfig;

use super::IO_TIMEOUT;

/// A test certificate authority and one server certificate it issued.
pub struct Fixture {
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The server certificate (PEM), for `localhost` and `127.0.0.1`.
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl Fixture {
    /// A new authority and a server certificate from it.
    pub fn new() -> Fixture {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "wsedge test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
        let (cert_pem, key_pem) = issue(&ca, "wsedge test server");
        Fixture { ca, cert_pem, key_pem }
    }

    /// Another server certificate from the same authority (`name` in its subject), PEM
    /// certificate and key: what a certificate reload switches to.
    pub fn issue(&self, name: &str) -> (String, String) {
        issue(&self.ca, name)
    }

    /// The authority's certificate (DER), which clients trust.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// The authority's certificate as PEM (for `--ca FILE` and the like).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The server side: this fixture's certificate for `Config::tls`.
    pub fn server_tls(&self) -> TlsConfig {
        TlsConfig::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).expect("server TLS config")
    }

    /// A client config trusting this authority, offering ALPN `http/1.1`, with the given
    /// versions (`&[]`: rustls's defaults, 1.3 and 1.2).
    pub fn client_config_with(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("trust the test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = if versions.is_empty() { rustls::DEFAULT_VERSIONS } else { versions };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// [`Fixture::client_config_with`] the default versions.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_with(&[])
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

fn issue(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> (String, String) {
    let key = KeyPair::generate().expect("server key");
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.signed_by(&key, &**ca).expect("server certificate");
    (cert.pem(), key.serialize_pem())
}

/// The test binary's shared fixture (certificates take a moment to make).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}

/// [`fixture`]'s certificate for `Config::tls`.
pub fn server_tls() -> TlsConfig {
    fixture().server_tls()
}

/// A client-side TLS stream, or plain TCP: what the harness's clients talk over (the
/// crate's own client transport).
pub use wsedge::client::Stream as ClientStream;

/// A TCP connection to `addr` with the test timeouts.
pub fn tcp(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the test server");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A tungstenite client on `url` (`ws://` or `wss://` on 127.0.0.1), trusting [`fixture`]:
/// returns the socket and the upgrade response.
pub fn connect(url: &str) -> (WebSocket<ClientStream>, tungstenite::handshake::client::Response) {
    connect_with(url.into_client_request().expect("a client request"), fixture().client_config())
}

/// [`connect`] with a prepared request and client config.
pub fn connect_with(
    request: tungstenite::handshake::client::Request,
    config: Arc<ClientConfig>,
) -> (WebSocket<ClientStream>, tungstenite::handshake::client::Response) {
    let uri = request.uri().clone();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("wss") { 443 } else { 80 });
    let host = uri.host().expect("a host in the URL");
    let addr = format!("{host}:{port}").parse().expect("an IP address in the URL");
    let tcp = tcp(addr);
    let stream = match uri.scheme_str() {
        Some("wss") => ClientStream::tls(tcp, config, "127.0.0.1").expect("TLS handshake"),
        _ => ClientStream::Plain(tcp),
    };
    tungstenite::client(request, stream).expect("WebSocket handshake")
}
