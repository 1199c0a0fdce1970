//! The simulated Qlik site behind the front door, as a user and enigma.js would see it: a QIX
//! session replayed from a real transcript lands on one node across reconnects, the QPS session
//! check shows a wrong node, and the whole demo runs in-process on ephemeral ports.

mod support;

use futures_util::{SinkExt, StreamExt};
use qlik_lb::demo::{Demo, DEMO_APP};
use serde_json::Value;
use support::raw;
use support::within;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TRANSCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/qlik/fixtures/qix-session.txt"
);

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn demo() -> Demo {
    support::start_demo().await
}

async fn connect(
    addr: std::net::SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> (Ws, Option<String>) {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("upgrade");
    let pin = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("QLB_ROUTE="))
        .map(|c| c.split(';').next().unwrap().to_string());
    (ws, pin)
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("socket open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON-RPC"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Replays the enigma.js transcript; returns the node id `Evaluate` reported.
async fn replay(ws: &mut Ws) -> String {
    let text = std::fs::read_to_string(TRANSCRIPT).unwrap();
    let mut evaluated = None;
    let mut pending_eval = false;
    for line in text.lines() {
        if let Some(sent) = line.strip_prefix("<- ") {
            pending_eval = sent.contains("\"Evaluate\"");
            ws.send(Message::text(sent)).await.unwrap();
        } else if let Some(expected) = line.strip_prefix("-> ") {
            let expected: Value = serde_json::from_str(expected).unwrap();
            let got = next_json(ws).await;
            assert!(got.get("delta").is_none(), "answers never set delta: {got}");
            if pending_eval {
                // The simulator answers Evaluate with its node id so a client sees where it landed.
                assert_eq!(got["id"], expected["id"]);
                evaluated = got["result"]["qReturn"].as_str().map(str::to_string);
            } else {
                assert_eq!(got, expected);
            }
        }
    }
    evaluated.expect("Evaluate answered")
}

#[tokio::test]
async fn a_qix_session_through_the_front_door_stays_on_one_node_across_reconnects() {
    let demo = demo().await;
    let addr = demo.instance.frontend_addr("public").unwrap();
    within(30, async {
        let path = format!("/app/{DEMO_APP}?reloadUri=http%3A%2F%2Fqs%2Fsense%2Fapp");
        let (mut ws, pin) = connect(addr, &path, None).await;
        let pin = pin.expect("the upgrade pins the user");
        let node = replay(&mut ws).await;
        ws.close(None).await.ok();
        for _ in 0..5 {
            let cookie = format!("QLB_ROUTE={pin}");
            let (mut again, repin) =
                connect(addr, &format!("/sales/app/{DEMO_APP}"), Some(&cookie)).await;
            assert!(
                repin.is_none(),
                "a reconnect with the cookie is not re-pinned"
            );
            assert_eq!(
                replay(&mut again).await,
                node,
                "every reconnect lands on the same engine"
            );
            again.close(None).await.ok();
        }
    })
    .await;
    demo.shutdown().await;
}

#[tokio::test]
async fn the_simulated_qps_notices_a_wrong_node_and_the_front_door_avoids_it() {
    let demo = demo().await;
    let addr = demo.instance.frontend_addr("public").unwrap();
    within(30, async {
        let first = raw::get(addr, "/hub", &[]).await;
        let node = first.header("x-sim-node").unwrap().to_string();
        let session = first
            .all("set-cookie")
            .into_iter()
            .find_map(|c| c.strip_prefix("X-Qlik-Session="))
            .map(|c| c.split(';').next().unwrap().to_string())
            .expect("QPS issued a session");
        let pin = first.route_cookie().unwrap();
        let other = demo.site.nodes.iter().find(|n| n.id() != node).unwrap();
        let direct = raw::get(
            other.addr(),
            "/hub",
            &[("Cookie", &format!("X-Qlik-Session={session}"))],
        )
        .await;
        assert_eq!(direct.status, 302, "another node does not know the session");
        for _ in 0..10 {
            let via_lb = raw::get(
                addr,
                "/hub",
                &[(
                    "Cookie",
                    &format!("QLB_ROUTE={pin}; X-Qlik-Session={session}"),
                )],
            )
            .await;
            assert_eq!(via_lb.status, 200);
            assert_eq!(via_lb.header("x-sim-node"), Some(node.as_str()));
            // Without our cookie, the learned session still finds the node.
            let learned = raw::get(
                addr,
                "/hub",
                &[("Cookie", &format!("X-Qlik-Session={session}"))],
            )
            .await;
            assert_eq!(learned.status, 200);
            assert_eq!(learned.header("x-sim-node"), Some(node.as_str()));
        }
    })
    .await;
    demo.shutdown().await;
}

#[tokio::test]
async fn the_demo_serves_a_websocket_session_and_a_metrics_scrape() {
    let demo = demo().await;
    let addr = demo.instance.frontend_addr("public").unwrap();
    within(30, async {
        let (mut ws, _) = connect(addr, &format!("/app/{DEMO_APP}"), None).await;
        let node = replay(&mut ws).await;
        assert!(node.starts_with("node"), "{node}");
        ws.close(None).await.ok();
        let metrics = raw::get(demo.instance.admin.unwrap(), "/metrics", &[]).await;
        assert_eq!(metrics.status, 200);
        let text = metrics.text();
        assert!(
            text.contains("qlb_websocket_tunnels_total{backend=\""),
            "{text}"
        );
        assert!(
            text.contains("qlb_sticky_decisions_total{outcome=\"miss\",pool=\"proxies\"} 1"),
            "{text}"
        );
    })
    .await;
    demo.shutdown().await;
}
