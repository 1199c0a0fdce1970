//! One request and its answer: route, pick or open a backend connection (with the one safe
//! retry), send the head and body, read the answer, pin the user, and stream it back.

use super::backend_head::{read_response_head, ResponseHeadError};
use super::body::{copy_body, inline_small_body, BodyError};
use super::conn::{refuse, ClientConn, Next};
use super::head::{Framing, Head};
use super::respond::ProxyError;
use super::rewrite::{
    client_response, is_qlik_session_cookie, response_set_cookies, upstream_request, RequestRewrite,
};
use super::route::{pin_cookie, route, Outcome, Route};
use super::tunnel::Tunnel;
use super::upstream::{connect, BackendConn};
use super::ProxyCtx;
use crate::balance::{Backend, Pool};
use crate::metrics::code_class;
use crate::runtime::FrontendRuntime;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
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

fn count(ctx: &ProxyCtx, fe: &FrontendRuntime, pool: &Pool, backend: &str, status: u16) {
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

/// A fresh connection after an idle one turned out closed by the backend as we picked it
/// (the keep-alive race); a failure here is the backend's, so it is ejected.
async fn reconnect(backend: &Backend, pool: &Pool, ctx: &ProxyCtx) -> Option<BackendConn> {
    match connect(
        &backend.target(),
        pool.cfg.connect_timeout.get(),
        &ctx.backend_tls,
    )
    .await
    {
        Ok(c) => Some(c),
        Err(e) => {
            warn!(pool = %pool.name, backend = %backend.id, error = %e, "backend reconnect failed; ejecting");
            backend.eject();
            None
        }
    }
}

/// What an error answer needs to know about the request it refuses.
struct Scope<'a> {
    ctx: &'a ProxyCtx,
    fe: &'a FrontendRuntime,
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
    refuse(&mut conn, scope.fe, Some(scope.head), err, why).await;
    Next::Close(conn)
}

pub(super) async fn exchange(
    mut conn: ClientConn,
    head: Head,
    fe: &FrontendRuntime,
    pool: &Arc<Pool>,
    ctx: &ProxyCtx,
) -> Next {
    let started = Instant::now();
    let m = &ctx.shared.metrics;
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
    if chosen.all_down {
        warn!(pool = %pool.name, backend = %chosen.backend.id, "every backend is down; trying anyway");
    }
    let idempotent = is_idempotent(&head);
    let windows_auth = is_windows_auth(&head) || conn.ntlm.is_some();

    // A backend connection: the one bound by Windows authentication, an idle one, or a new one;
    // a refused connect ejects the backend and may move an idempotent request once.
    let mut retried = false;
    let (backend, mut up) = loop {
        let b = chosen.backend.clone();
        let bound = match conn.ntlm.take() {
            Some((nb, c)) if Arc::ptr_eq(&nb, &b) => Some(c),
            _ => None,
        };
        let attempt = match bound.or_else(|| b.idle.take()) {
            Some(c) => Ok(c),
            None => {
                connect(
                    &b.target(),
                    pool.cfg.connect_timeout.get(),
                    &ctx.backend_tls,
                )
                .await
            }
        };
        match attempt {
            Ok(c) => {
                if !c.reused {
                    b.connect_succeeded();
                }
                break (b, c);
            }
            Err(e) => {
                warn!(pool = %pool.name, backend = %b.id, error = %e, "backend connect failed; ejecting");
                b.eject();
                let moved = (!retried && idempotent)
                    .then(|| route(pool, &head, Some(&b)))
                    .flatten();
                match moved {
                    Some(r) => {
                        retried = true;
                        chosen = Route {
                            outcome: Outcome::Reassigned,
                            ..r
                        };
                    }
                    None => {
                        return fail(
                            conn,
                            &scope,
                            &b.id,
                            ProxyError::BadGateway,
                            "backend refused the connection",
                        )
                        .await
                    }
                }
            }
        }
    };
    pool.decisions.count(chosen.outcome);
    let lease = backend.inflight_lease();
    let mut out = BytesMut::new();
    upstream_request(
        &head,
        &RequestRewrite {
            strip: &fe.strip,
            sticky_cookie: &pool.cfg.sticky.cookie,
            client_ip: conn.peer.ip(),
            client_tls: conn.tls,
        },
        &mut out,
    );
    let response_timeout = pool.cfg.response_timeout.get();
    let expect_continue =
        head.framing != Framing::Empty && head.has_token("expect", "100-continue");
    let mut body_sent =
        !expect_continue && inline_small_body(&mut conn.buf, head.framing, &mut out);
    let mut fresh_retry_done = false;
    let resp = loop {
        let sent = if out.is_empty() {
            Ok(())
        } else {
            up.io.write_all(&out).await
        };
        if let Err(e) = sent {
            if up.reused && idempotent && !fresh_retry_done {
                fresh_retry_done = true;
                if let Some(c) = reconnect(&backend, pool, ctx).await {
                    up = c;
                    continue;
                }
            }
            return fail(
                conn,
                &scope,
                &backend.id,
                ProxyError::BadGateway,
                &format!("sending to backend failed: {e}"),
            )
            .await;
        }
        if !body_sent && !expect_continue {
            match copy_body(
                &mut conn.io,
                &mut conn.buf,
                &mut up.io,
                head.framing,
                fe.cfg.keepalive_timeout.get(),
            )
            .await
            {
                Ok(_) => body_sent = true,
                Err(BodyError::BadChunk(why)) => {
                    m.client_errors_total
                        .with_label_values(&[&fe.cfg.name, "bad_request"])
                        .inc();
                    return fail(conn, &scope, &backend.id, ProxyError::BadRequest, why).await;
                }
                Err(BodyError::Write(e)) => {
                    return fail(
                        conn,
                        &scope,
                        &backend.id,
                        ProxyError::BadGateway,
                        &format!("backend stopped reading the body: {e}"),
                    )
                    .await;
                }
                Err(e) => {
                    debug!(error = %e, "client body ended early");
                    return Next::Close(conn);
                }
            }
        }
        match read_response_head(&mut up, response_timeout, head.method() == b"HEAD").await {
            Ok(r) if r.status == 100 && expect_continue && !body_sent => {
                if conn.io.write_all(&r.raw).await.is_err() {
                    return Next::Close(conn);
                }
                match copy_body(
                    &mut conn.io,
                    &mut conn.buf,
                    &mut up.io,
                    head.framing,
                    fe.cfg.keepalive_timeout.get(),
                )
                .await
                {
                    Ok(_) => body_sent = true,
                    Err(_) => return Next::Close(conn),
                }
                // The request is out; only the final answer is still to come.
                out.clear();
                continue;
            }
            Ok(r) if (100..200).contains(&r.status) && r.status != 101 => {
                if conn.io.write_all(&r.raw).await.is_err() {
                    return Next::Close(conn);
                }
                // The request is out; only the final answer is still to come.
                out.clear();
                continue;
            }
            Ok(r) => break r,
            Err(ResponseHeadError::Timeout) => {
                return fail(
                    conn,
                    &scope,
                    &backend.id,
                    ProxyError::GatewayTimeout,
                    "backend sent no response headers in time",
                )
                .await;
            }
            Err(ResponseHeadError::Closed) if up.reused && idempotent && !fresh_retry_done => {
                fresh_retry_done = true;
                if let Some(c) = reconnect(&backend, pool, ctx).await {
                    up = c;
                    continue;
                }
                return fail(
                    conn,
                    &scope,
                    &backend.id,
                    ProxyError::BadGateway,
                    "backend closed the connection",
                )
                .await;
            }
            Err(e) => {
                if matches!(e, ResponseHeadError::Closed) {
                    backend.eject();
                }
                return fail(
                    conn,
                    &scope,
                    &backend.id,
                    ProxyError::BadGateway,
                    &e.to_string(),
                )
                .await;
            }
        }
    };
    backend
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    count(ctx, fe, pool, &backend.id, resp.status);
    if pool.cfg.sticky.learn_qlik_session {
        for (name, value) in response_set_cookies(&resp) {
            if is_qlik_session_cookie(name) && !value.is_empty() {
                if let Ok(v) = std::str::from_utf8(value) {
                    pool.learned.learn(v, &backend.id);
                }
            }
        }
    }
    let set_cookie = chosen
        .sets_cookie()
        .then(|| pin_cookie(pool, &backend, conn.tls));
    let mut head_out = BytesMut::new();
    if resp.status == 101 {
        client_response(&resp, set_cookie.as_deref(), false, &mut head_out);
        if conn.io.write_all(&head_out).await.is_err() {
            return Next::Close(conn);
        }
        drop(lease);
        let tunnel_lease = backend.tunnel_lease();
        return Next::Tunnel(Box::new(Tunnel {
            client: conn.io,
            from_client: conn.buf.split().freeze(),
            backend: up.io,
            from_backend: up.buf.split().freeze(),
            lease: tunnel_lease,
            idle: fe.cfg.tunnel_idle_timeout.get(),
            close: ctx.lifecycle.close_tunnels.child_token(),
        }));
    }
    let close_client = head.close
        || !body_sent
        || resp.framing == Framing::UntilClose
        || ctx.lifecycle.stop.is_cancelled();
    client_response(&resp, set_cookie.as_deref(), close_client, &mut head_out);
    let body_inline = inline_small_body(&mut up.buf, resp.framing, &mut head_out);
    if conn.io.write_all(&head_out).await.is_err() {
        return Next::Close(conn);
    }
    let streamed = if body_inline {
        Ok(0)
    } else {
        copy_body(
            &mut up.io,
            &mut up.buf,
            &mut conn.io,
            resp.framing,
            response_timeout,
        )
        .await
    };
    match streamed {
        Ok(_) => {}
        Err(BodyError::Write(_)) => return Next::Close(conn),
        Err(e) => {
            warn!(pool = %pool.name, backend = %backend.id, error = %e, "backend response body failed");
            return Next::Close(conn);
        }
    }
    if conn.io.flush().await.is_err() {
        return Next::Close(conn);
    }
    drop(lease);
    if !resp.close && body_sent {
        if windows_auth {
            conn.ntlm = Some((backend, up));
        } else {
            backend.idle.put(up);
        }
    }
    if close_client {
        Next::Close(conn)
    } else {
        Next::KeepAlive(conn)
    }
}
