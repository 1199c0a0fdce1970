//! `max_connections_per_ip` (PRODUCT.md §3.1 "Limits and timeouts"): above it a new connection
//! from that client address is closed at accept and counted, while other addresses are served;
//! a connection that ends (a WebSocket tunnel included) gives its place back; the client is the
//! PROXY header's address when `proxy_protocol` is on; a reload changes the limit.

mod support;

use futures_util::{SinkExt, StreamExt};
use qlik_lb::app::Instance;
use qlik_lb::config::Config;
use qlik_lb::reload::Trigger;
use std::net::SocketAddr;
use std::time::Duration;
use support::door::Client;
use support::edge::{connect_from, proxy_v1};
use support::{frontdoor_config, frontdoor_over, metric_reaches, raw, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const REFUSED: &str = "qlb_client_errors_total{frontend=\"public\",kind=\"per_ip_limit\"}";
const GET: &[u8] = b"GET /hub HTTP/1.1\r\nHost: qlik.example\r\n\r\n";

/// One request on `s`; the answer's status, or `None` when the proxy closed without one.
async fn status_on(s: TcpStream, prefix: &[u8]) -> (Option<u16>, Client) {
    let mut client = Client::new(s);
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(GET);
    let _ = client.s.write_all(&bytes).await;
    let (replies, closed) = client.read_answers(1, Duration::from_secs(5)).await;
    let status = replies.first().map(|r| r.status);
    assert!(status.is_some() || closed, "neither answered nor closed");
    (status, client)
}

async fn status_from(source: &str, addr: SocketAddr) -> (Option<u16>, Client) {
    status_on(connect_from(source, addr).await, b"").await
}

/// Polls new connections from `source` until one is served, or fails after `secs`.
async fn served_again(source: &str, addr: SocketAddr, secs: u64) -> Client {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let (Some(200), c) = status_from(source, addr).await {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{source} not served again within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_third_connection_from_one_address_is_closed_while_others_are_served() {
    let (_nodes, lb) = frontdoor_over(&["node1"], "", "max_connections_per_ip = 2").await;
    let addr = lb.frontend_addr("public").unwrap();
    within(30, async {
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/app/per-ip"))
            .await
            .expect("a tunnel is the first connection");
        assert_eq!(resp.status(), 101);
        let (second, _kept) = status_from("127.0.0.1", addr).await;
        assert_eq!(second, Some(200));

        let (third, _) = status_from("127.0.0.1", addr).await;
        assert_eq!(third, None, "closed at accept, no answer");
        metric_reaches(&lb, REFUSED, 1.0, 5).await;
        let (other, _) = status_from("127.0.0.2", addr).await;
        assert_eq!(other, Some(200), "another address is served meanwhile");

        // The tunnel still works, then ends and gives its place back.
        ws.send(Message::text("ping")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
        drop(ws);
        served_again("127.0.0.1", addr, 5).await;
    })
    .await;
}

#[tokio::test]
async fn with_proxy_protocol_the_headers_address_is_counted() {
    let (_nodes, lb) = frontdoor_over(
        &["node1"],
        "",
        "max_connections_per_ip = 1\nproxy_protocol = true",
    )
    .await;
    let addr = lb.frontend_addr("public").unwrap();
    within(20, async {
        let (first, _kept) = status_on(
            TcpStream::connect(addr).await.unwrap(),
            &proxy_v1("203.0.113.7", 1),
        )
        .await;
        assert_eq!(first, Some(200));
        let (same, _) = status_on(
            TcpStream::connect(addr).await.unwrap(),
            &proxy_v1("203.0.113.7", 2),
        )
        .await;
        assert_eq!(same, None, "the same client behind the load balancer");
        metric_reaches(&lb, REFUSED, 1.0, 5).await;
        let (other, _) = status_on(
            TcpStream::connect(addr).await.unwrap(),
            &proxy_v1("203.0.113.8", 3),
        )
        .await;
        assert_eq!(other, Some(200), "another client through the same peer");
    })
    .await;
}

#[tokio::test]
async fn a_reload_changes_the_limit() {
    let node = support::backend::TestBackend::start("node1").await;
    let text = frontdoor_config(
        &[("node1", node.addr_string())],
        "",
        "max_connections_per_ip = 1",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qlik-lb.toml");
    std::fs::write(&path, &text).unwrap();
    let lb = Instance::start(Config::load(&path).unwrap()).await.unwrap();
    let addr = lb.frontend_addr("public").unwrap();
    within(20, async {
        let (first, _kept) = status_from("127.0.0.1", addr).await;
        assert_eq!(first, Some(200));
        assert_eq!(status_from("127.0.0.1", addr).await.0, None);
        std::fs::write(
            &path,
            text.replace("max_connections_per_ip = 1", "max_connections_per_ip = 2"),
        )
        .unwrap();
        let outcome = lb.reload(Trigger::Api).await;
        assert!(outcome.ok, "reload failed: {:?}", outcome.errors);
        let (second, _also_kept) = status_from("127.0.0.1", addr).await;
        assert_eq!(
            second,
            Some(200),
            "the open connection counts; the raised limit lets one more in"
        );
        assert_eq!(status_from("127.0.0.1", addr).await.0, None);
        let mut buf = Vec::new();
        let again = raw::exchange(&mut connect_from("127.0.0.2", addr).await, &mut buf, GET).await;
        assert_eq!(again.status, 200);
    })
    .await;
}
