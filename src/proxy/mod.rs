//! The front door: accept, read the request head, route, forward, splice WebSockets.
//!
//! The HTTP/1.1 path is purpose-built on httparse rather than a general server so that the
//! contract's edges hold: heads are forwarded byte-for-byte, ambiguous framing is refused before
//! anything reaches a backend, slow heads get a 408, and an upgraded connection is handed to a
//! tunnel that costs almost nothing while idle.

mod access;
mod admit;
pub mod backend_head;
pub mod body;
pub mod chunked;
pub mod client_head;
pub mod conn;
pub mod counted;
mod exchange;
pub mod head;
pub mod listener;
pub mod proxy_protocol;
mod redirect;
pub mod request_head;
pub mod respond;
pub mod rewrite;
pub mod route;
pub mod stream;
pub mod tunnel;
pub mod upstream;

use crate::snapshot::{Shared, SharedSnapshot};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tracks connections and tunnels so shutdown can wait for them and close them in order.
pub struct Lifecycle {
    pub tracker: TaskTracker,
    /// Stop accepting and close idle keep-alive connections.
    pub stop: CancellationToken,
    /// `stop` as a plain flag: asking the token takes its lock, shared by every connection.
    stopping: AtomicBool,
    /// Close open WebSocket tunnels (after the shutdown grace).
    pub close_tunnels: CancellationToken,
}

impl Lifecycle {
    pub fn new() -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            close_tunnels: CancellationToken::new(),
        })
    }

    /// Stop accepting; connections close once their current request is answered.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// What every connection of the front door needs.
pub struct ProxyCtx {
    pub runtime: SharedSnapshot,
    pub shared: Arc<Shared>,
    pub lifecycle: Arc<Lifecycle>,
    /// The threads front-door connections run on.
    pub workers: Arc<crate::threads::Workers>,
}

impl ProxyCtx {
    pub fn new(
        runtime: SharedSnapshot,
        shared: Arc<Shared>,
        lifecycle: Arc<Lifecycle>,
        workers: Arc<crate::threads::Workers>,
    ) -> Arc<ProxyCtx> {
        Arc::new(ProxyCtx {
            runtime,
            shared,
            lifecycle,
            workers,
        })
    }
}
