//! The control plane in a cluster of three instances over a real etcd and the simulated QRS: only
//! the leader runs the license jobs, so a release run happens once and no allocation gets two
//! DELETEs; followers show the leader's results and export no license or job series; a new leader
//! runs the jobs when it takes over; a leader cut from etcd in the middle of a run sends no
//! further DELETE and records `leadership lost` for the rest.

mod license_support;
mod support;

use license_support::*;
use qlik_lb::control::audit;
use qlik_lb::control::release::Outcome;
use qlik_lb::control::LicenseType;
use qlik_lb::sim::qrs::{QrsHandle, SimUser};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cluster::{cluster_section, leaders, until, Node};
use support::etcd::Etcd;

const NAMES: [&str; 3] = ["lb-a", "lb-b", "lb-c"];

fn config_text(site: &Site, etcd: &Etcd, name: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n{}{}",
        BASE_CONFIG.replace("QRS_URL", &site.qrs.url()),
        cluster_section(&etcd.endpoint(), name)
    )
}

/// Starts the three instances, each in its own folder with the QRS client certificates.
async fn nodes(site: &Site, etcd: &Etcd) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in NAMES {
        let dir = site.dir.path().join(name);
        site.certs.write_to(&dir.join("certs")).expect("certs");
        nodes.push(Node::start(name, &dir, &config_text(site, etcd, name)).await);
    }
    nodes
}

fn old_allocations(qrs: &QrsHandle, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            give(
                qrs,
                SimUser::new("LAB", &format!("user{i}")),
                LicenseType::Professional,
                days_ago(40),
            )
        })
        .collect()
}

/// DELETEs the QRS received, by allocation id.
fn deletes_by_id(qrs: &QrsHandle) -> BTreeMap<String, usize> {
    let mut by_id = BTreeMap::new();
    for r in qrs.requests().iter().filter(|r| r.method == "DELETE") {
        let id = r.path.rsplit('/').next().unwrap().to_string();
        *by_id.entry(id).or_default() += 1;
    }
    by_id
}

fn ran_release(node: &Node) -> bool {
    node.instance().license_status.view().last_release.is_some()
}

fn series(metrics: &str, prefix: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_alone_runs_the_jobs_and_a_new_leader_takes_them_over() {
    let etcd = Etcd::start();
    let site = site(empty()).await;
    let ids = old_allocations(&site.qrs, 3);
    let mut nodes = nodes(&site, &etcd).await;
    until(
        Duration::from_secs(10),
        "one leader with a release run",
        || {
            let l = leaders(&nodes);
            l.len() == 1 && nodes.iter().any(|n| n.name == l[0] && ran_release(n))
        },
    )
    .await;
    let leader = leaders(&nodes)[0].clone();
    let lead = nodes.iter().find(|n| n.name == leader).unwrap();
    let run = lead.instance().license_status.view().last_release.unwrap();
    assert_eq!(run.counts.get("released"), Some(&3), "{run:?}");
    let deletes = deletes_by_id(&site.qrs);
    assert_eq!(deletes.len(), 3, "{deletes:?}");
    assert!(deletes.values().all(|&n| n == 1), "{deletes:?}");
    assert!(ids.iter().all(|id| site.qrs.allocation(id).is_none()));

    // Followers ran nothing, show the leader's run and export no license or job series.
    for n in nodes.iter().filter(|n| n.name != leader) {
        assert!(!ran_release(n), "{} ran a release", n.name);
        until(Duration::from_secs(2), "the leader's run shown", || {
            n.instance().license_status.json()["release"]["run_id"] == run.run_id.as_str()
        })
        .await;
        let st = n.status().await;
        assert_eq!(st["release"]["run_id"], run.run_id.as_str(), "{}", n.name);
        assert!(
            !st["license"].is_null(),
            "{}: the leader's snapshot",
            n.name
        );
        let metrics = n.metrics().await;
        assert!(series(&metrics, "qlb_license_").is_empty(), "{}", n.name);
        assert!(series(&metrics, "qlb_job_").is_empty(), "{}", n.name);
    }
    let metrics = lead.metrics().await;
    assert!(!series(&metrics, "qlb_job_runs_total").is_empty());
    assert!(!series(&metrics, "qlb_license_").is_empty());

    // The leader leaves: the next one runs the jobs when it takes over (nothing left to release).
    let gone = nodes.iter().position(|n| n.name == leader).unwrap();
    nodes[gone].shutdown().await;
    until(Duration::from_secs(8), "a new leader ran the jobs", || {
        let l = leaders(&nodes);
        l.len() == 1 && nodes.iter().any(|n| n.name == l[0] && ran_release(n))
    })
    .await;
    let deletes = deletes_by_id(&site.qrs);
    assert!(deletes.values().all(|&n| n == 1), "{deletes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_etcd_mid_run_sends_no_further_delete() {
    let etcd = Arc::new(Mutex::new(Etcd::start()));
    let site = site(empty()).await;
    let ids = old_allocations(&site.qrs, 5);
    // etcd goes away while the first DELETE is in flight (once).
    let cut = etcd.clone();
    let armed = Arc::new(AtomicBool::new(true));
    site.qrs.on_delete(Some(Arc::new(move |_: &str| {
        if armed.swap(false, Ordering::SeqCst) {
            cut.lock().unwrap().stop();
        }
    })));
    let endpoint_holder = etcd.lock().unwrap().endpoint();
    let mut nodes = Vec::new();
    for name in NAMES {
        let dir = site.dir.path().join(name);
        site.certs.write_to(&dir.join("certs")).expect("certs");
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n{}{}",
            BASE_CONFIG.replace("QRS_URL", &site.qrs.url()),
            cluster_section(&endpoint_holder, name)
        );
        nodes.push(Node::start(name, &dir, &text).await);
    }
    until(
        Duration::from_secs(10),
        "a run stopped by the fence",
        || nodes.iter().any(ran_release),
    )
    .await;
    let cut_leader = nodes.iter().find(|n| ran_release(n)).unwrap();
    let run = cut_leader
        .instance()
        .license_status
        .view()
        .last_release
        .unwrap();
    assert_eq!(run.outcome, Outcome::Stopped, "{run:?}");
    assert_eq!(run.stop_reason.as_deref(), Some("leadership lost"));
    assert_eq!(run.counts.get("released"), Some(&1), "{run:?}");
    assert_eq!(run.counts.get("error"), Some(&4), "{run:?}");
    assert_eq!(site.qrs.method_count("DELETE"), 1);
    let audit_lines = audit::read_all(&cut_leader.dir.join("var/audit.jsonl")).unwrap();
    let lost = audit_lines
        .iter()
        .filter(|l| l.decision == "error" && l.reason == "leadership lost")
        .count();
    assert_eq!(lost, 4, "{audit_lines:#?}");

    // While etcd is down no one leads and nothing more is sent.
    until(
        Duration::from_secs(3),
        "no leader while etcd is down",
        || leaders(&nodes).is_empty(),
    )
    .await;
    assert_eq!(site.qrs.method_count("DELETE"), 1);

    // etcd returns: whoever leads then releases the rest, each allocation exactly once.
    etcd.lock().unwrap().start_again();
    until(Duration::from_secs(15), "the rest released", || {
        ids.iter().all(|id| site.qrs.allocation(id).is_none())
    })
    .await;
    let deletes = deletes_by_id(&site.qrs);
    assert_eq!(deletes.len(), 5, "{deletes:?}");
    assert!(deletes.values().all(|&n| n == 1), "{deletes:?}");
    for n in &mut nodes {
        n.shutdown().await;
    }
}
