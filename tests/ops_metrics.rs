//! Every metric name of the product contract (PRODUCT.md §5.1, read from the contract itself)
//! appears on `/metrics` of a running instance that has carried traffic.

mod support;

use futures_util::{SinkExt, StreamExt};
use qlik_lb::app::Instance;
use std::collections::BTreeSet;
use support::backend::TestBackend;
use support::{frontdoor_config, raw, start, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const CONTRACT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/PRODUCT.md");

/// Producers that need a Qlik site (engines, QRS); the demo test covers them.
const PRODUCED_ELSEWHERE: &[&str] = &["qlb_engine_", "qlb_lbmodule_", "qlb_license_", "qlb_job_"];

/// §5.1 names whose features are not built yet (the cluster of §8),
/// with where they belong. Each is asserted absent, so this list cannot outlive its feature.
const NOT_BUILT_YET: &[(&str, &str)] = &[];

/// §5.1 names with a sample per TLS frontend certificate: the instances here (and the demo)
/// serve plain HTTP, so each is asserted absent; tests/edge_tls_sni.rs asserts its values.
const ONLY_WITH_TLS_FRONTENDS: &[&str] = &["qlb_tls_certificate_expiry_timestamp_seconds"];

/// The metric names of §5.1, in backticks in the table rows, less those not built yet and those
/// a plain-HTTP instance has no sample of.
fn contract_names() -> BTreeSet<String> {
    let mut names = all_contract_names();
    for name in NOT_BUILT_YET
        .iter()
        .map(|(n, _)| n)
        .chain(ONLY_WITH_TLS_FRONTENDS)
    {
        assert!(names.remove(*name), "{name} is no longer in the contract");
    }
    names
}

fn all_contract_names() -> BTreeSet<String> {
    let spec = std::fs::read_to_string(CONTRACT).expect("the product contract");
    let section = spec
        .split("### 5.1")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("section 5.1");
    let mut names = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = line.split('|').nth(1).unwrap_or_default();
        for part in first_cell.split('`').skip(1).step_by(2) {
            if part.starts_with("qlb_") {
                names.insert(part.to_string());
            }
        }
    }
    assert!(names.len() >= 30, "found only {names:?} in §5.1");
    names
}

/// Front-door traffic of every kind: a miss, a sticky hit, a tunnel with bytes, a bad request,
/// and a reload.
async fn instance_with_traffic(backend: &TestBackend) -> (Instance, String) {
    let instance = start(&frontdoor_config(&[("b1", backend.addr_string())], "", "")).await;
    let front = instance.frontend_addr("public").unwrap();
    let first = raw::get(front, "/", &[]).await;
    assert_eq!(first.status, 200);
    let cookie = format!("QLB_ROUTE={}", first.route_cookie().expect("pinned"));
    assert_eq!(
        raw::get(front, "/", &[("Cookie", &cookie)]).await.status,
        200
    );

    let req = format!("ws://{front}/app/x").into_client_request().unwrap();
    let tcp = TcpStream::connect(front).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert!(ws.next().await.unwrap().unwrap().is_text());

    let mut bad = TcpStream::connect(front).await.unwrap();
    bad.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(raw::read_reply(&mut bad, &mut buf).await.status, 400);

    // An instance from inline text has no file: the reload is counted as an error.
    assert!(!instance.reload(qlik_lb::reload::Trigger::Api).await.ok);
    let scraped = raw::get(instance.admin_addr().unwrap(), "/metrics", &[]).await;
    assert_eq!(scraped.status, 200);
    let text = scraped.text();
    drop(ws);
    (instance, text)
}

fn missing(names: &BTreeSet<String>, exposition: &str) -> Vec<String> {
    names
        .iter()
        .filter(|n| !exposition.contains(&format!("# TYPE {n} ")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn front_door_and_config_metrics_are_exposed() {
    within(30, async {
        let backend = TestBackend::start("b1").await;
        let (_instance, text) = instance_with_traffic(&backend).await;
        let ours: BTreeSet<String> = contract_names()
            .into_iter()
            .filter(|n| !PRODUCED_ELSEWHERE.iter().any(|p| n.starts_with(p)))
            .collect();
        assert!(ours.len() >= 14);
        assert_eq!(missing(&ours, &text), Vec::<String>::new());
        for (name, feature) in NOT_BUILT_YET {
            assert!(
                !text.contains(&format!("# TYPE {name} ")),
                "{name} ({feature}) is exposed now: take it off NOT_BUILT_YET"
            );
        }
        for name in ONLY_WITH_TLS_FRONTENDS {
            assert!(
                !text.contains(&format!("{name}{{")),
                "{name} has a sample without a TLS frontend"
            );
        }
        assert!(text.contains(r#"qlb_config_reloads_total{result="error"} 1"#));
    })
    .await;
}

/// The demo (simulated site, every role on) after a user's traffic: every §5.1 name appears once
/// the first health poll and the license jobs at start have reported.
#[tokio::test]
async fn every_contract_metric_is_exposed_after_a_demo_run() {
    let demo = support::start_demo().await;
    within(60, async {
        let ws = support::demo_traffic(&demo).await;
        let names = contract_names();
        loop {
            let text = raw::get(demo.instance.admin_addr().unwrap(), "/metrics", &[])
                .await
                .text();
            let absent = missing(&names, &text);
            if absent.is_empty() {
                break;
            }
            // Health polls and license jobs report within seconds; the step deadline bounds this.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            eprintln!("waiting for {absent:?}");
        }
        drop(ws);
    })
    .await;
    demo.shutdown().await;
}
