//! The access log (PRODUCT.md §3.3): every field of a proxied request, a WebSocket tunnel and an
//! answer the proxy gives itself; the combined format; logrotate's rename + SIGUSR1; a reload that
//! moves, adds or removes the log; and a log nobody reads, which never holds a request up.

mod support;

use qlik_lb::app::Instance;
use qlik_lb::config::Config;
use qlik_lb::reload::Trigger;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::backend::TestBackend;
use support::{frontdoor_config, metric, raw, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn with_log(backend: &TestBackend, section: &str) -> String {
    format!(
        "{}\n{section}\n",
        frontdoor_config(&[("b1", backend.addr_string())], "", "")
    )
}

async fn start_with_file(dir: &Path, text: &str) -> Instance {
    let path = dir.join("qlik-lb.toml");
    std::fs::write(&path, text).unwrap();
    Instance::start(Config::load(&path).unwrap())
        .await
        .expect("instance starts")
}

/// The file's complete lines once it holds at least `n` (polled: the writer is a thread).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete: Vec<String> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.trim_end().to_string())
            .collect();
        if complete.len() >= n {
            return complete;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} holds {} lines, not {n}:\n{text}",
            path.display(),
            complete.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn json_lines(path: &Path, n: usize) -> Vec<Value> {
    lines(path, n)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Sends `request` on a new connection and reads until the proxy closes it: every byte each
/// way, and the client's port.
async fn round_trip(front: SocketAddr, request: &[u8]) -> (Vec<u8>, u16) {
    let mut s = TcpStream::connect(front).await.unwrap();
    let port = s.local_addr().unwrap().port();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    (got, port)
}

fn status_of(reply: &[u8]) -> u16 {
    std::str::from_utf8(&reply[9..12]).unwrap().parse().unwrap()
}

fn header<'a>(reply: &'a [u8], name: &str) -> Option<&'a str> {
    let head =
        std::str::from_utf8(&reply[..reply.windows(4).position(|w| w == b"\r\n\r\n")?]).ok()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn assert_request_id(v: &Value) {
    let id = v["request_id"].as_str().expect("request_id");
    let (prefix, counter) = id.split_once('-').expect("prefix-counter");
    assert_eq!(prefix.len(), 8, "{id}");
    assert!(
        prefix
            .chars()
            .chain(counter.chars())
            .all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
}

fn assert_time_between(v: &Value, before: chrono::DateTime<chrono::Utc>) {
    let text = v["time"].as_str().expect("time");
    assert!(text.ends_with('Z'), "UTC: {text}");
    let t = chrono::DateTime::parse_from_rfc3339(text).expect("RFC 3339");
    let after = chrono::Utc::now();
    let slack = chrono::Duration::milliseconds(1);
    assert!(
        t >= before - slack && t <= after,
        "{text} not in [{before}, {after}]"
    );
}

fn assert_timings(v: &Value) {
    let ttfb = v["ttfb_ms"].as_f64().expect("ttfb_ms");
    let duration = v["duration_ms"].as_f64().expect("duration_ms");
    assert!(
        ttfb >= 0.0 && ttfb <= duration && duration < 10_000.0,
        "{v}"
    );
}

#[tokio::test]
async fn a_proxied_request_logs_every_field_and_the_sticky_outcome() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"logs/access.log\"\nformat = \"json\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        let before = chrono::Utc::now();
        let first_req = b"GET /hello?x=1 HTTP/1.1\r\nHost: site\r\nUser-Agent: probe/1.0\r\nConnection: close\r\n\r\n";
        let (first, first_port) = round_trip(front, first_req).await;
        assert_eq!(status_of(&first), 200);
        let cookie = header(&first, "set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("pinned")
            .to_string();
        let second_req = format!(
            "POST /again HTTP/1.1\r\nHost: site\r\nCookie: {cookie}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        );
        let (second, second_port) = round_trip(front, second_req.as_bytes()).await;
        assert_eq!(status_of(&second), 200);

        let log = json_lines(&dir.path().join("logs/access.log"), 2).await;
        assert_eq!(log.len(), 2);
        let (a, b) = (&log[0], &log[1]);
        for (v, port) in [(a, first_port), (b, second_port)] {
            assert_time_between(v, before);
            assert_request_id(v);
            assert_eq!(v["client_ip"], "127.0.0.1");
            assert_eq!(v["client_port"], port);
            assert_eq!(v["frontend"], "public");
            assert_eq!(v["tls"], false);
            assert_eq!(v["status"], 200);
            assert_timings(v);
            assert_eq!(v["pool"], "proxies");
            assert_eq!(v["backend"], "b1");
            assert_eq!(v["websocket"], false);
            assert!(v.get("tunnel_ms").is_none(), "{v}");
            assert_eq!(v.as_object().unwrap().len(), 18, "{v}");
        }
        assert_ne!(a["request_id"], b["request_id"]);
        assert_eq!(a["method"], "GET");
        assert_eq!(a["target"], "/hello?x=1");
        assert_eq!(a["bytes_in"], first_req.len());
        assert_eq!(a["bytes_out"], first.len());
        assert_eq!(a["sticky"], "miss");
        assert_eq!(a["user_agent"], "probe/1.0");
        assert_eq!(b["method"], "POST");
        assert_eq!(b["target"], "/again");
        assert_eq!(b["bytes_in"], second_req.len(), "head and body");
        assert_eq!(b["bytes_out"], second.len());
        assert_eq!(b["sticky"], "hit");
        assert_eq!(b["user_agent"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn a_route_cookie_that_cannot_be_accepted_logs_invalid() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"access.log\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        let reply = raw::get(front, "/", &[("Cookie", "QLB_ROUTE=nobody-here")]).await;
        assert_eq!(reply.status, 200);
        let v = &json_lines(&dir.path().join("access.log"), 1).await[0];
        assert_eq!(v["sticky"], "invalid");
        assert_eq!(v["backend"], "b1");
    })
    .await;
}

#[tokio::test]
async fn keep_alive_requests_each_count_their_own_bytes() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"access.log\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        let mut s = TcpStream::connect(front).await.unwrap();
        let one = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
        let two = b"GET /second-one HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        // Both in one write: the second is pipelined behind the first.
        s.write_all(&[&one[..], &two[..]].concat()).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let log = json_lines(&dir.path().join("access.log"), 2).await;
        assert_eq!(log[0]["target"], "/one");
        assert_eq!(log[0]["bytes_in"], one.len());
        assert_eq!(log[1]["target"], "/second-one");
        assert_eq!(log[1]["bytes_in"], two.len());
        let out = log[0]["bytes_out"].as_u64().unwrap() + log[1]["bytes_out"].as_u64().unwrap();
        assert_eq!(out, got.len() as u64);
    })
    .await;
}

#[tokio::test]
async fn a_websocket_tunnel_is_one_line_written_when_it_closes() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(dir.path(), &with_log(&backend, "[access_log]\npath = \"access.log\"")).await;
        let front = lb.frontend_addr("public").unwrap();
        let path = dir.path().join("access.log");
        let mut s = TcpStream::connect(front).await.unwrap();
        let handshake = b"GET /app/x HTTP/1.1\r\nHost: site\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        // A masked text frame "ping" (mask 0: the payload goes as is).
        let ping = [0x81, 0x84, 0, 0, 0, 0, b'p', b'i', b'n', b'g'];
        let mut sent = handshake.to_vec();
        sent.extend_from_slice(&ping);
        s.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        let head = raw::read_head(&mut s, &mut got).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let head_len = head.len();
        while got.len() < 6 {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(&got[..6], &[0x81, 4, b'p', b'i', b'n', b'g'], "the echo");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            std::fs::read_to_string(&path).unwrap_or_default(),
            "",
            "nothing is logged while the tunnel is open"
        );
        let close = [0x88, 0x80, 0, 0, 0, 0];
        s.write_all(&close).await.unwrap();
        sent.extend_from_slice(&close);
        s.read_to_end(&mut got).await.unwrap();
        drop(s);
        let received = head_len + got.len();

        let log = json_lines(&path, 1).await;
        assert_eq!(log.len(), 1, "{log:?}");
        let v = &log[0];
        assert_eq!(v["status"], 101);
        assert_eq!(v["websocket"], true);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/app/x");
        assert_eq!(v["backend"], "b1");
        assert_eq!(v["sticky"], "miss");
        assert_eq!(v["bytes_in"], sent.len(), "handshake and frames");
        assert_eq!(v["bytes_out"], received);
        let tunnel = v["tunnel_ms"].as_f64().expect("tunnel_ms");
        assert!(tunnel >= 50.0, "open at least while the test waited: {v}");
        assert!(v["duration_ms"].as_f64().unwrap() >= tunnel);
        assert_eq!(v.as_object().unwrap().len(), 19);
    })
    .await;
}

#[tokio::test]
async fn an_answer_the_proxy_gives_itself_is_logged_with_its_request_id() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"access.log\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        let junk = b"NOT HTTP AT ALL\r\n\r\n";
        let (answer, port) = round_trip(front, junk).await;
        assert_eq!(status_of(&answer), 400);
        let id = header(&answer, "x-request-id").expect("x-request-id");
        let log = json_lines(&dir.path().join("access.log"), 1).await;
        let v = &log[0];
        assert_eq!(v["status"], 400);
        assert_eq!(v["request_id"], id);
        assert_eq!(v["client_port"], port);
        assert_eq!(v["backend"], Value::Null);
        assert_eq!(v["sticky"], "none");
        assert_eq!(v["method"], Value::Null);
        assert_eq!(v["pool"], "proxies");
        assert_eq!(v["bytes_in"], junk.len());
        assert_eq!(v["bytes_out"], answer.len());

        // A bad chunk that came with a parsed head: refused before routing anywhere; the body
        // bytes read with the head count as received.
        let bad_chunk = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let (answer, _) = round_trip(front, bad_chunk).await;
        assert_eq!(status_of(&answer), 400);
        let log = json_lines(&dir.path().join("access.log"), 2).await;
        let v = &log[1];
        assert_eq!(v["status"], 400);
        assert_eq!(v["request_id"], header(&answer, "x-request-id").unwrap());
        assert_eq!(v["method"], "POST");
        assert_eq!(v["target"], "/up");
        assert_eq!(v["backend"], Value::Null);
        assert_eq!(v["sticky"], "none");
        assert_eq!(v["bytes_in"], bad_chunk.len());
        assert_eq!(v["bytes_out"], answer.len());
        assert_eq!(backend.request_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_redirect_is_logged_for_the_client_the_proxy_protocol_names() {
    within(30, async {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}\n[access_log]\npath = \"access.log\"\n",
            frontdoor_config(
                &[("b1", "127.0.0.1:9".to_string())],
                "",
                "proxy_protocol = true\nredirect_https = true"
            )
        );
        let lb = start_with_file(dir.path(), &text).await;
        let front = lb.frontend_addr("public").unwrap();
        let proxy_header = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\n";
        let request = b"GET /hub HTTP/1.1\r\nHost: qlik.example\r\nConnection: close\r\n\r\n";
        let (answer, _) = round_trip(front, &[&proxy_header[..], &request[..]].concat()).await;
        assert_eq!(status_of(&answer), 308);
        let v = &json_lines(&dir.path().join("access.log"), 1).await[0];
        assert_eq!(v["status"], 308);
        assert_eq!(v["client_ip"], "203.0.113.7");
        assert_eq!(v["client_port"], 40000);
        assert_eq!(v["target"], "/hub");
        assert_eq!(v["backend"], Value::Null);
        assert_eq!(v["sticky"], "none");
        assert_eq!(
            v["bytes_in"],
            request.len(),
            "the PROXY header is not the request's"
        );
        assert_eq!(v["bytes_out"], answer.len());
        assert_eq!(v["request_id"], header(&answer, "x-request-id").unwrap());
    })
    .await;
}

#[tokio::test]
async fn the_combined_format_is_the_standard_line_then_the_extra_fields() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"access.log\"\nformat = \"combined\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        let req = b"GET /hub/ HTTP/1.1\r\nHost: site\r\nReferer: https://site/x\r\nUser-Agent: Mozilla/5.0 (X11)\r\nConnection: close\r\n\r\n";
        let (answer, port) = round_trip(front, req).await;
        let line = lines(&dir.path().join("access.log"), 1).await.remove(0);
        let (standard, extra) = line.split_once(" request_id=").expect("extra fields");
        let (ip, rest) = standard.split_once(" - - [").unwrap();
        assert_eq!(ip, "127.0.0.1");
        let (time, rest) = rest.split_once("] ").unwrap();
        chrono::DateTime::parse_from_str(time, "%d/%b/%Y:%H:%M:%S %z").expect("common log time");
        let quoted: Vec<&str> = rest.split('"').collect();
        assert_eq!(quoted[1], "GET /hub/ HTTP/1.1");
        assert_eq!(quoted[2], format!(" 200 {} ", answer.len()));
        assert_eq!(quoted[3], "https://site/x");
        assert_eq!(quoted[5], "Mozilla/5.0 (X11)");
        let fields: Vec<(&str, &str)> = format!("request_id={extra}")
            .leak()
            .split(' ')
            .map(|kv| kv.split_once('=').expect("key=value"))
            .collect();
        let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "request_id", "client_port", "frontend", "tls", "bytes_in", "ttfb_ms",
                "duration_ms", "pool", "backend", "sticky", "websocket"
            ]
        );
        let get = |k: &str| fields.iter().find(|(n, _)| *n == k).unwrap().1;
        assert_eq!(get("client_port"), port.to_string());
        assert_eq!(get("frontend"), "\"public\"");
        assert_eq!(get("tls"), "false");
        assert_eq!(get("bytes_in"), req.len().to_string());
        assert_eq!(get("pool"), "\"proxies\"");
        assert_eq!(get("backend"), "\"b1\"");
        assert_eq!(get("sticky"), "miss");
        assert_eq!(get("websocket"), "false");
        assert!(get("ttfb_ms").parse::<f64>().is_ok());
    })
    .await;
}

async fn get_ok(front: SocketAddr, path: &str) {
    assert_eq!(raw::get(front, path, &[]).await.status, 200);
}

#[tokio::test]
async fn sigusr1_reopens_the_file_after_logrotate_renamed_it() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"access.log\""),
        )
        .await;
        lb.watch_for_reloads().expect("signal handlers");
        let front = lb.frontend_addr("public").unwrap();
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        get_ok(front, "/before").await;
        lines(&path, 1).await;
        std::fs::rename(&path, &rotated).unwrap();
        // SAFETY: raise(3) sends a signal to this process, whose SIGUSR1 handler is installed.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR1) }, 0);
        support::eventually(10, || path.exists()).await;
        get_ok(front, "/after").await;
        let new = json_lines(&path, 1).await;
        assert_eq!(new.len(), 1);
        assert_eq!(new[0]["target"], "/after");
        let old = json_lines(&rotated, 1).await;
        assert_eq!(old.len(), 1, "the renamed file keeps only the old line");
        assert_eq!(old[0]["target"], "/before");
    })
    .await;
}

#[tokio::test]
async fn a_reload_moves_adds_and_removes_the_log() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.log");
        let second = dir.path().join("second.log");
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"first.log\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        let config = dir.path().join("qlik-lb.toml");
        get_ok(front, "/one").await;
        lines(&first, 1).await;

        std::fs::write(
            &config,
            with_log(&backend, "[access_log]\npath = \"second.log\""),
        )
        .unwrap();
        assert!(lb.reload(Trigger::Api).await.ok);
        get_ok(front, "/two").await;
        assert_eq!(json_lines(&second, 1).await[0]["target"], "/two");

        // A path that cannot be opened: the reload fails and the serving log stays, reopened
        // (a SIGHUP from logrotate still moves it to a new file when the config is broken).
        let rotated = dir.path().join("second.log.1");
        std::fs::rename(&second, &rotated).unwrap();
        std::fs::write(dir.path().join("blocker"), "a file, not a folder").unwrap();
        std::fs::write(
            &config,
            with_log(&backend, "[access_log]\npath = \"blocker/x.log\""),
        )
        .unwrap();
        let failed = lb.reload(Trigger::Api).await;
        assert!(!failed.ok);
        assert!(
            failed.errors.iter().any(|e| e.key == "access_log.path"),
            "{:?}",
            failed.errors
        );
        support::eventually(10, || second.exists()).await;
        get_ok(front, "/three").await;
        assert_eq!(json_lines(&second, 1).await[0]["target"], "/three");
        assert_eq!(json_lines(&rotated, 1).await.len(), 1);

        std::fs::write(&config, with_log(&backend, "")).unwrap();
        assert!(lb.reload(Trigger::Api).await.ok);
        get_ok(front, "/four").await;
        std::fs::write(
            &config,
            with_log(&backend, "[access_log]\npath = \"first.log\""),
        )
        .unwrap();
        assert!(lb.reload(Trigger::Api).await.ok);
        get_ok(front, "/five").await;
        let targets: Vec<Value> = json_lines(&first, 2)
            .await
            .iter()
            .map(|v| v["target"].clone())
            .collect();
        assert_eq!(
            targets,
            ["/one", "/five"],
            "nothing logged while the section was out"
        );
        assert_eq!(lines(&second, 1).await.len(), 1);
        assert_eq!(lines(&first, 2).await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn shutdown_returns_once_the_last_lines_are_written() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"access.log\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        for i in 0..20 {
            get_ok(front, &format!("/{i}")).await;
        }
        lb.shutdown().await;
        let text = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
        assert_eq!(text.lines().count(), 20, "{text}");
    })
    .await;
}

#[tokio::test]
async fn a_path_that_cannot_be_opened_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "a file").unwrap();
    let text = format!(
        "{}\n[access_log]\npath = \"blocker/access.log\"\n",
        frontdoor_config(&[("b1", "127.0.0.1:9".to_string())], "", "")
    );
    let cfg = Config::parse(&text, dir.path()).expect("valid text");
    let err = Instance::start(cfg).await.err().expect("start refused");
    assert!(err.to_string().contains("access_log.path"), "{err}");
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[tokio::test]
async fn a_log_nobody_reads_never_holds_a_request_up_and_counts_its_drops() {
    within(120, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let fifo: PathBuf = dir.path().join("stalled.log");
        mkfifo(&fifo);
        // Open for reading and never read: the writer fills the pipe, then blocks on it.
        let _reader = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap()
        };
        let lb = start_with_file(
            dir.path(),
            &with_log(&backend, "[access_log]\npath = \"stalled.log\""),
        )
        .await;
        let front = lb.frontend_addr("public").unwrap();
        let ua = "x".repeat(2000);
        let request = format!("GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: {ua}\r\n\r\n");
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(TcpStream::connect(front).await.unwrap());
        }
        let mut buf = Vec::new();
        let mut sent = 0;
        // The pipe's buffer plus the queue's lines, then drops: well under this many requests.
        while sent < 20_000 {
            for s in conns.iter_mut() {
                buf.clear();
                let reply = tokio::time::timeout(
                    Duration::from_secs(5),
                    raw::exchange(s, &mut buf, request.as_bytes()),
                )
                .await
                .expect("answered while the log is stalled");
                assert_eq!(reply.status, 200);
                sent += 1;
            }
            if sent % 500 == 0 && metric(&lb, "qlb_access_log_dropped_total").await > 0.0 {
                break;
            }
        }
        let dropped = metric(&lb, "qlb_access_log_dropped_total").await;
        assert!(dropped > 0.0, "{sent} requests and nothing dropped");
        assert!(
            dropped <= sent as f64 - qlik_lb::access_log::QUEUE_LINES as f64,
            "only lines beyond the queue are dropped: {dropped} of {sent}"
        );
    })
    .await;
}
