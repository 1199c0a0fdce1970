//! Active health checks against real test engines on 127.0.0.1: rise/fall, the check kinds,
//! engine health parsing and gauges, failure reasons, mutual TLS, and the interval loop.

mod engine_stub;

use engine_stub::{eventually, health_json, runtime, EngineStub, TestPki};
use qlik_lb::balance::health::{probe_once, Prober};
use qlik_lb::balance::Backend;
use qlik_lb::config::Config;
use qlik_lb::snapshot::{spawn_health_checks, Shared, SharedSnapshot, Snapshot};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../shared/qlik/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A pool `web` with one `http` backend per address, named n1, n2, ... from `first`.
fn http_pool(addrs: &[String], extra_backend: &str) -> String {
    http_pool_from(1, addrs, extra_backend)
}

fn http_pool_from(first: usize, addrs: &[String], extra_backend: &str) -> String {
    let mut toml = String::from(
        r#"
[lb_module]
listen = "127.0.0.1:0"
pool = "web"

[[pool]]
name = "web"
  [pool.health]
  check = "http"
  path = "/up"
  interval = "40ms"
  timeout = "500ms"
  rise = 2
  fall = 3
"#,
    );
    for (i, a) in addrs.iter().enumerate() {
        toml.push_str(&format!(
            "  [[pool.backend]]\n  id = \"n{}\"\n  url = \"{a}\"\n{extra_backend}\n",
            i + first
        ));
    }
    toml
}

fn backend(rt: &SharedSnapshot, pool: &str, id: &str) -> Arc<Backend> {
    rt.load().pools[pool].backend(id).unwrap().clone()
}

async fn probe(rt: &SharedSnapshot, shared: &Shared, pool: &str, id: &str) -> Result<(), String> {
    let snap = rt.load_full();
    let prober = Prober::from_config(&snap.config);
    let p = &snap.pools[pool];
    let b = p.backend(id).unwrap();
    timeout(
        LIMIT,
        probe_once(&prober, &p.cfg.health, b, &shared.metrics),
    )
    .await
    .expect("probe finishes within its own timeout")
}

#[tokio::test]
async fn http_check_marks_down_after_fall_and_up_after_rise() {
    let engine = EngineStub::start(503, "busy").await;
    let dir = tempfile::tempdir().unwrap();
    let (rt, shared) = runtime(
        &http_pool(&[format!("http://{}", engine.addr)], ""),
        dir.path(),
    );
    let b = backend(&rt, "web", "n1");
    for _ in 0..2 {
        let err = probe(&rt, &shared, "web", "n1").await.unwrap_err();
        assert!(err.contains("503"), "reason names the status: {err}");
        assert!(b.is_up(), "still up before `fall` failures");
    }
    probe(&rt, &shared, "web", "n1").await.unwrap_err();
    assert!(!b.is_up(), "down after 3 failures");
    assert!(b.check_state().last_error.unwrap().contains("503"));

    // Any status under 500 counts as up.
    engine.set(404, "no such page");
    probe(&rt, &shared, "web", "n1").await.unwrap();
    assert!(!b.is_up(), "one success is not `rise`");
    probe(&rt, &shared, "web", "n1").await.unwrap();
    assert!(b.is_up(), "up after 2 successes");
    let text = shared.metrics.render();
    assert!(text
        .contains(r#"qlb_backend_health_checks_total{backend="n1",pool="web",result="fail"} 3"#));
    assert!(
        text.contains(r#"qlb_backend_health_checks_total{backend="n1",pool="web",result="ok"} 2"#)
    );
}

#[tokio::test]
async fn tcp_check_connects_and_reports_refusal() {
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let toml = http_pool(
        &[
            format!("http://{}", open.local_addr().unwrap()),
            format!("http://{closed}"),
        ],
        "",
    )
    .replace("check = \"http\"", "check = \"tcp\"");
    let dir = tempfile::tempdir().unwrap();
    let (rt, shared) = runtime(&toml, dir.path());
    probe(&rt, &shared, "web", "n1").await.unwrap();
    let err = probe(&rt, &shared, "web", "n2").await.unwrap_err();
    assert!(
        err.contains("cannot connect") && err.contains(&closed.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_backend_fails_by_timeout() {
    // Accepts connections but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = http_pool(&[format!("http://{addr}")], "").replace("\"500ms\"", "\"150ms\"");
    let (rt, shared) = runtime(&toml, dir.path());
    let err = probe(&rt, &shared, "web", "n1").await.unwrap_err();
    assert!(err.contains("no answer within 150ms"), "{err}");
    drop(silent);
}

/// A qix pool over mutual TLS whose `[qlik_certs]` are `pki`'s client files.
fn qix_config(addr: &str, verify_server: bool) -> String {
    format!(
        r#"
[lb_module]
listen = "127.0.0.1:0"
pool = "engines"

[qlik_certs]
cert = "client.pem"
key = "client_key.pem"
ca = "root.pem"
verify_server = {verify_server}

[[pool]]
name = "engines"
  [pool.health]
  check = "qix"
  interval = "5s"
  timeout = "2s"
  rise = 1
  fall = 1
  [[pool.backend]]
  id = "e1"
  url = "https://{addr}"
"#
    )
}

#[tokio::test]
async fn qix_check_over_mutual_tls_parses_both_fixtures_and_sets_gauges() {
    let pki = TestPki::generate("site");
    let engine = EngineStub::start_tls(
        200,
        fixture("engine-healthcheck.json"),
        Some(pki.server_config(true)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    pki.write_client_files(dir.path());
    let (rt, shared) = runtime(&qix_config(&engine.addr.to_string(), true), dir.path());

    probe(&rt, &shared, "engines", "e1").await.unwrap();
    let b = backend(&rt, "engines", "e1");
    let h = b.health().expect("sample stored").health.clone();
    assert_eq!(h.cpu.total, 7.0);
    assert_eq!(h.mem.total_physical, Some(32768.0));
    assert!(h.has_app("3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11"));
    let text = shared.metrics.render();
    assert!(
        text.contains(r#"qlb_engine_cpu_percent{backend="e1",pool="engines"} 7"#),
        "{text}"
    );
    assert!(text.contains(r#"qlb_engine_sessions_active{backend="e1",pool="engines"} 2"#));
    assert!(text.contains(r#"qlb_engine_saturated{backend="e1",pool="engines"} 0"#));

    // The old release: `comitted`, no totalPhysical, an unknown `cache` block.
    engine.set(200, fixture("engine-healthcheck-old.json"));
    probe(&rt, &shared, "engines", "e1").await.unwrap();
    let h = b.health().unwrap().health.clone();
    assert_eq!(h.mem.committed, 460.5);
    assert_eq!(h.mem.total_physical, None);
    assert!(shared.metrics.render().contains(&format!(
        r#"qlb_engine_memory_committed_bytes{{backend="e1",pool="engines"}} {}"#,
        460.5 * 1024.0 * 1024.0
    )));

    // Fractional CPU and fields this release does not know.
    engine.set(
        200,
        r#"{"cpu":{"total":12.75},"saturated":true,"future":{"x":[1]}}"#,
    );
    probe(&rt, &shared, "engines", "e1").await.unwrap();
    let h = b.health().unwrap().health.clone();
    assert_eq!(h.cpu.total, 12.75);
    assert!(h.saturated);
}

#[tokio::test]
async fn qix_answers_that_are_not_health_are_failures_with_reasons() {
    let pki = TestPki::generate("site");
    let engine =
        EngineStub::start_tls(200, "<html>login</html>", Some(pki.server_config(true))).await;
    let dir = tempfile::tempdir().unwrap();
    pki.write_client_files(dir.path());
    let (rt, shared) = runtime(&qix_config(&engine.addr.to_string(), false), dir.path());
    let b = backend(&rt, "engines", "e1");

    let err = probe(&rt, &shared, "engines", "e1").await.unwrap_err();
    assert!(err.contains("not JSON"), "{err}");
    assert!(!b.is_up(), "fall = 1");
    assert_eq!(b.check_state().last_error.as_deref(), Some(err.as_str()));

    engine.set(401, r#"{"error":"unauthorized"}"#);
    let err = probe(&rt, &shared, "engines", "e1").await.unwrap_err();
    assert!(err.contains("answered 401"), "{err}");
    assert!(b.health().is_none(), "no sample from failed probes");

    engine.set(200, health_json(30.0, false, &[]));
    probe(&rt, &shared, "engines", "e1").await.unwrap();
    assert!(b.is_up(), "rise = 1");
}

#[tokio::test]
async fn engine_refuses_a_client_certificate_from_another_ca() {
    let site = TestPki::generate("site");
    let stranger = TestPki::generate("stranger");
    let engine = EngineStub::start_tls(
        200,
        health_json(10.0, false, &[]),
        Some(site.server_config(true)),
    )
    .await;
    let addr = engine.addr.to_string();

    let wrong = tempfile::tempdir().unwrap();
    stranger.write_client_files(wrong.path());
    let (rt, shared) = runtime(&qix_config(&addr, false), wrong.path());
    let err = probe(&rt, &shared, "engines", "e1").await.unwrap_err();
    assert!(
        err.contains("TLS refused") && err.contains("UnknownCA"),
        "reason says the engine refused the certificate: {err}"
    );
    assert_eq!(engine.hits(), 0, "no request got through");

    // An `http` check carries no client certificate at all: refused the same way.
    let toml = http_pool(&[format!("https://{addr}")], "");
    let (rt2, shared2) = runtime(&toml, wrong.path());
    let err = probe(&rt2, &shared2, "web", "n1").await.unwrap_err();
    assert!(
        err.contains("TLS refused") && err.contains("CertificateRequired"),
        "{err}"
    );

    let right = tempfile::tempdir().unwrap();
    site.write_client_files(right.path());
    let (rt, shared) = runtime(&qix_config(&addr, false), right.path());
    probe(&rt, &shared, "engines", "e1").await.unwrap();
    assert_eq!(engine.hits(), 1);
}

#[tokio::test]
async fn verify_server_checks_the_engine_certificate_against_ca() {
    let site = TestPki::generate("site");
    let other = TestPki::generate("other");
    let engine = EngineStub::start_tls(
        200,
        health_json(10.0, false, &[]),
        Some(site.server_config(true)),
    )
    .await;
    let addr = engine.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    // root.pem from another CA: the engine's certificate cannot be verified.
    std::fs::write(dir.path().join("root.pem"), &other.ca_pem).unwrap();
    let (rt, shared) = runtime(&qix_config(&addr, true), dir.path());
    let err = probe(&rt, &shared, "engines", "e1").await.unwrap_err();
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer"),
        "{err}"
    );
    // Not verifying the server, the same files work (the client certificate is still right).
    let (rt, shared) = runtime(&qix_config(&addr, false), dir.path());
    probe(&rt, &shared, "engines", "e1").await.unwrap();
}

#[tokio::test]
async fn front_door_backend_engine_health_feeds_the_sample() {
    let node = EngineStub::start(200, "ok").await;
    let engine = EngineStub::start(200, health_json(42.5, false, &["app-1"])).await;
    let extra = format!(
        "  engine_health = \"http://{}/engine/healthcheck\"",
        engine.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let (rt, shared) = runtime(
        &http_pool(&[format!("http://{}", node.addr)], &extra),
        dir.path(),
    );
    probe(&rt, &shared, "web", "n1").await.unwrap();
    let b = backend(&rt, "web", "n1");
    assert_eq!(b.health().unwrap().health.cpu.total, 42.5);
    assert_eq!((node.hits(), engine.hits()), (1, 1));

    // A failing engine health poll does not touch up/down; the old sample just ages.
    engine.set(500, "");
    probe(&rt, &shared, "web", "n1").await.unwrap();
    assert!(b.is_up());
    assert_eq!(b.health().unwrap().health.cpu.total, 42.5);
}

#[tokio::test]
async fn the_loop_probes_every_interval_and_follows_reloads() {
    let a = EngineStub::start(500, "down").await;
    let b = EngineStub::start(200, "ok").await;
    let dir = tempfile::tempdir().unwrap();
    let addrs = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let (rt, shared) = runtime(&http_pool(&addrs, ""), dir.path());
    let shutdown = CancellationToken::new();
    let task = spawn_health_checks(rt.clone(), &shared, shutdown.clone());
    let n1 = backend(&rt, "web", "n1");

    assert!(
        eventually(LIMIT, || !n1.is_up()).await,
        "n1 marked down by the loop"
    );
    assert!(n1.check_state().last_error.unwrap().contains("500"));
    a.set(200, "ok");
    assert!(
        eventually(LIMIT, || n1.is_up()).await,
        "n1 back up by the loop"
    );

    // Reload without n1: it stops being probed while n2 keeps being probed.
    let reloaded = Snapshot::build(
        Config::parse(&http_pool_from(2, &addrs[1..], ""), dir.path()).unwrap(),
        &shared,
    )
    .unwrap();
    rt.store(Arc::new(reloaded));
    let checks = |be: &Backend| be.check_state().last_check;
    let survivor = backend(&rt, "web", "n2");
    let before_a = a.hits();
    let since = checks(&survivor);
    // Three probes of the survivor after the swap: any round that still held a would have hit it.
    let mut seen = 0;
    let mut last = since;
    assert!(
        eventually(LIMIT, || {
            let now = checks(&survivor);
            if now != last {
                seen += 1;
                last = now;
            }
            seen >= 3
        })
        .await
    );
    assert!(
        a.hits() <= before_a + 1,
        "a removed backend is not probed again (one round may have been in flight)"
    );

    shutdown.cancel();
    timeout(LIMIT, task)
        .await
        .expect("loop stops on shutdown")
        .unwrap();
}
