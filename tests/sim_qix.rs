//! QIX JSON-RPC over WebSocket against a simulated node, checked against a real engine transcript.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use qlik_lb::sim::node::{SimNode, SimNodeHandle};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TRANSCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/qlik/fixtures/qix-session.txt"
);
const APP: &str = "3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn node(id: &str) -> SimNodeHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    SimNode::start(id, listener).await.unwrap()
}

async fn next_text(ws: &mut Ws) -> String {
    match ws.next().await.expect("socket open").expect("frame") {
        Message::Text(text) => text.as_str().to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn call(ws: &mut Ws, request: Value) -> Value {
    ws.send(Message::text(request.to_string())).await.unwrap();
    serde_json::from_str(&next_text(ws).await).unwrap()
}

enum Line {
    FromClient(String),
    FromEngine(String),
}

fn transcript() -> Vec<Line> {
    std::fs::read_to_string(TRANSCRIPT)
        .unwrap()
        .lines()
        .filter_map(|line| {
            if let Some(sent) = line.strip_prefix("<- ") {
                Some(Line::FromClient(sent.to_string()))
            } else {
                line.strip_prefix("-> ")
                    .map(|answer| Line::FromEngine(answer.to_string()))
            }
        })
        .collect()
}

#[tokio::test]
async fn replays_the_enigma_transcript() {
    within("transcript", async {
        let node = node("node2").await;
        let url = format!(
            "ws://{}/sales/app/{APP}?reloadUri=http%3A%2F%2Fhost%2Fsales%2Fsense%2Fapp%2F{APP}",
            node.addr()
        );
        let (mut ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(response.headers()["x-sim-node"], "node2");
        let cookie = response.headers()["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with("X-Qlik-Session-sales="),
            "the prefix's cookie on the 101: {cookie}"
        );

        let lines = transcript();
        assert!(lines.len() >= 13, "the transcript has its exchanges");
        let mut last_method = String::new();
        for line in lines {
            match line {
                Line::FromClient(sent) => {
                    let request: Value = serde_json::from_str(&sent).unwrap();
                    last_method = request["method"].as_str().unwrap().to_string();
                    ws.send(Message::text(sent)).await.unwrap();
                }
                Line::FromEngine(expected_text) => {
                    let got_text = next_text(&mut ws).await;
                    let got: Value = serde_json::from_str(&got_text).unwrap();
                    let mut expected: Value = serde_json::from_str(&expected_text).unwrap();
                    if last_method == "Evaluate" {
                        // The simulator answers Evaluate with its node id instead of computing the
                        // expression ("1+1" = "2"), so that a client sees which node it landed on.
                        expected["result"]["qReturn"] = json!("node2");
                        assert_eq!(got, expected, "answer to Evaluate");
                    } else {
                        assert_eq!(got, expected, "answer after {last_method}");
                        // Same keys in the same order as the engine writes them.
                        assert_eq!(
                            got_text, expected_text,
                            "layout of the answer after {last_method}"
                        );
                    }
                    assert!(got.get("delta").is_none());
                }
            }
        }
        ws.close(None).await.unwrap();
    })
    .await;
}

async fn health(node: &SimNodeHandle) -> Value {
    serde_json::to_value(node.health()).unwrap()
}

#[tokio::test]
async fn docs_show_in_the_doc_list_and_the_health_check() {
    within("docs", async {
        let node = node("node1").await;
        let other_app = "0000aaaa-1111-4222-8333-444455556666";
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/app/{other_app}", node.addr()))
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&next_text(&mut ws).await).unwrap()["params"]["qSessionState"],
            "SESSION_CREATED"
        );
        let early = call(&mut ws, json!({"jsonrpc":"2.0","id":1,"method":"Evaluate","handle":1,"params":["1"]})).await;
        assert_eq!(early["error"]["code"], -32601, "no doc handle before OpenDoc: {early}");

        // A notification (no id) gets no answer: the next frame answers id 2.
        ws.send(Message::text(r#"{"jsonrpc":"2.0","method":"EngineVersion","handle":-1,"params":[]}"#))
            .await
            .unwrap();
        let opened = call(&mut ws, json!({"jsonrpc":"2.0","id":2,"method":"OpenDoc","handle":-1,"params":{"qDocName":other_app}})).await;
        assert_eq!(opened["id"], 2);
        assert_eq!(opened["result"]["qReturn"]["qGenericId"], other_app);
        let again = call(&mut ws, json!({"jsonrpc":"2.0","id":3,"method":"OpenDoc","handle":-1,"params":[APP]})).await;
        assert_eq!(again["error"]["code"], 1002);
        let active = call(&mut ws, json!({"jsonrpc":"2.0","id":4,"method":"GetActiveDoc","handle":-1,"params":[]})).await;
        assert_eq!(active["result"]["qReturn"], json!({"qType":"Doc","qHandle":1,"qGenericId":other_app}));
        let list = call(&mut ws, json!({"jsonrpc":"2.0","id":5,"method":"GetDocList","handle":-1,"params":[]})).await;
        let names: Vec<&str> =
            list["result"]["qDocList"].as_array().unwrap().iter().map(|d| d["qDocName"].as_str().unwrap()).collect();
        assert!(names.contains(&APP) && names.contains(&other_app), "{names:?}");
        let landed = call(&mut ws, json!({"jsonrpc":"2.0","id":6,"method":"Evaluate","handle":1,"params":["=1"]})).await;
        assert_eq!(landed["result"]["qReturn"], "node1");

        let live = health(&node).await;
        assert_eq!(live["apps"]["active_docs"], json!([other_app]));
        assert_eq!(live["apps"]["in_memory_docs"], json!([other_app]));
        assert_eq!(live["apps"]["loaded_docs"], json!([other_app]));
        assert!(live["apps"]["calls"].as_u64().unwrap() >= 7);

        ws.close(None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.open_websockets() > 0 {
            assert!(Instant::now() < deadline, "the session never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let after = health(&node).await;
        assert_eq!(after["apps"]["active_docs"], json!([]), "no session holds the app");
        assert_eq!(after["apps"]["in_memory_docs"], json!([other_app]), "the app stays loaded");
    })
    .await;
}

#[tokio::test]
async fn upgrades_follow_the_session_rules() {
    within("upgrade sessions", async {
        let node1 = node("node1").await;
        let node2 = node("node2").await;
        let (_ws, first) =
            tokio_tungstenite::connect_async(format!("ws://{}/app/{APP}", node1.addr()))
                .await
                .unwrap();
        let set_cookie = first.headers()["set-cookie"].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        assert!(cookie.starts_with("X-Qlik-Session="), "{set_cookie}");

        let with_cookie = |addr: std::net::SocketAddr| {
            let mut request = format!("ws://{addr}/app/{APP}")
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("Cookie", cookie.parse().unwrap());
            request
        };
        // The node that issued the session takes it back without a new cookie.
        let (_ws2, known) = tokio_tungstenite::connect_async(with_cookie(node1.addr()))
            .await
            .unwrap();
        assert_eq!(known.status(), 101);
        assert!(known.headers().get("set-cookie").is_none());
        let health = serde_json::to_value(node1.health()).unwrap();
        assert_eq!(health["session"]["active"], 2);
        assert_eq!(
            health["users"]["active"], 1,
            "two WebSockets of one QPS session are one user"
        );

        // Another node does not know it: 302 to its login page, no WebSocket.
        match tokio_tungstenite::connect_async(with_cookie(node2.addr())).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 302);
                assert_eq!(response.headers()["x-sim-node"], "node2");
                let location = response.headers()["location"].to_str().unwrap();
                assert!(
                    location.starts_with("/internal_forms_authentication/"),
                    "{location}"
                );
            }
            other => panic!("expected a 302, got {other:?}"),
        }
        assert_eq!(node2.open_websockets(), 0);

        // A failing node answers the upgrade with a 500.
        node2.set_fail(true);
        match tokio_tungstenite::connect_async(format!("ws://{}/app/{APP}", node2.addr())).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 500)
            }
            other => panic!("expected a 500, got {other:?}"),
        }
    })
    .await;
}
