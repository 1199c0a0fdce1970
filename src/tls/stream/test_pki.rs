//! What both sides' stream tests share: a `localhost` certificate with a server config that
//! serves it and a client config, and a byte pattern to send.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;

/// A server config (rustls's default versions, 1.3 and 1.2) serving a fresh certificate for
/// `localhost`, and a client config offering `client_versions` that trusts `trusted` (the
/// server's own certificate when `None`).
pub fn configs(
    client_versions: &[&'static rustls::SupportedProtocolVersion],
    trusted: Option<CertificateDer<'static>>,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(trusted.unwrap_or(der)).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(client_versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// Bytes that are not all alike, so a reordered or shifted echo shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}
