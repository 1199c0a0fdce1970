//! The admin listener's own deadlines over real sockets: a request head that stops halfway is
//! closed after the head deadline, a declared body that stops halfway gets 408 (and the request is
//! not acted on), and a POST refused by the token check is answered without waiting for its body.

mod support;

use qlik_lb::app::Instance;
use qlik_lb::listen_limits::{BODY_TIMEOUT, HEAD_TIMEOUT};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::backend::TestBackend;
use support::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "limits-admin-token-0123456789";
/// Timers never fire early, but the client starts its clock a little after the server does.
const SLACK: Duration = Duration::from_millis(250);
/// Outer bound on any wait for the listener: past the 10 s deadlines, short of a hang.
const OUTER: Duration = Duration::from_secs(20);

/// An instance with an admin listener (token required) over one test backend `b1`.
async fn instance(dir: &std::path::Path, b1: &TestBackend) -> Instance {
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let toml = support::frontdoor_config(&[("b1", b1.addr_string())], "", "").replacen(
        "[admin]\n",
        "[admin]\ntoken_file = \"admin.token\"\n",
        1,
    );
    support::start_in(&toml, dir).await
}

/// Sends `bytes` on a new connection, then stays silent and reads until the listener closes.
/// Returns what it sent back and how long after the bytes went out the close came.
async fn send_then_wait_for_close(admin: SocketAddr, bytes: &[u8]) -> (String, Duration) {
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(OUTER, tcp.read_to_end(&mut answer))
        .await
        .expect("the admin listener closes the connection")
        .expect("a clean close");
    (String::from_utf8(answer).unwrap(), sent.elapsed())
}

fn split(answer: &str) -> (String, serde_json::Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    (head.to_ascii_lowercase(), body)
}

#[tokio::test]
async fn a_partial_head_is_closed_after_the_head_deadline() {
    let b1 = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let lb = instance(dir.path(), &b1).await;
    let admin = lb.admin_addr().unwrap();

    let (answer, waited) =
        send_then_wait_for_close(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        waited >= HEAD_TIMEOUT - SLACK,
        "closed after {waited:?}, before the head deadline"
    );
    // hyper closes a connection whose head timed out without answering it.
    assert_eq!(answer, "", "a bare close, no answer");
    lb.shutdown().await;
}

#[tokio::test]
async fn a_post_whose_body_does_not_arrive_gets_408_and_is_not_acted_on() {
    let b1 = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let lb = instance(dir.path(), &b1).await;
    let admin = lb.admin_addr().unwrap();

    let request = format!(
        "POST /api/v1/pools/proxies/backends/b1/drain HTTP/1.1\r\nHost: admin\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    let (answer, waited) = send_then_wait_for_close(admin, request.as_bytes()).await;
    assert!(
        waited >= BODY_TIMEOUT - SLACK,
        "answered after {waited:?}, before the body deadline"
    );
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let (head, body) = split(&answer);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let id = body["request_id"].as_str().expect("a request id");
    assert!(head.contains(&format!("x-request-id: {id}")), "{head}");
    assert!(
        body["error"].as_str().unwrap().contains("did not arrive"),
        "{body}"
    );
    // Cut short, the request was never carried out.
    let b = lb.shared.registry.get("proxies", "b1").unwrap();
    assert!(!b.is_draining());
    // The listener still serves.
    assert_eq!(raw::get(admin, "/healthz", &[]).await.status, 200);
    lb.shutdown().await;
}

#[tokio::test]
async fn a_post_refused_by_the_token_check_does_not_wait_for_its_body() {
    let b1 = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().unwrap();
    let lb = instance(dir.path(), &b1).await;
    let admin = lb.admin_addr().unwrap();

    let request = "POST /api/v1/reload HTTP/1.1\r\nHost: admin\r\n\
                   Content-Length: 100\r\n\r\n0123456789";
    let (answer, waited) = send_then_wait_for_close(admin, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(
        waited < BODY_TIMEOUT / 2,
        "the refusal waited {waited:?} for a body it does not need"
    );
    lb.shutdown().await;
}
