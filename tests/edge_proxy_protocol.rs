//! PROXY protocol on a frontend (PRODUCT.md §3.2): v1, v2 `PROXY` and v2 `LOCAL` headers name
//! the client the backend sees in `X-Forwarded-For`; a header split over writes works; TLS
//! starts right after the header; a missing, garbled or late header, or one from a peer outside
//! `proxy_protocol_from`, closes the connection without an answer and is counted.

mod support;

use std::time::Duration;
use support::door::{Door, Sent};
use support::edge::{proxy_v1, proxy_v2, proxy_v2_local, self_signed};
use support::{metric_reaches, raw, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /hub HTTP/1.1\r\nHost: qlik.example\r\n\r\n";
const REFUSED: &str = "qlb_client_errors_total{frontend=\"public\",kind=\"proxy_protocol\"}";

async fn proxy_door(extra: &str) -> Door {
    Door::start_with(
        &format!("proxy_protocol = true\nheader_timeout = \"1s\"\n{extra}"),
        "",
    )
    .await
}

/// The one request the backend received, and the bytes it got on that connection.
fn forwarded_for(sent: &Sent) -> String {
    assert_eq!(sent.status(), Some(200), "{sent:?}");
    assert_eq!(sent.backend.requests.len(), 1, "{sent:?}");
    let req = &sent.backend.requests[0].req;
    let xff = req.all("x-forwarded-for");
    assert_eq!(xff.len(), 1, "one X-Forwarded-For line");
    let bytes: Vec<u8> = sent
        .backend
        .bytes
        .iter()
        .flat_map(|(_, b)| b.clone())
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("GET /hub HTTP/1.1\r\nHost: qlik.example\r\n"),
        "the request starts right after the header: {text}"
    );
    assert!(
        !text.contains("PROXY"),
        "the header is not forwarded: {text}"
    );
    String::from_utf8(xff[0].to_vec()).unwrap()
}

/// Sends `parts` as separate writes; a pause between them lets the proxy read a part alone
/// (the answer must be the same whether or not the kernel joined them).
async fn send_apart(door: &Door, parts: &[&[u8]]) -> Sent {
    let mark = door.rec.mark();
    let mut s = TcpStream::connect(door.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for p in parts {
        s.write_all(p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = support::door::Client::new(s);
    let (replies, closed) = client.read_answers(1, Duration::from_secs(5)).await;
    door.rec.settle(5).await;
    Sent {
        replies,
        closed,
        backend: door.rec.since(&mark),
    }
}

#[tokio::test]
async fn v1_v2_and_local_headers_name_the_client() {
    let door = proxy_door("").await;
    within(20, async {
        let v1 = door
            .send_parts(&[&proxy_v1("203.0.113.7", 51000), REQUEST], 1)
            .await;
        assert_eq!(forwarded_for(&v1), "203.0.113.7");

        let v2 = door
            .send_parts(&[&proxy_v2([198, 51, 100, 9], 40000), REQUEST], 1)
            .await;
        assert_eq!(forwarded_for(&v2), "198.51.100.9");

        // LOCAL: the load balancer's own health check; the client is the TCP peer.
        let local = door.send_parts(&[&proxy_v2_local(), REQUEST], 1).await;
        assert_eq!(forwarded_for(&local), "127.0.0.1");

        // The header and the request in one write: exactly the header is consumed.
        let mut joined = proxy_v1("203.0.113.8", 1234);
        joined.extend_from_slice(REQUEST);
        let one = door.send(&joined).await;
        assert_eq!(forwarded_for(&one), "203.0.113.8");
    })
    .await;
    metric_reaches(&door.lb, REFUSED, 0.0, 5).await;
}

#[tokio::test]
async fn a_header_split_over_writes_is_read_whole() {
    let door = proxy_door("").await;
    within(20, async {
        let v1 = proxy_v1("203.0.113.9", 443);
        let (a, b) = v1.split_at(9);
        let sent = send_apart(&door, &[a, b, REQUEST]).await;
        assert_eq!(forwarded_for(&sent), "203.0.113.9");

        let v2 = proxy_v2([192, 0, 2, 44], 443);
        // Inside the fixed part, then inside the addresses.
        let sent = send_apart(&door, &[&v2[..10], &v2[10..20], &v2[20..], REQUEST]).await;
        assert_eq!(forwarded_for(&sent), "192.0.2.44");
    })
    .await;
}

#[tokio::test]
async fn tls_starts_right_after_the_header() {
    let cert = self_signed();
    let door = proxy_door(&cert.frontend_tls()).await;
    within(20, async {
        let mark = door.rec.mark();
        let mut tcp = TcpStream::connect(door.addr).await.unwrap();
        tcp.write_all(&proxy_v2([198, 51, 100, 23], 50000))
            .await
            .unwrap();
        let mut tls = cert.connect(tcp).await;
        let mut buf = Vec::new();
        let reply = raw::exchange(&mut tls, &mut buf, REQUEST).await;
        assert_eq!(reply.status, 200);
        door.rec.settle(5).await;
        let got = door.rec.since(&mark);
        let req = &got.requests[0].req;
        assert_eq!(req.all("x-forwarded-for"), [&b"198.51.100.23"[..]]);
        assert_eq!(req.all("x-forwarded-proto"), [&b"https"[..]]);
    })
    .await;
}

/// Closed with no byte of an answer, nothing forwarded.
fn closed_unanswered(sent: &Sent) {
    assert!(sent.replies.is_empty(), "no answer: {sent:?}");
    assert!(sent.closed, "closed: {sent:?}");
    assert_eq!(sent.backend.byte_count(), 0, "nothing forwarded: {sent:?}");
}

#[tokio::test]
async fn a_missing_garbled_or_late_header_closes_without_an_answer() {
    let door = proxy_door("").await;
    within(20, async {
        closed_unanswered(&door.send(REQUEST).await);
        metric_reaches(&door.lb, REFUSED, 1.0, 5).await;
        closed_unanswered(
            &door
                .send_parts(&[b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n", REQUEST], 1)
                .await,
        );
        metric_reaches(&door.lb, REFUSED, 2.0, 5).await;
        let mut bad_v2 = proxy_v2([192, 0, 2, 1], 1);
        bad_v2[12] = 0x31; // version 3
        closed_unanswered(&door.send_parts(&[&bad_v2, REQUEST], 1).await);
        metric_reaches(&door.lb, REFUSED, 3.0, 5).await;
        // Half a header, then nothing: closed at header_timeout (1s).
        let v1 = proxy_v1("203.0.113.7", 1);
        closed_unanswered(&door.send_parts(&[&v1[..10]], 1).await);
        metric_reaches(&door.lb, REFUSED, 4.0, 5).await;
    })
    .await;
}

#[tokio::test]
async fn a_peer_outside_proxy_protocol_from_is_closed() {
    let door = proxy_door("proxy_protocol_from = [\"10.0.0.0/8\", \"192.168.0.0/16\"]").await;
    within(20, async {
        closed_unanswered(
            &door
                .send_parts(&[&proxy_v1("203.0.113.7", 51000), REQUEST], 1)
                .await,
        );
        metric_reaches(&door.lb, REFUSED, 1.0, 5).await;
    })
    .await;
    let trusted = proxy_door("proxy_protocol_from = [\"127.0.0.0/8\"]").await;
    within(20, async {
        let sent = trusted
            .send_parts(&[&proxy_v1("203.0.113.7", 51000), REQUEST], 1)
            .await;
        assert_eq!(forwarded_for(&sent), "203.0.113.7");
    })
    .await;
}
