//! The admin HTTP server (hyper): routes requests to their handlers. Every error answer carries a
//! request id, in the `X-Request-Id` header, the JSON body and the log line.

use super::auth::{self, Verdict};
use super::status;
use crate::cluster::Cluster;
use crate::config::cidr;
use crate::listen_limits::{self, Gate};
use crate::proxy::respond::request_id;
use crate::proxy::Lifecycle;
use crate::reload::{Reloader, Trigger};
use crate::snapshot::{Shared, SharedSnapshot};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The control plane's contribution to the status: a JSON object whose `license` and `release`
/// members are shown as they are (the last license snapshot and the last release run summary).
pub type LicenseStatusJson = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

pub struct AdminCtx {
    pub runtime: SharedSnapshot,
    pub shared: Arc<Shared>,
    pub lifecycle: Arc<Lifecycle>,
    pub reloader: Arc<Reloader>,
    /// The bearer token every POST needs, when `[admin] token_file` is set.
    pub token: Arc<ArcSwapOption<String>>,
    /// Set once by whoever runs the control plane jobs.
    pub license_status: OnceLock<LicenseStatusJson>,
    /// Set once at start with `[cluster]`: drains go through it, the status shows it.
    pub cluster: OnceLock<Arc<Cluster>>,
}

/// Admin routes take no body; a declared one is still read whole before the request is acted on,
/// so a request cut short never drains or reloads. This bounds what is read.
const BODY_LIMIT: usize = 64 * 1024;

/// Serves the admin routes until `stop`. Head and body deadlines, the connection cap and the
/// accept back-off are `listen_limits`'s.
pub async fn serve(listener: TcpListener, ctx: Arc<AdminCtx>, stop: CancellationToken) {
    let mut gate = Gate::new("admin");
    while let Some(((tcp, peer), permit)) = gate.accept(&stop, || listener.accept()).await {
        let ctx = ctx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(req, &ctx, peer).await) }
            });
            let conn = listen_limits::http1().serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

pub fn text(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .expect("valid response")
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", value.to_string())
}

/// An error answer: JSON with the reason and a request id, logged with the same id.
fn error(
    status: StatusCode,
    method: &Method,
    path: &str,
    message: &str,
    extra: serde_json::Value,
) -> Response<Full<Bytes>> {
    let id = request_id();
    warn!(request_id = %id, %method, path, status = status.as_u16(), "admin: {message}");
    let mut body = json!({"error": message, "request_id": id});
    if let (Some(b), serde_json::Value::Object(more)) = (body.as_object_mut(), extra) {
        b.extend(more);
    }
    let mut resp = json(status, &body);
    resp.headers_mut().insert(
        "x-request-id",
        id.parse().expect("request id is a header value"),
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            "www-authenticate",
            http::HeaderValue::from_static("Bearer realm=\"qlik-lb admin\""),
        );
    }
    resp
}

/// `[admin] allow`, read from the serving config at each request so a reload applies at once.
fn peer_allowed(ctx: &AdminCtx, peer: SocketAddr) -> bool {
    let rt = ctx.runtime.load();
    match rt.config.file.admin.as_ref().and_then(|a| a.allow.as_ref()) {
        Some(allow) => cidr::contains(allow, peer.ip()),
        None => true,
    }
}

async fn handle(req: Request<Incoming>, ctx: &AdminCtx, peer: SocketAddr) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let none = serde_json::Value::Null;
    if !peer_allowed(ctx, peer) {
        return listen_limits::closing(error(
            StatusCode::FORBIDDEN,
            &method,
            &path,
            "this address is not in [admin] allow",
            json!({ "peer": peer.ip().to_string() }),
        ));
    }
    if method == Method::POST {
        let token = ctx.token.load_full();
        let given = req.headers().get("authorization").map(|v| v.as_bytes());
        match auth::check(token.as_deref().map(|t| t.as_str()), given) {
            Verdict::Allowed => {}
            Verdict::Missing => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    &method,
                    &path,
                    "this needs Authorization: Bearer <admin token>",
                    none,
                )
            }
            Verdict::Wrong => {
                return error(
                    StatusCode::FORBIDDEN,
                    &method,
                    &path,
                    "the admin token is wrong",
                    none,
                )
            }
        }
    }
    if let Err(e) = listen_limits::read_body(req.into_body(), BODY_LIMIT).await {
        let message = e.to_string();
        return listen_limits::closing(error(e.status(), &method, &path, &message, none));
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            ctx.shared.metrics.render(),
        ),
        (&Method::GET, "/readyz") => match status::readiness(ctx) {
            Ok(()) => text(StatusCode::OK, "text/plain", "ready\n"),
            Err(reasons) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &method,
                &path,
                "not ready",
                json!({ "reasons": reasons }),
            ),
        },
        (&Method::GET, "/api/v1/status") => json(StatusCode::OK, &status::status(ctx)),
        (&Method::GET, "/") | (&Method::GET, "/index.html") => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            super::page::STATUS_PAGE,
        ),
        (&Method::POST, "/api/v1/reload") => {
            let outcome = ctx.reloader.reload(Trigger::Api).await;
            if outcome.ok {
                json(StatusCode::OK, &json!(&*outcome))
            } else {
                error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &method,
                    &path,
                    "the config was not reloaded; the previous config keeps serving",
                    json!({ "reload": &*outcome }),
                )
            }
        }
        (&Method::POST, p) if p.starts_with("/api/v1/pools/") => drain(ctx, &method, p).await,
        (_, "/healthz" | "/metrics" | "/readyz" | "/api/v1/status" | "/" | "/api/v1/reload") => {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                &method,
                &path,
                "method not allowed here",
                none,
            )
        }
        _ => error(StatusCode::NOT_FOUND, &method, &path, "no such route", none),
    }
}

/// `POST /api/v1/pools/{pool}/backends/{id}/drain|undrain`. In a cluster the drain is the
/// site's: written to etcd first (503 and no change when it cannot be), then applied here at once
/// and everywhere else by the watch.
async fn drain(ctx: &AdminCtx, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let none = serde_json::Value::Null;
    let parts: Vec<&str> = path
        .trim_start_matches("/api/v1/pools/")
        .split('/')
        .collect();
    let (pool_name, id, on) = match parts.as_slice() {
        [pool, "backends", id, "drain"] => (*pool, *id, true),
        [pool, "backends", id, "undrain"] => (*pool, *id, false),
        _ => return error(StatusCode::NOT_FOUND, method, path, "no such route", none),
    };
    let rt = ctx.runtime.load();
    let Some(pool) = rt.pools.get(pool_name) else {
        return error(
            StatusCode::NOT_FOUND,
            method,
            path,
            &format!("no pool named {pool_name}"),
            none,
        );
    };
    let Some(backend) = pool.backend(id) else {
        return error(
            StatusCode::NOT_FOUND,
            method,
            path,
            &format!("pool {pool_name} has no backend {id}"),
            none,
        );
    };
    let backend = backend.clone();
    drop(rt);
    if let Some(cluster) = ctx.cluster.get() {
        if let Err(reason) = cluster.set_drain(pool_name, id, on).await {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                method,
                path,
                &reason,
                json!({"pool": pool_name, "backend": id}),
            );
        }
    }
    backend.set_draining(on);
    info!(
        pool = pool_name,
        backend = id,
        draining = on,
        "admin: drain state set"
    );
    json(
        StatusCode::OK,
        &json!({"pool": pool_name, "backend": id, "draining": on}),
    )
}
