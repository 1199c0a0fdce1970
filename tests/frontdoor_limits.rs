//! The front door's limits (§3.1 "Limits and timeouts"): `max_connections` counts open WebSocket
//! tunnels and follows a reload; `send_timeout` closes a client or a backend that takes no bytes,
//! and drops the request's in-flight lease.

mod support;

use futures_util::{SinkExt, StreamExt};
use qlik_lb::app::Instance;
use qlik_lb::config::Config;
use qlik_lb::reload::Trigger;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::scripted;
use support::{frontdoor_config, frontdoor_over, metric_reaches, raw, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

const INFLIGHT: &str = "qlb_backend_inflight_requests{backend=\"node1\",pool=\"proxies\"}";

/// A negative can only be watched for a while: 500 ms is far beyond the few milliseconds an
/// answer takes on loopback, and short enough to keep the test quick.
const QUIET: Duration = Duration::from_millis(500);

async fn echo(ws: &mut Ws) {
    ws.send(Message::text("ping")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("echo").unwrap(),
        Message::text("ping")
    );
}

/// An open WebSocket tunnel through the front door to the test backend's echo.
async fn tunnel(addr: SocketAddr) -> Ws {
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}/app/limits"))
        .await
        .expect("upgrade through the proxy");
    assert_eq!(resp.status(), 101);
    echo(&mut ws).await;
    ws
}

/// Closes a tunnel and waits until the connection is gone.
async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}
}

#[tokio::test]
async fn max_connections_counts_open_websocket_tunnels() {
    let (_nodes, lb) = frontdoor_over(&["node1"], "", "max_connections = 2").await;
    let addr = lb.frontend_addr("public").unwrap();
    within(20, async {
        let first = tunnel(addr).await;
        let mut second = tunnel(addr).await;
        let mut third = raw::unanswered_get(addr, "/third", QUIET).await;
        close(first).await;
        let mut buf = Vec::new();
        let r = within(5, raw::read_reply(&mut third, &mut buf)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["path"], "/third");
        echo(&mut second).await;
        close(second).await;
    })
    .await;
}

#[tokio::test]
async fn a_reload_raising_max_connections_lets_a_waiting_connection_in() {
    let node = support::backend::TestBackend::start("node1").await;
    let text = frontdoor_config(&[("node1", node.addr_string())], "", "max_connections = 2");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qlik-lb.toml");
    std::fs::write(&path, &text).unwrap();
    let lb = Instance::start(Config::load(&path).unwrap()).await.unwrap();
    let addr = lb.frontend_addr("public").unwrap();
    within(20, async {
        let mut first = tunnel(addr).await;
        let mut second = tunnel(addr).await;
        let mut third = raw::unanswered_get(addr, "/third", QUIET).await;
        std::fs::write(
            &path,
            text.replace("max_connections = 2", "max_connections = 3"),
        )
        .unwrap();
        let outcome = lb.reload(Trigger::Api).await;
        assert!(outcome.ok, "reload failed: {:?}", outcome.errors);
        assert_eq!(lb.frontend_addr("public"), Some(addr));
        let mut buf = Vec::new();
        let r = within(5, raw::read_reply(&mut third, &mut buf)).await;
        assert_eq!(r.status, 200);
        // The tunnels that held the slots were not cut by the reload.
        echo(&mut first).await;
        echo(&mut second).await;
        close(first).await;
        close(second).await;
    })
    .await;
}

/// Reads until EOF or an error (a reset), or until a whole head arrived when `stop_at_head`;
/// returns what was read (the first 64 KiB) and the total byte count.
async fn read_until_closed<S: AsyncRead + Unpin>(s: &mut S, stop_at_head: bool) -> (Vec<u8>, u64) {
    let (mut kept, mut total) = (Vec::new(), 0u64);
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = s.read(&mut chunk).await {
        total += n as u64;
        if kept.len() < 64 * 1024 {
            kept.extend_from_slice(&chunk[..n]);
        }
        if stop_at_head && kept.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    (kept, total)
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_after_send_timeout() {
    let (streaming_tx, mut streaming) = mpsc::unbounded_channel::<()>();
    let (ended_tx, mut backend_closed) = mpsc::unbounded_channel::<()>();
    // An endless chunked body: only a proxy that gives up on the client ever ends it.
    let (_backend, lb) = scripted::frontdoor(
        move |mut c| {
            let (streaming, ended) = (streaming_tx.clone(), ended_tx.clone());
            async move {
                if c.read_request().await.is_none() {
                    return;
                }
                let mut chunk = b"10000\r\n".to_vec();
                chunk.extend_from_slice(&[b'x'; 0x10000]);
                chunk.extend_from_slice(b"\r\n");
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if c.write(head).await.is_err() {
                    return;
                }
                let _ = streaming.send(());
                while c.write(&chunk).await.is_ok() {}
                let _ = ended.send(());
            }
        },
        "",
        "send_timeout = \"1s\"",
    )
    .await;
    let mut client = TcpStream::connect(lb.frontend_addr("public").unwrap())
        .await
        .unwrap();
    client
        .write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let asked = Instant::now();
    within(5, streaming.recv())
        .await
        .expect("backend streaming");
    // The lease is held while the body fills the buffers towards a client that reads nothing...
    metric_reaches(&lb, INFLIGHT, 1.0, 5).await;
    // ...and dropped once the client has taken nothing for send_timeout.
    metric_reaches(&lb, INFLIGHT, 0.0, 10).await;
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "before send_timeout"
    );
    within(5, backend_closed.recv())
        .await
        .expect("the backend connection is closed too");
    // Now the client reads: what the kernel still held, then EOF or a reset.
    let (kept, total) = within(10, read_until_closed(&mut client, false)).await;
    assert!(kept.starts_with(b"HTTP/1.1 200 "), "{total} bytes");
}

#[tokio::test]
async fn a_backend_that_reads_nothing_of_an_upload_is_closed_after_send_timeout() {
    const UPLOAD: usize = 64 << 20;
    let (head_tx, mut head_seen) = mpsc::unbounded_channel::<()>();
    let (drained_tx, mut drained) = mpsc::unbounded_channel::<usize>();
    let drain = Arc::new(Notify::new());
    let drain2 = drain.clone();
    // Reads the head, then nothing, until the test has seen the proxy give up; then reads what
    // is left until the connection closes, and reports how many body bytes it got.
    let (_backend, lb) = scripted::frontdoor(
        move |mut c| {
            let (head_tx, drained_tx, drain) =
                (head_tx.clone(), drained_tx.clone(), drain2.clone());
            async move {
                if c.read_head().await.is_none() {
                    return;
                }
                let _ = head_tx.send(());
                drain.notified().await;
                let _ = drained_tx.send(c.drain().await.len());
            }
        },
        "",
        "send_timeout = \"1s\"",
    )
    .await;
    let client = TcpStream::connect(lb.frontend_addr("public").unwrap())
        .await
        .unwrap();
    let (mut rd, mut wr) = client.into_split();
    let writer = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {UPLOAD}\r\n\r\n");
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'u'; 1 << 20];
        for _ in 0..UPLOAD / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let asked = Instant::now();
    within(5, head_seen.recv())
        .await
        .expect("the head reached the backend");
    metric_reaches(&lb, INFLIGHT, 1.0, 5).await;
    metric_reaches(&lb, INFLIGHT, 0.0, 10).await;
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "before send_timeout"
    );
    // The client gets an error answer, or its connection closed, never a success.
    let (kept, _) = within(10, read_until_closed(&mut rd, true)).await;
    if !kept.is_empty() {
        let head = String::from_utf8_lossy(&kept);
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(status >= 400, "{head}");
    }
    drain.notify_one();
    let got = within(10, drained.recv()).await.unwrap();
    assert!(got < UPLOAD, "the whole upload reached the backend");
    writer.abort();
}
