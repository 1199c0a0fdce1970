//! What reaches the backend: headers and target byte-for-byte, X-Forwarded-*, stripped
//! headers, our cookie removed; and bodies streamed both ways with bounded memory.

mod support;

use support::backend::{seen, TestBackend};
use support::raw;
use support::{frontdoor_over, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one_backend() -> (Vec<TestBackend>, qlik_lb::app::Instance) {
    frontdoor_over(&["node1"], "", "").await
}

#[tokio::test]
async fn host_origin_cookie_authorization_path_and_query_arrive_byte_for_byte() {
    let (_a, lb) = one_backend().await;
    let addr = lb.frontend_addr("public").unwrap();
    let target = "/sense/app/3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11/sheet/x%20y?xrfkey=0123456789abcdef&qlik-csrf-token=a%2Bb&empty=&dup=1&dup=2";
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: QS-Node.Corp.Example:443\r\nOrigin: https://QS-Node.Corp.Example\r\nCookie: X-Qlik-Session=abc;theme=dark ;  x=\"q v\"\r\nAuthorization: Bearer eyJhbGciOi.J9\r\nUser-Agent: Mozilla/5.0 (X11) \u{0}\r\n\r\n"
    )
    .replace('\u{0}', "");
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let r = within(10, raw::exchange(&mut s, &mut buf, req.as_bytes())).await;
    let echo = r.json();
    assert_eq!(echo["path"], target);
    assert_eq!(seen(&echo, "host"), ["QS-Node.Corp.Example:443"]);
    assert_eq!(seen(&echo, "origin"), ["https://QS-Node.Corp.Example"]);
    assert_eq!(
        seen(&echo, "cookie"),
        ["X-Qlik-Session=abc;theme=dark ;  x=\"q v\""]
    );
    assert_eq!(seen(&echo, "authorization"), ["Bearer eyJhbGciOi.J9"]);
    assert_eq!(seen(&echo, "user-agent"), ["Mozilla/5.0 (X11)"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        seen(&echo, "x-forwarded-host"),
        ["QS-Node.Corp.Example:443"]
    );
    assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn x_forwarded_for_is_appended_to_an_existing_value() {
    let (_a, lb) = one_backend().await;
    let r = within(
        10,
        raw::get(
            lb.frontend_addr("public").unwrap(),
            "/",
            &[("X-Forwarded-For", "203.0.113.7, 10.0.0.1")],
        ),
    )
    .await;
    assert_eq!(
        seen(&r.json(), "x-forwarded-for"),
        ["203.0.113.7, 10.0.0.1, 127.0.0.1"]
    );
}

#[tokio::test]
async fn reserved_qlik_headers_from_a_client_never_reach_a_backend() {
    let (_a, lb) = one_backend().await;
    let r = within(
        10,
        raw::get(
            lb.frontend_addr("public").unwrap(),
            "/",
            &[
                (
                    "X-Qlik-User",
                    "UserDirectory=INTERNAL; UserId=sa_repository",
                ),
                ("x-qlik-security", "SecureRequest=true"),
                ("X-Qlik-ProxySession", "x"),
                ("X-QLIK-PROXYID", "y"),
                ("X-Other", "kept"),
            ],
        ),
    )
    .await;
    let echo = r.json();
    for h in [
        "x-qlik-user",
        "x-qlik-security",
        "x-qlik-proxysession",
        "x-qlik-proxyid",
    ] {
        assert!(seen(&echo, h).is_empty(), "{h} was forwarded");
    }
    assert_eq!(seen(&echo, "x-other"), ["kept"]);
}

#[tokio::test]
async fn our_cookie_is_not_forwarded() {
    let (_a, lb) = one_backend().await;
    let addr = lb.frontend_addr("public").unwrap();
    let r = within(
        10,
        raw::get(
            addr,
            "/",
            &[("Cookie", "a=1; QLB_ROUTE=node1; X-Qlik-Session=s")],
        ),
    )
    .await;
    assert_eq!(seen(&r.json(), "cookie"), ["a=1; X-Qlik-Session=s"]);
    let only = within(10, raw::get(addr, "/", &[("Cookie", "QLB_ROUTE=node1")])).await;
    assert!(seen(&only.json(), "cookie").is_empty());
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

const HUNDRED_MB: u64 = 100 * 1024 * 1024;
/// Client, proxy and backend share this process; all of them streaming must stay well under the
/// size of the body.
const MAX_GROWTH_KIB: u64 = 48 * 1024;

#[tokio::test]
async fn a_100_mb_upload_and_download_stream_with_bounded_memory() {
    let (_a, lb) = one_backend().await;
    let addr = lb.frontend_addr("public").unwrap();
    let before = rss_kib();
    let mut peak = before;
    within(120, async {
        // Upload: chunked body, streamed from a fixed buffer.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
            .await
            .unwrap();
        let block = vec![b'u'; 256 * 1024];
        let mut sent = 0u64;
        while sent < HUNDRED_MB {
            s.write_all(&block).await.unwrap();
            sent += block.len() as u64;
            peak = peak.max(rss_kib());
        }
        let mut buf = Vec::new();
        let r = raw::read_reply(&mut s, &mut buf).await;
        assert_eq!(r.json()["bytes"], HUNDRED_MB);
        // Download: read it in pieces, never holding the whole body.
        s.write_all(
            format!("GET /source?bytes={HUNDRED_MB} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut chunk = vec![0u8; 256 * 1024];
        let mut body_bytes = 0u64;
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                body_bytes += n as u64;
            } else {
                head.extend_from_slice(&chunk[..n]);
                if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    body_bytes += (head.len() - p - 4) as u64;
                    head.truncate(p + 4);
                }
            }
            peak = peak.max(rss_kib());
            if body_bytes >= HUNDRED_MB {
                break;
            }
        }
        assert_eq!(body_bytes, HUNDRED_MB);
        assert!(String::from_utf8_lossy(&head).contains("200 OK"));
    })
    .await;
    let growth = peak.saturating_sub(before);
    assert!(
        growth < MAX_GROWTH_KIB,
        "memory grew by {growth} KiB while streaming 200 MB"
    );
}
