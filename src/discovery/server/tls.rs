//! Server-to-server TLS (`--tls-cert`, `--tls-key`, `--tls-ca`): both ends
//! present a certificate signed by the CA and check the other's (mutual
//! TLS), so only nodes holding a CA-signed key can join, replicate or
//! forward writes. Like Consul's `verify_incoming` + `verify_outgoing`
//! without `verify_server_hostname`, the chain is checked but not the name:
//! servers are dialled by IP address and certificates need not list them.
//! rustls with the ring provider; no OpenSSL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The three files of `--tls-cert/--tls-key/--tls-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Install ring as the process's default rustls provider (for reqwest's
/// HTTPS health checks); harmless when called twice.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn roots(files: &TlsFiles) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for c in certs(&files.ca, "--tls-ca")? {
        roots
            .add(c)
            .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
    }
    Ok(Arc::new(roots))
}

/// A failed pairing of `--tls-cert` and `--tls-key`, naming both files.
fn pair_error(files: &TlsFiles, e: &rustls::Error) -> String {
    let why = match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the key is not the private key of the certificate; give the key the \
             certificate was issued for"
                .to_string()
        }
        other => format!("{other} (is the certificate a valid X.509 certificate?)"),
    };
    format!(
        "--tls-cert {} / --tls-key {}: {why}",
        files.cert.display(),
        files.key.display()
    )
}

fn key(files: &TlsFiles) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "--tls-key {}: {e} (a PEM PKCS#8, PKCS#1 or SEC1 private key is needed)",
            files.key.display()
        )
    })
}

/// The client side: present our certificate, check the server's chain.
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    let inner = WebPkiServerVerifier::builder_with_provider(roots(files)?, provider())
        .build()
        .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
        .with_client_auth_cert(certs(&files.cert, "--tls-cert")?, key(files)?)
        .map_err(|e| pair_error(files, &e))
}

/// The server side: require a client certificate signed by the CA.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(files)?, provider())
        .build()
        .map_err(|e| format!("--tls-ca {}: {e}", files.ca.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert, "--tls-cert")?, key(files)?)
        .map_err(|e| pair_error(files, &e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Checks the chain against the CA, not the name (see the module doc).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
