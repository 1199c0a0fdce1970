//! Membership and leadership with a real etcd and three instances in this process: everyone
//! sees the same three members and one leader; when the leader leaves another leads within
//! `lease_ttl` and a few seconds; the status API, the metrics and the status page show it.

mod support;

use std::time::Duration;
use support::cluster::{cluster_section, leaders, until, Node};
use support::etcd::Etcd;

const ADMIN_ONLY: &str = "[admin]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n";

async fn three(etcd: &Etcd, root: &std::path::Path) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in ["lb-a", "lb-b", "lb-c"] {
        let text = format!("{ADMIN_ONLY}{}", cluster_section(&etcd.endpoint(), name));
        nodes.push(Node::start(name, &root.join(name), &text).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_one_leader_and_a_failover_when_the_leader_leaves() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = three(&etcd, root.path()).await;

    until(
        Duration::from_secs(10),
        "three members and one leader seen by all",
        || {
            nodes.iter().all(|n| {
                let v = n.view();
                v.connected && v.members.len() == 3 && v.leader.is_some()
            }) && leaders(&nodes).len() == 1
        },
    )
    .await;
    let leader = leaders(&nodes)[0].clone();
    for n in &nodes {
        assert_eq!(
            n.view().leader.as_deref(),
            Some(leader.as_str()),
            "{}",
            n.name
        );
    }

    // The status API and the metrics say the same.
    for n in &nodes {
        let st = n.status().await;
        let c = &st["cluster"];
        assert_eq!(c["name"], n.name.as_str());
        assert_eq!(c["connected"], true);
        assert_eq!(c["leader"], leader.as_str());
        let members = c["members"].as_array().expect("members");
        assert_eq!(members.len(), 3);
        for m in members {
            assert_eq!(m["leader"], m["name"] == leader.as_str(), "{m}");
            assert!(
                m["admin"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{m}"
            );
            assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
        }
        let metrics = n.metrics().await;
        assert!(metrics.contains("qlb_cluster_connected 1"), "{}", n.name);
        assert!(metrics.contains("qlb_cluster_members 3"), "{}", n.name);
        let leads = if n.name == leader { 1 } else { 0 };
        assert!(
            metrics.contains(&format!("qlb_cluster_leader {leads}")),
            "{}",
            n.name
        );
    }

    // The status page renders the cluster object of the status (members, the leader).
    let page = support::raw::get(nodes[0].admin(), "/", &[]).await.text();
    assert!(page.contains("cluster(s.cluster)") && page.contains("m.leader"));

    // The leader leaves: another leads within lease_ttl (2 s) and a few seconds.
    let gone = nodes.iter().position(|n| n.name == leader).unwrap();
    nodes[gone].shutdown().await;
    let left: Vec<Node> = nodes.into_iter().filter(|n| n.instance.is_some()).collect();
    until(Duration::from_secs(5), "another leader", || {
        leaders(&left).len() == 1
            && left.iter().all(|n| {
                let v = n.view();
                v.members.len() == 2 && v.leader.as_deref().is_some_and(|l| l != leader)
            })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_vanishes_without_a_word_is_replaced_once_its_lease_lapses() {
    let etcd = Etcd::start();
    let root = tempfile::tempdir().unwrap();
    let nodes = three(&etcd, root.path()).await;
    until(Duration::from_secs(10), "one leader", || {
        leaders(&nodes).len() == 1 && nodes.iter().all(|n| n.view().members.len() == 3)
    })
    .await;
    let leader = leaders(&nodes)[0].clone();
    let crashed = nodes.iter().find(|n| n.name == leader).unwrap();
    crashed.instance().cluster.as_ref().unwrap().abandon().await;
    assert!(!crashed.view().connected);
    // lease_ttl is 2 s; the others campaign as soon as etcd expires the lease.
    until(
        Duration::from_secs(6),
        "another leader, two members",
        || {
            let others: Vec<&Node> = nodes.iter().filter(|n| n.name != leader).collect();
            others.iter().all(|n| {
                let v = n.view();
                v.members.len() == 2 && v.leader.as_deref().is_some_and(|l| l != leader)
            }) && leaders(&nodes).len() == 1
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cluster_the_status_has_no_cluster_and_the_gauges_read_zero() {
    let root = tempfile::tempdir().unwrap();
    let node = Node::start("alone", &root.path().join("alone"), ADMIN_ONLY).await;
    let st = node.status().await;
    assert!(st["cluster"].is_null(), "{st}");
    let metrics = node.metrics().await;
    assert!(metrics.contains("qlb_cluster_connected 0"));
    assert!(metrics.contains("qlb_cluster_members 0"));

    // [cluster] belongs to the process: a reload that adds (or changes) it is refused whole.
    let with_cluster = format!(
        "{ADMIN_ONLY}{}",
        cluster_section("http://127.0.0.1:1", "alone")
    );
    std::fs::write(node.config_path(), with_cluster).unwrap();
    let reply = node.post("/api/v1/reload").await;
    assert_eq!(reply.status, 422, "{}", reply.text());
    let errors = &reply.json()["reload"]["errors"];
    assert_eq!(errors[0]["key"], "cluster", "{errors}");
    assert!(node.status().await["cluster"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate() {
    let certs = qlik_lb::sim::certs::SimCerts::generate().unwrap();
    let root = tempfile::tempdir().unwrap();
    let cert_dir = root.path().join("etcd-certs");
    certs.write_to(&cert_dir).unwrap();
    let etcd = Etcd::start_tls(&cert_dir);
    let tls = format!(
        "tls = {{ ca = \"{0}/root.pem\", cert = \"{0}/client.pem\", key = \"{0}/client_key.pem\" }}\n",
        cert_dir.display()
    );
    let text = format!(
        "{ADMIN_ONLY}{}{tls}",
        cluster_section(&etcd.endpoint(), "lb-tls")
    );
    let node = Node::start("lb-tls", &root.path().join("lb-tls"), &text).await;
    until(
        Duration::from_secs(10),
        "connected over TLS and leading",
        || {
            let v = node.view();
            v.connected && v.leader.as_deref() == Some("lb-tls")
        },
    )
    .await;
}
