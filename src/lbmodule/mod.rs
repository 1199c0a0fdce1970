//! The Qlik "load balancing module": `POST <base_path>loadbalancing/prioritize`.
//!
//! QPS sends the engines that may open an app; the answer is the same JSON object with the
//! engines reordered best first from cached health (never waiting on a probe). It never fails
//! closed: whenever ranking is not possible the engines come back in the order they were sent.

pub mod engines;
pub mod rank;
pub mod request;

pub use engines::{host_port, match_backend, match_engines, Matched, RecentFirsts};
pub use rank::{rank, EngineState};
pub use request::{BadRequest, Prioritize};

use crate::listen_limits::{self, Gate};
use crate::snapshot::{Shared, SharedSnapshot};
use crate::threads::signal;
use crate::threads::workers::{Acceptor, Workers};
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest prioritize body accepted (a few hundred engines fit in a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct State {
    runtime: SharedSnapshot,
    shared: Arc<Shared>,
    recent: RecentFirsts,
    calls: AtomicUsize,
}

/// Serves the module on `listener` (TLS when `tls` is given) until `shutdown`; open connections
/// finish the request they are on. Connections run on the front door's workers: a call is a few
/// microseconds of work, and the instance's own runtime has one thread for everything else.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    runtime: SharedSnapshot,
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    shutdown: CancellationToken,
) {
    let listener = match Acceptor::new(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "load balancing module: cannot poll the listening socket");
            return;
        }
    };
    let state = Arc::new(State {
        runtime,
        shared,
        recent: RecentFirsts::default(),
        calls: AtomicUsize::new(0),
    });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let tracker = TaskTracker::new();
    let mut gate = Gate::new("lb_module");
    while let Some(((tcp, _), permit)) = gate.accept(&shutdown, || listener.accept()).await {
        let (state, acceptor, shutdown) = (state.clone(), acceptor.clone(), shutdown.clone());
        workers.spawn(tracker.track_future(async move {
            let _permit = permit;
            let Ok(tcp) = TcpStream::from_std(tcp) else {
                return;
            };
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(TokioIo::new(stream), state, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "load balancing module: TLS handshake failed"),
                        Err(_) => tracing::debug!("load balancing module: TLS handshake timed out"),
                    }
                }
                None => connection(TokioIo::new(tcp), state, shutdown).await,
            }
        }));
    }
    tracker.close();
    tracker.wait().await;
}

async fn connection<T>(io: T, state: Arc<State>, shutdown: CancellationToken)
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
    });
    let conn = listen_limits::http1().serve_connection(io, service);
    tokio::pin!(conn);
    // Polled on every request of the connection: read shutdown from its flag (proxy::signal).
    let mut stop = signal::cancelled(&shutdown);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = &mut stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(state: &State, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let rt = state.runtime.load_full();
    let Some(lb) = rt.config.file.lb_module.as_ref() else {
        return json_error(
            StatusCode::NOT_FOUND,
            "the load balancing module is not configured",
        );
    };
    let endpoint = format!(
        "{}/loadbalancing/prioritize",
        lb.base_path.trim_end_matches('/')
    );
    let path = req.uri().path();
    if path != endpoint && path.strip_suffix('/') != Some(endpoint.as_str()) {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("no such path; POST {endpoint}"),
        );
    }
    if req.method() != Method::POST {
        let mut resp = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("use POST {endpoint}"),
        );
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return resp;
    }
    let started = Instant::now();
    let metrics = &state.shared.metrics;
    let body = match listen_limits::read_body(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            metrics
                .lbmodule_requests_total
                .with_label_values(&["bad_request"])
                .inc();
            return listen_limits::closing(json_error(e.status(), &e.to_string()));
        }
    };
    let (resp, result) = match Prioritize::parse(&body) {
        Err(e) => (
            json_error(StatusCode::BAD_REQUEST, &e.to_string()),
            "bad_request",
        ),
        Ok(p) => {
            // A bug in ranking must not cost QPS its answer: it gets the list as sent.
            let ranked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prioritize(state, &rt, &lb.pool, &p)
            }));
            let (text, result) = match ranked.ok().flatten() {
                Some(order) => (p.render(&order), "ok"),
                None => (p.text().to_string(), "fallback"),
            };
            (json(StatusCode::OK, text), result)
        }
    };
    metrics
        .lbmodule_requests_total
        .with_label_values(&[result])
        .inc();
    metrics
        .lbmodule_request_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The new order, or `None` when there is nothing to rank by (the caller then echoes the input).
fn prioritize(
    state: &State,
    rt: &crate::snapshot::Snapshot,
    pool_name: &str,
    p: &Prioritize<'_>,
) -> Option<Vec<usize>> {
    let pool = rt.pools.get(pool_name)?;
    let matched = match_engines(pool, &p.engines, p.app_name.as_deref(), &state.recent);
    if !matched.any_data {
        return None;
    }
    let tie = state.calls.fetch_add(1, Ordering::Relaxed);
    let order = rank(&matched.states, tie);
    if let Some(Some(first)) = order.first().map(|&i| &matched.backends[i]) {
        state.recent.record(first);
    }
    Some(order)
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }).to_string())
}
