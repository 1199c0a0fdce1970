//! A test backend on 127.0.0.1:0: hyper for HTTP (echoing what it received as JSON), and a
//! tokio-tungstenite echo server after a WebSocket upgrade. Every answer names the backend in
//! `X-Backend`. `kill()` closes the listener and every open connection, like a crashed node.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub struct TestBackend {
    pub id: String,
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub open_websockets: Arc<AtomicUsize>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    pub async fn start(id: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let open_websockets = Arc::new(AtomicUsize::new(0));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let state = Arc::new(State {
            id: id.to_string(),
            requests: requests.clone(),
            open_websockets: open_websockets.clone(),
            tasks: tasks.clone(),
        });
        let tasks2 = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tasks2.lock().unwrap().spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, state, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestBackend {
            id: id.to_string(),
            addr,
            requests,
            open_websockets,
            tasks,
            accept,
        }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Closes the listener and every connection (HTTP and WebSocket) at once.
    pub fn kill(&self) {
        self.accept.abort();
        self.tasks.lock().unwrap().abort_all();
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

struct State {
    id: String,
    requests: Arc<AtomicUsize>,
    open_websockets: Arc<AtomicUsize>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

async fn handle(mut req: Request<Incoming>, state: Arc<State>, peer: SocketAddr) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let id = state.id.clone();
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_ws {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .cloned()
            .unwrap_or_else(|| http::HeaderValue::from_static(""));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        let open = state.open_websockets.clone();
        state.tasks.lock().unwrap().spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let cfg = WebSocketConfig::default()
                .max_message_size(Some(32 << 20))
                .max_frame_size(Some(32 << 20));
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(cfg))
                    .await;
            open.fetch_add(1, Ordering::SeqCst);
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .header("x-backend", id)
            .body(full(""))
            .unwrap();
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/sink" => {
            let mut n = 0u64;
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    n += d.len() as u64;
                }
            }
            json_reply(&id, serde_json::json!({"backend": id, "bytes": n}), None)
        }
        "/source" => {
            let total: u64 = query_param(&req, "bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64) as usize;
                    Some((
                        Ok::<_, Infallible>(Frame::data(chunk.slice(..n))),
                        left - n as u64,
                    ))
                }
            });
            Response::builder()
                .header("x-backend", id)
                .header("content-length", total.to_string())
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        "/never" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        _ => {
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let session = query_param(&req, "set_session");
            let path_and_query = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let body = serde_json::json!({
                "backend": id,
                "method": req.method().as_str(),
                "path": path_and_query,
                "headers": headers,
                "peer_port": peer.port(),
            });
            json_reply(
                &id,
                body,
                session.map(|s| format!("X-Qlik-Session={s}; Path=/; HttpOnly")),
            )
        }
    }
}

fn json_reply(id: &str, body: serde_json::Value, set_cookie: Option<String>) -> Response<Body> {
    let mut b = Response::builder()
        .header("content-type", "application/json")
        .header("x-backend", id);
    if let Some(c) = set_cookie {
        b = b.header("set-cookie", c);
    }
    b.body(full(body.to_string())).unwrap()
}

/// The headers a backend saw, from its JSON echo, as (lower-case name, value) pairs.
pub fn seen_headers(echo: &serde_json::Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .expect("headers array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                pair[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn seen(echo: &serde_json::Value, name: &str) -> Vec<String> {
    seen_headers(echo)
        .into_iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}
