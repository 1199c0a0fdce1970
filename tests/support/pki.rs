//! A test CA issuing front-door certificates (rcgen), and a TLS client that reports which
//! certificate the front door served for a given SNI.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, as PEM text.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "front door test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A leaf for `names`, valid until midnight UTC of `until` (year, month, day).
    pub fn leaf(&self, names: &[&str], until: (i32, u8, u8)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let not_after = chrono::NaiveDate::from_ymd_opt(until.0, until.1.into(), until.2.into())
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            not_after,
        }
    }
}

impl Leaf {
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }
}

/// A TLS session with the front door, sending `sni` (none for `None`); the certificate is not
/// checked, only recorded.
pub async fn connect(addr: SocketAddr, sni: Option<&str>) -> TlsStream<TcpStream> {
    let mut cfg = (*qlik_lb::tls::client_config_from(None, Vec::new(), false).unwrap()).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        // rustls sends no SNI for an IP address.
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// The leaf certificate the front door serves for `sni`.
pub async fn served(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let s = connect(addr, sni).await;
    s.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}
