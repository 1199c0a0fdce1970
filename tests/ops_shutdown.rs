//! Graceful shutdown: stop accepting, let in-flight requests finish, give open tunnels the grace,
//! then close them; exit as soon as everything is done. Once with the real binary and SIGTERM,
//! once in-process with a grace that runs out.

mod support;

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::backend::TestBackend;
use support::{frontdoor_config, raw, start, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open_ws(addr: SocketAddr) -> Ws {
    let req = format!("ws://{addr}/app/shutdown")
        .into_client_request()
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("upgrade")
        .0
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text),
        other => panic!("no echo: {other:?}"),
    }
}

/// Kills the child if the test fails before it exits on its own.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `qlik-lb run` and reads the front-door and admin addresses from its JSON log lines.
fn spawn_binary(config: &std::path::Path) -> (Running, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qlik-lb"))
        .args([
            "--log-format",
            "json",
            "--log-level",
            "info",
            "run",
            "--config",
        ])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qlik-lb");
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut front, mut admin) = (None, None);
    while front.is_none() || admin.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("qlik-lb logs its listeners");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let addr = v["fields"]["addr"].as_str().map(|a| a.parse().unwrap());
        match v["fields"]["message"].as_str() {
            Some("front door listening") => front = addr,
            Some("admin listening") => admin = addr,
            _ => {}
        }
    }
    (running, front.unwrap(), admin.unwrap())
}

fn sigterm(child: &Child) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// Polls for the child's exit; returns when it exited, or fails at the deadline.
async fn exited_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "qlik-lb did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_work_and_exits_before_the_grace() {
    within(60, async {
        let backend = TestBackend::start("b1").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qlik-lb.toml");
        let text = frontdoor_config(&[("b1", backend.addr_string())], "", "")
            .replace("shutdown_grace = \"2s\"", "shutdown_grace = \"20s\"");
        std::fs::write(&path, text).unwrap();
        let (mut running, front, _admin) = spawn_binary(&path);

        let mut tunnels = Vec::new();
        for _ in 0..3 {
            tunnels.push(open_ws(front).await);
        }
        // An upload in flight: the head and half the body are sent before SIGTERM.
        let mut upload = TcpStream::connect(front).await.unwrap();
        upload
            .write_all(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
            .await
            .unwrap();
        // A keep-alive client between requests.
        let mut idle = TcpStream::connect(front).await.unwrap();
        let mut idle_buf = Vec::new();
        let first = raw::exchange(
            &mut idle,
            &mut idle_buf,
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert_eq!(first.status, 200);
        support::eventually(5, || backend.request_count() >= 5).await;

        sigterm(&running.0);
        // Stop accepting: new connections are refused once the listener is closed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(front).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after SIGTERM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The idle keep-alive connection is closed at once, not after keepalive_timeout (300 s by default).
        let mut rest = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut rest))
            .await
            .expect("the idle keep-alive connection is closed at SIGTERM");
        assert_eq!(read.unwrap_or(0), 0);
        // The in-flight upload completes, and the tunnels still carry messages in the grace.
        upload.write_all(b"world").await.unwrap();
        let mut buf = Vec::new();
        let reply = raw::read_reply(&mut upload, &mut buf).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["bytes"], 10);
        assert_eq!(reply.header("connection"), Some("close"));
        for (i, ws) in tunnels.iter_mut().enumerate() {
            echo(ws, &format!("still open {i}")).await;
        }
        assert!(
            running.0.try_wait().unwrap().is_none(),
            "waits for open tunnels"
        );

        // Everything finished early: the process exits at once, far inside the 20 s grace.
        let closed = Instant::now();
        drop(upload);
        for mut ws in tunnels {
            ws.close(None).await.unwrap();
        }
        let status = exited_within(&mut running.0, Duration::from_secs(5)).await;
        assert!(status.success(), "exit status {status}");
        assert!(closed.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn tunnels_are_closed_when_the_grace_runs_out() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let text = frontdoor_config(&[("b1", backend.addr_string())], "", "")
            .replace("shutdown_grace = \"2s\"", "shutdown_grace = \"1s\"");
        let instance = start(&text).await;
        let front = instance.frontend_addr("public").unwrap();
        let mut ws = open_ws(front).await;
        echo(&mut ws, "before").await;

        let began = Instant::now();
        let shutdown = tokio::spawn(instance.shutdown());
        // The tunnel works during the grace, then the proxy closes it.
        echo(&mut ws, "during the grace").await;
        match ws.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
        }
        let closed_after = began.elapsed();
        assert!(
            closed_after >= Duration::from_millis(900),
            "closed before the grace: {closed_after:?}"
        );
        shutdown.await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "shutdown returned promptly"
        );
    })
    .await;
}
