//! A WebSocket tunnel after the backend's 101: the two connections are spliced byte for byte,
//! with no frame parsing, until either side closes, `tunnel_idle_timeout` passes, the backend
//! is found dead, or shutdown's grace ends.
//!
//! Idle tunnels are the common case (an open Qlik app between clicks), so between bursts a
//! plain-TCP tunnel holds no buffer at all: bytes are read into a per-thread scratch buffer and
//! written straight on; only a write that would block parks the remainder on the heap. A TLS
//! tunnel reads through the same scratch buffer and holds a burst only while writing it on.

use super::access::{Moved, RequestLog};
use super::body::{close_within, write_within, BodyError};
use super::stream::{BackendStream, ClientStream, Stream};
use crate::balance::registry::TunnelLease;
use crate::conn_limit::ConnSlot;
use crate::threads::signal;
use bytes::Bytes;
use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SCRATCH]);
}

pub struct Tunnel {
    pub client: ClientStream,
    /// Bytes the client sent after the upgrade request, already read.
    pub from_client: Bytes,
    pub backend: BackendStream,
    /// Bytes the backend sent after its 101 (often the first frame), already read.
    pub from_backend: Bytes,
    pub lease: TunnelLease,
    /// The backend's mark-down signal, subscribed when the upgrade was routed.
    pub dead: tokio::sync::watch::Receiver<u64>,
    pub idle: Duration,
    /// A side that takes no bytes for this long ends the tunnel (`send_timeout`).
    pub send_timeout: Duration,
    pub close: CancellationToken,
    /// The client connection's place under `max_connections`, held for the tunnel's life.
    pub slot: ConnSlot,
    /// The upgrade request's access log record, written when the tunnel closes (boxed: most
    /// sites log nothing, and every idle tunnel would carry the room for it).
    pub(super) log: Option<Box<RequestLog>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    Closed,
    Idle,
    BackendDead,
    Shutdown,
    /// One side took no bytes for `send_timeout`.
    Stalled,
    Error,
}

/// Runs the tunnel to its end; returns how it ended and the bytes it moved each way. Takes the
/// tunnel by reference so its task holds it once, on the heap, not a second copy inline.
pub async fn run(t: &mut Tunnel) -> (TunnelEnd, Moved) {
    let mut moved = Moved {
        to_backend: t.from_client.len() as u64,
        to_client: t.from_backend.len() as u64,
    };
    let end = splice(t, &mut moved).await;
    (end, moved)
}

async fn splice(t: &mut Tunnel, moved: &mut Moved) -> TunnelEnd {
    let backend = t.lease.backend().clone();
    let mut dead = std::pin::pin!(signal::changed(t.dead.clone()));
    let mut close = std::pin::pin!(signal::cancelled(&t.close));
    if !t.from_client.is_empty() {
        backend
            .metrics
            .bytes_to_backend
            .inc_by(t.from_client.len() as u64);
        if write_within(&mut t.backend, &t.from_client, t.send_timeout)
            .await
            .is_err()
        {
            return TunnelEnd::Error;
        }
    }
    if !t.from_backend.is_empty() {
        backend
            .metrics
            .bytes_to_client
            .inc_by(t.from_backend.len() as u64);
        if write_within(&mut t.client, &t.from_backend, t.send_timeout)
            .await
            .is_err()
        {
            return TunnelEnd::Error;
        }
    }
    t.from_client = Bytes::new();
    t.from_backend = Bytes::new();
    let end = match (&t.client, &t.backend) {
        (Stream::Plain(c), Stream::Plain(b)) => {
            tokio::select! {
                end = splice_tcp(c, b, Limits { idle: t.idle, send: t.send_timeout }, &t.lease, moved) => end,
                _ = &mut dead => TunnelEnd::BackendDead,
                _ = &mut close => TunnelEnd::Shutdown,
            }
        }
        _ => {
            let limits = Limits {
                idle: t.idle,
                send: t.send_timeout,
            };
            tokio::select! {
                end = copy_generic(&mut t.client, &mut t.backend, limits, &t.lease, moved) => end,
                _ = &mut dead => TunnelEnd::BackendDead,
                _ = &mut close => TunnelEnd::Shutdown,
            }
        }
    };
    close_within(&mut t.client, t.send_timeout).await;
    end
}

/// The tunnel's two clocks: no byte either way for `idle`, or a side that takes no bytes for
/// `send`.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    send: Duration,
}

enum Flow {
    Open,
    Eof,
}

/// Moves what `src` has ready into `dst`; parks what `dst` cannot take now in `pending`.
fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pending: &mut Option<Vec<u8>>,
    moved: &prometheus::IntCounter,
    total: &mut u64,
) -> io::Result<Flow> {
    SCRATCH_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        loop {
            let (n, drained) = match read_ready(src, &mut buf) {
                Ok(Read::Eof) => return Ok(Flow::Eof),
                Ok(Read::Bytes { n, drained }) => (n, drained),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Open),
                Err(e) => return Err(e),
            };
            moved.inc_by(n as u64);
            *total += n as u64;
            let mut written = 0;
            while written < n {
                match dst.try_write(&buf[written..n]) {
                    Ok(w) => written += w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        *pending = Some(buf[written..n].to_vec());
                        return Ok(Flow::Open);
                    }
                    Err(e) => return Err(e),
                }
            }
            if drained {
                return Ok(Flow::Open);
            }
        }
    })
}

enum Read {
    Eof,
    Bytes { n: usize, drained: bool },
}

/// One read of what the socket holds. A read shorter than the buffer took everything there
/// was, so readiness is cleared on the spot instead of spending a second read on `EAGAIN` (as
/// tokio's own `poll_read` does); data arriving later raises readiness again.
fn read_ready(src: &TcpStream, buf: &mut [u8]) -> io::Result<Read> {
    let mut short = None;
    let result = src.try_io(Interest::READABLE, || {
        // SAFETY: recv into a live, writable buffer of the given length on a socket we own.
        let n = unsafe { libc::recv(src.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (result, short) {
        (_, Some(n)) => Ok(Read::Bytes { n, drained: true }),
        (Ok(0), None) => Ok(Read::Eof),
        (Ok(n), None) => Ok(Read::Bytes { n, drained: false }),
        (Err(e), None) => Err(e),
    }
}

/// Writes parked bytes; `true` when all are out.
fn drain(dst: &TcpStream, pending: &mut Option<Vec<u8>>) -> io::Result<bool> {
    let Some(data) = pending.as_mut() else {
        return Ok(true);
    };
    loop {
        match dst.try_write(data) {
            Ok(w) if w == data.len() => {
                *pending = None;
                return Ok(true);
            }
            Ok(w) => {
                data.drain(..w);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

fn shutdown_write(s: &TcpStream) {
    // SAFETY: shutdown(2) on a socket fd we own; it only half-closes the write side.
    unsafe {
        libc::shutdown(s.as_raw_fd(), libc::SHUT_WR);
    }
}

async fn splice_tcp(
    client: &TcpStream,
    backend: &TcpStream,
    limits: Limits,
    lease: &TunnelLease,
    total: &mut Moved,
) -> TunnelEnd {
    let m = &lease.backend().metrics;
    let idle = limits.idle;
    let (mut to_backend, mut to_client): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let (mut client_eof, mut backend_eof) = (false, false);
    let mut last_activity = Instant::now();
    // Since when parked bytes have waited for a side that takes none.
    let mut stalled_since: Option<Instant> = None;
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        let step: io::Result<()> = tokio::select! {
            r = client.readable(), if to_backend.is_none() && !client_eof => r.and_then(|_| {
                if let Flow::Eof = pump(client, backend, &mut to_backend, &m.bytes_to_backend, &mut total.to_backend)? {
                    client_eof = true;
                    if to_backend.is_none() { shutdown_write(backend); }
                }
                Ok(())
            }),
            r = backend.readable(), if to_client.is_none() && !backend_eof => r.and_then(|_| {
                if let Flow::Eof = pump(backend, client, &mut to_client, &m.bytes_to_client, &mut total.to_client)? {
                    backend_eof = true;
                    if to_client.is_none() { shutdown_write(client); }
                }
                Ok(())
            }),
            r = backend.writable(), if to_backend.is_some() => r.and_then(|_| {
                if drain(backend, &mut to_backend)? && client_eof { shutdown_write(backend); }
                Ok(())
            }),
            r = client.writable(), if to_client.is_some() => r.and_then(|_| {
                if drain(client, &mut to_client)? && backend_eof { shutdown_write(client); }
                Ok(())
            }),
            _ = &mut timer => {
                if stalled_since.is_some_and(|s| s.elapsed() >= limits.send) {
                    return TunnelEnd::Stalled;
                }
                if last_activity.elapsed() >= idle {
                    return TunnelEnd::Idle;
                }
                timer.as_mut().reset(wake_at(last_activity, stalled_since, limits));
                continue;
            }
        };
        if step.is_err() {
            return TunnelEnd::Error;
        }
        last_activity = Instant::now();
        let parked = to_backend.is_some() || to_client.is_some();
        match (parked, stalled_since) {
            (true, None) => {
                stalled_since = Some(last_activity);
                timer
                    .as_mut()
                    .reset(wake_at(last_activity, stalled_since, limits));
            }
            (false, Some(_)) => stalled_since = None,
            _ => {}
        }
        if client_eof && backend_eof && to_backend.is_none() && to_client.is_none() {
            return TunnelEnd::Closed;
        }
    }
}

/// When the tunnel's timer must next look: at the idle deadline or the stall deadline.
fn wake_at(last_activity: Instant, stalled_since: Option<Instant>, limits: Limits) -> Instant {
    let idle_at = last_activity + limits.idle;
    stalled_since.map_or(idle_at, |s| idle_at.min(s + limits.send))
}

async fn copy_generic(
    client: &mut ClientStream,
    backend: &mut BackendStream,
    limits: Limits,
    lease: &TunnelLease,
    total: &mut Moved,
) -> TunnelEnd {
    let idle = limits.idle;
    let m = &lease.backend().metrics;
    loop {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                r = read_burst(client) => match r {
                    Ok(burst) if burst.is_empty() => Err(TunnelEnd::Closed),
                    Err(_) => Err(TunnelEnd::Closed),
                    Ok(burst) => {
                        m.bytes_to_backend.inc_by(burst.len() as u64);
                        total.to_backend += burst.len() as u64;
                        write_within(backend, &burst, limits.send).await.map_err(stalled_or_error)
                    }
                },
                r = read_burst(backend) => match r {
                    Ok(burst) if burst.is_empty() => Err(TunnelEnd::Closed),
                    Err(_) => Err(TunnelEnd::Closed),
                    Ok(burst) => {
                        m.bytes_to_client.inc_by(burst.len() as u64);
                        total.to_client += burst.len() as u64;
                        write_within(client, &burst, limits.send).await.map_err(stalled_or_error)
                    }
                },
            }
        })
        .await;
        match step {
            Err(_) => return TunnelEnd::Idle,
            Ok(Err(end)) => return end,
            Ok(Ok(())) => {}
        }
    }
}

/// One read of whatever a side has ready, through the thread's scratch buffer, copied out at its
/// exact size: between bursts a TLS tunnel holds no copy buffer of its own (two 8 KiB buffers
/// per tunnel before), which is what most tunnels, open apps between clicks, do all day.
/// Empty means the side closed.
async fn read_burst<R: tokio::io::AsyncRead + Unpin>(side: &mut R) -> io::Result<Vec<u8>> {
    std::future::poll_fn(|cx| {
        SCRATCH_BUF.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let mut read = tokio::io::ReadBuf::new(&mut scratch[..]);
            match std::pin::Pin::new(&mut *side).poll_read(cx, &mut read) {
                std::task::Poll::Ready(Ok(())) => {
                    std::task::Poll::Ready(Ok(read.filled().to_vec()))
                }
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
    })
    .await
}

fn stalled_or_error(e: BodyError) -> TunnelEnd {
    match e {
        BodyError::Stalled(_) => TunnelEnd::Stalled,
        _ => TunnelEnd::Error,
    }
}
