//! Generated certificates for the simulated site: a CA, a server certificate for localhost and
//! 127.0.0.1, and a client certificate, all signed by the CA — the same three files the QMC
//! exports (`root.pem`, `client.pem`, `client_key.pem`), plus the server's pair.

use crate::tls::{self, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ServerConfig};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// One PEM certificate with its key, and the DER forms rustls wants.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl CertPair {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

#[derive(Clone)]
pub struct SimCerts {
    pub ca: CertPair,
    pub server: CertPair,
    pub client: CertPair,
}

impl SimCerts {
    /// A fresh CA with a server and a client certificate signed by it.
    pub fn generate() -> Result<SimCerts, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "qlik-lb simulated site CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let leaf = |sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
            Ok::<_, rcgen::Error>(pair(&cert, &key))
        };
        let server = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let client = leaf(vec![], "QlikClient", ExtendedKeyUsagePurpose::ClientAuth)?;
        Ok(SimCerts {
            ca: pair(&ca_cert, &ca_key),
            server,
            client,
        })
    }

    /// Writes `root.pem`, `client.pem`, `client_key.pem`, `server.pem` and `server_key.pem`.
    pub fn write_to(&self, dir: &Path) -> Result<(), CertError> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        let files = [
            ("root.pem", &self.ca.cert_pem),
            ("client.pem", &self.client.cert_pem),
            ("client_key.pem", &self.client.key_pem),
            ("server.pem", &self.server.cert_pem),
            ("server_key.pem", &self.server.key_pem),
        ];
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| CertError::Write {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// The server side: presents the server certificate, requires a client certificate from the CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        tls::server_config_from(
            vec![self.server.cert_der.clone()],
            self.server.key(),
            Some(vec![self.ca.cert_der.clone()]),
        )
    }

    /// The client side: presents the client certificate and verifies the server against the CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        tls::client_config_from(
            Some((vec![self.client.cert_der.clone()], self.client.key())),
            vec![self.ca.cert_der.clone()],
            true,
        )
    }

    /// A client that trusts the CA but has no certificate of its own (must be refused).
    pub fn anonymous_client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        tls::client_config_from(None, vec![self.ca.cert_der.clone()], true)
    }
}

fn pair(cert: &rcgen::Certificate, key: &KeyPair) -> CertPair {
    CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}
