//! The client side against tokio-rustls's server over real loopback sockets: the certificate is
//! checked, bytes go both ways across session tickets and a server's key update, and no buffer is
//! kept between exchanges.

use super::test_pki::{self, localhost, pattern};
use super::TlsClientStream;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

struct Pki {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// A server certificate for `localhost` and a client trusting `trusted` (the server's own when
/// `None`).
fn pki(trusted: Option<CertificateDer<'static>>) -> Pki {
    let (server, client) = test_pki::configs(rustls::DEFAULT_VERSIONS, trusted);
    Pki { server, client }
}

/// A tokio-rustls server that echoes until close_notify, asking for a key update after its
/// first answer, and then closes with its own close_notify.
async fn echo_server(
    server: Arc<ServerConfig>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let mut buf = vec![0u8; 5000];
        let mut answered = false;
        loop {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n]).await?;
            if !answered {
                answered = true;
                tls.get_mut()
                    .1
                    .refresh_traffic_keys()
                    .map_err(io::Error::other)?;
            }
        }
        tls.shutdown().await
    });
    (addr, task)
}

#[tokio::test]
async fn bytes_go_both_ways_across_tickets_and_a_server_key_update_and_nothing_is_held_between() {
    let pki = pki(None);
    let (addr, server) = echo_server(pki.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut client = TlsClientStream::connect(tcp, pki.client.clone(), localhost())
        .await
        .unwrap();
    // Sizes the loopback socket buffers hold whole, so writing all before reading cannot stall.
    for size in [10usize, 30_000, 60_000] {
        let sent = pattern(size);
        let mut back = vec![0u8; size];
        client.write_all(&sent).await.unwrap();
        client.flush().await.unwrap();
        client.read_exact(&mut back).await.unwrap();
        assert!(back == sent, "the echo of {size} bytes differs");
        assert_eq!(
            (
                client.incoming.capacity(),
                client.plaintext.capacity(),
                client.outgoing.capacity()
            ),
            (0, 0, 0),
            "after an exchange of {size} bytes"
        );
    }
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_certificate_from_another_issuer_fails_the_handshake_with_rustls_reason() {
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pki = pki(Some(other.cert.der().clone()));
    let (addr, server) = echo_server(pki.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = TlsClientStream::connect(tcp, pki.client.clone(), localhost())
        .await
        .err()
        .expect("an untrusted certificate is refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let reason = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .expect("rustls's error inside");
    assert!(
        matches!(reason, rustls::Error::InvalidCertificate(_)),
        "{reason:?}"
    );
    // The server heard why: the alert went out before the error was returned.
    let server_err = server
        .await
        .unwrap()
        .expect_err("the server's handshake fails");
    assert!(
        server_err.to_string().to_lowercase().contains("alert"),
        "{server_err}"
    );
}

#[tokio::test]
async fn a_name_the_certificate_does_not_carry_is_refused() {
    let pki = pki(None);
    let (addr, _server) = echo_server(pki.server.clone()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = TlsClientStream::connect(
        tcp,
        pki.client.clone(),
        ServerName::try_from("qs-node1.example.test").unwrap(),
    )
    .await
    .err()
    .expect("a certificate for another name is refused");
    let reason = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .expect("rustls's error inside");
    assert!(
        matches!(reason, rustls::Error::InvalidCertificate(_)),
        "{reason:?}"
    );
}
