//! WebSockets through the front door: the upgrade follows the sticky cookie, the tunnel carries
//! messages of every size intact, and a dead backend's tunnels are closed.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::raw;
use support::{eventually, frontdoor_over, within};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open_ws(addr: std::net::SocketAddr, cookie: Option<&str>) -> (Ws, String) {
    let mut req = format!("ws://{addr}/app/3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11?reloadUri=x")
        .into_client_request()
        .unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    req.headers_mut()
        .insert("origin", "http://qs.example".parse().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(32 << 20))
        .max_frame_size(Some(32 << 20));
    let (ws, resp) = tokio_tungstenite::client_async_with_config(req, tcp, Some(cfg))
        .await
        .expect("upgrade through the proxy");
    let node = resp
        .headers()
        .get("x-backend")
        .expect("x-backend on the 101")
        .to_str()
        .unwrap()
        .to_string();
    (ws, node)
}

/// Returns once the proxy ended the tunnel (a close frame or the socket closing), not a hang.
async fn closed(ws: &mut Ws) {
    loop {
        match ws.next().await {
            None | Some(Err(_)) => return,
            Some(Ok(m)) if m.is_close() => return,
            Some(Ok(_)) => {}
        }
    }
}

fn sizes() -> impl Iterator<Item = usize> {
    // Frame-length edges (125/126/65535/65536) and the extremes, then a deterministic spread.
    let edges = [1usize, 2, 125, 126, 127, 65_535, 65_536, 65_537, 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1000).map(move |i| {
        if i < edges.len() {
            return edges[i];
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly small, as Qlik traffic is, with a tail up to 1 MiB.
        match x % 10 {
            0 => 1 + (x >> 8) as usize % (1 << 20),
            1..=3 => 1 + (x >> 8) as usize % 65_536,
            _ => 1 + (x >> 8) as usize % 2_048,
        }
    })
}

#[tokio::test]
async fn upgrade_with_the_cookie_lands_on_the_pinned_backend_and_echoes_1000_messages() {
    let (nodes, lb) = frontdoor_over(&["node1", "node2"], "", "").await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let addr = lb.frontend_addr("public").unwrap();
    within(120, async {
        let first = raw::get(addr, "/hub", &[]).await;
        let cookie = format!("QLB_ROUTE={}", first.route_cookie().unwrap());
        let pinned = first.header("x-backend").unwrap().to_string();
        let (mut ws, node) = open_ws(addr, Some(&cookie)).await;
        assert_eq!(node, pinned, "the WebSocket follows the sticky cookie");
        let mut total = 0usize;
        for (i, size) in sizes().enumerate() {
            let payload: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            let msg = if i % 2 == 0 {
                Message::binary(payload.clone())
            } else {
                Message::text(
                    String::from_utf8_lossy(
                        &payload.iter().map(|b| b'a' + b % 26).collect::<Vec<_>>(),
                    )
                    .into_owned(),
                )
            };
            ws.send(msg.clone()).await.unwrap();
            let back = ws.next().await.expect("echo").unwrap();
            assert_eq!(back, msg, "message {i} ({size} bytes) came back changed");
            total += size;
        }
        assert!(total > 10 << 20, "exercised {total} bytes");
        ws.close(None).await.unwrap();
    })
    .await;
    let tunnels = lb.shared.registry.get("proxies", &a.id).unwrap();
    let other = lb.shared.registry.get("proxies", &b.id).unwrap();
    eventually(5, || tunnels.tunnels() == 0 && other.tunnels() == 0).await;
}

#[tokio::test]
async fn a_websocket_without_cookie_is_pinned_by_the_101() {
    let (_nodes, lb) = frontdoor_over(&["node1"], "", "").await;
    let addr = lb.frontend_addr("public").unwrap();
    let req = format!("GET /app/x HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let r = within(10, raw::exchange(&mut s, &mut buf, req.as_bytes())).await;
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(r.route_cookie().as_deref(), Some("node1"));
}

#[tokio::test]
async fn tunnels_to_a_killed_backend_are_closed() {
    let (nodes, lb) = frontdoor_over(&["node1", "node2"], "", "").await;
    let a = &nodes[0];
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let (mut on_a, node) = open_ws(addr, Some("QLB_ROUTE=node1")).await;
        assert_eq!(node, "node1");
        let (mut on_b, _) = open_ws(addr, Some("QLB_ROUTE=node2")).await;
        a.kill();
        // The client sees its tunnel end (close or EOF), not a hang.
        closed(&mut on_a).await;
        on_b.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            on_b.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
    })
    .await;
    let node1 = lb.shared.registry.get("proxies", "node1").unwrap();
    eventually(5, || node1.tunnels() == 0).await;
}

#[tokio::test]
async fn tunnels_end_when_the_backend_is_marked_down() {
    let (_nodes, lb) = frontdoor_over(&["node1"], "", "").await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let (mut ws, _) = open_ws(addr, None).await;
        lb.shared
            .registry
            .get("proxies", "node1")
            .unwrap()
            .set_up(false);
        closed(&mut ws).await;
    })
    .await;
}

#[tokio::test]
async fn a_backend_refusing_the_upgrade_is_answered_unchanged() {
    let (_nodes, lb) = frontdoor_over(&["node1"], "", "").await;
    let addr = lb.frontend_addr("public").unwrap();
    // No Sec-WebSocket headers and no upgrade token: a plain GET answer comes back as is.
    let r = within(10, raw::get(addr, "/app/x", &[("Upgrade", "websocket")])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/app/x");
}
