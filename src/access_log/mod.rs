//! The access log (§3.3): one line per request when its response ends and one per WebSocket
//! tunnel when it closes. The front door hands each finished request over as an `Entry` of
//! cheap parts (counters, reference-counted names and head bytes); a writer thread formats and
//! writes them. The queue between them is bounded and never waited on: when it is full the line
//! is dropped and counted in `qlb_access_log_dropped_total`.

mod format;
mod writer;

use crate::balance::Backend;
use crate::config::{AccessLogConfig, AccessLogFormat};
use bytes::Bytes;
use prometheus::IntCounter;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use writer::{Msg, Sink};

/// Lines waiting for the writer; a burst beyond this while the disk stalls is dropped.
pub const QUEUE_LINES: usize = 4096;

/// A process-unique request id: a random prefix per process and a counter. Taking one costs an
/// atomic increment; it becomes text only where it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl RequestId {
    pub fn next() -> RequestId {
        RequestId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(rand::random::<u32>);
        write!(f, "{prefix:08x}-{:x}", self.0)
    }
}

/// The sticky decision as the log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    Hit,
    Learned,
    Miss,
    Reassigned,
    /// The route cookie could not be accepted and the balancer chose anew.
    Invalid,
    /// No backend was chosen.
    None,
}

impl Sticky {
    pub fn as_str(self) -> &'static str {
        match self {
            Sticky::Hit => "hit",
            Sticky::Learned => "learned",
            Sticky::Miss => "miss",
            Sticky::Reassigned => "reassigned",
            Sticky::Invalid => "invalid",
            Sticky::None => "none",
        }
    }
}

/// Names that stay the same for every request of a client connection.
#[derive(Debug)]
pub struct ConnNames {
    pub frontend: String,
    pub pool: String,
}

/// Parts of the request head, sharing the head's bytes.
#[derive(Debug, Clone)]
pub struct RequestLine {
    /// The request line as received, without CRLF.
    pub line: Bytes,
    pub method: Bytes,
    pub target: Bytes,
    pub user_agent: Option<Bytes>,
    pub referer: Option<Bytes>,
}

/// One finished request or tunnel.
pub struct Entry {
    /// When the request head was complete (or the proxy gave up on it).
    pub time: SystemTime,
    pub request_id: RequestId,
    pub client: SocketAddr,
    pub names: Arc<ConnNames>,
    pub tls: bool,
    /// `None` when the proxy refused the head before it was parsed.
    pub request: Option<RequestLine>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub ttfb: Duration,
    pub duration: Duration,
    pub backend: Option<Arc<Backend>>,
    pub sticky: Sticky,
    pub websocket: bool,
    /// How long the tunnel was open (WebSocket lines only).
    pub tunnel: Option<Duration>,
}

/// An open access log: the queue to its writer thread. The thread ends once every handle is gone
/// and the queue is drained.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: IntCounter,
    /// Lines queued, and lines the writer is done with (written or lost to a failing file):
    /// equal when nothing waits.
    queued: AtomicU64,
    done: Arc<AtomicU64>,
}

impl AccessLog {
    /// Opens the log's file (a config error when it cannot be opened) and starts its writer.
    pub fn open(
        cfg: &AccessLogConfig,
        dir: &Path,
        dropped: IntCounter,
    ) -> std::io::Result<AccessLog> {
        let sink = if cfg.is_stderr() {
            Sink::stderr()
        } else {
            Sink::file(crate::config::resolve(dir, &cfg.path))?
        };
        AccessLog::start(sink, cfg.format, QUEUE_LINES, dropped)
    }

    fn start(
        sink: Sink,
        format: AccessLogFormat,
        capacity: usize,
        dropped: IntCounter,
    ) -> std::io::Result<AccessLog> {
        let (tx, rx) = sync_channel(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        writer::spawn(rx, sink, format, reopen.clone(), done.clone())?;
        Ok(AccessLog {
            tx,
            reopen,
            dropped,
            queued: AtomicU64::new(0),
            done,
        })
    }

    /// Queues the line, or drops and counts it when the writer is behind; never waits.
    pub fn log(&self, entry: Entry) {
        match self.tx.try_send(Msg::Line(entry)) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Waits (at most `within`) until the writer has written every queued line: at shutdown,
    /// so the last requests' lines are not lost with the process.
    pub async fn flushed(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.done.load(Ordering::Acquire) < self.queued.load(Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Opens the file again at the same path before the next line (logrotate's rename + signal).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // Wakes an idle writer so the new file appears now; a full queue wakes it anyway.
        let _ = self.tx.try_send(Msg::Reopen);
    }
}

#[cfg(test)]
mod tests;
