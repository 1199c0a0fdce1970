//! `least-loaded` selection fed by real engine health probes of test engines on 127.0.0.1.

mod engine_stub;

use engine_stub::{health_json, runtime, EngineStub};
use qlik_lb::balance::engine_health::EngineHealth;
use qlik_lb::balance::health::{probe_once, Prober};
use qlik_lb::balance::registry::HealthSample;
use qlik_lb::balance::select::{select, Selected};
use qlik_lb::snapshot::{Shared, SharedSnapshot};
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
    SharedSnapshot,
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

async fn probe_all(rt: &SharedSnapshot, shared: &Shared) {
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

fn picks(rt: &SharedSnapshot, n: usize) -> HashMap<String, usize> {
    let snap = rt.load_full();
    let pool = &snap.pools["web"];
    let mut counts = HashMap::new();
    for _ in 0..n {
        match select(pool, None) {
            Selected::Backend(b) => *counts.entry(b.id.clone()).or_insert(0) += 1,
            _ => panic!("a backend is up"),
        }
    }
    counts
}

#[tokio::test]
async fn new_users_split_by_spare_capacity_between_polls() {
    let (_engines, rt, shared, _dir) = site(&[(20.0, false), (50.0, false), (80.0, false)]).await;
    // 100 new users between two polls, ten polls. Each user counts on its node until the next
    // sample, so every node's spare capacity shrinks by the same factor in expectation and the
    // split stays in proportion.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        probe_all(&rt, &shared).await;
        for (id, k) in picks(&rt, 100) {
            *counts.entry(id).or_default() += k;
        }
    }
    let n = 1000;
    let share = |id: &str| counts.get(id).copied().unwrap_or(0) as f64 / n as f64;
    // Spare capacity 80 : 50 : 20. Binomial spread at n = 1000 is under 2 points; allow 5.
    for (id, expected) in [("n1", 8.0 / 15.0), ("n2", 5.0 / 15.0), ("n3", 2.0 / 15.0)] {
        assert!(
            (share(id) - expected).abs() < 0.05,
            "{id} took {:.3}, expected {expected:.3} ± 0.05: {counts:?}",
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

fn set_sample(b: &qlik_lb::balance::Backend, cpu: f64, age: Duration) {
    let mut health = EngineHealth::default();
    health.cpu.total = cpu;
    b.set_health(Some(HealthSample {
        health,
        taken: Instant::now().checked_sub(age).expect("the clock has run"),
        taken_wall: SystemTime::now() - age,
    }));
}

#[tokio::test]
async fn a_busy_engine_that_stops_answering_does_not_win_by_fewest_connections() {
    let (_engines, rt, _shared, _dir) = site(&[(95.0, false), (5.0, false)]).await;
    let snap = rt.load_full();
    let pool = &snap.pools["web"];
    let (n1, n2) = (pool.backend("n1").unwrap(), pool.backend("n2").unwrap());
    // n1's last answer, a minute ago, said 95 % CPU; n2 answered just now and holds four
    // requests while n1 holds none.
    set_sample(n1, 95.0, Duration::from_secs(60));
    set_sample(n2, 5.0, Duration::ZERO);
    let leases: Vec<_> = (0..4).map(|_| n2.inflight_lease()).collect();
    let counts = picks(&rt, 500);
    assert_eq!(
        counts.get("n2"),
        Some(&500),
        "silence is not idleness: {counts:?}"
    );

    // A cool engine silent for a minute ages to hot too: nobody new while n2 is cool.
    set_sample(n1, 5.0, Duration::from_secs(60));
    set_sample(n2, 60.0, Duration::ZERO);
    let counts = picks(&rt, 500);
    assert_eq!(counts.get("n2"), Some(&500), "{counts:?}");
    drop(leases);
}

#[tokio::test]
async fn only_without_any_sample_the_pick_goes_by_connection_counts() {
    let (_engines, rt, _shared, _dir) = site(&[(95.0, false), (5.0, false)]).await;
    let snap = rt.load_full();
    let pool = &snap.pools["web"];
    let n2 = pool.backend("n2").unwrap();
    let leases: Vec<_> = (0..4).map(|_| n2.inflight_lease()).collect();
    let counts = picks(&rt, 500);
    assert_eq!(counts.get("n1"), Some(&500), "no samples: {counts:?}");

    // One sample on n2 puts the picks on load again: n1, never sampled, counts as loaded as
    // n2's engine rather than as idle.
    set_sample(n2, 30.0, Duration::ZERO);
    let counts = picks(&rt, 2000);
    let n2_share = counts.get("n2").copied().unwrap_or(0) as f64 / 2000.0;
    assert!(n2_share > 0.3, "n2 still picked by load: {counts:?}");
    drop(leases);
}

/// The issue's scenario on simulated nodes: a 95 % CPU engine whose health check then hangs
/// (as a saturated engine's often does) keeps its last known load, long past the point where
/// its sample used to be dropped, and takes no new users although it has the fewest connections.
#[tokio::test]
async fn a_simulated_engine_at_95_percent_whose_health_hangs_takes_no_new_users() {
    use qlik_lb::sim::node::SimNode;
    let mut nodes = Vec::new();
    for id in ["n1", "n2"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        nodes.push(SimNode::start(id, listener).await.unwrap());
    }
    nodes[0].set_cpu(95.0);
    nodes[1].set_cpu(10.0);
    // A tcp up check, so the hang only touches engine health and the node stays up.
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
  check = "tcp"
  interval = "100ms"
  timeout = "100ms"
  rise = 1
  fall = 1
"#,
    );
    for n in &nodes {
        toml.push_str(&format!(
            "  [[pool.backend]]\n  id = \"{id}\"\n  url = \"http://{a}\"\n  engine_health = \"http://{a}/engine/healthcheck\"\n",
            id = n.id(),
            a = n.addr()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let (rt, shared) = runtime(&toml, dir.path());
    probe_all(&rt, &shared).await;
    let snap = rt.load_full();
    let pool = &snap.pools["web"];
    let (n1, n2) = (pool.backend("n1").unwrap(), pool.backend("n2").unwrap());
    assert_eq!(n1.health().unwrap().health.cpu.total, 95.0);
    let taken = n1.health().unwrap().taken;

    nodes[0].set_latency(Duration::from_secs(30));
    let leases: Vec<_> = (0..4).map(|_| n2.inflight_lease()).collect();
    // Six intervals: the sample is well past "three intervals old".
    tokio::time::sleep(Duration::from_millis(600)).await;
    probe_all(&rt, &shared).await;
    assert!(n1.is_up(), "the node itself still answers");
    assert_eq!(n1.health().unwrap().taken, taken, "no new sample from n1");
    let counts = picks(&rt, 500);
    assert_eq!(counts.get("n2"), Some(&500), "{counts:?}");
    drop(leases);
}
