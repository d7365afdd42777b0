//! The rustls client config for `wss://`, shared by `wsedge chat` ([`super::Client`]) and
//! `wsedge bench`: trusting only `--ca FILE` (PEM; no system roots: the build carries no
//! root store), or any certificate with `--insecure` (a test certificate on loopback).
//! No IO: the sessions live with their sockets (`super::Stream`, `bench/conn.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Whom a `wss://` client trusts: the flags of `wsedge chat` and `wsedge bench`.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// For a wss:// URL: the PEM certificate(s) to trust (the server's CA, or its
    /// self-signed certificate). Default: none (then --insecure is needed).
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

/// A client config for `wss://`: trusting the certificates in `ca` (PEM), or, with
/// `insecure`, any certificate (signatures are still checked, so the handshake costs what
/// a verified one does, less the chain walk).
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
    } else {
        let Some(ca) = ca else {
            return Err(
                "a wss:// URL needs --ca FILE (the server's CA or self-signed certificate, PEM) or --insecure".into()
            );
        };
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("{}: {e}", ca.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{}: no usable certificate", ca.display()));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
