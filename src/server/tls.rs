//! TLS configuration: the certificate and key (PEM), the rustls `ServerConfig` every worker
//! shares, and certificate reload. The per-connection TLS state (a `rustls::ServerConnection`
//! driven sans-IO) lives in `conn.rs`; this module never touches a socket.
//!
//! Certificates are served through a [`ResolvesServerCert`] whose current `CertifiedKey` is
//! swapped on reload (SIGHUP, or [`TlsConfig::reload`]): handshakes after the swap get the new
//! certificate, connections already open keep their session. A reload that fails leaves the
//! old certificate in place.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// ALPN protocol ids the server offers (RFC 7301): a WebSocket upgrade is HTTP/1.1.
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// Plaintext (and TLS records) rustls may hold per connection before it refuses more: the
/// write path feeds it only when it has sent everything, so this bounds what it buffers.
pub(crate) const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// Why a certificate or key could not be loaded; `Display` names the file (or the PEM
/// source) and the problem, for a startup error an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// The file (or "certificate PEM" / "key PEM" when given as bytes).
    pub source_name: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source_name, self.problem)
    }
}

impl std::error::Error for TlsError {}

/// The TLS side of `server::Config`. Clones share one certificate store: reloading through
/// any clone (the one kept by a test, the one in each worker's config) changes what every
/// worker serves.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    store: Arc<CertStore>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("files", &self.store.files).finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// From PEM files: `cert` holds the chain (leaf first), `key` a PKCS#8, PKCS#1 (RSA) or
    /// SEC1 (EC) private key. The paths are kept for [`TlsConfig::reload`].
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let certified = load_files(cert, key)?;
        TlsConfig::build(certified, Some((cert.to_owned(), key.to_owned())))
    }

    /// From PEM bytes (tests, embedding); such a config reloads only by
    /// [`TlsConfig::replace_pem`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        let certified = certified_key(cert_pem, "certificate PEM", key_pem, "key PEM")?;
        TlsConfig::build(certified, None)
    }

    fn build(certified: CertifiedKey, files: Option<(PathBuf, PathBuf)>) -> Result<TlsConfig, TlsError> {
        let store = Arc::new(CertStore { current: RwLock::new(Arc::new(certified)), files });
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError { source_name: "TLS configuration".into(), problem: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsConfig { server: Arc::new(server), store })
    }

    /// Reads the certificate and key files again and serves them to new connections. On
    /// error the current certificate stays. Errors for a config made from PEM bytes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert, key)) = &self.store.files else {
            return Err(TlsError {
                source_name: "TLS configuration".into(),
                problem: "made from PEM bytes: no files to reload".into(),
            });
        };
        let certified = load_files(cert, key)?;
        self.store.replace(certified);
        Ok(())
    }

    /// Serves a new certificate and key (PEM) to new connections; on error the current
    /// ones stay.
    pub fn replace_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let certified = certified_key(cert_pem, "certificate PEM", key_pem, "key PEM")?;
        self.store.replace(certified);
        Ok(())
    }

    /// A fresh server-side session for one accepted socket.
    pub(crate) fn new_session(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        let mut session = rustls::ServerConnection::new(self.server.clone())?;
        session.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(session)
    }
}

/// The certificate every worker serves, swapped whole on reload.
#[derive(Debug)]
struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    files: Option<(PathBuf, PathBuf)>,
}

impl CertStore {
    fn replace(&self, certified: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError { source_name: path.display().to_string(), problem: e.to_string() })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    certified_key(&cert_pem, &cert.display().to_string(), &key_pem, &key.display().to_string())
}

/// Parses a PEM chain and key and checks that the key belongs to the leaf certificate.
fn certified_key(cert_pem: &[u8], cert_name: &str, key_pem: &[u8], key_name: &str) -> Result<CertifiedKey, TlsError> {
    let cert_error = |problem: String| TlsError { source_name: cert_name.to_owned(), problem };
    let key_error = |problem: String| TlsError { source_name: key_name.to_owned(), problem };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE found in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| key_error(format!("no usable private key (PKCS#8, RSA or EC PEM expected): {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            key_error(format!("this key does not belong to the certificate in {cert_name}"))
        }
        rustls::Error::InvalidCertificate(e) => cert_error(format!("unusable certificate: {e:?}")),
        e => key_error(format!("unusable key: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed EC certificate for `localhost` and its PKCS#8 key, made by rcgen.
    fn generated() -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key)
    }

    #[test]
    fn loads_a_chain_and_its_key() {
        let (cert, key) = generated();
        let config = TlsConfig::from_pem(cert.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        assert!(config.store.files.is_none());
        assert_eq!(config.server.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_and_named() {
        let (cert, _) = generated();
        let (_, other_key) = generated();
        let err = TlsConfig::from_pem(cert.as_bytes(), other_key.serialize_pem().as_bytes()).unwrap_err();
        assert_eq!(err.source_name, "key PEM");
        assert!(err.problem.contains("does not belong"), "{err}");
    }

    #[test]
    fn missing_or_empty_pem_is_named() {
        let (cert, key) = generated();
        let err = TlsConfig::from_pem(b"", key.serialize_pem().as_bytes()).unwrap_err();
        assert_eq!(err.source_name, "certificate PEM");
        let err = TlsConfig::from_pem(cert.as_bytes(), b"not a key").unwrap_err();
        assert_eq!(err.source_name, "key PEM");
        let err =
            TlsConfig::from_files(Path::new("/nonexistent/cert.pem"), Path::new("/nonexistent/key.pem")).unwrap_err();
        assert_eq!(err.source_name, "/nonexistent/cert.pem");
    }

    #[test]
    fn a_failed_replace_keeps_the_current_certificate() {
        let (cert, key) = generated();
        let config = TlsConfig::from_pem(cert.as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        let before = config.store.current.read().unwrap().cert.clone();
        assert!(config.replace_pem(cert.as_bytes(), b"garbage").is_err());
        assert!(config.reload().is_err(), "no files to reload from");
        assert_eq!(config.store.current.read().unwrap().cert, before);
        let (cert2, key2) = generated();
        config.replace_pem(cert2.as_bytes(), key2.serialize_pem().as_bytes()).unwrap();
        assert_ne!(config.store.current.read().unwrap().cert, before);
    }
}
