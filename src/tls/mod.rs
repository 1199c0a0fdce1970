//! TLS configuration from PEM files: the front door's certificates (`frontend`), the client side
//! towards https backends (`backend`), and the mutual-TLS client identity exported from the QMC
//! (client.pem, client_key.pem, root.pem).

pub mod backend;
pub mod frontend;
pub mod stream;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCert { path: String },
    #[error("{path} holds no PEM private key (PKCS#1, PKCS#8 or SEC1)")]
    NoKey { path: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("{path}: not a readable X.509 certificate: {reason}")]
    BadCert { path: String, reason: String },
    #[error("{key} does not go with {cert}: {reason}")]
    Pair {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("no system root certificates could be read ({0}); set ca")]
    NoSystemRoots(String),
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    certs_from_pem(&data).ok_or_else(|| TlsError::NoCert {
        path: path.display().to_string(),
    })
}

pub fn certs_from_pem(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    (!certs.is_empty()).then_some(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    key_from_pem(&data).ok_or_else(|| TlsError::NoKey {
        path: path.display().to_string(),
    })
}

pub fn key_from_pem(pem: &[u8]) -> Option<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &pem[..]).ok().flatten()
}

/// A server config; with `client_ca`, a client certificate signed by it is required.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    server_config_from(certs, key, client_ca.map(load_certs).transpose()?)
}

pub fn server_config_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in ca {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The Qlik client identity: presents `cert`/`key`; checks the server against `ca` only when
/// `verify_server` (QMC-exported server certificates often do not match the DNS name used).
pub fn qlik_client_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
    verify_server: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let ca = load_certs(ca)?;
    client_config_from(Some((certs, key)), ca, verify_server)
}

pub fn client_config_from(
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ca: Vec<CertificateDer<'static>>,
    verify_server: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if verify_server {
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c)?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
    };
    let cfg = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate but still checks the handshake signatures.
#[derive(Debug)]
pub(crate) struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
