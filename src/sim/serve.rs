//! One connection to a simulated node: HTTP/1.1 requests, then possibly a QIX WebSocket.
//!
//! Paths: `/__sim/control` (see `control`), `/engine/healthcheck` and `/healthcheck`,
//! `[/<prefix>]/__sim/echo[/...]` (the request as received, for forwarding tests),
//! `[/<prefix>]/app/<id>` WebSocket upgrades (QIX), the hub and app pages for browsers
//! (`pages`), and QPS-like answers everywhere else.

use std::sync::Arc;

use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Incoming};
use super::control::{self, CONTROL_PATH};
use super::node::NodeInner;
use super::pages;
use super::qix::{self, QixSession};
use super::qps::{self, SessionCheck};
use super::request::Request;
use super::response::Response;

const ECHO_PATH: &str = "/__sim/echo";

enum Reply {
    Http(Response),
    /// Answer 101, then speak QIX as the QPS session `user`.
    Qix {
        response: Response,
        user: String,
        app: String,
    },
}

pub(crate) async fn serve_connection(
    stream: TcpStream,
    node: Arc<NodeInner>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => return,
            incoming = conn.read_request() => incoming,
        };
        let request = match incoming {
            Incoming::Request(request) => request,
            Incoming::Closed => return,
            Incoming::Refused(status, why) => {
                let response = Response::text(status, why).header("Connection", "close");
                let _ = conn.write_response(&stamped(&node, response), false).await;
                return;
            }
        };
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            reply = route(&node, &request) => reply,
        };
        let head_only = request.method() == "HEAD";
        match reply {
            Reply::Http(response) => {
                let close = request.wants_close();
                let response = if close {
                    response.header("Connection", "close")
                } else {
                    response
                };
                if conn
                    .write_response(&stamped(&node, response), head_only)
                    .await
                    .is_err()
                    || close
                {
                    return;
                }
            }
            Reply::Qix {
                response,
                user,
                app,
            } => {
                if conn
                    .write_response(&stamped(&node, response), false)
                    .await
                    .is_err()
                {
                    return;
                }
                let (stream, already_read) = conn.into_parts();
                // The parsed head shares the read buffer's allocation: a session that lasts
                // hours must not keep it.
                drop(request);
                let ws =
                    WebSocketStream::from_partially_read(stream, already_read, Role::Server, None)
                        .await;
                let mut catalog: Vec<String> =
                    qix::DEFAULT_APPS.iter().map(|a| a.to_string()).collect();
                for doc in node.engine.loaded_docs().into_iter().chain(Some(app)) {
                    if doc != qix::ENGINE_DATA && !catalog.contains(&doc) {
                        catalog.push(doc);
                    }
                }
                let session = QixSession::new(&node.id, node.engine.open_session(&user), catalog);
                qix::serve(ws, session, stop).await;
                return;
            }
        }
    }
}

/// Every answer says which node gave it.
fn stamped(node: &NodeInner, response: Response) -> Response {
    response.header("X-Sim-Node", node.id.as_str())
}

async fn route(node: &NodeInner, request: &Request) -> Reply {
    let path = request.path();
    if path == CONTROL_PATH {
        return Reply::Http(control::handle(node, request).await);
    }
    let knobs = node.engine.knobs();
    if !knobs.latency.is_zero() {
        tokio::time::sleep(knobs.latency).await;
    }
    if knobs.fail {
        return Reply::Http(Response::text(500, "simulated failure"));
    }
    if path == "/engine/healthcheck" || path == "/healthcheck" {
        return Reply::Http(health(node, request));
    }
    let below = qps::path_below_prefix(path);
    if below == ECHO_PATH || below.starts_with("/__sim/echo/") {
        return Reply::Http(echo(node, request));
    }
    qps_route(node, request, below)
}

fn health(node: &NodeInner, request: &Request) -> Response {
    if request.method() != "GET" && request.method() != "HEAD" {
        return Response::text(405, "use GET").header("Allow", "GET, HEAD");
    }
    Response::json(
        200,
        serde_json::to_vec(&node.engine.health()).unwrap_or_default(),
    )
}

#[derive(Serialize)]
struct Echo<'a> {
    node: &'a str,
    method: &'a str,
    target: &'a str,
    version: &'static str,
    headers: Vec<(&'a str, String)>,
    body_len: u64,
}

fn echo(node: &NodeInner, request: &Request) -> Response {
    let echo = Echo {
        node: &node.id,
        method: request.method(),
        target: request.target(),
        version: if request.minor_version() == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        headers: request
            .headers()
            .map(|(name, value)| (name, String::from_utf8_lossy(value).into_owned()))
            .collect(),
        body_len: request.body_len,
    };
    Response::json(200, serde_json::to_vec(&echo).unwrap_or_default())
}

fn qps_route(node: &NodeInner, request: &Request, below_prefix: &str) -> Reply {
    let check = node.sessions.check(request);
    let session = match &check {
        SessionCheck::Foreign { location } => {
            let response = Response::text(302, "session unknown on this node; log in again")
                .header("Location", location.as_str());
            return Reply::Http(response);
        }
        SessionCheck::Known(id) | SessionCheck::Issued { id, .. } => id.clone(),
    };
    let with_cookie = |response: Response| match check.set_cookie() {
        Some(cookie) => response.header("Set-Cookie", cookie),
        None => response,
    };
    if !request.is_websocket_upgrade() {
        if pages::wants_html(request) {
            let prefix = qps::virtual_proxy_prefix(request.path());
            if let Some(page) = pages::page(&node.id, prefix, below_prefix) {
                return Reply::Http(with_cookie(page));
            }
        }
        let body =
            serde_json::json!({ "node": node.id, "path": request.path(), "session": session });
        return Reply::Http(with_cookie(Response::json(
            200,
            body.to_string().into_bytes(),
        )));
    }
    let Some(app) = qix::app_of_path(below_prefix) else {
        return Reply::Http(Response::text(
            400,
            "WebSocket upgrades are served on /app/<id>",
        ));
    };
    if request.header_str("sec-websocket-version").map(str::trim) != Some("13") {
        let response = Response::text(426, "WebSocket version 13 required")
            .header("Sec-WebSocket-Version", "13");
        return Reply::Http(response);
    }
    let Some(key) = request.header("sec-websocket-key") else {
        return Reply::Http(Response::text(400, "Sec-WebSocket-Key missing"));
    };
    let response = Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", derive_accept_key(key));
    Reply::Qix {
        response: with_cookie(response),
        user: session,
        app: app.to_string(),
    }
}
