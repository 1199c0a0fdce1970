//! Accepting front-door connections: the connection limit (`conn_limit.rs`), the client's
//! address and per-IP limit (`admit.rs`), the TLS handshake (bounded by `header_timeout`), and
//! one task per connection, on the next worker, tracked for graceful shutdown.

use super::stream::Stream;
use super::ProxyCtx;
use crate::listen_limits::AcceptBackoff;
use crate::snapshot::FrontendSnapshot;
use crate::threads::workers::Acceptor;
use crate::tls::stream::TlsServerStream;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Accepts until `stop` is cancelled (shutdown, or a reload that moved or removed this frontend);
/// the connections it accepted carry on.
pub async fn serve_frontend(
    listener: TcpListener,
    name: String,
    ctx: Arc<ProxyCtx>,
    stop: CancellationToken,
) {
    let initial = ctx.runtime.load().frontend(&name).cloned();
    let Some(initial) = initial else {
        warn!(frontend = %name, "frontend is not in the config");
        return;
    };
    let listener = match Acceptor::new(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(frontend = %name, error = %e, "cannot poll the listening socket");
            return;
        }
    };
    let limit = ctx.shared.conn_limit(&name);
    let max_connections = || {
        ctx.runtime
            .load()
            .frontend(&name)
            .map_or(initial.cfg.max_connections, |f| f.cfg.max_connections)
    };
    let mut backoff = AcceptBackoff::default();
    loop {
        let slot = tokio::select! {
            s = limit.acquire(max_connections) => s,
            _ = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(frontend = %name, error = %e, "accept failed");
                tokio::time::sleep(backoff.failed()).await;
                continue;
            }
        };
        backoff.succeeded();
        // The slot was taken before the accept: a reload may have lowered the limit meanwhile,
        // and then this connection waits (unserved, like one in the backlog) for a slot under it.
        let slot = if limit.open() > max_connections() {
            drop(slot);
            tokio::select! {
                s = limit.acquire(max_connections) => s,
                _ = stop.cancelled() => return,
            }
        } else {
            slot
        };
        let fe: Arc<FrontendSnapshot> = ctx
            .runtime
            .load()
            .frontend(&name)
            .cloned()
            .unwrap_or_else(|| initial.clone());
        let ctx2 = ctx.clone();
        let started = tokio::time::Instant::now();
        let task = ctx.lifecycle.tracker.track_future(async move {
            let mut tcp = match TcpStream::from_std(tcp) {
                Ok(t) => t,
                Err(e) => {
                    warn!(frontend = %fe.cfg.name, client = %peer, error = %e, "cannot register the connection");
                    return;
                }
            };
            let mut slot = slot;
            // From here on `peer` is the client: the PROXY header's address when there is one.
            let Some(peer) = super::admit::admit(&mut tcp, peer, started, &mut slot, &fe, &ctx2).await else {
                return;
            };
            let io = match &fe.tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    // Boxed: the handshake's state is not kept in this task once it is done.
                    let handshake = Box::pin(TlsServerStream::accept(tcp, tls.config.clone()));
                    match tokio::time::timeout(fe.cfg.header_timeout.get(), handshake).await {
                        Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                        Ok(Err(e)) => {
                            debug!(frontend = %fe.cfg.name, client = %peer, error = %e, "TLS handshake failed");
                            ctx2.shared.metrics.client_errors_total.with_label_values(&[&fe.cfg.name, "tls"]).inc();
                            return;
                        }
                        Err(_) => {
                            ctx2.shared.metrics.client_errors_total.with_label_values(&[&fe.cfg.name, "tls"]).inc();
                            return;
                        }
                    }
                }
            };
            super::conn::serve(io, slot, peer, started, fe, ctx2).await;
        });
        ctx.workers.spawn(task);
    }
}
