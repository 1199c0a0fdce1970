//! What the front door collects for the access log while it serves a request. It exists only
//! when a log is configured (one check per request): with none, nothing here is allocated.

use super::conn::ClientConn;
use super::head::Head;
use super::route::Route;
use crate::access_log::{AccessLog, ConnNames, Entry, RequestId, RequestLine, Sticky};
use crate::balance::{Backend, Outcome};
use crate::snapshot::FrontendSnapshot;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// One request on its way to the log.
pub(super) struct RequestLog {
    log: Arc<AccessLog>,
    names: Arc<ConnNames>,
    client: SocketAddr,
    tls: bool,
    time: SystemTime,
    started: Instant,
    pub(super) id: RequestId,
    request: Option<RequestLine>,
    websocket: bool,
    /// 0 until an answer is decided: a request that gets none is not logged.
    status: u16,
    ttfb: Duration,
    backend: Option<Arc<Backend>>,
    sticky: Sticky,
    /// The upgrade's own bytes, for a tunnel's line.
    head_bytes: (u64, u64),
    tunnel_opened: Option<Instant>,
}

/// Bytes a tunnel moved each way after the upgrade (bytes that came along with it included).
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub to_backend: u64,
    pub to_client: u64,
}

/// The request's texts, copied: a slice would pin the connection's read buffer until the writer
/// thread formats the line, so the next request could not reuse it.
fn request_line(head: &Head) -> RequestLine {
    let raw = &head.raw;
    let first = head.first_line.clone();
    let line = Bytes::copy_from_slice(&raw[first.clone()]);
    let within =
        |r: &std::ops::Range<usize>| line.slice(r.start - first.start..r.end - first.start);
    RequestLine {
        method: within(&head.method),
        target: within(&head.target),
        user_agent: head.first("user-agent").map(Bytes::copy_from_slice),
        referer: head.first("referer").map(Bytes::copy_from_slice),
        line,
    }
}

/// Starts the request's log record when the serving config has an access log.
pub(super) fn begin(
    log: Option<&Arc<AccessLog>>,
    conn: &mut ClientConn,
    fe: &FrontendSnapshot,
    head: Option<&Head>,
) {
    let Some(log) = log else {
        conn.log = None;
        return;
    };
    let names = conn
        .log_names
        .get_or_insert_with(|| {
            Arc::new(ConnNames {
                frontend: fe.cfg.name.clone(),
                pool: fe.cfg.pool.clone(),
            })
        })
        .clone();
    conn.log = Some(RequestLog {
        log: log.clone(),
        names,
        client: conn.peer,
        tls: conn.tls,
        time: SystemTime::now(),
        started: Instant::now(),
        id: RequestId::next(),
        request: head.map(request_line),
        websocket: head.is_some_and(|h| h.request.websocket),
        status: 0,
        ttfb: Duration::ZERO,
        backend: None,
        sticky: Sticky::None,
        head_bytes: (0, 0),
        tunnel_opened: None,
    });
}

pub(super) fn sticky(route: &Route) -> Sticky {
    match route.outcome {
        Outcome::Hit => Sticky::Hit,
        Outcome::Learned => Sticky::Learned,
        Outcome::Reassigned => Sticky::Reassigned,
        Outcome::Miss if route.invalid_cookie => Sticky::Invalid,
        Outcome::Miss => Sticky::Miss,
    }
}

impl RequestLog {
    pub(super) fn routed(&mut self, route: &Route) {
        self.sticky = sticky(route);
    }

    /// The backend the answer comes from (or the one that failed); none means no sticky decision.
    pub(super) fn to(&mut self, backend: Option<&Arc<Backend>>) {
        self.backend = backend.cloned();
        if self.backend.is_none() {
            self.sticky = Sticky::None;
        }
    }

    /// The answer's status is decided and its head is about to be written.
    pub(super) fn answered(&mut self, status: u16) {
        self.status = status;
        self.ttfb = self.started.elapsed();
    }

    /// The 101 is out: the tunnel's line is written when it closes.
    pub(super) fn tunnel_opens(&mut self, bytes_in: u64, bytes_out: u64) {
        self.head_bytes = (bytes_in, bytes_out);
        self.tunnel_opened = Some(Instant::now());
    }

    fn entry(self, bytes: (u64, u64)) -> Entry {
        Entry {
            time: self.time,
            request_id: self.id,
            client: self.client,
            names: self.names,
            tls: self.tls,
            request: self.request,
            status: self.status,
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            ttfb: self.ttfb,
            duration: self.started.elapsed(),
            backend: self.backend,
            sticky: self.sticky,
            websocket: self.websocket,
            tunnel: self.tunnel_opened.map(|t| t.elapsed()),
        }
    }
}

/// Writes the line of the request `conn` just finished, if it is logged and was answered. On a
/// connection that stays open, bytes already read past this message belong to the next one; on
/// one that closes, everything received counts.
pub(super) fn finish(conn: &mut ClientConn, closing: bool) {
    let Some(l) = conn.log.take() else { return };
    if l.status == 0 {
        return;
    }
    let next_message = if closing { 0 } else { conn.buf.len() };
    let bytes = (conn.io.read_since(next_message), conn.io.written());
    let log = l.log.clone();
    log.log(l.entry(bytes));
}

/// Writes a tunnel's line when it has closed.
pub(super) fn finish_tunnel(l: RequestLog, moved: Moved) {
    let bytes = (
        l.head_bytes.0 + moved.to_backend,
        l.head_bytes.1 + moved.to_client,
    );
    let log = l.log.clone();
    log.log(l.entry(bytes));
}
