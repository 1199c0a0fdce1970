//! Site-wide drain and shared learned sessions over a real etcd, three instances in this
//! process: a drain set on one instance steers new users away on the others within 2 s and
//! survives a restart; an undrain on another clears it everywhere; a session learned on one
//! instance routes on another; with etcd stopped requests keep flowing, drains answer 503, and
//! once etcd is back there is one leader again and the drains are intact.

mod support;

use std::time::Duration;
use support::backend::TestBackend;
use support::cluster::{cluster_section, leaders, until, Node};
use support::etcd::Etcd;
use support::{frontdoor_config, raw};

const SITE_WIDE: Duration = Duration::from_secs(2);

struct Site {
    backends: Vec<TestBackend>,
    nodes: Vec<Node>,
    _root: tempfile::TempDir,
}

async fn site(etcd: &Etcd) -> Site {
    let backends = vec![
        TestBackend::start("n1").await,
        TestBackend::start("n2").await,
    ];
    let pairs: Vec<(&str, String)> = backends
        .iter()
        .map(|b| (b.id.as_str(), b.addr_string()))
        .collect();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for name in ["lb-a", "lb-b", "lb-c"] {
        let text = format!(
            "{}{}",
            frontdoor_config(&pairs, "", ""),
            cluster_section(&etcd.endpoint(), name)
        );
        nodes.push(Node::start(name, &root.path().join(name), &text).await);
    }
    until(Duration::from_secs(10), "one leader, three members", || {
        leaders(&nodes).len() == 1 && nodes.iter().all(|n| n.view().members.len() == 3)
    })
    .await;
    Site {
        backends,
        nodes,
        _root: root,
    }
}

fn draining(node: &Node, id: &str) -> bool {
    node.instance()
        .shared
        .registry
        .get("proxies", id)
        .expect("backend")
        .is_draining()
}

/// The backends `n` new users (no cookie) land on through `node`.
async fn new_users(node: &Node, n: usize) -> Vec<String> {
    let front = node.instance().frontend_addr("public").unwrap();
    let mut seen = Vec::new();
    for _ in 0..n {
        let reply = raw::get(front, "/", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        seen.push(reply.header("x-backend").unwrap().to_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reaches_every_instance_survives_a_restart_and_an_undrain_elsewhere_clears_it() {
    let etcd = Etcd::start();
    let mut s = site(&etcd).await;
    let drained = s.nodes[0]
        .post("/api/v1/pools/proxies/backends/n1/drain")
        .await;
    assert_eq!(drained.status, 200, "{}", drained.text());
    until(SITE_WIDE, "n1 draining on every instance", || {
        s.nodes.iter().all(|n| draining(n, "n1"))
    })
    .await;
    for node in &s.nodes[1..] {
        assert!(
            new_users(node, 6).await.iter().all(|b| b == "n2"),
            "{}: new users avoid the drained node",
            node.name
        );
    }

    // A restarted instance reads the drains before its start returns.
    s.nodes[2].shutdown().await;
    s.nodes[2].start_again().await;
    assert!(draining(&s.nodes[2], "n1"), "drained from the start");
    let st = s.nodes[2].status().await;
    let n1 = &st["pools"][0]["backends"][0];
    assert_eq!(n1["state"], "draining", "{st}");

    let undrained = s.nodes[1]
        .post("/api/v1/pools/proxies/backends/n1/undrain")
        .await;
    assert_eq!(undrained.status, 200, "{}", undrained.text());
    until(SITE_WIDE, "n1 undrained on every instance", || {
        s.nodes.iter().all(|n| !draining(n, "n1"))
    })
    .await;
    let users = new_users(&s.nodes[2], 6).await;
    assert!(users.iter().any(|b| b == "n1"), "{users:?}");
    assert!(s.backends[0].request_count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_learned_on_one_instance_routes_on_the_others() {
    let etcd = Etcd::start();
    let s = site(&etcd).await;
    let a = s.nodes[0].instance().frontend_addr("public").unwrap();
    let login = raw::get(a, "/login?set_session=0f0e-guid-shared", &[]).await;
    let node = login.header("x-backend").unwrap().to_string();
    for other in &s.nodes[1..] {
        let front = other.instance().frontend_addr("public").unwrap();
        let learned = "qlb_sticky_decisions_total{outcome=\"learned\",pool=\"proxies\"}";
        let deadline = tokio::time::Instant::now() + SITE_WIDE;
        // The first requests may come before the watch delivered the entry; they count as misses.
        while support::metric(other.instance(), learned).await < 1.0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: not shared",
                other.name
            );
            raw::get(
                front,
                "/hub",
                &[("Cookie", "X-Qlik-Session=0f0e-guid-shared")],
            )
            .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..6 {
            let r = raw::get(
                front,
                "/hub",
                &[("Cookie", "X-Qlik-Session=0f0e-guid-shared")],
            )
            .await;
            assert_eq!(r.header("x-backend"), Some(node.as_str()), "{}", other.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_requests_flow_drains_answer_503_and_all_resumes_when_it_returns() {
    let mut etcd = Etcd::start();
    let s = site(&etcd).await;
    let drained = s.nodes[0]
        .post("/api/v1/pools/proxies/backends/n1/drain")
        .await;
    assert_eq!(drained.status, 200);
    until(SITE_WIDE, "n1 draining everywhere", || {
        s.nodes.iter().all(|n| draining(n, "n1"))
    })
    .await;

    etcd.stop();
    // lease_ttl is 2 s: by then no instance may think it leads.
    until(Duration::from_secs(3), "disconnected, no leader", || {
        s.nodes.iter().all(|n| !n.view().connected) && leaders(&s.nodes).is_empty()
    })
    .await;
    for node in &s.nodes {
        let users = new_users(node, 10).await;
        assert!(users.iter().all(|b| b == "n2"), "{}: {users:?}", node.name);
        let ready = raw::get(node.admin(), "/readyz", &[]).await;
        assert_eq!(ready.status, 200, "{}", node.name);
        let metrics = node.metrics().await;
        assert!(metrics.contains("qlb_cluster_connected 0"));
        assert!(metrics.contains("qlb_cluster_leader 0"));
        assert!(metrics.contains("qlb_http_requests_total{backend=\"n2\",code=\"2xx\""));
        let errors: Vec<&str> = metrics
            .lines()
            .filter(|l| l.contains("code=\"5xx\"") && !l.ends_with(" 0"))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", node.name);
        assert_eq!(node.status().await["cluster"]["connected"], false);
    }
    let refused = s.nodes[1]
        .post("/api/v1/pools/proxies/backends/n2/drain")
        .await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.json()["error"].as_str().unwrap().contains("etcd"));
    assert!(
        !draining(&s.nodes[1], "n2"),
        "a refused drain changes nothing"
    );
    let refused = s.nodes[2]
        .post("/api/v1/pools/proxies/backends/n1/undrain")
        .await;
    assert_eq!(refused.status, 503);
    assert!(draining(&s.nodes[2], "n1"));

    etcd.start_again();
    until(
        Duration::from_secs(15),
        "one leader again, everyone connected",
        || {
            leaders(&s.nodes).len() == 1
                && s.nodes
                    .iter()
                    .all(|n| n.view().connected && n.view().members.len() == 3)
        },
    )
    .await;
    for node in &s.nodes {
        assert!(draining(node, "n1"), "{}: the drain held", node.name);
        assert!(!draining(node, "n2"), "{}", node.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_starting_reads_every_shared_session_past_one_page() {
    let etcd = Etcd::start();
    let client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    // More keys than one page of the start's read (2000), written as other instances would.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..10 {
        let mut c = client.clone();
        writers.spawn(async move {
            for i in (w * 250)..(w * 250 + 250) {
                c.put(format!("/test/sessions/proxies/s{i:04}"), "n2", None)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let b1 = TestBackend::start("n1").await;
    let b2 = TestBackend::start("n2").await;
    let pairs = [("n1", b1.addr_string()), ("n2", b2.addr_string())];
    let root = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{}",
        frontdoor_config(&pairs, "", ""),
        cluster_section(&etcd.endpoint(), "lb-a")
    );
    let node = Node::start("lb-a", &root.path().join("lb-a"), &text).await;
    let front = node.instance().frontend_addr("public").unwrap();
    for session in ["s0000", "s1999", "s2000", "s2499"] {
        for _ in 0..3 {
            let cookie = format!("X-Qlik-Session={session}");
            let r = raw::get(front, "/hub", &[("Cookie", cookie.as_str())]).await;
            assert_eq!(r.header("x-backend"), Some("n2"), "{session}");
        }
    }
    let learned = "qlb_sticky_decisions_total{outcome=\"learned\",pool=\"proxies\"}";
    assert_eq!(support::metric(node.instance(), learned).await, 12.0);
}
