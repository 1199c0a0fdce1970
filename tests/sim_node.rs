//! The simulated Qlik node over real sockets: engine health, QPS sessions, echo, control API.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use qlik_lb::balance::engine_health::EngineHealth;
use qlik_lb::sim::node::{start_nodes, SimNode, SimNodeHandle};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/qlik/fixtures/engine-healthcheck.json"
);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn node(id: &str) -> SimNodeHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    SimNode::start(id, listener).await.unwrap()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A keep-alive HTTP/1.1 client that writes requests byte for byte.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &[u8]) -> Reply {
        self.stream.write_all(raw).await.unwrap();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed.parse(&self.buf).unwrap() {
                let status = parsed.code.unwrap();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                while self.buf.len() < head_len + len {
                    self.read_more().await;
                }
                let body = self.buf[head_len..head_len + len].to_vec();
                self.buf.drain(..head_len + len);
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a full response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn get(&mut self, path: &str, cookie: Option<&str>) -> Reply {
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        self.send(format!("GET {path} HTTP/1.1\r\nHost: sim\r\n{cookie}\r\n").as_bytes())
            .await
    }

    async fn post_json(&mut self, path: &str, body: &str) -> Reply {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send(format!("{head}{body}").as_bytes()).await
    }
}

/// Every key of `fixture` exists in `ours` with a value of the same JSON kind.
fn assert_same_shape(fixture: &Value, ours: &Value, at: &str) {
    match (fixture, ours) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, value) in expected {
                let Some(ours) = actual.get(key) else {
                    panic!("health lacks {at}.{key}: {actual:?}")
                };
                assert_same_shape(value, ours, &format!("{at}.{key}"));
            }
        }
        (Value::Array(_), Value::Array(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => panic!("{at}: fixture has {fixture}, the simulator {ours}"),
    }
}

#[tokio::test]
async fn health_has_every_fixture_field_and_shows_control_changes_at_once() {
    within("health", async {
        let node = node("node1").await;
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
        let mut client = Client::connect(node.addr()).await;
        for path in ["/engine/healthcheck", "/healthcheck"] {
            let reply = client.get(path, None).await;
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(reply.header("X-Sim-Node"), Some("node1"));
            assert_eq!(reply.header("Content-Type"), Some("application/json"));
            assert_same_shape(&fixture, &reply.json(), "");
            assert!(
                reply.header("Set-Cookie").is_none(),
                "the engine health check is not a QPS page"
            );
        }

        let changed = client
            .post_json(
                "/__sim/control",
                r#"{"cpu":95.5,"memory_free_mb":1000,"saturated":true}"#,
            )
            .await;
        assert_eq!(
            changed.status,
            200,
            "{}",
            String::from_utf8_lossy(&changed.body)
        );
        assert_eq!(changed.json()["cpu"], 95.5);
        let health = client.get("/engine/healthcheck", None).await;
        let parsed =
            EngineHealth::parse(&health.body).expect("the balancer's parser reads the simulator");
        assert_eq!(parsed.cpu.total, 95.5);
        assert_eq!(parsed.mem.free, 1000.0);
        assert_eq!(parsed.mem.total_physical, Some(32768.0));
        assert!(parsed.saturated);

        // Saturation derived from CPU, as Qlik does, once the forced value is cleared.
        client
            .post_json(
                "/__sim/control",
                r#"{"saturated":null,"cpu":40,"memory_free_mb":20000}"#,
            )
            .await;
        assert_eq!(
            client.get("/healthcheck", None).await.json()["saturated"],
            false
        );
        client.post_json("/__sim/control", r#"{"cpu":91}"#).await;
        assert_eq!(
            client.get("/healthcheck", None).await.json()["saturated"],
            true
        );

        // A bad change is refused whole and names the field.
        let refused = client
            .post_json("/__sim/control", r#"{"cpu":10,"memory_free_mb":-1}"#)
            .await;
        assert_eq!(refused.status, 400);
        assert!(refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("memory_free_mb"));
        let unknown = client.post_json("/__sim/control", r#"{"cpux":10}"#).await;
        assert_eq!(unknown.status, 400);
        assert!(unknown.json()["error"].as_str().unwrap().contains("cpux"));
        assert_eq!(
            client.get("/healthcheck", None).await.json()["cpu"]["total"],
            91.0
        );
        let status = client.get("/__sim/control", None).await.json();
        assert_eq!(status["id"], "node1");
        assert_eq!(status["cpu"], 91.0);
        assert_eq!(status["accepting"], true);

        // In-process setters show the same way.
        node.set_cpu(12.5);
        node.set_memory_free_mb(30000.0);
        node.set_saturated(false);
        let health = client.get("/healthcheck", None).await.json();
        assert_eq!(health["cpu"]["total"], 12.5);
        assert_eq!(health["mem"]["free"], 30000.0);
        assert_eq!(health["saturated"], false);
    })
    .await;
}

async fn health_of(node: &SimNodeHandle) -> Value {
    Client::connect(node.addr())
        .await
        .get("/engine/healthcheck", None)
        .await
        .json()
}

async fn poll_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn session_counts_follow_open_websockets() {
    within("websocket counts", async {
        let node = node("node1").await;
        let mut sockets = Vec::new();
        for _ in 0..3 {
            let url = format!(
                "ws://{}/app/3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11",
                node.addr()
            );
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            // OnConnected arrives once the node has registered the session.
            futures_util::StreamExt::next(&mut ws)
                .await
                .unwrap()
                .unwrap();
            sockets.push(ws);
        }
        let health = health_of(&node).await;
        assert_eq!(health["session"]["active"], 3);
        assert_eq!(health["session"]["total"], 3);
        assert_eq!(
            health["users"]["active"], 3,
            "each WebSocket came without a cookie: three users"
        );
        assert_eq!(node.open_websockets(), 3);

        let mut closing = sockets.pop().unwrap();
        closing.send(Message::Close(None)).await.unwrap();
        poll_until("two open sessions", || node.open_websockets() == 2).await;
        let health = health_of(&node).await;
        assert_eq!(health["session"]["active"], 2);
        assert_eq!(health["session"]["total"], 3);
        assert_eq!(health["users"]["active"], 2);
        assert_eq!(health["users"]["total"], 3);

        drop(sockets);
        poll_until("no open sessions", || node.open_websockets() == 0).await;
        assert_eq!(health_of(&node).await["session"]["active"], 0);
    })
    .await;
}

#[tokio::test]
async fn sessions_are_issued_and_foreign_ones_sent_to_login() {
    within("sessions", async {
        let nodes = start_nodes(2, LOCALHOST, None).await.unwrap();
        let (node1, node2) = (&nodes[0], &nodes[1]);
        assert_eq!((node1.id(), node2.id()), ("node1", "node2"));
        let mut client = Client::connect(node1.addr()).await;

        let first = client.get("/hub", None).await;
        assert_eq!(first.status, 200);
        let set_cookie = first
            .header("Set-Cookie")
            .expect("first contact issues a session")
            .to_string();
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let (name, value) = cookie.split_once('=').unwrap();
        assert_eq!(name, "X-Qlik-Session");
        assert!(uuid::Uuid::parse_str(value).is_ok(), "a GUID: {value}");
        assert!(
            set_cookie.contains("Path=/") && set_cookie.contains("HttpOnly"),
            "{set_cookie}"
        );
        assert_eq!(first.json()["node"], "node1");

        let again = client.get("/sense/app/x", Some(&cookie)).await;
        assert_eq!(again.status, 200);
        assert!(again.header("Set-Cookie").is_none());
        assert_eq!(
            again.json(),
            serde_json::json!({"node":"node1","path":"/sense/app/x","session":value})
        );

        // The same session reaching the other node is a stranger there.
        let mut other = Client::connect(node2.addr()).await;
        let wrong_node = other.get("/hub", Some(&format!("a=b; {cookie}"))).await;
        assert_eq!(wrong_node.status, 302);
        assert_eq!(wrong_node.header("X-Sim-Node"), Some("node2"));
        let location = wrong_node.header("Location").unwrap();
        assert!(
            location.starts_with("/internal_forms_authentication/?targetId="),
            "{location}"
        );
        // The login page starts a session on this node.
        let login = other.get(location, Some(&cookie)).await;
        assert_eq!(login.status, 200);
        assert!(login
            .header("Set-Cookie")
            .unwrap()
            .starts_with("X-Qlik-Session="));

        // A virtual proxy prefix has its own cookie; the default one does not count there.
        let prefixed = client.get("/sales/hub", Some(&cookie)).await;
        assert_eq!(prefixed.status, 200);
        let prefixed_cookie = prefixed.header("Set-Cookie").unwrap();
        assert!(
            prefixed_cookie.starts_with("X-Qlik-Session-sales="),
            "{prefixed_cookie}"
        );
        let foreign_prefixed = other
            .get(
                "/sales/hub",
                Some(prefixed_cookie.split(';').next().unwrap()),
            )
            .await;
        assert_eq!(foreign_prefixed.status, 302);
        assert!(foreign_prefixed
            .header("Location")
            .unwrap()
            .starts_with("/sales/internal_forms_authentication/"));
    })
    .await;
}

#[tokio::test]
async fn echo_reports_the_request_as_received() {
    within("echo", async {
        let node = node("node7").await;
        let mut client = Client::connect(node.addr()).await;
        let raw = b"POST /sales/__sim/echo/x?xrfkey=0123456789abcdef&a=%2F HTTP/1.1\r\n\
            Host: qlik.example:443\r\nCookie: b=2\r\nX-Custom:  spaced value\r\ncookie: a=1\r\n\
            Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let reply = client.send(raw).await;
        assert_eq!(reply.status, 200);
        let echo = reply.json();
        assert_eq!(echo["node"], "node7");
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["target"], "/sales/__sim/echo/x?xrfkey=0123456789abcdef&a=%2F");
        assert_eq!(echo["body_len"], 11);
        assert_eq!(
            echo["headers"],
            serde_json::json!([
                ["Host", "qlik.example:443"],
                ["Cookie", "b=2"],
                ["X-Custom", "spaced value"],
                ["cookie", "a=1"],
                ["Transfer-Encoding", "chunked"]
            ])
        );
        // The connection stays usable after a chunked body.
        assert_eq!(client.get("/__sim/echo", None).await.json()["target"], "/__sim/echo");

        let mut bad = Client::connect(node.addr()).await;
        let ambiguous = bad
            .send(b"POST /hub HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        assert_eq!(ambiguous.status, 400);
        assert_eq!(ambiguous.header("X-Sim-Node"), Some("node7"));
    })
    .await;
}

#[tokio::test]
async fn fail_and_latency_controls_apply_to_everything_but_control() {
    within("fail and latency", async {
        let node = node("node1").await;
        let mut client = Client::connect(node.addr()).await;
        assert_eq!(
            client
                .post_json("/__sim/control", r#"{"fail":true}"#)
                .await
                .status,
            200
        );
        for path in ["/engine/healthcheck", "/hub", "/__sim/echo"] {
            let reply = client.get(path, None).await;
            assert_eq!(reply.status, 500, "{path}");
            assert_eq!(reply.header("X-Sim-Node"), Some("node1"));
        }
        assert_eq!(
            client
                .post_json("/__sim/control", r#"{"fail":false}"#)
                .await
                .status,
            200
        );
        assert_eq!(client.get("/engine/healthcheck", None).await.status, 200);
        node.set_fail(true);
        assert_eq!(client.get("/engine/healthcheck", None).await.status, 500);
        node.set_fail(false);

        let latency = Duration::from_millis(1000);
        client
            .post_json("/__sim/control", r#"{"latency_ms":1000}"#)
            .await;
        let started = Instant::now();
        assert_eq!(client.get("/engine/healthcheck", None).await.status, 200);
        assert!(
            started.elapsed() >= latency,
            "answered after {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        assert_eq!(
            client.get("/__sim/control", None).await.json()["latency_ms"],
            1000
        );
        assert!(
            started.elapsed() < latency,
            "the control API is never delayed"
        );
        node.set_latency(Duration::ZERO);
        let started = Instant::now();
        client.get("/engine/healthcheck", None).await;
        assert!(
            started.elapsed() < latency,
            "latency removed, answered after {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn a_node_can_stop_and_resume_accepting() {
    within("accepting", async {
        let node = node("node1").await;
        let addr = node.addr();
        let mut kept = Client::connect(addr).await;
        assert_eq!(kept.get("/healthcheck", None).await.status, 200);

        let closed = kept
            .post_json("/__sim/control", r#"{"accepting":false}"#)
            .await;
        assert_eq!(closed.json()["accepting"], false);
        let refused = TcpStream::connect(addr)
            .await
            .expect_err("a closed node refuses connections");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // An open connection still reaches the node, and can switch it back on.
        assert_eq!(kept.get("/healthcheck", None).await.status, 200);
        assert_eq!(
            kept.post_json("/__sim/control", r#"{"accepting":true}"#)
                .await
                .status,
            200
        );
        assert_eq!(
            Client::connect(addr)
                .await
                .get("/healthcheck", None)
                .await
                .status,
            200
        );

        node.set_accepting(false).await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
        assert!(!node.status().accepting);
        node.set_accepting(true).await.unwrap();
        assert_eq!(
            Client::connect(addr)
                .await
                .get("/healthcheck", None)
                .await
                .status,
            200
        );

        node.shutdown().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "a shut down node is gone"
        );
    })
    .await;
}

#[tokio::test]
async fn framing_is_read_as_the_front_door_reads_it() {
    within("framing", async {
        let node = node("node3").await;
        // Each is refused by qlik-lb's own head parser; the node refuses it too, and says so.
        for raw in [
            // The last Transfer-Encoding line decides, and it is not chunked.
            &b"POST /hub HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            // HTTP/1.0 has no Transfer-Encoding.
            b"POST /hub HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /hub HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
            // An HTTP/1.1 request without Host.
            b"GET /hub HTTP/1.1\r\n\r\n",
            // A chunk size that is not hex.
            b"POST /hub HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let product = qlik_lb::proxy::request_head::parse_request(bytes::Bytes::copy_from_slice(
                &raw[..head_end],
            ));
            let mut client = Client::connect(node.addr()).await;
            let reply = client.send(raw).await;
            let what = String::from_utf8_lossy(raw);
            assert_eq!(reply.status, 400, "{what}");
            assert_eq!(reply.header("X-Sim-Node"), Some("node3"), "{what}");
            if let Err(e) = product {
                assert_eq!(String::from_utf8_lossy(&reply.body), e.reason(), "{what}");
            }
            let mut rest = [0u8; 1];
            let after = client.stream.read(&mut rest).await;
            assert!(!matches!(after, Ok(n) if n > 0), "closed after {what}");
        }

        // A chunked control change announced with Expect: 100-continue is decoded and applied.
        let mut client = Client::connect(node.addr()).await;
        let continued = client
            .send(b"POST /__sim/control HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        assert_eq!(continued.status, 100);
        let applied = client.send(b"5\r\n{\"cpu\r\n5\r\n\":42}\r\n0\r\n\r\n").await;
        assert_eq!(applied.status, 200);
        assert_eq!(applied.json()["cpu"], 42.0);

        // Pipelined requests are answered in order on the same connection.
        let first = client
            .send(b"GET /__sim/echo/1 HTTP/1.1\r\nHost: a\r\n\r\nGET /__sim/echo/2 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        assert_eq!(first.json()["target"], "/__sim/echo/1");
        assert_eq!(client.send(b"").await.json()["target"], "/__sim/echo/2");
    })
    .await;
}

#[tokio::test]
async fn the_qix_answer_time_follows_cpu_sessions_and_saturation() {
    within("answer time", async {
        let node = node("node1").await;
        let mut control = Client::connect(node.addr()).await;
        let answer_ms = |reply: Reply| reply.json()["qix_answer_ms"].as_f64().unwrap();
        let idle = answer_ms(control.get("/__sim/control", None).await);
        assert!(
            idle > 0.0 && idle < 5.0,
            "an idle engine answers in a few ms: {idle}"
        );

        let url = format!(
            "ws://{}/app/3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11",
            node.addr()
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        futures_util::StreamExt::next(&mut ws)
            .await
            .unwrap()
            .unwrap();
        let one_session = answer_ms(control.get("/__sim/control", None).await);
        assert!(one_session > idle, "an open session adds load");

        let half = answer_ms(control.post_json("/__sim/control", r#"{"cpu":50}"#).await);
        assert!(half > 1.9 * idle, "doubles at half load: {half} vs {idle}");
        let saturated = answer_ms(
            control
                .post_json("/__sim/control", r#"{"cpu":50,"saturated":true}"#)
                .await,
        );
        assert!(saturated >= half + 250.0, "saturation queues every answer");

        // The QIX socket still answers, with the node's id.
        let evaluate =
            r#"{"jsonrpc":"2.0","id":1,"method":"EngineVersion","handle":-1,"params":[]}"#;
        ws.send(Message::text(evaluate)).await.unwrap();
        let reply = futures_util::StreamExt::next(&mut ws)
            .await
            .unwrap()
            .unwrap();
        assert!(reply.to_text().unwrap().contains("qComponentVersion"));
    })
    .await;
}
