//! One request and its answer: route, pick or open a backend connection (with the one safe
//! retry), send the head and body, read the answer, pin the user, and stream it back.

use super::backend_head::{is_websocket_accept, read_response_head, ResponseHeadError};
use super::body::{
    check_buffered, copy_body, inline_small_body, write_within, BodyCopy, BodyError,
};
use super::conn::{refuse, ClientConn, Next};
use super::head::{Framing, Head};
use super::respond::ProxyError;
use super::rewrite::{
    client_response, is_qlik_session_cookie, response_set_cookies, upstream_request, RequestRewrite,
};
use super::route::{route, Route};
use super::tunnel::Tunnel;
use super::upstream::{connect, idle_pool, put_idle, BackendConn};
use super::ProxyCtx;
use crate::balance::Outcome;
use crate::balance::{Backend, Pool};
use crate::metrics::code_class;
use crate::snapshot::FrontendSnapshot;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{debug, warn};

fn is_idempotent(head: &Head) -> bool {
    matches!(
        head.method(),
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    ) && head.framing == Framing::Empty
}

fn is_windows_auth(head: &Head) -> bool {
    head.first("authorization").is_some_and(|v| {
        let v = super::head::trim(v);
        v.len() >= 5
            && (v[..5].eq_ignore_ascii_case(b"NTLM ")
                || v.len() >= 10 && v[..10].eq_ignore_ascii_case(b"Negotiate "))
    })
}

fn count(ctx: &ProxyCtx, fe: &FrontendSnapshot, pool: &Pool, backend: &str, status: u16) {
    match pool.backend(backend) {
        Some(b) => b.count_response(&fe.cfg.name, status, &ctx.shared.metrics),
        None => ctx
            .shared
            .metrics
            .http_requests_total
            .with_label_values(&[&fe.cfg.name, &pool.name, backend, code_class(status)])
            .inc(),
    }
}

/// What an error answer needs to know about the request it refuses.
struct Scope<'a> {
    ctx: &'a ProxyCtx,
    fe: &'a FrontendSnapshot,
    pool: &'a Pool,
    head: &'a Head,
}

async fn fail(
    mut conn: ClientConn,
    scope: &Scope<'_>,
    backend: &str,
    err: ProxyError,
    why: &str,
) -> Next {
    count(scope.ctx, scope.fe, scope.pool, backend, err.status().0);
    if let Some(l) = conn.log.as_mut() {
        l.to((backend != "none")
            .then(|| scope.pool.backend(backend))
            .flatten());
    }
    refuse(&mut conn, scope.fe, Some(scope.head), err, why).await;
    Next::Close(conn)
}

pub(super) async fn exchange(
    mut conn: ClientConn,
    head: Head,
    fe: &FrontendSnapshot,
    pool: &Arc<Pool>,
    ctx: &ProxyCtx,
) -> Next {
    let started = Instant::now();
    let m = &ctx.shared.metrics;
    if conn.ntlm.as_ref().is_some_and(|(b, _)| b.is_removed()) {
        // Bound to a backend that left the config or moved to another address since: that
        // connection is closed, never reused for the id's new address.
        conn.ntlm = None;
    }
    let scope = Scope {
        ctx,
        fe,
        pool,
        head: &head,
    };
    let Some(mut chosen) = route(pool, &head, None) else {
        return fail(
            conn,
            &scope,
            "none",
            ProxyError::NoBackend,
            "no backend can take new users",
        )
        .await;
    };
    if chosen.invalid_cookie {
        pool.decisions.invalid.inc();
    }
    if let Some(l) = conn.log.as_mut() {
        l.routed(&chosen);
    }
    if chosen.all_down && pool.all_down_log.should_log() {
        warn!(pool = %pool.name, backend = %chosen.backend.id, "every backend is down; trying anyway");
    }
    let idempotent = is_idempotent(&head);
    let windows_auth = is_windows_auth(&head) || conn.ntlm.is_some();
    let send_timeout = fe.cfg.send_timeout.get();
    if let Err(e) = check_buffered(head.framing, &conn.buf) {
        // A bad chunk that came with the head: refused before any byte reaches a backend.
        m.client_errors_total
            .with_label_values(&[&fe.cfg.name, "bad_request"])
            .inc();
        return fail(conn, &scope, "none", ProxyError::BadRequest, &e.to_string()).await;
    }

    // A fresh buffer per request: holding one across keep-alive idle time would cost every idle
    // connection more memory than the allocation costs a request.
    let mut out = BytesMut::new();
    upstream_request(
        &head,
        &RequestRewrite {
            strip: &fe.strip,
            sticky_cookie: &pool.cfg.sticky.cookie,
            client_ip: &conn.peer_ip,
            client_tls: conn.tls,
        },
        &mut out,
    );
    // Whether the request body is out (or there is none); a small one rides with the head.
    let mut body_sent = inline_small_body(&mut conn.buf, head.framing, &mut out);
    let mut tries = Tries {
        moved: false,
        fresh_only: false,
    };
    let (backend, mut up, lease, dead_watch, resp) = loop {
        let acquired = acquire(&mut conn, &head, pool, &mut chosen, &mut tries, idempotent).await;
        if let Some(l) = conn.log.as_mut() {
            // A refused connect may have moved the user to another backend.
            l.routed(&chosen);
        }
        let (b, mut c) = match acquired {
            Ok(x) => x,
            Err(id) => {
                return fail(
                    conn,
                    &scope,
                    &id,
                    ProxyError::BadGateway,
                    "backend refused the connection",
                )
                .await
            }
        };
        let lease = b.inflight_lease();
        // A tunnel must see the backend marked down from the moment it was chosen, not from when
        // the tunnel task first polls: subscribed here, a mark-down in between is not missed.
        let dead_watch = head.request.websocket.then(|| b.dead_watch());
        let sent =
            send_and_read_head(&mut conn, &head, &mut out, &mut c, &mut body_sent, pool, fe).await;
        let (err, why) = match sent {
            Ok(resp) => break (b, c, lease, dead_watch, resp),
            Err(Attempt::Stale) if idempotent && !tries.fresh_only => {
                // The backend closed pooled connections while they sat idle: go again, fresh.
                tries.fresh_only = true;
                b.clear_idle();
                continue;
            }
            Err(Attempt::Stale) => (
                ProxyError::BadGateway,
                "backend closed the connection".to_string(),
            ),
            Err(Attempt::Dead(why)) => {
                b.eject();
                (ProxyError::BadGateway, why)
            }
            Err(Attempt::Backend(why)) => (ProxyError::BadGateway, why),
            Err(Attempt::Timeout) => (
                ProxyError::GatewayTimeout,
                "backend sent no response headers in time".to_string(),
            ),
            Err(Attempt::BadChunk(why)) => {
                m.client_errors_total
                    .with_label_values(&[&fe.cfg.name, "bad_request"])
                    .inc();
                (ProxyError::BadRequest, why.to_string())
            }
            Err(Attempt::ClientGone) => return Next::Close(conn),
        };
        return fail(conn, &scope, &b.id, err, &why).await;
    };
    pool.decisions.count(chosen.outcome);
    backend
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    count(ctx, fe, pool, &backend.id, resp.status);
    if let Some(l) = conn.log.as_mut() {
        l.to(Some(&backend));
        l.answered(resp.status);
    }
    if pool.cfg.sticky.learn_qlik_session {
        for (name, value) in response_set_cookies(&resp) {
            if is_qlik_session_cookie(name) && !value.is_empty() {
                if let Ok(v) = std::str::from_utf8(value) {
                    pool.learned.learn(v, &backend.id);
                }
            }
        }
    }
    let set_cookie = if chosen.sets_cookie() {
        pool.pin_cookie(&backend, conn.tls)
    } else {
        None
    };
    let mut head_out = out;
    head_out.clear();
    if resp.status == 101 {
        if !is_websocket_accept(&resp, &head) {
            // The backend switched to a protocol the client did not ask for (or asked for
            // nothing): nothing is spliced and that connection is dropped.
            warn!(pool = %pool.name, backend = %backend.id, "backend answered 101 to a request that was not a WebSocket handshake");
            drop(up);
            return fail(
                conn,
                &scope,
                &backend.id,
                ProxyError::BadGateway,
                "backend switched protocols unasked",
            )
            .await;
        }
        client_response(
            &resp,
            set_cookie,
            false,
            fe.cfg.hsts.as_deref(),
            &mut head_out,
        );
        if write_within(&mut conn.io, &head_out, send_timeout)
            .await
            .is_err()
        {
            return Next::Close(conn);
        }
        drop(lease);
        let tunnel_lease = backend.tunnel_lease();
        let mut log = conn.log.take();
        if let Some(l) = log.as_mut() {
            l.tunnel_opens(conn.io.read_since(conn.buf.len()), conn.io.written());
        }
        return Next::Tunnel(Box::new(Tunnel {
            client: conn.io.into_inner(),
            from_client: conn.buf.split().freeze(),
            backend: up.io,
            from_backend: up.buf.split().freeze(),
            lease: tunnel_lease,
            dead: dead_watch.unwrap_or_else(|| backend.dead_watch()),
            idle: fe.cfg.tunnel_idle_timeout.get(),
            send_timeout,
            close: ctx.lifecycle.close_tunnels.child_token(),
            slot: conn.slot,
            log: log.map(Box::new),
        }));
    }
    let close_client = head.close
        || !body_sent
        || resp.framing == Framing::UntilClose
        || ctx.lifecycle.is_stopping();
    client_response(
        &resp,
        set_cookie,
        close_client,
        fe.cfg.hsts.as_deref(),
        &mut head_out,
    );
    let body_inline = inline_small_body(&mut up.buf, resp.framing, &mut head_out);
    let mut streamed = write_within(&mut conn.io, &head_out, send_timeout)
        .await
        .map(|_| 0);
    if streamed.is_ok() && !body_inline {
        let how = BodyCopy {
            framing: resp.framing,
            idle: pool.cfg.response_timeout.get(),
            send_timeout,
            request: false,
        };
        streamed = copy_body(&mut up.io, &mut up.buf, &mut conn.io, how).await;
    }
    match streamed {
        Ok(_) => {}
        Err(BodyError::Write(_)) => return Next::Close(conn),
        Err(BodyError::Stalled(_)) => {
            m.client_errors_total
                .with_label_values(&[&fe.cfg.name, "send_timeout"])
                .inc();
            debug!(pool = %pool.name, backend = %backend.id, "client took no bytes within send_timeout; closing");
            return Next::Close(conn);
        }
        Err(e) => {
            warn!(pool = %pool.name, backend = %backend.id, error = %e, "backend response body failed");
            return Next::Close(conn);
        }
    }
    drop(lease);
    if !resp.close && body_sent {
        if windows_auth {
            if !backend.is_removed() {
                conn.ntlm = Some((backend, up));
            }
        } else {
            put_idle(&backend, up);
        }
    }
    if close_client {
        Next::Close(conn)
    } else {
        Next::KeepAlive(conn)
    }
}

/// Retries spent on one request.
struct Tries {
    /// Moved once to another backend after a refused connect.
    moved: bool,
    /// Pooled connections proved stale: only new connections from here on.
    fresh_only: bool,
}

/// A backend connection: the one bound by Windows authentication, an idle one, or a new one. A
/// refused connect ejects the backend and moves an idempotent request once to another backend
/// (re-pinning the user). `Err` carries the id of the backend that refused.
async fn acquire(
    conn: &mut ClientConn,
    head: &Head,
    pool: &Pool,
    chosen: &mut Route,
    tries: &mut Tries,
    idempotent: bool,
) -> Result<(Arc<Backend>, BackendConn), String> {
    let backend_tls = pool.backend_tls.as_deref();
    loop {
        let b = chosen.backend.clone();
        let bound = match conn.ntlm.take() {
            Some((nb, mut c)) if Arc::ptr_eq(&nb, &b) && !tries.fresh_only => {
                // Bound by Windows authentication, it is still taken only when clean.
                c.is_clean().then_some(c)
            }
            _ => None,
        };
        let pooled = bound.or_else(|| {
            (!tries.fresh_only)
                .then(|| idle_pool(&b)?.take())
                .flatten()
                .filter(|c| c.fits(backend_tls))
        });
        let attempt = match pooled {
            Some(c) => Ok(c),
            None => connect(&b.target(), pool.cfg.connect_timeout.get(), backend_tls).await,
        };
        match attempt {
            Ok(c) => {
                if !c.reused {
                    b.connect_succeeded();
                }
                return Ok((b, c));
            }
            Err(e) => {
                warn!(pool = %pool.name, backend = %b.id, error = %e, "backend connect failed; ejecting");
                b.eject();
                let elsewhere = (!tries.moved && idempotent)
                    .then(|| route(pool, head, Some(&b)))
                    .flatten();
                match elsewhere {
                    Some(r) => {
                        tries.moved = true;
                        *chosen = Route {
                            outcome: Outcome::Reassigned,
                            ..r
                        };
                    }
                    None => return Err(b.id.clone()),
                }
            }
        }
    }
}

/// How one attempt at getting the answer's head failed.
enum Attempt {
    /// A pooled connection was closed before any answer: the keep-alive race.
    Stale,
    /// A new connection was closed or reset before any answer: the backend is in trouble.
    Dead(String),
    /// Any other backend failure.
    Backend(String),
    Timeout,
    BadChunk(&'static str),
    /// The client went away or stopped sending its body.
    ClientGone,
}

/// Sends the request (head, then body), relays interim answers, and returns the final answer's
/// head. `Expect: 100-continue` is answered here, not by the backend (which never sees the
/// header): the body is forwarded as the client sends it, whatever the backend does.
async fn send_and_read_head(
    conn: &mut ClientConn,
    head: &Head,
    out: &mut BytesMut,
    up: &mut BackendConn,
    body_sent: &mut bool,
    pool: &Pool,
    fe: &FrontendSnapshot,
) -> Result<Head, Attempt> {
    let send_timeout = fe.cfg.send_timeout.get();
    let mut interim_seen = false;
    if let Err(e) = write_within(&mut up.io, out, send_timeout).await {
        return Err(if up.reused && matches!(e, BodyError::Write(_)) {
            Attempt::Stale
        } else {
            Attempt::Backend(format!("sending to backend failed: {e}"))
        });
    }
    if !*body_sent {
        if head.request.expect_continue && conn.buf.is_empty() {
            write_within(&mut conn.io, b"HTTP/1.1 100 Continue\r\n\r\n", send_timeout)
                .await
                .map_err(|_| Attempt::ClientGone)?;
        }
        let how = BodyCopy {
            framing: head.framing,
            idle: fe.cfg.keepalive_timeout.get(),
            send_timeout,
            request: true,
        };
        send_body(conn, up, how).await?;
        *body_sent = true;
    }
    loop {
        match read_response_head(
            up,
            pool.cfg.response_timeout.get(),
            head.method() == b"HEAD",
        )
        .await
        {
            // The client had its 100 from the proxy; one from the backend would be a second.
            Ok(r) if r.status == 100 => interim_seen = true,
            Ok(r) if (100..200).contains(&r.status) && r.status != 101 => {
                interim_seen = true;
                if write_within(&mut conn.io, &r.raw, send_timeout)
                    .await
                    .is_err()
                {
                    return Err(Attempt::ClientGone);
                }
            }
            Ok(r) => return Ok(r),
            Err(ResponseHeadError::Timeout) => return Err(Attempt::Timeout),
            Err(ResponseHeadError::Closed) if up.reused && !interim_seen => {
                return Err(Attempt::Stale)
            }
            Err(ResponseHeadError::Closed) => {
                return Err(Attempt::Dead(
                    "backend closed the connection before answering".into(),
                ))
            }
            Err(e) => return Err(Attempt::Backend(e.to_string())),
        }
    }
}

async fn send_body(
    conn: &mut ClientConn,
    up: &mut BackendConn,
    how: BodyCopy,
) -> Result<(), Attempt> {
    match copy_body(&mut conn.io, &mut conn.buf, &mut up.io, how).await {
        Ok(_) => Ok(()),
        Err(BodyError::BadChunk(why)) => Err(Attempt::BadChunk(why)),
        Err(e @ (BodyError::Write(_) | BodyError::Stalled(_))) => Err(Attempt::Backend(format!(
            "backend stopped reading the body: {e}"
        ))),
        Err(e) => {
            debug!(error = %e, "client body ended early");
            Err(Attempt::ClientGone)
        }
    }
}
