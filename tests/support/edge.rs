//! Pieces for the edge tests: a client socket bound to a chosen loopback source (Linux routes
//! all of 127/8 to lo, so 127.0.0.2 is a second client address), PROXY protocol headers as a
//! load balancer writes them, and a self-signed certificate for a TLS frontend.

use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `addr` from `source` (any port).
pub async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().expect("source address");
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    let s = socket.connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// `PROXY TCP4 <client> 10.0.0.1 <port> 443\r\n`
pub fn proxy_v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.1 {port} 443\r\n").into_bytes()
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 `PROXY` header for a TCP over IPv4 client, with one TLV after the addresses (as AWS
/// NLB sends its endpoint id), so the length field covers more than the addresses.
pub fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut tail = Vec::new();
    tail.extend(client);
    tail.extend([10, 0, 0, 1]);
    tail.extend(port.to_be_bytes());
    tail.extend(443u16.to_be_bytes());
    tail.extend([0xEA, 0, 4, b'v', b'p', b'c', b'e']);
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x21, 0x11]);
    h.extend((tail.len() as u16).to_be_bytes());
    h.extend(tail);
    h
}

/// A v2 `LOCAL` header (a load balancer's own health check): no addresses.
pub fn proxy_v2_local() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    h
}

pub struct Cert {
    _dir: tempfile::TempDir,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

/// A certificate for `localhost`.
pub fn self_signed() -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("lb.pem");
    let key = dir.path().join("lb-key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    Cert {
        der: ck.cert.der().clone(),
        _dir: dir,
        cert,
        key,
    }
}

/// The `tls = { .. }` line of a frontend serving the pair in these files.
pub fn frontend_tls(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    )
}

impl Cert {
    /// The `tls = { .. }` line of a frontend serving this certificate.
    pub fn frontend_tls(&self) -> String {
        frontend_tls(&self.cert, &self.key)
    }

    /// A TLS handshake for `localhost` over `tcp`, trusting only this certificate.
    pub async fn connect(&self, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
        let cfg = qlik_lb::tls::client_config_from(None, vec![self.der.clone()], true).unwrap();
        tokio_rustls::TlsConnector::from(cfg)
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .expect("TLS handshake")
    }
}
