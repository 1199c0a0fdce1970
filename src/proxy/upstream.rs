//! Connections to backends: connect (plain or TLS) with a timeout, and a small per-backend pool
//! of idle keep-alive connections. A connection is only reused when it is provably clean, and
//! only by the worker thread that opened it (its socket is registered with that worker's runtime).

use super::stream::{BackendStream, Stream};
use crate::balance::registry::{BackendTarget, IdleConnections};
use crate::balance::Backend;
use crate::threads::workers;
use crate::tls::backend::BackendTls;
use crate::tls::stream::TlsClientStream;
use bytes::BytesMut;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// Idle connections kept per backend and worker; more are closed when returned.
const MAX_IDLE_PER_WORKER: usize = 256;
/// Idle connections older than this are closed rather than reused (QPS keeps 5 min).
const MAX_IDLE_AGE: Duration = Duration::from_secs(60);
/// Read buffers up to this size stay with a pooled connection.
const KEEP_READ_BUF: usize = 8 * 1024;

pub struct BackendConn {
    pub io: BackendStream,
    pub buf: BytesMut,
    idle_since: Instant,
    /// Came from the pool (a failure before any answer may just mean the backend closed it).
    pub reused: bool,
    /// The `[pool.tls]` settings a TLS connection was verified with (`BackendTls::settings`).
    tls_settings: Option<[u8; 32]>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("connect to {0} failed: {1}")]
    Io(String, std::io::Error),
    #[error("TLS to {0} failed: {1}")]
    Tls(String, std::io::Error),
    #[error("TLS to {0}: the pool has no TLS client config")]
    NoTlsConfig(String),
}

pub async fn connect(
    target: &BackendTarget,
    timeout: Duration,
    tls: Option<&BackendTls>,
) -> Result<BackendConn, ConnectError> {
    let authority = target.url.authority();
    let work = async {
        let tcp = TcpStream::connect(&authority)
            .await
            .map_err(|e| ConnectError::Io(authority.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let mut tls_settings = None;
        let io = if target.url.tls {
            let tls = tls.ok_or_else(|| ConnectError::NoTlsConfig(authority.clone()))?;
            let name = tls
                .name_for(&target.url.host)
                .map_err(|e| ConnectError::Tls(authority.clone(), std::io::Error::other(e)))?;
            // A certificate that fails verification ends the handshake here: a connect failure.
            let stream = TlsClientStream::connect(tcp, tls.config.clone(), name)
                .await
                .map_err(|e| ConnectError::Tls(authority.clone(), e))?;
            tls_settings = Some(tls.settings);
            Stream::Tls(Box::new(stream))
        } else {
            Stream::Plain(tcp)
        };
        Ok(BackendConn {
            io,
            buf: BytesMut::new(),
            idle_since: Instant::now(),
            reused: false,
            tls_settings,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ConnectError::Timeout(authority.clone()))?
}

impl BackendConn {
    /// Opened under the pool's current TLS settings (or plain): a connection verified under
    /// settings a reload has since changed is not reused.
    pub fn fits(&self, tls: Option<&BackendTls>) -> bool {
        self.tls_settings
            .is_none_or(|s| tls.is_some_and(|t| t.settings == s))
    }

    /// Nothing arrived since the last answer was read (see `is_clean`).
    pub fn is_clean(&mut self) -> bool {
        self.buf.is_empty() && is_clean(&mut self.io)
    }
}

/// Idle connections of one backend, one list per worker thread.
pub struct IdlePool {
    slots: Box<[Mutex<Vec<BackendConn>>]>,
}

impl Default for IdlePool {
    fn default() -> IdlePool {
        IdlePool {
            slots: (0..workers::slot_count())
                .map(|_| Mutex::default())
                .collect(),
        }
    }
}

impl IdlePool {
    fn mine(&self) -> &Mutex<Vec<BackendConn>> {
        &self.slots[workers::current_slot()]
    }

    /// An idle connection that is still clean, if any; the others are closed on the way.
    pub fn take(&self) -> Option<BackendConn> {
        loop {
            let mut conn = self.mine().lock().expect("idle pool lock").pop()?;
            if conn.idle_since.elapsed() < MAX_IDLE_AGE && conn.is_clean() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    pub fn put(&self, mut conn: BackendConn) {
        if !conn.buf.is_empty() {
            return;
        }
        // Keep a small read buffer for the next request (a new one per reuse costs an
        // allocation); a large one would be pinned by an idle connection.
        if conn.buf.capacity() > KEEP_READ_BUF {
            conn.buf = BytesMut::new();
        }
        conn.idle_since = Instant::now();
        let mut conns = self.mine().lock().expect("idle pool lock");
        if conns.len() < MAX_IDLE_PER_WORKER {
            conns.push(conn);
        }
    }

    pub fn clear(&self) {
        for slot in self.slots.iter() {
            slot.lock().expect("idle pool lock").clear();
        }
    }
}

impl IdleConnections for IdlePool {
    fn clear(&self) {
        IdlePool::clear(self)
    }
}

/// The idle connections of `backend`; `None` when it was retired before it had any.
pub fn idle_pool(backend: &Backend) -> Option<&IdlePool> {
    backend.idle::<IdlePool>()
}

/// Returns a clean connection to the backend's idle pool, unless the backend left the config (or
/// was replaced by one at another address) since: then the connection is closed.
pub fn put_idle(backend: &Backend, conn: BackendConn) {
    if backend.is_removed() {
        return;
    }
    if let Some(pool) = idle_pool(backend) {
        pool.put(conn);
        // Retired meanwhile: `retire` may have cleared the pool before this connection went in.
        if backend.is_removed() {
            pool.clear();
        }
    }
}

/// An idle connection is clean when nothing arrived on it since its last answer was read: no
/// stray bytes (a late or unasked answer that would be served to the next request) and no EOF.
/// The runtime's readiness already tells, with no system call: the last read of the answer
/// was short, which cleared read readiness, and anything arriving since has set it again.
/// Under TLS, plaintext may also wait inside rustls, and bytes on the socket may be a session
/// ticket sent late (consumed without yielding data): a read through TLS tells both, and it
/// too reaches the socket only when readiness is set.
fn is_clean(io: &mut BackendStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match io {
        Stream::Plain(tcp) => tcp.poll_read_ready(&mut cx).is_pending(),
        Stream::Tls(tls) => {
            let mut probe = [0u8; 1];
            let mut probe = ReadBuf::new(&mut probe);
            Pin::new(tls.as_mut())
                .poll_read(&mut cx, &mut probe)
                .is_pending()
        }
    }
}
