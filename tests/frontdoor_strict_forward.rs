//! §3.1, the rows of the strict table the front door forwards: the client's answer must come
//! from the recording backend (its `X-Seen` names the request the backend parsed), and the
//! backend must have received exactly the rewritten message the table gives.

mod support;

use support::door::{Client, Door, Sent};
use support::recording::{Options, Seen};
use support::strict::Request;
use support::within;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends `input`, expects a backend answer, and returns the request the backend parsed for it.
async fn forwarded(door: &Door, input: &str) -> (Sent, Seen) {
    let sent = within(30, door.send(input.as_bytes())).await;
    let received: Vec<String> = sent
        .backend
        .bytes
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    if let Some((_, e, _)) = sent.backend.errors.first() {
        panic!("{input:?}: the backend could not read what it received ({e:?}): {received:?}");
    }
    let seen = sent.seen();
    let statuses: Vec<u16> = sent.replies.iter().map(|r| r.status).collect();
    assert_eq!(
        seen.len(),
        1,
        "{input:?}: one backend answer expected, got statuses {statuses:?} (backend received {received:?})"
    );
    let req = door
        .rec
        .seen(seen[0])
        .expect("the answered request was recorded");
    assert_eq!(
        sent.backend.requests.len(),
        1,
        "exactly one request reached the backend"
    );
    (sent, req)
}

fn names(r: &Request) -> Vec<String> {
    r.headers
        .iter()
        .map(|(n, _)| String::from_utf8_lossy(n).to_ascii_lowercase())
        .collect()
}

fn head_text(r: &Request) -> String {
    String::from_utf8_lossy(&r.head).into_owned()
}

#[tokio::test]
async fn equal_repeated_content_lengths_are_forwarded_as_one_line_where_the_first_was() {
    let door = Door::start().await;
    for (input, before, after) in [
        (
            "POST /cl HTTP/1.1\r\nHost: a.example\r\nX-Before: 1\r\nContent-Length: 5, 5\r\nX-After: 2\r\n\r\nhello",
            "x-before",
            "x-after",
        ),
        (
            "POST /cl HTTP/1.1\r\nHost: a.example\r\nX-Before: 1\r\nContent-Length: 5\r\nX-Mid: 2\r\nContent-Length: 5\r\nX-After: 3\r\n\r\nhello",
            "x-before",
            "x-mid",
        ),
    ] {
        let (sent, s) = forwarded(&door, input).await;
        assert_eq!(sent.status(), Some(200));
        assert_eq!(s.req.all("content-length"), vec![&b"5"[..]], "{}", head_text(&s.req));
        let head = head_text(&s.req);
        assert_eq!(head.to_ascii_lowercase().matches("content-length").count(), 1, "{head}");
        assert!(head.contains("\r\nContent-Length: 5\r\n"), "{head}");
        let n = names(&s.req);
        let cl = n.iter().position(|h| h == "content-length").unwrap();
        let (b, a) = (
            n.iter().position(|h| h == before).unwrap(),
            n.iter().position(|h| h == after).unwrap(),
        );
        assert!(b < cl && cl < a, "Content-Length where the first one was: {n:?}");
        assert_eq!(s.req.body, b"hello");
    }
}

#[tokio::test]
async fn request_trailers_are_dropped_and_the_last_chunk_kept_as_sent() {
    let door = Door::start().await;
    for (input, last) in [
        (
            "POST /t HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Qlik-User: x\r\n\r\n",
            "0",
        ),
        (
            "POST /t HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5;a=1\r\nhello\r\n0;ext=\"v\"\r\nX-Qlik-User: x\r\nX-Other: y\r\n\r\n",
            "0;ext=\"v\"",
        ),
    ] {
        let (sent, s) = forwarded(&door, input).await;
        assert_eq!(sent.status(), Some(200));
        assert_eq!(s.req.body, b"hello");
        assert_eq!(s.req.last_chunk.as_deref(), Some(last.as_bytes()));
        let raw = String::from_utf8_lossy(&s.req.raw).into_owned();
        assert!(raw.ends_with(&format!("hello\r\n{last}\r\n\r\n")), "{raw:?}");
        assert!(!raw.to_ascii_lowercase().contains("x-qlik-user"), "{raw:?}");
        assert!(!raw.contains("X-Other"), "{raw:?}");
    }
}

#[tokio::test]
async fn absolute_form_is_forwarded_in_origin_form_with_the_target_authority_as_host() {
    let door = Door::start().await;
    for (input, line, host) in [
        (
            "GET http://a.example/b?q HTTP/1.1\r\nHost: other\r\n\r\n",
            "GET /b?q HTTP/1.1",
            "a.example",
        ),
        (
            "GET http://a.example HTTP/1.1\r\nHost: other\r\n\r\n",
            "GET / HTTP/1.1",
            "a.example",
        ),
        (
            "GET https://a.example:8443/x HTTP/1.1\r\nHost: other\r\n\r\n",
            "GET /x HTTP/1.1",
            "a.example:8443",
        ),
    ] {
        let (_, s) = forwarded(&door, input).await;
        assert_eq!(s.req.line_text(), line, "{input:?}");
        assert_eq!(
            s.req.all("host"),
            vec![host.as_bytes()],
            "{}",
            head_text(&s.req)
        );
        assert_eq!(
            names(&s.req)[0],
            "host",
            "the client's Host line replaced in place"
        );
    }
}

#[tokio::test]
async fn options_asterisk_is_forwarded_as_sent() {
    let door = Door::start().await;
    let (sent, s) = forwarded(&door, "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n").await;
    assert_eq!(sent.status(), Some(200));
    assert_eq!(s.req.line_text(), "OPTIONS * HTTP/1.1");
}

#[tokio::test]
/// An `Upgrade` without `Connection: upgrade` asks for nothing: it is dropped, whatever it
/// offers, and the request goes on as a plain one.
async fn upgrade_h2c_and_http2_settings_are_removed() {
    let door = Door::start().await;
    let websocket_alone = format!("GET /h HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n");
    for input in [
        "GET /h HTTP/1.1\r\nHost: a.example\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        "GET /h HTTP/1.1\r\nHost: a.example\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        "GET /h HTTP/1.1\r\nHost: a.example\r\nUpgrade: h2c\r\n\r\n",
        websocket_alone.as_str(),
    ] {
        let (sent, s) = forwarded(&door, input).await;
        assert_eq!(sent.status(), Some(200), "{input:?}");
        assert!(!s.req.has("upgrade"), "{}", head_text(&s.req));
        assert!(!s.req.has("http2-settings"), "{}", head_text(&s.req));
    }
}

#[tokio::test]
async fn a_websocket_handshake_offering_h2c_too_is_forwarded_as_websocket_only() {
    let door = Door::start().await;
    door.rec.set(Options {
        upgrade: true,
        ..Options::default()
    });
    let input = format!("GET /app/x HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, websocket\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let (sent, s) = forwarded(&door, &input).await;
    let r = &s.req;
    assert_eq!(
        r.all("upgrade"),
        vec![&b"websocket"[..]],
        "{}",
        head_text(r)
    );
    let conn = r.all("connection");
    assert!(
        conn.len() == 1 && conn[0].eq_ignore_ascii_case(b"upgrade"),
        "{}",
        head_text(r)
    );
    assert!(!r.has("http2-settings"), "{}", head_text(r));
    assert_eq!(r.header("sec-websocket-key"), Some(WS_KEY.as_bytes()));
    assert_eq!(sent.status(), Some(101), "forwarded as an upgrade");
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_proxy_and_not_forwarded() {
    let door = Door::start().await;
    let mut s = TcpStream::connect(door.addr).await.unwrap();
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut client = Client::new(s);
    // The backend never sends a 100: the proxy has to.
    let first = within(10, client.next_reply())
        .await
        .expect("an interim answer");
    assert_eq!(
        first.status,
        100,
        "the proxy sends the 100 itself: got {} {:?}",
        first.status,
        first.text()
    );
    client.s.write_all(b"hello").await.unwrap();
    let last = within(10, client.next_reply()).await.expect("the answer");
    let seq: usize = last
        .header("x-seen")
        .expect("a backend answer")
        .parse()
        .unwrap();
    let seen = door.rec.seen(seq).unwrap();
    assert!(!seen.req.has("expect"), "{}", head_text(&seen.req));
    assert_eq!(seen.req.body, b"hello");

    // The body already there with the head: forwarded without Expect all the same.
    let (sent, s) = forwarded(
        &door,
        "POST /e2 HTTP/1.1\r\nHost: a.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(sent.status(), Some(200));
    assert!(!s.req.has("expect"), "{}", head_text(&s.req));
    assert_eq!(s.req.body, b"hello");
}

#[tokio::test]
async fn connection_tokens_naming_ordinary_headers_are_removed_as_hop_by_hop() {
    let door = Door::start().await;
    let (sent, s) = forwarded(
        &door,
        "GET /hop HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Keep: 2\r\n\r\n",
    )
    .await;
    assert_eq!(sent.status(), Some(200));
    let n = names(&s.req);
    for gone in ["x-hop", "keep-alive", "connection"] {
        assert!(
            !n.iter().any(|h| h == gone),
            "{gone} left in {}",
            head_text(&s.req)
        );
    }
    assert_eq!(s.req.header("x-keep"), Some(&b"2"[..]));
    let (sent, s) = forwarded(
        &door,
        "GET /hop HTTP/1.1\r\nHost: a.example\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n",
    )
    .await;
    assert!(!s.req.has("x-hop"), "{}", head_text(&s.req));
    assert_eq!(sent.reply().unwrap().header("connection"), Some("close"));
}

#[tokio::test]
async fn strip_request_headers_never_reach_the_backend_in_any_spelling() {
    let door = Door::start().await;
    for name in [
        "X-Qlik-User",
        "X-Qlik-Security",
        "X-Qlik-ProxySession",
        "X-Qlik-ProxyId",
    ] {
        let alternating: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        for spelling in [
            name.to_string(),
            name.to_ascii_lowercase(),
            name.to_ascii_uppercase(),
            alternating,
        ] {
            let input = format!(
                "GET /s HTTP/1.1\r\nHost: a.example\r\n{spelling}: UserDirectory=ACME; UserId=admin\r\nX-Keep: 1\r\n\r\n"
            );
            let (sent, s) = forwarded(&door, &input).await;
            assert_eq!(sent.status(), Some(200));
            assert!(!s.req.has(name), "{spelling} reached the backend");
            assert!(s.req.has("x-keep"));
        }
    }
}
