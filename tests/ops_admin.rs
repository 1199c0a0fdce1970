//! The admin API over real sockets: bearer token on every POST, drain/undrain reflected in routing,
//! status and readiness, error answers with request ids, the status page, and a broken config
//! reload that keeps the old config serving and reports where the file is wrong.

mod support;

use qlik_lb::app::Instance;
use qlik_lb::config::Config;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use support::backend::TestBackend;
use support::raw::{self, Reply};
use support::{eventually, within};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-admin-token-0123456789";

fn config(b1: &str, b2: &str, balance: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"
shutdown_grace = "2s"

[[frontend]]
name = "public"
listen = "127.0.0.1:0"
pool = "proxies"

[[pool]]
name = "proxies"
balance = "{balance}"
connect_timeout = "1s"
response_timeout = "5s"
  [[pool.backend]]
  id = "b1"
  url = "http://{b1}"
  [[pool.backend]]
  id = "b2"
  url = "http://{b2}"
"#
    )
}

async fn start_from_file(dir: &Path, text: &str) -> Instance {
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let path = dir.join("qlik-lb.toml");
    std::fs::write(&path, text).unwrap();
    Instance::start(Config::load(&path).unwrap()).await.unwrap()
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut buf = Vec::new();
    raw::exchange(&mut s, &mut buf, req.as_bytes()).await
}

/// Error answers carry the same request id in the header and the JSON body.
fn assert_request_id(reply: &Reply) {
    let header = reply.header("x-request-id").expect("x-request-id header");
    assert!(!header.is_empty());
    assert_eq!(reply.json()["request_id"], header);
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    let reply = raw::get(admin, "/api/v1/status", &[]).await;
    assert_eq!(reply.status, 200);
    reply.json()
}

fn backend<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("backend {id} in status"))
}

async fn backends_of_new_users(front: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let reply = raw::get(front, "/", &[]).await;
        assert_eq!(reply.status, 200);
        seen.push(reply.header("x-backend").unwrap().to_string());
    }
    seen
}

#[tokio::test]
async fn drain_and_undrain_need_the_token_and_steer_new_users() {
    within(30, async {
        let (b1, b2) = (
            TestBackend::start("b1").await,
            TestBackend::start("b2").await,
        );
        let dir = tempfile::tempdir().unwrap();
        let instance = start_from_file(
            dir.path(),
            &config(&b1.addr_string(), &b2.addr_string(), "round-robin"),
        )
        .await;
        let admin = instance.admin_addr().unwrap();
        let front = instance.frontend_addr("public").unwrap();
        let drain = "/api/v1/pools/proxies/backends/b1/drain";

        let missing = post(admin, drain, None).await;
        assert_eq!(missing.status, 401);
        assert!(missing.header("www-authenticate").is_some());
        assert_request_id(&missing);
        let wrong = post(admin, drain, Some("s3cret-admin-token-012345678X")).await;
        assert_eq!(wrong.status, 403);
        assert_request_id(&wrong);
        let reload = post(admin, "/api/v1/reload", None).await;
        assert_eq!(reload.status, 401, "every POST needs the token");
        assert!(!instance
            .shared
            .registry
            .get("proxies", "b1")
            .unwrap()
            .is_draining());

        let ok = post(admin, drain, Some(TOKEN)).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.json()["draining"], true);
        let st = status(admin).await;
        assert_eq!(backend(&st, "b1")["state"], "draining");
        assert_eq!(backend(&st, "b2")["state"], "up");
        assert!(
            backends_of_new_users(front, 6)
                .await
                .iter()
                .all(|b| b == "b2"),
            "a draining backend gets no new users"
        );
        let metrics = raw::get(admin, "/metrics", &[]).await.text();
        assert!(metrics.contains("qlb_backend_draining{backend=\"b1\",pool=\"proxies\"} 1"));

        let ok = post(
            admin,
            "/api/v1/pools/proxies/backends/b1/undrain",
            Some(TOKEN),
        )
        .await;
        assert_eq!(ok.status, 200);
        assert_eq!(backend(&status(admin).await, "b1")["state"], "up");
        assert!(backends_of_new_users(front, 6)
            .await
            .iter()
            .any(|b| b == "b1"));

        for path in [
            "/api/v1/pools/nope/backends/b1/drain",
            "/api/v1/pools/proxies/backends/nope/drain",
            "/api/v1/pools/proxies/backends/b1/evict",
        ] {
            let reply = post(admin, path, Some(TOKEN)).await;
            assert_eq!(reply.status, 404, "{path}");
            assert_request_id(&reply);
        }
        let unknown = raw::get(admin, "/api/v2/nothing", &[]).await;
        assert_eq!(unknown.status, 404);
        assert_request_id(&unknown);
    })
    .await;
}

#[tokio::test]
async fn status_readiness_and_page() {
    within(30, async {
        let (b1, b2) = (
            TestBackend::start("b1").await,
            TestBackend::start("b2").await,
        );
        let dir = tempfile::tempdir().unwrap();
        let text = config(&b1.addr_string(), &b2.addr_string(), "round-robin");
        let instance = start_from_file(dir.path(), &text).await;
        let admin = instance.admin_addr().unwrap();

        assert_eq!(raw::get(admin, "/healthz", &[]).await.status, 200);
        assert_eq!(raw::get(admin, "/readyz", &[]).await.status, 200);
        let st = status(admin).await;
        assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
        let balance = &st["pools"][0]["balance"];
        assert!(
            ["round-robin", "least-conn", "least-loaded"].contains(&balance.as_str().unwrap()),
            "the balance reads as in the config file: {balance}"
        );
        assert!(st["config"]["file"]
            .as_str()
            .unwrap()
            .ends_with("qlik-lb.toml"));
        assert_eq!(st["config"]["hash"].as_str().unwrap().len(), 64);
        assert_eq!(st["config"]["last_reload"]["ok"], true);
        assert!(st["license"].is_null() && st["release"].is_null());
        let b = backend(&st, "b1");
        assert_eq!(b["url"], format!("http://{}", b1.addr_string()));
        for key in ["health", "last_check", "last_error", "inflight", "tunnels"] {
            assert!(b.get(key).is_some(), "backend status has {key}");
        }

        // Both backends fail their checks: the pool has none up, so not ready, with the reason.
        for id in ["b1", "b2"] {
            let live = instance.shared.registry.get("proxies", id).unwrap();
            for _ in 0..3 {
                live.record_check(Err("connection refused".into()), 2, 3);
            }
        }
        let not_ready = raw::get(admin, "/readyz", &[]).await;
        assert_eq!(not_ready.status, 503);
        assert_request_id(&not_ready);
        assert!(not_ready.json()["reasons"][0]
            .as_str()
            .unwrap()
            .contains("pool proxies has no backend up"));
        let st = status(admin).await;
        assert_eq!(backend(&st, "b2")["state"], "down");
        assert_eq!(backend(&st, "b2")["last_error"], "connection refused");
        assert!(backend(&st, "b2")["last_check"].is_string());

        // No license jobs in this config: the sections are there, empty. The demo test shows them filled.
        let st = status(admin).await;
        assert!(st["license"].is_null() && st["release"].is_null(), "{st}");

        let page = raw::get(admin, "/", &[]).await;
        assert_eq!(page.status, 200);
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        let html = page.text();
        assert!(html.contains("api/v1/status") && html.contains("setInterval"));
        assert!(
            !html.contains("src=\"http") && !html.contains("<link"),
            "no external assets"
        );
        for rendered in [
            "CPU",
            "Memory",
            "tunnels",
            "in-flight",
            "License usage",
            "release",
        ] {
            assert!(html.contains(rendered), "the page renders {rendered}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_broken_config_keeps_the_old_one_serving() {
    within(30, async {
        let (b1, b2) = (
            TestBackend::start("b1").await,
            TestBackend::start("b2").await,
        );
        let dir = tempfile::tempdir().unwrap();
        let good = config(&b1.addr_string(), &b2.addr_string(), "round-robin");
        let instance = start_from_file(dir.path(), &good).await;
        instance.watch_for_reloads().unwrap();
        let admin = instance.admin_addr().unwrap();
        let front = instance.frontend_addr("public").unwrap();
        let old_hash = instance.runtime.load().config.hash.clone();
        let errors = r#"qlb_config_reloads_total{result="error"}"#;
        assert_eq!(support::metric(&instance, errors).await, 0.0);

        let broken = good.replace("balance = \"round-robin\"", "balance = \"fastest\"");
        let line = broken.lines().position(|l| l.contains("fastest")).unwrap() + 1;
        std::fs::write(dir.path().join("qlik-lb.toml"), &broken).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while support::metric(&instance, errors).await < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broken file was never read"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        assert_eq!(
            raw::get(front, "/", &[]).await.status,
            200,
            "old config serves"
        );
        assert_eq!(instance.runtime.load().config.hash, old_hash);
        let st = status(admin).await;
        let last = &st["config"]["last_reload"];
        assert_eq!(last["ok"], false);
        assert_eq!(last["trigger"], "file");
        assert_eq!(st["config"]["hash"], old_hash.as_str());
        let err = &last["errors"][0];
        assert_eq!(err["key"], "pool[0].balance");
        assert_eq!(err["line"], line);
        assert!(err["message"].as_str().unwrap().contains("round-robin"));

        // The API answers the failed result too, with a request id.
        let reply = post(admin, "/api/v1/reload", Some(TOKEN)).await;
        assert_eq!(reply.status, 422);
        assert_request_id(&reply);
        assert_eq!(
            reply.json()["reload"]["errors"][0]["key"],
            "pool[0].balance"
        );

        // Fixing the file brings the reload back to ok.
        let fixed = good.replace("round-robin", "least-conn");
        std::fs::write(dir.path().join("qlik-lb.toml"), &fixed).unwrap();
        eventually(10, || instance.reloader.last().ok).await;
        assert_eq!(
            instance.runtime.load().config.file.pool[0].balance,
            qlik_lb::config::Balance::LeastConn
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_reloads_all_apply_and_the_admin_listener_moves() {
    within(30, async {
        let (b1, b2) = (
            TestBackend::start("b1").await,
            TestBackend::start("b2").await,
        );
        let dir = tempfile::tempdir().unwrap();
        let text = config(&b1.addr_string(), &b2.addr_string(), "round-robin");
        let instance = Arc::new(start_from_file(dir.path(), &text).await);
        let oks = r#"qlb_config_reloads_total{result="ok"}"#;
        let before = support::metric(&instance, oks).await;

        let runs: Vec<_> = (0..6)
            .map(|_| {
                let i = instance.clone();
                tokio::spawn(async move { i.reload(qlik_lb::reload::Trigger::Api).await })
            })
            .collect();
        for r in runs {
            assert!(r.await.unwrap().ok);
        }
        assert_eq!(support::metric(&instance, oks).await, before + 6.0);

        let old_admin = instance.admin_addr().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let moved = text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
        std::fs::write(dir.path().join("qlik-lb.toml"), moved).unwrap();
        let reply = post(old_admin, "/api/v1/reload", Some(TOKEN)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let new_admin = instance.admin_addr().unwrap();
        assert_eq!(new_admin.port(), port);
        assert_eq!(raw::get(new_admin, "/healthz", &[]).await.status, 200);
        eventually(5, || std::net::TcpStream::connect(old_admin).is_err()).await;
    })
    .await;
}
