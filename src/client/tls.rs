//! The rustls client config for `wss://`, shared by `wsedge chat` ([`super::Client`]) and
//! `wsedge bench`: trusting the system's root certificates (what `openssl` would: the
//! platform store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), or only `--ca FILE` (PEM), or any
//! certificate with `--insecure` (a test certificate on loopback).
//! No IO but reading those files: the sessions live with their sockets (`super::Stream`,
//! `bench/conn.rs`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Whom a `wss://` client trusts: the flags of `wsedge chat` and `wsedge bench`.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// For a wss:// URL: the PEM certificate(s) to trust (the server's CA, or its
    /// self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For a wss:// URL: accept any server certificate (loopback tests).
    #[arg(long)]
    pub insecure: bool,
}

impl TrustArgs {
    /// [`client_config`] for these flags.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        client_config(self.ca.as_deref(), self.insecure)
    }
}

/// A client config for `wss://`: trusting the certificates in `ca` (PEM), or the system's
/// roots without one, or, with `insecure`, any certificate (signatures are still checked,
/// so the handshake costs what a verified one does, less the chain walk).
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
    } else {
        let roots = match ca {
            Some(ca) => file_roots(ca)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates in the PEM file `ca`.
fn file_roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no usable certificate", ca.display()));
    }
    Ok(roots)
}

/// The system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set). Files that
/// fail to load are skipped as long as some roots load; none at all is an error.
fn system_roots() -> Result<RootCertStore, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let why = loaded.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!(
            "no system root certificates found{why}: for a wss:// URL pass --ca FILE (the server's CA or \
             self-signed certificate, PEM) or --insecure"
        ));
    }
    Ok(roots)
}

/// What to do about a server certificate rustls refused, where its error alone leaves a
/// newcomer stuck: a CA certificate served as the server's own (webpki's
/// `CaUsedAsEndEntity`; `openssl req -x509` makes one with its default config) gets the
/// command for an end-entity certificate. `host` is the URL's host. `None`: nothing to add.
pub fn certificate_advice(error: &rustls::Error, host: &str) -> Option<String> {
    let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = error else {
        return None;
    };
    // rustls passes webpki's reasons it has no variant for as `Other`.
    if other.0.downcast_ref::<webpki::Error>() != Some(&webpki::Error::CaUsedAsEndEntity) {
        return None;
    }
    let host = host.trim_matches(['[', ']']);
    let san = if host.parse::<IpAddr>().is_ok() { format!("IP:{host}") } else { format!("DNS:{host}") };
    Some(format!(
        "the server's certificate is a CA certificate (basicConstraints CA:TRUE), which TLS clients refuse as \
         a server's own. Serve an end-entity certificate instead, e.g. `openssl req -x509 -newkey ec -pkeyopt \
         ec_paramgen_curve:prime256v1 -nodes -days 365 -subj /CN={host} -addext \
         basicConstraints=critical,CA:FALSE -addext subjectAltName={san} -keyout key.pem -out cert.pem` (then \
         --ca cert.pem here); or sign a certificate for {host} with this CA, serve that, and pass the CA with --ca"
    ))
}

/// `--insecure`: accepts any server certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webpki_refusal(error: webpki::Error) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(error))))
    }

    #[test]
    fn a_ca_certificate_as_the_servers_own_gets_the_command_for_an_end_entity_one() {
        let advice = certificate_advice(&webpki_refusal(webpki::Error::CaUsedAsEndEntity), "127.0.0.1").unwrap();
        assert!(advice.contains("-addext basicConstraints=critical,CA:FALSE"), "{advice}");
        assert!(advice.contains("subjectAltName=IP:127.0.0.1") && advice.contains("--ca"), "{advice}");
        let advice = certificate_advice(&webpki_refusal(webpki::Error::CaUsedAsEndEntity), "chat.example").unwrap();
        assert!(advice.contains("subjectAltName=DNS:chat.example"), "{advice}");
        let advice = certificate_advice(&webpki_refusal(webpki::Error::CaUsedAsEndEntity), "[::1]").unwrap();
        assert!(advice.contains("subjectAltName=IP:::1"), "{advice}");
    }

    #[test]
    fn other_refusals_get_no_advice() {
        assert_eq!(certificate_advice(&webpki_refusal(webpki::Error::EndEntityUsedAsCa), "h"), None);
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(certificate_advice(&unknown, "h"), None);
    }
}
