//! Hot reload under load: 500 open WebSocket tunnels and a stream of keep-alive requests while
//! the config is reloaded 10 times by every trigger (file rewrite, file replaced by rename,
//! SIGHUP, the API). Nothing is cut, nothing fails, live backend state survives, and moved,
//! added and removed frontends are re-bound.

mod support;

use futures_util::{SinkExt, StreamExt};
use qlik_lb::app::Instance;
use qlik_lb::balance::engine_health::EngineHealth;
use qlik_lb::balance::registry::HealthSample;
use qlik_lb::config::Config;
use qlik_lb::reload::Trigger;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use support::backend::TestBackend;
use support::{raw, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

const TUNNELS: usize = 500;

struct Variant {
    public_listen: String,
    with_b3: bool,
    with_extra: bool,
    b1_weight: u32,
}

fn config_text(v: &Variant, b: &[String; 3]) -> String {
    let mut s = format!(
        r#"[admin]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[[frontend]]
name = "public"
listen = "{}"
pool = "proxies"
"#,
        v.public_listen
    );
    if v.with_extra {
        s.push_str(
            "\n[[frontend]]\nname = \"extra\"\nlisten = \"127.0.0.1:0\"\npool = \"proxies\"\n",
        );
    }
    s.push_str(&format!(
        r#"
[[pool]]
name = "proxies"
balance = "round-robin"
connect_timeout = "2s"
response_timeout = "60s"
  [pool.health]
  # One probe at start, then none during the test: it checks state set by hand survives.
  check = "tcp"
  interval = "1h"
  [[pool.backend]]
  id = "b1"
  url = "http://{}"
  weight = {}
  [[pool.backend]]
  id = "b2"
  url = "http://{}"
"#,
        b[0], v.b1_weight, b[1]
    ));
    if v.with_b3 {
        s.push_str(&format!(
            "  [[pool.backend]]\n  id = \"b3\"\n  url = \"http://{}\"\n",
            b[2]
        ));
    }
    s
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A port the OS just handed out, for a listen address that must differ from the current one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn open_ws(addr: SocketAddr) -> Ws {
    open_ws_to(addr).await.0
}

/// Opens a tunnel and says which backend answered it.
async fn open_ws_to(addr: SocketAddr) -> (Ws, String) {
    let req = format!("ws://{addr}/app/reload-test")
        .into_client_request()
        .unwrap();
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the front door");
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("upgrade through the proxy");
    assert_eq!(resp.status(), 101);
    let backend = resp.headers()["x-backend"].to_str().unwrap().to_string();
    (ws, backend)
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text))
        .await
        .expect("send on the tunnel");
    match ws.next().await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text),
        other => panic!("tunnel did not echo: {other:?}"),
    }
}

/// Keeps one keep-alive connection busy until `stop`; every answer must be a 200.
async fn keepalive_stream(addr: SocketAddr, stop: Arc<AtomicBool>, ok: Arc<AtomicUsize>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let req = format!("GET /stream HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    while !stop.load(Ordering::SeqCst) {
        let reply = raw::exchange(&mut s, &mut buf, req.as_bytes()).await;
        assert_eq!(
            reply.status,
            200,
            "keep-alive request failed: {}",
            reply.text()
        );
        assert_ne!(reply.header("connection"), Some("close"));
        ok.fetch_add(1, Ordering::SeqCst);
    }
}

fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).expect("rewrite the config file");
}

fn replace_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(".qlik-lb.toml.new");
    std::fs::write(&tmp, text).expect("write the new config file");
    std::fs::rename(&tmp, path).expect("rename it over the config file");
}

/// Waits until the last reload has the wanted trigger and serves the wanted file.
async fn reloaded(instance: &Instance, trigger: Trigger, hash: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = instance.reloader.last();
        if last.trigger == trigger && last.hash.as_deref() == Some(hash) {
            assert!(last.ok, "reload failed: {:?}", last.errors);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {trigger:?} reload to {hash} within 10s; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get_ok(addr: SocketAddr) {
    let reply = raw::get(addr, "/fresh", &[]).await;
    assert_eq!(reply.status, 200, "fresh request failed: {}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_cut_nothing() {
    within(60, run()).await;
}

async fn run() {
    let backends = [
        TestBackend::start("b1").await,
        TestBackend::start("b2").await,
        TestBackend::start("b3").await,
    ];
    let addrs = [
        backends[0].addr_string(),
        backends[1].addr_string(),
        backends[2].addr_string(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qlik-lb.toml");
    let mut variant = Variant {
        public_listen: "127.0.0.1:0".into(),
        with_b3: false,
        with_extra: false,
        b1_weight: 1,
    };
    write_in_place(&path, &config_text(&variant, &addrs));
    let instance = Instance::start(Config::load(&path).unwrap()).await.unwrap();
    instance
        .watch_for_reloads()
        .expect("reload triggers installed");
    let registry = &instance.shared.registry;
    let b1 = registry.get("proxies", "b1").unwrap();
    let b2 = registry.get("proxies", "b2").unwrap();

    // Live state that must survive: a health sample, a failed check, an in-flight request.
    support::eventually(5, || {
        b1.check_state().last_check.is_some() && b2.check_state().last_check.is_some()
    })
    .await;
    b1.set_health(Some(HealthSample {
        health: EngineHealth {
            saturated: true,
            ..Default::default()
        },
        taken: Instant::now(),
        taken_wall: SystemTime::now(),
    }));
    b2.record_check(Err("probe refused".into()), 2, 3);
    let public = instance.frontend_addr("public").unwrap();
    let mut hanging = TcpStream::connect(public).await.unwrap();
    hanging
        .write_all(format!("GET /never HTTP/1.1\r\nHost: {public}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    support::eventually(5, || b1.inflight() + b2.inflight() == 1).await;
    let holder = if b1.inflight() == 1 {
        b1.clone()
    } else {
        b2.clone()
    };

    let mut tunnels = Vec::with_capacity(TUNNELS);
    for _ in 0..TUNNELS / 50 {
        let batch = futures_util::future::join_all((0..50).map(|_| open_ws(public))).await;
        tunnels.extend(batch);
    }
    // The lease is taken just after the 101 goes out, so the last one may lag the handshake.
    support::eventually(5, || b1.tunnels() + b2.tunnels() == TUNNELS as i64).await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let streams: Vec<_> = (0..2)
        .map(|_| tokio::spawn(keepalive_stream(public, stop.clone(), served.clone())))
        .collect();

    let admin = instance.admin_addr().unwrap();
    let mut b3_tunnels = Vec::new();
    let mut b3_backend = None;
    let steps: [(Trigger, bool); 10] = [
        (Trigger::File, false),
        (Trigger::File, true),
        (Trigger::Signal, false),
        (Trigger::Api, false),
        (Trigger::File, false),
        (Trigger::File, true),
        (Trigger::Signal, false),
        (Trigger::Api, false),
        (Trigger::File, false),
        (Trigger::File, true),
    ];
    for (step, (trigger, by_rename)) in steps.iter().enumerate() {
        let before = instance.frontend_addr("public").unwrap();
        match step {
            0 | 6 => variant.with_b3 = true,
            4 | 8 => variant.with_b3 = false,
            1 => variant.with_extra = true,
            3 => variant.with_extra = false,
            2 => variant.public_listen = format!("127.0.0.1:{}", free_port()),
            7 => variant.public_listen = "127.0.0.1:0".into(),
            5 => variant.b1_weight = 2,
            _ => variant.b1_weight = 1,
        }
        let text = config_text(&variant, &addrs);
        let hash = sha256_hex(&text);
        if *by_rename {
            replace_by_rename(&path, &text);
        } else {
            write_in_place(&path, &text);
        }
        match trigger {
            Trigger::Signal => {
                // The instance installed the SIGHUP handler above.
                assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
            }
            Trigger::Api => {
                let mut s = TcpStream::connect(admin).await.unwrap();
                let mut buf = Vec::new();
                let reply = raw::exchange(
                    &mut s,
                    &mut buf,
                    b"POST /api/v1/reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                assert_eq!(reply.json()["ok"], true);
            }
            _ => {}
        }
        reloaded(&instance, *trigger, &hash).await;

        let now = instance.frontend_addr("public").unwrap();
        get_ok(now).await;
        if step == 2 || step == 7 {
            assert_ne!(now, before, "a moved frontend is re-bound");
            support::eventually(5, || std::net::TcpStream::connect(before).is_err()).await;
        }
        match step {
            1 | 2 => get_ok(instance.frontend_addr("extra").expect("extra bound")).await,
            3 => assert!(instance.frontend_addr("extra").is_none()),
            _ => {}
        }
        if step == 0 {
            // Tunnels to a backend that a later reload removes must live on.
            for _ in 0..60 {
                let (ws, backend) = open_ws_to(now).await;
                b3_tunnels.push(ws);
                if backend == "b3" {
                    break;
                }
            }
            let b3 = registry.get("proxies", "b3").unwrap();
            support::eventually(5, || b3.tunnels() == 1).await;
            b3_backend = Some(b3);
        }
    }

    stop.store(true, Ordering::SeqCst);
    for s in streams {
        s.await.expect("keep-alive stream saw no error");
    }
    assert!(served.load(Ordering::SeqCst) > 20, "the request stream ran");

    for chunk in tunnels.chunks_mut(50) {
        futures_util::future::join_all(
            chunk
                .iter_mut()
                .enumerate()
                .map(|(i, ws)| async move { echo(ws, &format!("after {i}")).await }),
        )
        .await;
    }
    for ws in &mut b3_tunnels {
        echo(ws, "removed backend still carries me").await;
    }

    let b1_now = registry.get("proxies", "b1").unwrap();
    let b2_now = registry.get("proxies", "b2").unwrap();
    assert!(Arc::ptr_eq(&b1, &b1_now) && Arc::ptr_eq(&b2, &b2_now));
    assert!(b1.health().expect("health sample kept").health.saturated);
    let checks = b2.check_state();
    assert_eq!(checks.consecutive_fail, 1);
    assert_eq!(checks.last_error.as_deref(), Some("probe refused"));
    assert_eq!(holder.inflight(), 1, "the hanging request is still counted");
    let b3 = b3_backend.expect("b3 was added");
    assert!(
        b3.is_removed() && b3.tunnels() > 0,
        "removed b3 keeps its tunnels"
    );
    assert_eq!(
        b1.tunnels() + b2.tunnels() + b3.tunnels(),
        (TUNNELS + b3_tunnels.len()) as i64
    );
    assert_eq!(b1.target().weight, 1);

    let errors = support::metric(&instance, "qlb_config_reloads_total{result=\"error\"}").await;
    let oks = support::metric(&instance, "qlb_config_reloads_total{result=\"ok\"}").await;
    assert_eq!(
        errors,
        0.0,
        "a reload failed: {:?}",
        instance.reloader.last()
    );
    assert!(oks >= 10.0, "ten reloads counted, got {oks}");
    drop(hanging);
}

// --- A backend id whose url changes (§5): fresh live state at the new address. ---

fn moved_config(node1: &str, weight: u32, max_connections: u32) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[[frontend]]
name = "public"
listen = "127.0.0.1:0"
pool = "proxies"
max_connections = {max_connections}

[[pool]]
name = "proxies"
balance = "round-robin"
connect_timeout = "2s"
response_timeout = "10s"
  [pool.health]
  # TCP checks: only the proxied requests count at the backends.
  check = "tcp"
  interval = "1h"
  [[pool.backend]]
  id = "node1"
  url = "http://{node1}"
  weight = {weight}
"#
    )
}

/// Writes the config file and reloads it through the API trigger; the reload must succeed.
async fn reload_to(instance: &Instance, path: &Path, text: &str) {
    write_in_place(path, text);
    let outcome = instance.reload(Trigger::Api).await;
    assert!(outcome.ok, "reload failed: {:?}", outcome.errors);
    assert_eq!(outcome.hash.as_deref(), Some(sha256_hex(text).as_str()));
}

/// Ejected with a long back-off (30 s), a failed check and a health sample: state a url change
/// must reset and any other change must keep.
fn spoil(b: &qlik_lb::balance::registry::Backend) {
    for _ in 0..6 {
        b.eject();
    }
    b.record_check(Err("probe refused".into()), 2, 3);
    b.set_health(Some(HealthSample {
        health: EngineHealth {
            saturated: true,
            ..Default::default()
        },
        taken: Instant::now(),
        taken_wall: SystemTime::now(),
    }));
    assert!(b.is_ejected() && !b.is_available());
}

async fn answered_by(s: &mut TcpStream, buf: &mut Vec<u8>, req: &str) -> String {
    let reply = raw::exchange(s, buf, req.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_ne!(reply.header("connection"), Some("close"));
    reply.header("x-backend").expect("x-backend").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_moved_to_another_url_is_reached_there_with_fresh_state() {
    within(30, async {
        let a = TestBackend::start("A").await;
        let b = TestBackend::start("B").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qlik-lb.toml");
        let text = moved_config(&a.addr_string(), 1, 100);
        write_in_place(&path, &text);
        let instance = Instance::start(Config::load(&path).unwrap()).await.unwrap();
        let public = instance.frontend_addr("public").unwrap();
        let registry = &instance.shared.registry;

        // A plain keep-alive client and one bound by Windows authentication, both served by A.
        let plain_req = format!("GET /plain HTTP/1.1\r\nHost: {public}\r\n\r\n");
        let ntlm_req = format!(
            "GET /ntlm HTTP/1.1\r\nHost: {public}\r\nAuthorization: NTLM TlRMTVNTUAAB\r\n\r\n"
        );
        let mut plain = TcpStream::connect(public).await.unwrap();
        let mut ntlm = TcpStream::connect(public).await.unwrap();
        let (mut plain_buf, mut ntlm_buf) = (Vec::new(), Vec::new());
        assert_eq!(
            answered_by(&mut plain, &mut plain_buf, &plain_req).await,
            "A"
        );
        assert_eq!(answered_by(&mut ntlm, &mut ntlm_buf, &ntlm_req).await, "A");
        assert_eq!(a.request_count(), 2);

        let old = registry.get("proxies", "node1").unwrap();
        spoil(&old);

        reload_to(&instance, &path, &moved_config(&b.addr_string(), 1, 100)).await;

        let new = registry.get("proxies", "node1").unwrap();
        assert!(
            !Arc::ptr_eq(&old, &new),
            "a url change gives the id a new live state"
        );
        assert!(old.is_removed(), "the old address's state is retired");
        assert_eq!(new.target().url.authority(), b.addr_string());
        assert!(!new.is_ejected() && new.is_available(), "ejection reset");
        assert!(new.health().is_none(), "engine health sample reset");
        let checks = new.check_state();
        assert_eq!(checks.consecutive_fail, 0, "rise/fall counters reset");
        assert_eq!(checks.last_error, None);

        // Every request after the reload reaches B: on both existing keep-alive connections
        // (neither the pooled nor the Windows-auth-bound connection to A is reused) and on new ones.
        for _ in 0..3 {
            assert_eq!(
                answered_by(&mut plain, &mut plain_buf, &plain_req).await,
                "B"
            );
            assert_eq!(answered_by(&mut ntlm, &mut ntlm_buf, &ntlm_req).await, "B");
        }
        for _ in 0..2 {
            let reply = raw::get(public, "/fresh", &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.header("x-backend"), Some("B"));
        }
        assert_eq!(a.request_count(), 2, "A got nothing after the reload");
        assert_eq!(b.request_count(), 8);
        // The new state counts its own load; the retired one is left at zero by its leases
        // (a lease ends just after the answer's last byte is written).
        support::eventually(5, || new.inflight() == 0 && old.inflight() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeping_a_backends_url_keeps_its_state() {
    within(30, async {
        let a = TestBackend::start("A").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qlik-lb.toml");
        write_in_place(&path, &moved_config(&a.addr_string(), 1, 100));
        let instance = Instance::start(Config::load(&path).unwrap()).await.unwrap();
        let registry = &instance.shared.registry;
        let old = registry.get("proxies", "node1").unwrap();
        support::eventually(5, || old.check_state().last_check.is_some()).await;
        spoil(&old);

        // Only the weight changes.
        reload_to(&instance, &path, &moved_config(&a.addr_string(), 3, 100)).await;

        let now = registry.get("proxies", "node1").unwrap();
        assert!(
            Arc::ptr_eq(&old, &now),
            "same id at the same url: the same live state"
        );
        assert!(!now.is_removed());
        assert_eq!(now.target().weight, 3);
        assert!(now.is_ejected() && !now.is_available(), "ejection kept");
        assert!(now.health().expect("health sample kept").health.saturated);
        let checks = now.check_state();
        assert_eq!(checks.consecutive_fail, 1);
        assert_eq!(checks.last_error.as_deref(), Some("probe refused"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lowering_max_connections_makes_a_new_connection_wait() {
    within(30, async {
        let a = TestBackend::start("A").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qlik-lb.toml");
        write_in_place(&path, &moved_config(&a.addr_string(), 1, 3));
        let instance = Instance::start(Config::load(&path).unwrap()).await.unwrap();
        let public = instance.frontend_addr("public").unwrap();
        let req = format!("GET /held HTTP/1.1\r\nHost: {public}\r\n\r\n");
        let mut first = TcpStream::connect(public).await.unwrap();
        let mut second = TcpStream::connect(public).await.unwrap();
        let (mut buf1, mut buf2) = (Vec::new(), Vec::new());
        answered_by(&mut first, &mut buf1, &req).await;
        answered_by(&mut second, &mut buf2, &req).await;

        reload_to(&instance, &path, &moved_config(&a.addr_string(), 1, 2)).await;
        assert_eq!(instance.frontend_addr("public"), Some(public));

        let mut third = raw::unanswered_get(public, "/third", Duration::from_millis(500)).await;
        // The two open connections keep working; closing one lets the third in.
        answered_by(&mut first, &mut buf1, &req).await;
        drop(first);
        let mut buf = Vec::new();
        let reply = within(5, raw::read_reply(&mut third, &mut buf)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["path"], "/third");
        answered_by(&mut second, &mut buf2, &req).await;
    })
    .await;
}
