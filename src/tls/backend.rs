//! The client side towards https:// backends, built once per config from `[pool.tls]`: which
//! roots the backend's certificate must chain to, the name it must carry, and the certificate
//! the balancer presents when the backend asks for one.

use super::{load_certs, load_key, provider, AcceptAnyServer, TlsError};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Where the backend's certificate must chain to.
pub enum Trust<'a> {
    /// Any certificate is accepted (`verify = false`); handshake signatures are still checked.
    Anything,
    /// The CA certificates in this PEM file.
    CaFile(&'a Path),
    /// The operating system's root store.
    SystemRoots,
}

/// What `[pool.tls]` asks for, with paths resolved.
pub struct BackendTlsSpec<'a> {
    pub trust: Trust<'a>,
    pub server_name: Option<&'a str>,
    /// Client certificate and key files.
    pub identity: Option<(&'a Path, &'a Path)>,
}

/// The `[pool.tls]` key a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTlsKey {
    Ca,
    Cert,
    Key,
    ServerName,
}

impl BackendTlsKey {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendTlsKey::Ca => "ca",
            BackendTlsKey::Cert => "cert",
            BackendTlsKey::Key => "key",
            BackendTlsKey::ServerName => "server_name",
        }
    }
}

/// A pool's ready client config; connections only clone `Arc`s from it.
#[derive(Debug)]
pub struct BackendTls {
    pub config: Arc<ClientConfig>,
    /// Checked against the backend's certificate instead of each url's host.
    pub server_name: Option<ServerName<'static>>,
    /// A digest of everything the config was built from (files' contents included): equal
    /// digests verify alike, so a connection opened under one may be reused under the other.
    pub settings: [u8; 32],
}

impl BackendTls {
    pub fn build(spec: &BackendTlsSpec<'_>) -> Result<BackendTls, (BackendTlsKey, TlsError)> {
        let server_name = spec
            .server_name
            .map(|n| {
                ServerName::try_from(n.to_string()).map_err(|e| {
                    (
                        BackendTlsKey::ServerName,
                        TlsError::Verifier(format!("`{n}`: {e}")),
                    )
                })
            })
            .transpose()?;
        let mut settings = Sha256::new();
        settings.update(spec.server_name.unwrap_or("").as_bytes());
        settings.update([0]);
        let identity = match spec.identity {
            Some((cert, key)) => Some((
                load_certs(cert).map_err(|e| (BackendTlsKey::Cert, e))?,
                load_key(key).map_err(|e| (BackendTlsKey::Key, e))?,
            )),
            None => None,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| (BackendTlsKey::Ca, e.into()))?;
        if let Some((certs, key)) = &identity {
            for c in certs {
                settings.update(c.as_ref());
            }
            settings.update(key.secret_der());
        }
        let builder = match spec.trust {
            Trust::Anything => {
                settings.update(b"unverified");
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
            }
            Trust::CaFile(path) => {
                let ca = load_certs(path).map_err(|e| (BackendTlsKey::Ca, e))?;
                settings.update(b"ca");
                for c in &ca {
                    settings.update(c.as_ref());
                }
                builder.with_root_certificates(roots_of(ca).map_err(|e| (BackendTlsKey::Ca, e))?)
            }
            Trust::SystemRoots => {
                settings.update(b"system roots");
                builder.with_root_certificates(system_roots().map_err(|e| (BackendTlsKey::Ca, e))?)
            }
        };
        let config = match identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| (BackendTlsKey::Key, e.into()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(BackendTls {
            config: Arc::new(config),
            server_name,
            settings: settings.finalize().into(),
        })
    }

    /// The name the backend at `host` must prove.
    pub fn name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => ServerName::try_from(host.to_string()).map_err(|e| e.to_string()),
        }
    }
}

fn roots_of(certs: Vec<CertificateDer<'static>>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

/// The system store, read once per process: it is hundreds of files, and a reload must not
/// read them again.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or("none found".to_string(), |e| e.to_string());
                return Err(why);
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(TlsError::NoSystemRoots)
}
