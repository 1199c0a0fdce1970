//! Shared pieces of the integration tests: test backends (hyper HTTP + tokio-tungstenite
//! WebSocket echo) on 127.0.0.1:0, an instance started from a config string, and a raw HTTP/1.1
//! client for byte-level assertions; for §3.1, a recording backend, a strict reference parser
//! and a front door over the recorder (`door`).
#![allow(dead_code)]

pub mod backend;
pub mod browser;
pub mod cluster;
pub mod door;
pub mod edge;
pub mod etcd;
pub mod pki;
pub mod raw;
pub mod recording;
pub mod scripted;
pub mod strict;

use qlik_lb::app::Instance;
use qlik_lb::config::Config;
use std::future::Future;
use std::time::Duration;

/// Every test step gets a deadline so a hang fails instead of blocking the suite.
pub async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("step did not finish in time")
}

/// The demo (simulated site, qlik-lb in front, every role on) on ephemeral ports.
pub async fn start_demo() -> qlik_lb::demo::Demo {
    let args = qlik_lb::demo::DemoArgs {
        frontdoor: "127.0.0.1:0".into(),
        lb_module: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
    };
    qlik_lb::demo::Demo::start(&args)
        .await
        .expect("demo starts")
}

/// A user's traffic through the demo: the hub, a QIX WebSocket (returned open, OnConnected
/// read), a request the front door refuses (400), and an LB module call.
pub async fn demo_traffic(
    demo: &qlik_lb::demo::Demo,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::StreamExt;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let front = demo.instance.frontend_addr("public").unwrap();
    assert_eq!(raw::get(front, "/hub", &[]).await.status, 200);
    let req = format!("ws://{front}/app/{}", qlik_lb::demo::DEMO_APP)
        .into_client_request()
        .unwrap();
    let tcp = TcpStream::connect(front).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert!(ws.next().await.unwrap().unwrap().is_text(), "OnConnected");
    let mut bad = TcpStream::connect(front).await.unwrap();
    let mut buf = Vec::new();
    let junk = raw::exchange(&mut bad, &mut buf, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(junk.status, 400);
    let lbm = demo.instance.lb_module.expect("LB module listening");
    let body = r#"{"AppName":"a","QlikSenseEngines":["wss://127.0.0.1:1"]}"#;
    let req = format!(
        "POST /loadbalancing/prioritize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(lbm).await.unwrap();
    buf.clear();
    assert_eq!(
        raw::exchange(&mut s, &mut buf, req.as_bytes()).await.status,
        200
    );
    ws
}

/// Starts an instance from TOML text (paths relative to `dir`).
pub async fn start(toml: &str) -> Instance {
    start_in(toml, std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).await
}

pub async fn start_in(toml: &str, dir: &std::path::Path) -> Instance {
    let cfg = Config::parse(toml, dir)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{toml}"));
    Instance::start(cfg).await.expect("instance starts")
}

/// A front door over the given backends: `[(id, "127.0.0.1:port")]`, plus extra `[[pool]]` keys.
pub fn frontdoor_config(
    backends: &[(&str, String)],
    pool_extra: &str,
    frontend_extra: &str,
) -> String {
    let mut s = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[[frontend]]
name = "public"
listen = "127.0.0.1:0"
pool = "proxies"
{frontend_extra}

[[pool]]
name = "proxies"
balance = "round-robin"
connect_timeout = "1s"
response_timeout = "5s"
{pool_extra}
  [pool.health]
  # TCP checks: the tests count every HTTP request a backend receives.
  check = "tcp"
"#
    );
    for (id, addr) in backends {
        s.push_str(&format!(
            "  [[pool.backend]]\n  id = \"{id}\"\n  url = \"http://{addr}\"\n"
        ));
    }
    s
}

/// Test backends with these ids and a front door over them (`frontdoor_config` extras).
pub async fn frontdoor_over(
    ids: &[&str],
    pool_extra: &str,
    frontend_extra: &str,
) -> (Vec<backend::TestBackend>, Instance) {
    let mut backends = Vec::new();
    for id in ids {
        backends.push(backend::TestBackend::start(id).await);
    }
    let pairs: Vec<(&str, String)> = backends
        .iter()
        .map(|b| (b.id.as_str(), b.addr_string()))
        .collect();
    let lb = start(&frontdoor_config(&pairs, pool_extra, frontend_extra)).await;
    (backends, lb)
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Scrapes the admin `/metrics` and returns the value of one sample line, e.g.
/// `qlb_sticky_decisions_total{outcome="hit",pool="proxies"}`.
pub async fn metric(instance: &Instance, sample_prefix: &str) -> f64 {
    let admin = instance.admin_addr().expect("admin listener");
    let scraped = raw::get(admin, "/metrics", &[]).await;
    assert_eq!(scraped.status, 200);
    let body = String::from_utf8(scraped.body).expect("utf-8 metrics");
    body.lines()
        .find(|l| l.starts_with(sample_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().expect("numeric sample"))
        .unwrap_or(0.0)
}

/// Polls one metric sample until it reads `value`, or fails after `secs`.
pub async fn metric_reaches(instance: &Instance, sample: &str, value: f64, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let now = metric(instance, sample).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} is {now}, not {value}, after {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
