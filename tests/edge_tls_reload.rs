//! §3.2 Certificates: the files are watched. A replaced pair is served to the next handshake
//! while connections and tunnels opened before carry on; a bad replacement keeps the old pair
//! and is reported like a failed reload (counter, `/api/v1/status`).

mod support;

use futures_util::{SinkExt, StreamExt};
use qlik_lb::app::Instance;
use std::path::PathBuf;
use std::time::Duration;
use support::backend::TestBackend;
use support::pki::{connect, served, Leaf, TestCa};
use support::{frontdoor_config, metric, metric_reaches, raw, start, within};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const NAME: &str = "lb.example.test";
const ERRORS: &str = r#"qlb_config_reloads_total{result="error"}"#;

struct Door {
    lb: Instance,
    _backend: TestBackend,
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

/// A TLS front door serving `first` from watched files.
async fn door(first: &Leaf) -> Door {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("lb.pem"), dir.path().join("lb-key.pem"));
    first.write(&cert, &key);
    let backend = TestBackend::start("b1").await;
    let tls = support::edge::frontend_tls(&cert, &key);
    let lb = start(&frontdoor_config(
        &[("b1", backend.addr_string())],
        "",
        &tls,
    ))
    .await;
    lb.watch_for_reloads().unwrap();
    Door {
        lb,
        _backend: backend,
        _dir: dir,
        cert,
        key,
    }
}

/// Polls new handshakes until one is served `leaf`.
async fn served_soon(lb: &Instance, leaf: &Leaf) {
    let front = lb.frontend_addr("public").unwrap();
    within(10, async {
        while served(front, Some(NAME)).await != leaf.der {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn expiry_sample() -> String {
    format!("qlb_tls_certificate_expiry_timestamp_seconds{{frontend=\"public\",name=\"{NAME}\"}}")
}

async fn last_reload(lb: &Instance) -> serde_json::Value {
    let st = raw::get(lb.admin_addr().unwrap(), "/api/v1/status", &[])
        .await
        .json();
    st["config"]["last_reload"].clone()
}

#[tokio::test]
async fn a_replaced_pair_serves_new_handshakes_while_an_open_tunnel_keeps_echoing() {
    let ca = TestCa::new();
    let old = ca.leaf(&[NAME], (2030, 1, 1));
    let new = ca.leaf(&[NAME], (2031, 6, 30));
    let d = door(&old).await;
    let front = d.lb.frontend_addr("public").unwrap();
    within(20, async {
        let tls = connect(front, Some(NAME)).await;
        assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], old.der);
        let req = format!("wss://{NAME}/app/x").into_client_request().unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
        ws.send(Message::text("before")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

        // Key first, then certificate, as a renewal tool writes them: picked up as one pair.
        std::fs::write(&d.key, &new.key_pem).unwrap();
        std::fs::write(&d.cert, &new.cert_pem).unwrap();
        served_soon(&d.lb, &new).await;

        ws.send(Message::text("after")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
        assert_eq!(metric(&d.lb, &expiry_sample()).await, new.not_after as f64);
        assert_eq!(
            metric(&d.lb, ERRORS).await,
            0.0,
            "the half-replaced pair was no error"
        );
        let last = last_reload(&d.lb).await;
        assert_eq!(last["ok"], true, "{last}");
        assert_eq!(last["trigger"], "certificate", "{last}");
    })
    .await;
}

#[tokio::test]
async fn a_bad_replacement_keeps_the_old_pair_and_is_reported_once() {
    let ca = TestCa::new();
    let old = ca.leaf(&[NAME], (2030, 1, 1));
    let d = door(&old).await;
    let front = d.lb.frontend_addr("public").unwrap();
    within(20, async {
        std::fs::write(&d.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
        metric_reaches(&d.lb, ERRORS, 1.0, 10).await;
        assert_eq!(
            served(front, Some(NAME)).await,
            old.der,
            "the old pair serves on"
        );
        assert_eq!(metric(&d.lb, &expiry_sample()).await, old.not_after as f64);
        let last = last_reload(&d.lb).await;
        assert_eq!(last["ok"], false, "{last}");
        assert_eq!(last["trigger"], "certificate", "{last}");
        assert_eq!(last["errors"][0]["key"], "frontend[0].tls", "{last}");

        // A certificate whose key is another's is refused the same way, then a good pair is taken.
        let other = ca.leaf(&[NAME], (2031, 1, 1));
        let fixed = ca.leaf(&[NAME], (2032, 1, 1));
        std::fs::write(&d.cert, &other.cert_pem).unwrap();
        metric_reaches(&d.lb, ERRORS, 2.0, 10).await;
        assert_eq!(served(front, Some(NAME)).await, old.der);
        fixed.write(&d.cert, &d.key);
        served_soon(&d.lb, &fixed).await;
        assert_eq!(metric(&d.lb, ERRORS).await, 2.0);
        assert_eq!(last_reload(&d.lb).await["ok"], true);
    })
    .await;
}

#[tokio::test]
async fn a_config_reload_serves_the_certificates_it_names() {
    let ca = TestCa::new();
    let first = ca.leaf(&[NAME], (2030, 1, 1));
    let second = ca.leaf(&[NAME], (2033, 3, 3));
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::start("b1").await;
    let pair = |n: &str| {
        (
            dir.path().join(format!("{n}.pem")),
            dir.path().join(format!("{n}-key.pem")),
        )
    };
    let (c1, k1) = pair("first");
    let (c2, k2) = pair("second");
    first.write(&c1, &k1);
    second.write(&c2, &k2);
    let config = |c: &PathBuf, k: &PathBuf| {
        frontdoor_config(
            &[("b1", backend.addr_string())],
            "",
            &support::edge::frontend_tls(c, k),
        )
    };
    let file = dir.path().join("qlik-lb.toml");
    std::fs::write(&file, config(&c1, &k1)).unwrap();
    let lb = Instance::start(qlik_lb::config::Config::load(&file).unwrap())
        .await
        .unwrap();
    lb.watch_for_reloads().unwrap();
    within(20, async {
        served_soon(&lb, &first).await;
        std::fs::write(&file, config(&c2, &k2)).unwrap();
        assert!(lb.reload(qlik_lb::reload::Trigger::Api).await.ok);
        served_soon(&lb, &second).await;
        assert_eq!(metric(&lb, &expiry_sample()).await, second.not_after as f64);
        // The new snapshot's files are the watched ones now.
        let third = ca.leaf(&[NAME], (2034, 4, 4));
        third.write(&c2, &k2);
        served_soon(&lb, &third).await;
    })
    .await;
}
