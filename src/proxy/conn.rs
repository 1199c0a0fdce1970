//! One client connection: read a head, route it, forward it, stream the answer back, and either
//! wait for the next request (keep-alive), close, or hand both sockets to a WebSocket tunnel.

use super::access::{self, RequestLog};
use super::body::{close_within, write_within};
use super::client_head::{read_request_head, HeadLimits, HeadRead};
use super::counted::Counted;
use super::exchange::exchange;
use super::head::Head;
use super::respond::{error_response, ProxyError};
use super::stream::ClientStream;
use super::tunnel::{self, Tunnel};
use super::upstream::BackendConn;
use super::ProxyCtx;
use crate::access_log::{ConnNames, RequestId};
use crate::balance::Backend;
use crate::conn_limit::ConnSlot;
use crate::metrics::code_class;
use crate::snapshot::FrontendSnapshot;
use crate::threads::signal;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{debug, warn};

pub(super) struct ClientConn {
    pub(super) io: Counted<ClientStream>,
    /// Counts this connection against `max_connections` for as long as it is open, tunnel included.
    pub(super) slot: ConnSlot,
    pub(super) buf: BytesMut,
    pub(super) peer: SocketAddr,
    /// `peer`'s IP as text for X-Forwarded-For.
    pub(super) peer_ip: String,
    pub(super) tls: bool,
    /// Windows authentication binds a backend connection to this client connection.
    pub(super) ntlm: Option<(Arc<Backend>, BackendConn)>,
    /// The access log's record of the request being served, when a log is configured.
    pub(super) log: Option<RequestLog>,
    /// Built the first time this connection is logged.
    pub(super) log_names: Option<Arc<ConnNames>>,
}

pub(super) enum Next {
    KeepAlive(ClientConn),
    Close(ClientConn),
    Tunnel(Box<Tunnel>),
}

pub async fn serve(
    io: ClientStream,
    slot: ConnSlot,
    peer: SocketAddr,
    accepted: Instant,
    fe: Arc<FrontendSnapshot>,
    ctx: Arc<ProxyCtx>,
) {
    let tls = io.is_tls();
    let mut conn = ClientConn {
        io: Counted::new(io),
        slot,
        buf: BytesMut::with_capacity(2048),
        peer,
        peer_ip: peer.ip().to_string(),
        tls,
        ntlm: None,
        log: None,
        log_names: None,
    };
    let limits = HeadLimits {
        header_timeout: fe.cfg.header_timeout.get(),
        keepalive_timeout: fe.cfg.keepalive_timeout.get(),
        max_header_bytes: fe.cfg.max_header_bytes,
    };
    let mut first = Some(accepted);
    let mut stop = signal::cancelled(&ctx.lifecycle.stop);
    loop {
        conn.io.begin_message(conn.buf.len());
        let head = match read_request_head(
            &mut conn.io,
            &mut conn.buf,
            &limits,
            first.take(),
            &mut stop,
        )
        .await
        {
            HeadRead::Head(h) => h,
            HeadRead::Closed => break,
            HeadRead::Refused(err, why) => {
                let kind = match err {
                    ProxyError::HeaderTooLarge => "header_too_large",
                    ProxyError::HeaderTimeout => "header_timeout",
                    _ => "bad_request",
                };
                ctx.shared
                    .metrics
                    .client_errors_total
                    .with_label_values(&[&fe.cfg.name, kind])
                    .inc();
                access::begin(ctx.runtime.load().access_log.as_ref(), &mut conn, &fe, None);
                refuse(&mut conn, &fe, None, err, why).await;
                access::finish(&mut conn, true);
                break;
            }
        };
        // The pool (with its backend TLS) and the access log come from one snapshot.
        let pool = {
            let snapshot = ctx.runtime.load();
            access::begin(snapshot.access_log.as_ref(), &mut conn, &fe, Some(&head));
            snapshot.pools.get(&fe.cfg.pool).cloned()
        };
        if fe.cfg.redirect_https {
            let open = redirect(&mut conn, &head, &fe, &ctx).await && !ctx.lifecycle.is_stopping();
            access::finish(&mut conn, !open);
            if open {
                continue;
            }
            break;
        }
        let Some(pool) = pool else {
            refuse(
                &mut conn,
                &fe,
                Some(&head),
                ProxyError::NoBackend,
                "the frontend's pool is gone",
            )
            .await;
            access::finish(&mut conn, true);
            break;
        };
        match exchange(conn, head, &fe, &pool, &ctx).await {
            Next::KeepAlive(mut c) => {
                access::finish(&mut c, false);
                conn = c;
            }
            Next::Close(mut c) => {
                access::finish(&mut c, true);
                close_within(&mut c.io, fe.cfg.send_timeout.get()).await;
                return;
            }
            Next::Tunnel(mut t) => {
                // The tunnel runs as its own small task so an idle one holds nothing of this
                // connection's HTTP state.
                ctx.lifecycle.tracker.spawn(async move {
                    let (end, moved) = tunnel::run(&mut t).await;
                    if let Some(log) = t.log.take() {
                        access::finish_tunnel(*log, moved);
                    }
                    debug!(?end, "websocket tunnel ended");
                });
                return;
            }
        }
        if ctx.lifecycle.is_stopping() {
            break;
        }
    }
    close_within(&mut conn.io, fe.cfg.send_timeout.get()).await;
}

/// Answers a request of a `redirect_https` listener; whether the connection stays open.
async fn redirect(
    conn: &mut ClientConn,
    head: &Head,
    fe: &FrontendSnapshot,
    ctx: &ProxyCtx,
) -> bool {
    let Some(location) = super::redirect::location(head, fe.cfg.https_port) else {
        // An HTTP/1.0 request without Host: there is no site to send it to.
        ctx.shared
            .metrics
            .client_errors_total
            .with_label_values(&[&fe.cfg.name, "bad_request"])
            .inc();
        refuse(
            conn,
            fe,
            Some(head),
            ProxyError::BadRequest,
            "no host to redirect to",
        )
        .await;
        return false;
    };
    let keep_alive = super::redirect::keeps_alive(head);
    let id = match conn.log.as_mut() {
        Some(l) => {
            l.answered(308);
            l.id
        }
        None => RequestId::next(),
    };
    let answer = super::redirect::answer(&location, &id.to_string(), keep_alive);
    ctx.shared
        .metrics
        .http_requests_total
        .with_label_values(&[&fe.cfg.name, &fe.cfg.pool, "none", code_class(308)])
        .inc();
    debug!(request_id = %id, frontend = %fe.cfg.name, client = %conn.peer, "redirected to https");
    write_within(&mut conn.io, &answer, fe.cfg.send_timeout.get())
        .await
        .is_ok()
        && keep_alive
}

pub(super) async fn refuse(
    conn: &mut ClientConn,
    fe: &FrontendSnapshot,
    head: Option<&Head>,
    err: ProxyError,
    why: &str,
) {
    let (code, _) = err.status();
    let id = match conn.log.as_mut() {
        Some(l) => {
            l.answered(code);
            l.id
        }
        None => RequestId::next(),
    };
    warn!(request_id = %id, frontend = %fe.cfg.name, client = %conn.peer, status = code, "{why}");
    let answer = error_response(err, head, &id.to_string(), false, fe.cfg.hsts.as_deref());
    let _ = write_within(&mut conn.io, &answer, fe.cfg.send_timeout.get()).await;
}
