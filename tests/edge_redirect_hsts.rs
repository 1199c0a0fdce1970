//! `redirect_https` and `hsts` (PRODUCT.md §3.2): a plain listener answers every request with
//! a 308 to the https site and never touches a backend; a TLS listener with `hsts` sends
//! `Strict-Transport-Security` on proxied answers (replacing the backend's) and on its own.

mod support;

use std::sync::Arc;
use support::door::Door;
use support::edge::self_signed;
use support::recording::{Options, Seen};
use support::{raw, within};
use tokio::net::TcpStream;

#[tokio::test]
async fn every_request_gets_a_308_and_no_backend_is_touched() {
    let door = Door::start_with("redirect_https = true", "").await;
    within(20, async {
        let mark = door.rec.mark();
        let mut s = TcpStream::connect(door.addr).await.unwrap();
        let mut buf = Vec::new();
        let first = raw::exchange(
            &mut s,
            &mut buf,
            b"GET /hub/?qlikTicket=abc HTTP/1.1\r\nHost: qlik.example:8080\r\n\r\n",
        )
        .await;
        assert_eq!(first.status, 308);
        assert_eq!(
            first.header("location"),
            Some("https://qlik.example/hub/?qlikTicket=abc")
        );
        // The same keep-alive connection carries the next one.
        let second = raw::exchange(
            &mut s,
            &mut buf,
            b"GET /sense/app/1 HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n",
        )
        .await;
        assert_eq!(second.status, 308);
        assert_eq!(
            second.header("location"),
            Some("https://[2001:db8::1]/sense/app/1")
        );
        drop(s);
        door.rec.settle(5).await;
        let backend = door.rec.since(&mark);
        assert!(backend.requests.is_empty() && backend.byte_count() == 0);

        // A POST keeps its method through a 308; its body is not read, so the connection closes.
        let post = door
            .send(b"POST /qrs/x HTTP/1.1\r\nHost: qlik.example\r\nContent-Length: 3\r\n\r\nabc")
            .await;
        assert_eq!(post.status(), Some(308));
        assert_eq!(post.reply().unwrap().header("connection"), Some("close"));
        assert!(post.closed);

        // The strict reader still runs first.
        let bad = door
            .send(b"GET / HTTP/1.1\nHost: qlik.example\r\n\r\n")
            .await;
        assert_eq!(bad.status(), Some(400));
        // HTTP/1.0 may come without Host: there is no site to redirect to.
        let hostless = door.send(b"GET / HTTP/1.0\r\n\r\n").await;
        assert_eq!(hostless.status(), Some(400));
        assert_eq!(
            door.rec.requests().len(),
            0,
            "the backend never saw a request"
        );
    })
    .await;
}

#[tokio::test]
async fn https_port_goes_into_the_location() {
    let door = Door::start_with("redirect_https = true\nhttps_port = 8443", "").await;
    within(10, async {
        let sent = door
            .send(b"GET /hub HTTP/1.1\r\nHost: qlik.example:8080\r\nConnection: close\r\n\r\n")
            .await;
        assert_eq!(sent.status(), Some(308));
        assert_eq!(
            sent.reply().unwrap().header("location"),
            Some("https://qlik.example:8443/hub")
        );
        assert_eq!(sent.backend.byte_count(), 0);
    })
    .await;
}

const HSTS: &str = "max-age=31536000; includeSubDomains";

/// A backend answer that carries its own, weaker, HSTS.
fn with_backend_hsts(s: &Seen) -> Vec<u8> {
    let body = format!("seen {}", s.seq);
    format!(
        "HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=60\r\nContent-Length: {}\r\nX-Seen: {}\r\n\r\n{body}",
        body.len(),
        s.seq
    )
    .into_bytes()
}

#[tokio::test]
async fn hsts_is_on_proxied_answers_and_the_proxys_own() {
    let cert = self_signed();
    let door = Door::start_with(
        &format!("{}\nhsts = \"{HSTS}\"", cert.frontend_tls()),
        "  [pool.sticky]\n  same_site = \"Lax\"\n",
    )
    .await;
    door.rec.set(Options {
        script: Some(Arc::new(with_backend_hsts)),
        ..Options::default()
    });
    within(20, async {
        let tcp = TcpStream::connect(door.addr).await.unwrap();
        let mut tls = cert.connect(tcp).await;
        let mut buf = Vec::new();
        let proxied = raw::exchange(
            &mut tls,
            &mut buf,
            b"GET /hub HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;
        assert_eq!(proxied.status, 200);
        assert!(proxied.header("x-seen").is_some(), "the backend's answer");
        assert_eq!(
            proxied.all("strict-transport-security"),
            [HSTS],
            "ours, replacing the backend's"
        );
        let refused = raw::exchange(
            &mut tls,
            &mut buf,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        )
        .await;
        assert_eq!(refused.status, 400);
        assert_eq!(refused.all("strict-transport-security"), [HSTS]);
    })
    .await;
}
