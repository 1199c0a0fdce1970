//! `least-loaded` selection fed by real engine health probes of test engines on 127.0.0.1.

mod engine_stub;

use engine_stub::{health_json, runtime, EngineStub};
use qlik_lb::balance::engine_health::EngineHealth;
use qlik_lb::balance::health::{probe_once, Prober};
use qlik_lb::balance::registry::HealthSample;
use qlik_lb::balance::select::{select, Selected};
use qlik_lb::runtime::{Shared, SharedRuntime};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// One engine per CPU value; each answers both the up check and its engine health URL.
async fn site(
    cpus: &[(f64, bool)],
) -> (
    Vec<EngineStub>,
    SharedRuntime,
    Arc<Shared>,
    tempfile::TempDir,
) {
    let mut engines = Vec::new();
    let mut toml = String::from(
        r#"
[lb_module]
listen = "127.0.0.1:0"
pool = "web"

[[pool]]
name = "web"
balance = "least-loaded"
when_all_down = "reject"
  [pool.health]
  check = "http"
  interval = "5s"
  timeout = "2s"
  rise = 1
  fall = 1
"#,
    );
    for (i, &(cpu, saturated)) in cpus.iter().enumerate() {
        let e = EngineStub::start(200, health_json(cpu, saturated, &[])).await;
        toml.push_str(&format!(
            "  [[pool.backend]]\n  id = \"n{}\"\n  url = \"http://{a}\"\n  engine_health = \"http://{a}/engine/healthcheck\"\n",
            i + 1,
            a = e.addr
        ));
        engines.push(e);
    }
    let dir = tempfile::tempdir().unwrap();
    let (rt, shared) = runtime(&toml, dir.path());
    (engines, rt, shared, dir)
}

async fn probe_all(rt: &SharedRuntime, shared: &Shared) {
    let snap = rt.load_full();
    let prober = Prober::from_config(&snap.config);
    let pool = &snap.pools["web"];
    for b in &pool.backends {
        let _ = timeout(
            LIMIT,
            probe_once(&prober, &pool.cfg.health, b, &shared.metrics),
        )
        .await
        .unwrap();
    }
}

fn picks(rt: &SharedRuntime, n: usize) -> HashMap<String, usize> {
    let snap = rt.load_full();
    let pool = &snap.pools["web"];
    let mut counts = HashMap::new();
    for _ in 0..n {
        match select(pool) {
            Selected::Backend(b) => *counts.entry(b.id.clone()).or_insert(0) += 1,
            _ => panic!("a backend is up"),
        }
    }
    counts
}

#[tokio::test]
async fn new_users_split_by_spare_capacity_between_polls() {
    let (_engines, rt, shared, _dir) = site(&[(20.0, false), (50.0, false), (80.0, false)]).await;
    probe_all(&rt, &shared).await;
    // 3 000 picks against one health sample, as between two polls.
    let n = 3000;
    let counts = picks(&rt, n);
    let share = |id: &str| counts.get(id).copied().unwrap_or(0) as f64 / n as f64;
    // Spare capacity 80 : 50 : 20. Binomial spread at n = 3000 is under 1 point; allow 4.
    for (id, expected) in [("n1", 8.0 / 15.0), ("n2", 5.0 / 15.0), ("n3", 2.0 / 15.0)] {
        assert!(
            (share(id) - expected).abs() < 0.04,
            "{id} took {:.3}, expected {expected:.3} ± 0.04: {counts:?}",
            share(id)
        );
        assert!(
            share(id) <= 0.60,
            "no engine takes more than 60 %: {counts:?}"
        );
    }
}

#[tokio::test]
async fn hot_and_saturated_engines_get_no_new_users_while_others_are_up() {
    let (engines, rt, shared, _dir) =
        site(&[(95.0, false), (30.0, true), (40.0, false), (60.0, false)]).await;
    probe_all(&rt, &shared).await;
    let counts = picks(&rt, 2000);
    assert_eq!(counts.get("n1"), None, "95 % CPU: {counts:?}");
    assert_eq!(counts.get("n2"), None, "saturated: {counts:?}");
    assert!(
        counts["n3"] > counts["n4"],
        "more spare, more users: {counts:?}"
    );

    // With the cool engines down, the hot ones still serve.
    engines[2].set(500, "");
    engines[3].set(500, "");
    probe_all(&rt, &shared).await;
    let counts = picks(&rt, 200);
    assert_eq!(
        counts.get("n3").copied().unwrap_or(0) + counts.get("n4").copied().unwrap_or(0),
        0
    );
    assert_eq!(counts.values().sum::<usize>(), 200, "{counts:?}");
}

#[tokio::test]
async fn stale_samples_fall_back_to_connection_counts() {
    let (_engines, rt, shared, _dir) = site(&[(95.0, false), (5.0, false)]).await;
    let snap = rt.load_full();
    let pool = &snap.pools["web"];
    let (n1, n2) = (pool.backend("n1").unwrap(), pool.backend("n2").unwrap());
    let old = Instant::now()
        .checked_sub(Duration::from_secs(60))
        .expect("the clock has run a minute");
    for (b, cpu) in [(n1, 95.0), (n2, 5.0)] {
        let mut health = EngineHealth::default();
        health.cpu.total = cpu;
        b.set_health(Some(HealthSample {
            health,
            taken: old,
            taken_wall: SystemTime::now() - Duration::from_secs(60),
        }));
    }
    // n2 looks idle by its stale sample but holds four requests; n1 holds none.
    let leases: Vec<_> = (0..4).map(|_| n2.inflight_lease()).collect();
    let counts = picks(&rt, 500);
    assert_eq!(
        counts.get("n1"),
        Some(&500),
        "stale CPU ignored: {counts:?}"
    );

    // A fresh sample showing n1 hot takes it out of new users again.
    probe_all(&rt, &shared).await;
    let counts = picks(&rt, 500);
    assert_eq!(
        counts.get("n2"),
        Some(&500),
        "fresh sample counts: {counts:?}"
    );
    drop(leases);
}
