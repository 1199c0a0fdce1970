//! A TLS front door (rustls, rcgen certificate) serving HTTP and WebSocket, and Windows
//! authentication keeping its backend connection to one client connection.

mod support;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use support::backend::TestBackend;
use support::edge::self_signed;
use support::raw;
use support::{frontdoor_config, start, within};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn connector(der: rustls::pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let cfg = qlik_lb::tls::client_config_from(None, vec![der], true).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
}

#[tokio::test]
async fn a_tls_front_door_serves_http_and_websocket() {
    let a = TestBackend::start("node1").await;
    let cert = self_signed();
    let tls = cert.frontend_tls();
    let lb = start(&frontdoor_config(
        &[("node1", a.addr_string())],
        "  [pool.sticky]\n  same_site = \"Lax\"\n",
        &tls,
    ))
    .await;
    let addr = lb.frontend_addr("public").unwrap();
    let tls = connector(cert.der.clone());
    within(10, async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut s = tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake");
        let mut buf = Vec::new();
        let r = raw::exchange(
            &mut s,
            &mut buf,
            b"GET /hub HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 200);
        let echo = r.json();
        assert_eq!(
            support::backend::seen(&echo, "x-forwarded-proto"),
            ["https"]
        );
        let cookie = r
            .all("set-cookie")
            .into_iter()
            .find(|c| c.starts_with("QLB_ROUTE="))
            .unwrap()
            .to_string();
        assert!(
            cookie.contains("; Secure"),
            "secure = auto sets Secure over TLS: {cookie}"
        );
        // Keep-alive over TLS.
        let again = raw::exchange(
            &mut s,
            &mut buf,
            b"GET /again HTTP/1.1\r\nHost: localhost\r\nCookie: QLB_ROUTE=node1\r\n\r\n",
        )
        .await;
        assert_eq!(again.json()["path"], "/again");

        let tcp = TcpStream::connect(addr).await.unwrap();
        let stream = tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let req = "wss://localhost/app/x".into_client_request().unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
            .await
            .expect("wss upgrade");
        assert_eq!(resp.headers().get("x-backend").unwrap(), "node1");
        for size in [1usize, 200, 70_000] {
            let msg = Message::binary(vec![7u8; size]);
            ws.send(msg.clone()).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), msg);
        }
        ws.close(None).await.ok();
    })
    .await;
}

#[tokio::test]
async fn a_failed_tls_handshake_is_counted() {
    let a = TestBackend::start("node1").await;
    let cert = self_signed();
    let tls = cert.frontend_tls();
    let lb = start(&frontdoor_config(&[("node1", a.addr_string())], "", &tls)).await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        // Plain HTTP spoken to a TLS port.
        let mut s = TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
        support::eventually(5, || {
            lb.shared
                .metrics
                .client_errors_total
                .with_label_values(&["public", "tls"])
                .get()
                == 1
        })
        .await;
    })
    .await;
    assert_eq!(a.request_count(), 0);
}

async fn peer_port(s: &mut TcpStream, buf: &mut Vec<u8>, auth: Option<&str>) -> u64 {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\nCookie: QLB_ROUTE=node1\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    raw::exchange(s, buf, req.as_bytes()).await.json()["peer_port"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn windows_authentication_binds_the_backend_connection_to_one_client() {
    let a = TestBackend::start("node1").await;
    let lb = start(&frontdoor_config(&[("node1", a.addr_string())], "", "")).await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let mut alice = TcpStream::connect(addr).await.unwrap();
        let mut alice_buf = Vec::new();
        let bound = peer_port(
            &mut alice,
            &mut alice_buf,
            Some("NTLM TlRMTVNTUAABAAAAB4IIog=="),
        )
        .await;
        // Other clients never get alice's authenticated backend connection.
        for _ in 0..5 {
            let mut bob = TcpStream::connect(addr).await.unwrap();
            let mut bob_buf = Vec::new();
            assert_ne!(peer_port(&mut bob, &mut bob_buf, None).await, bound);
        }
        // Alice keeps it for the rest of her connection, with or without the header.
        assert_eq!(
            peer_port(
                &mut alice,
                &mut alice_buf,
                Some("NTLM TlRMTVNTUAADAAAAGAAYAA==")
            )
            .await,
            bound
        );
        assert_eq!(peer_port(&mut alice, &mut alice_buf, None).await, bound);
    })
    .await;
}

#[tokio::test]
async fn plain_keep_alive_reuses_backend_connections() {
    let a = TestBackend::start("node1").await;
    let lb = start(&frontdoor_config(&[("node1", a.addr_string())], "", "")).await;
    let addr = lb.frontend_addr("public").unwrap();
    // Each worker thread keeps its own idle connections, and clients are dealt to workers in turn.
    let workers = qlik_lb::threads::workers::worker_count();
    within(10, async {
        let mut ports = std::collections::HashSet::new();
        for _ in 0..5 * workers {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            ports.insert(peer_port(&mut c, &mut buf, None).await);
        }
        assert!(
            ports.len() <= workers,
            "sequential clients share one idle backend connection per worker: {} for {workers} workers",
            ports.len()
        );
    })
    .await;
}
