//! §3.1, the rows of the strict table about what a backend sends back: a `101` that was not
//! asked for, a `Connection` header naming the response's framing, and a pooled connection that
//! received bytes (or EOF) while idle.

mod support;

use std::sync::Arc;
use support::door::Door;
use support::recording::{normal_answer, Options, Seen};
use support::{eventually, within};

fn script(f: impl Fn(&Seen) -> Vec<u8> + Send + Sync + 'static) -> Options {
    Options {
        script: Some(Arc::new(f)),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_101_to_a_plain_request_is_502_and_the_backend_connection_closed() {
    let door = Door::start().await;
    door.rec.set(script(|s| {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen: {}\r\n\r\n", s.seq).into_bytes()
    }));
    let sent = within(30, door.send(b"GET /plain HTTP/1.1\r\nHost: a.example\r\n\r\nGET /after HTTP/1.1\r\nHost: a.example\r\n\r\n")).await;
    assert_eq!(sent.status(), Some(502), "{:?}", sent.replies);
    assert!(sent.reply().unwrap().header("x-seen").is_none());
    let conn = sent.backend.requests[0].conn;
    within(10, eventually(5, || door.rec.conns()[conn].eof)).await;
    let bytes = &door.rec.conns()[conn].bytes;
    assert!(
        !bytes.windows(6).any(|w| w == b"/after"),
        "nothing spliced: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[tokio::test]
async fn a_101_naming_another_protocol_is_502_and_the_backend_connection_closed() {
    let door = Door::start().await;
    door.rec.set(script(|s| {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nX-Seen: {}\r\n\r\n", s.seq).into_bytes()
    }));
    let sent = within(
        30,
        door.send(b"GET /app/x HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    )
    .await;
    assert_eq!(sent.status(), Some(502), "{:?}", sent.replies);
    let conn = sent.backend.requests[0].conn;
    within(10, eventually(5, || door.rec.conns()[conn].eof)).await;
}

#[tokio::test]
async fn a_response_connection_header_naming_its_framing_headers_does_not_unframe_it() {
    let door = Door::start().await;
    door.rec.set(script(|s| {
        if s.req.target == b"/te" {
            format!("HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\nX-Seen: {}\r\n\r\n5\r\nhello\r\n0\r\n\r\n", s.seq).into_bytes()
        } else {
            format!("HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\nX-Seen: {}\r\n\r\nhello", s.seq).into_bytes()
        }
    }));
    // Two requests on one connection: the second answer is only right if the first was framed.
    let sent = within(
        30,
        door.send_parts(
            &[b"GET /cl HTTP/1.1\r\nHost: a.example\r\n\r\nGET /te HTTP/1.1\r\nHost: a.example\r\n\r\n"],
            2,
        ),
    )
    .await;
    assert_eq!(
        sent.replies.len(),
        2,
        "the client could not find where the answers end: {:?}",
        sent.replies
    );
    let (cl, te) = (&sent.replies[0], &sent.replies[1]);
    assert_eq!(cl.header("content-length"), Some("5"), "{cl:?}");
    assert_eq!(cl.body, b"hello");
    assert!(
        te.header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked")),
        "{te:?}"
    );
    assert_eq!(te.body, b"hello");
    assert_eq!(sent.seen().len(), 2);
}

#[tokio::test]
async fn a_pooled_connection_that_received_stray_bytes_is_never_reused() {
    let door = Door::start().await;
    door.rec.set(script(|s| {
        let mut out = normal_answer(s);
        if s.req.target == b"/first" {
            // A whole second answer nobody asked for, sent with the first.
            out.extend_from_slice(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Seen: 999\r\n\r\nstray",
            );
        }
        out
    }));
    let first = within(
        30,
        door.send(b"GET /first HTTP/1.1\r\nHost: a.example\r\n\r\n"),
    )
    .await;
    assert_eq!(first.status(), Some(200));
    let second = within(
        30,
        door.send(b"POST /second HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\n\r\nok"),
    )
    .await;
    let seen = second.seen();
    assert_eq!(seen.len(), 1, "{:?}", second.replies);
    let s2 = door.rec.seen(seen[0]).expect("its own answer");
    assert_eq!(s2.req.target, b"/second");
    assert_ne!(
        s2.conn, first.backend.requests[0].conn,
        "a new backend connection"
    );
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_backend_while_idle_is_never_reused() {
    let door = Door::start().await;
    door.rec.set(Options {
        close_after_answer: true,
        ..Options::default()
    });
    let first = within(
        30,
        door.send(b"GET /first HTTP/1.1\r\nHost: a.example\r\n\r\n"),
    )
    .await;
    assert_eq!(first.status(), Some(200));
    let conn = first.backend.requests[0].conn;
    within(10, eventually(5, || door.rec.conns()[conn].closed())).await;
    door.rec.set(Options::default());
    // Not idempotent: a proxy that sent it on the dead connection could not retry it.
    let second = within(
        30,
        door.send(b"POST /second HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\n\r\nok"),
    )
    .await;
    assert_eq!(second.status(), Some(200), "{:?}", second.replies);
    let s2 = door.rec.seen(second.seen()[0]).unwrap();
    assert_eq!(s2.req.target, b"/second");
    assert_ne!(s2.conn, conn);
}
