//! Each row of the front door's error table, over real sockets: 400, 408, 431, 502, 504, and
//! ambiguous framing refused before anything reaches a backend.

mod support;

use support::backend::TestBackend;
use support::raw::{self, Reply};
use support::{frontdoor_config, frontdoor_over, metric, start, within};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

async fn send_raw(addr: std::net::SocketAddr, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    raw::exchange(&mut s, &mut buf, bytes).await
}

async fn setup(frontend_extra: &str, pool_extra: &str) -> (TestBackend, qlik_lb::app::Instance) {
    let (mut nodes, lb) = frontdoor_over(&["node1"], pool_extra, frontend_extra).await;
    (nodes.remove(0), lb)
}

#[tokio::test]
async fn malformed_request_line_is_400() {
    let (a, lb) = setup("", "").await;
    let addr = lb.frontend_addr("public").unwrap();
    let r = within(10, send_raw(addr, b"GET /a b c\r\nHost: x\r\n\r\n")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.header("x-request-id").is_some());
    let html = within(10, send_raw(addr, b"\x16\x03\x01garbage\r\n\r\n")).await;
    assert_eq!(html.status, 400);
    assert!(html.text().contains("<h1>400"), "HTML by default");
    assert_eq!(a.request_count(), 0);
    assert_eq!(
        metric(
            &lb,
            "qlb_client_errors_total{frontend=\"public\",kind=\"bad_request\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn seventy_kib_of_headers_is_431() {
    let (a, lb) = setup("", "").await;
    let big = "v".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let r = within(
        10,
        send_raw(lb.frontend_addr("public").unwrap(), req.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 431);
    assert_eq!(a.request_count(), 0);
    assert_eq!(
        metric(
            &lb,
            "qlb_client_errors_total{frontend=\"public\",kind=\"header_too_large\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_head_trickled_slower_than_header_timeout_is_408() {
    let (a, lb) = setup("header_timeout = \"400ms\"", "").await;
    let mut s = TcpStream::connect(lb.frontend_addr("public").unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let r = within(10, async {
        // One byte at a time, each sent only after the previous write; the proxy must cut it
        // off at the deadline, whatever the trickle rate.
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if s.write_all(std::slice::from_ref(b)).await.is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            match tokio::time::timeout(std::time::Duration::from_millis(50), s.peek(&mut probe))
                .await
            {
                Ok(Ok(n)) if n > 0 => break,
                Ok(_) => break,
                Err(_) => {}
            }
        }
        raw::read_reply(&mut s, &mut buf).await
    })
    .await;
    assert_eq!(r.status, 408);
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    assert_eq!(a.request_count(), 0);
    assert_eq!(
        metric(
            &lb,
            "qlb_client_errors_total{frontend=\"public\",kind=\"header_timeout\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn connection_refused_is_502() {
    // A port that was just free: bind, read the address, close.
    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let lb = start(&frontdoor_config(&[("node1", free.to_string())], "", "")).await;
    let r = within(
        10,
        raw::get(
            lb.frontend_addr("public").unwrap(),
            "/",
            &[("Accept", "application/json")],
        ),
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["status"], 502);
    assert_eq!(metric(&lb, "qlb_http_requests_total{backend=\"node1\",code=\"5xx\",frontend=\"public\",pool=\"proxies\"}").await, 1.0);
}

#[tokio::test]
async fn a_backend_that_never_answers_is_504() {
    let a = TestBackend::start("node1").await;
    let cfg = frontdoor_config(&[("node1", a.addr_string())], "", "")
        .replace("response_timeout = \"5s\"", "response_timeout = \"300ms\"");
    let lb = start(&cfg).await;
    let r = within(
        10,
        raw::get(lb.frontend_addr("public").unwrap(), "/never", &[]),
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(a.request_count(), 1, "the request did reach the backend");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_never_forwarded() {
    let (a, lb) = setup("", "").await;
    let r = within(
        10,
        send_raw(
            lb.frontend_addr("public").unwrap(),
            b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(a.request_count(), 0);
}

#[tokio::test]
async fn two_different_content_lengths_are_400_and_never_forwarded() {
    let (a, lb) = setup("", "").await;
    let r = within(
        10,
        send_raw(lb.frontend_addr("public").unwrap(), b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(a.request_count(), 0);
}

#[tokio::test]
async fn a_bad_chunk_size_is_400() {
    let (_a, lb) = setup("", "").await;
    let r = within(
        10,
        send_raw(lb.frontend_addr("public").unwrap(), b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let (a, lb) = setup("", "").await;
    let mut s = TcpStream::connect(lb.frontend_addr("public").unwrap())
        .await
        .unwrap();
    let mut buf = Vec::new();
    within(10, async {
        s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let one = raw::read_reply(&mut s, &mut buf).await;
        assert_eq!(one.json()["path"], "/one");
        let two = raw::read_reply(&mut s, &mut buf).await;
        assert_eq!(two.json()["bytes"], 3);
        let three = raw::read_reply(&mut s, &mut buf).await;
        assert_eq!(three.json()["path"], "/three");
    })
    .await;
    assert_eq!(a.request_count(), 3);
}
