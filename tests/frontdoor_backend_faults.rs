//! Backends that misbehave, over real sockets with scripted raw backends (§3.1): stray bytes or a
//! close on a pooled connection, a `101` nobody asked for, a backend that never sends
//! `100 Continue`, and a response whose `Connection:` names its own framing header.

mod support;

use qlik_lb::app::Instance;
use qlik_lb::threads::workers::worker_count;
use std::sync::Arc;
use std::time::Duration;
use support::scripted::{self, header_values, ok, Scripted};
use support::{frontdoor_config, raw, start, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

/// A whole answer a backend writes on an idle connection: if the proxy took that connection for
/// the next request, this would be read as that request's answer.
const POISON: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned";

#[derive(Clone, Copy)]
enum Fault {
    /// Stray bytes on the idle connection.
    Stray,
    /// The backend closes (FIN) the idle connection.
    Close,
}

/// A backend that answers `/a`, then, once told to (`go`), puts `fault` on that same connection
/// and says so (`done`). Every other request is answered with its own path.
async fn pooled_fault(fault: Fault) -> (Scripted, Instance, Arc<Notify>, Arc<Notify>) {
    let (go, done) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (go2, done2) = (go.clone(), done.clone());
    let (backend, lb) = scripted::frontdoor(
        move |mut c| {
            let (go, done) = (go2.clone(), done2.clone());
            async move {
                while let Some(req) = c.read_request().await {
                    if req.path() != "/a" {
                        if c.write(&ok(req.path().as_bytes())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    c.write(&ok(b"answer-a")).await.expect("answer A");
                    go.notified().await;
                    match fault {
                        Fault::Stray => c.write(POISON).await.expect("stray bytes"),
                        Fault::Close => {
                            let _ = c.tcp.shutdown().await;
                            drop(c);
                            done.notify_one();
                            return;
                        }
                    }
                    done.notify_one();
                    // Anything the proxy sends on this connection from here is logged (and would
                    // be answered after the stray answer already waiting for it).
                }
            }
        },
        "",
        "",
    )
    .await;
    (backend, lb, go, done)
}

/// Request A, the fault on its pooled backend connection, then request B on new client
/// connections: each must get its own answer, and none may travel on A's backend connection.
async fn next_request_after(fault: Fault, method: &str) {
    let (backend, lb, go, done) = pooled_fault(fault).await;
    let addr = lb.frontend_addr("public").unwrap();
    let request_b = match method {
        "GET" => "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
        _ => "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            .to_string(),
    };
    // All of this runs well inside one second of A's answer: the idle time under which a pooled
    // connection used to be trusted without a look.
    within(10, async {
        let a = raw::get(addr, "/a", &[]).await;
        assert_eq!(a.text(), "answer-a");
        go.notify_one();
        done.notified().await;
        // Idle pools are per worker thread and client connections are dealt to the workers in
        // turn, so one B per worker is sure to meet the pool holding A's backend connection.
        for i in 0..worker_count() {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            let b = raw::exchange(&mut s, &mut buf, request_b.as_bytes()).await;
            assert_eq!(b.status, 200, "B #{i}: {}", b.text());
            assert_eq!(b.text(), "/b", "B #{i} got an answer that was not its own");
        }
    })
    .await;
    let seen = backend.requests();
    let conn_a = seen.iter().find(|r| r.path() == "/a").expect("A seen").conn;
    let bs: Vec<_> = seen.iter().filter(|r| r.path() == "/b").collect();
    assert_eq!(bs.len(), worker_count(), "{seen:?}");
    for b in bs {
        assert_ne!(b.conn, conn_a, "B went on A's connection: {seen:?}");
        assert_eq!(b.method(), method);
        if method == "POST" {
            assert_eq!(b.body, b"abc");
        }
    }
}

#[tokio::test]
async fn stray_bytes_on_a_pooled_connection_retire_it_before_a_get() {
    next_request_after(Fault::Stray, "GET").await;
}

#[tokio::test]
async fn stray_bytes_on_a_pooled_connection_retire_it_before_a_post() {
    next_request_after(Fault::Stray, "POST").await;
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used_for_the_next_get() {
    next_request_after(Fault::Close, "GET").await;
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used_for_the_next_post() {
    next_request_after(Fault::Close, "POST").await;
}

/// A backend that answers its first request with `101 ... Upgrade: h2c` and some bytes, then
/// reports everything it receives after that until its connection is closed.
async fn answer_with_h2c_101(request: &[u8]) {
    let (tx, mut after_101) = mpsc::unbounded_channel::<Vec<u8>>();
    let (backend, lb) = scripted::frontdoor(
        move |mut c| {
            let tx = tx.clone();
            async move {
                if c.read_request().await.is_none() {
                    return; // a TCP health check
                }
                let _ = c
                    .write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nBACKEND-AFTER-101")
                    .await;
                let _ = tx.send(c.drain().await);
            }
        },
        "",
        "",
    )
    .await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let r = raw::exchange(&mut s, &mut buf, request).await;
        assert_eq!(r.status, 502, "{:?}", r.headers);
        assert!(!r.text().contains("BACKEND-AFTER-101"));
        assert!(!String::from_utf8_lossy(&buf).contains("BACKEND-AFTER-101"));
        // Bytes the client sends now must go nowhere (a write error is fine: closed is closed).
        let _ = s.write_all(b"\x81\x05hello CLIENT-AFTER-101").await;
        let after = tokio::time::timeout(Duration::from_secs(5), after_101.recv())
            .await
            .expect("the proxy did not close the backend connection after the bad 101")
            .unwrap();
        assert!(
            after.is_empty(),
            "bytes reached the backend after its 101: {:?}",
            String::from_utf8_lossy(&after)
        );
    })
    .await;
    assert_eq!(backend.requests().len(), 1);
}

#[tokio::test]
async fn a_101_to_a_plain_get_is_502_and_nothing_is_spliced() {
    answer_with_h2c_101(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n").await;
}

#[tokio::test]
async fn a_101_naming_h2c_to_a_websocket_handshake_is_502() {
    answer_with_h2c_101(
        b"GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_proxy_when_the_backend_sends_none() {
    // Reads head and body by Content-Length, never sends 100, and echoes the body.
    let backend = Scripted::start(|mut c| async move {
        while let Some(req) = c.read_request().await {
            if c.write(&ok(&req.body)).await.is_err() {
                return;
            }
        }
    })
    .await;
    let cfg = frontdoor_config(&[("node1", backend.addr_string())], "", "")
        .replace("response_timeout = \"5s\"", "response_timeout = \"30s\"");
    let lb = start(&cfg).await;
    let addr = lb.frontend_addr("public").unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    // Far under response_timeout: the exchange must not wait for a 100 that never comes.
    within(5, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let interim = tokio::time::timeout(Duration::from_secs(3), raw::read_head(&mut s, &mut buf))
            .await
            .expect("no 100 Continue from the proxy within 3 s");
        assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");
        s.write_all(&body).await.unwrap();
        let r = raw::read_reply(&mut s, &mut buf).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "the echoed body differs");
    })
    .await;
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].all("expect").is_empty(), "{}", seen[0].head);
}

#[tokio::test]
async fn a_response_connection_header_naming_content_length_keeps_the_framing() {
    let backend = Scripted::start(|mut c| async move {
        while c.read_request().await.is_some() {
            let answer =
                b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello";
            if c.write(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let lb = start(&frontdoor_config(
        &[("node1", backend.addr_string())],
        "",
        "",
    ))
    .await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        for i in 0..2 {
            s.write_all(b"GET /framed HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let head = raw::read_head(&mut s, &mut buf).await;
            assert_eq!(
                header_values(&head, "content-length"),
                ["5"],
                "#{i}: {head}"
            );
            assert!(header_values(&head, "transfer-encoding").is_empty());
            assert!(!header_values(&head, "connection")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("close")));
            while buf.len() < 5 {
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "#{i}: closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(&buf[..], b"hello", "#{i}: exactly the 5 body bytes");
            buf.clear();
        }
    })
    .await;
    assert_eq!(backend.requests().len(), 2);
}
