//! The front door's certificates: pairs loaded from PEM files, and a resolver that serves the one
//! whose DNS names match the client's SNI (the first when none does). The pairs sit behind an
//! `arc-swap`, so a replaced file is served to new handshakes while open connections keep theirs.

use super::{certs_from_pem, key_from_pem, provider, TlsError};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One certificate chain with its key, as read from its two files.
pub struct LoadedCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf (subject alternative names; the common name when there are none),
    /// lower-cased.
    pub names: Vec<String>,
    /// The leaf's notAfter, in seconds since the epoch.
    pub not_after: i64,
    /// sha256 over both files: a change notice for an unchanged pair costs no reload.
    pub fingerprint: [u8; 32],
}

impl LoadedCert {
    /// The name metrics carry: the leaf's first DNS name.
    pub fn first_name(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }

    /// Both files still hold what was loaded.
    pub fn is_current(&self) -> bool {
        match (
            std::fs::read(&self.cert_path),
            std::fs::read(&self.key_path),
        ) {
            (Ok(c), Ok(k)) => fingerprint(&c, &k) == self.fingerprint,
            _ => false,
        }
    }
}

fn fingerprint(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Reads and checks a pair: the key must belong to the leaf certificate (a pair caught between
/// its two files being replaced fails here rather than failing every handshake).
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain = certs_from_pem(&cert_pem).ok_or_else(|| TlsError::NoCert {
        path: cert_path.display().to_string(),
    })?;
    let key = key_from_pem(&key_pem).ok_or_else(|| TlsError::NoKey {
        path: key_path.display().to_string(),
    })?;
    let (names, not_after) = leaf_facts(&chain[0]).map_err(|e| TlsError::BadCert {
        path: cert_path.display().to_string(),
        reason: e,
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Pair {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(LoadedCert {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        key: Arc::new(certified),
        names,
        not_after,
        fingerprint: fingerprint(&cert_pem, &key_pem),
    })
}

/// The leaf's DNS names and notAfter.
fn leaf_facts(der: &[u8]) -> Result<(Vec<String>, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// `*.example.com` covers exactly one label in front of `example.com`.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Picks a frontend's certificate by SNI; the list is replaced whole when a file changes.
#[derive(Debug)]
pub struct SniResolver {
    certs: ArcSwap<Vec<Arc<LoadedCert>>>,
}

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("cert_path", &self.cert_path)
            .field("names", &self.names)
            .finish()
    }
}

impl SniResolver {
    /// `certs` is non-empty: its first entry is served when nothing matches.
    pub fn new(certs: Vec<Arc<LoadedCert>>) -> Arc<SniResolver> {
        assert!(!certs.is_empty(), "a TLS frontend has a certificate");
        Arc::new(SniResolver {
            certs: ArcSwap::from_pointee(certs),
        })
    }

    pub fn certs(&self) -> Arc<Vec<Arc<LoadedCert>>> {
        self.certs.load_full()
    }

    /// New handshakes get `certs` from now on.
    pub fn replace(&self, certs: Vec<Arc<LoadedCert>>) {
        assert!(!certs.is_empty(), "a TLS frontend has a certificate");
        self.certs.store(Arc::new(certs));
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let certs = self.certs.load();
        let matching = sni.and_then(|host| {
            certs
                .iter()
                .find(|c| c.names.iter().any(|n| name_matches(n, host)))
        });
        matching.unwrap_or(&certs[0]).key.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// TLS 1.2 and 1.3, ALPN http/1.1, certificates from `resolver`.
pub fn frontend_server_config(resolver: Arc<SniResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn a_wildcard_covers_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "A.Example.COM"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(name_matches("qs.example.com", "QS.example.com"));
        assert!(!name_matches("qs.example.com", "qs.example.org"));
    }
}
