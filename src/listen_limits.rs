//! Limits shared by the admin listener and the load balancing module (PRODUCT.md §3.1): fixed head
//! and body deadlines, a cap on open connections, and a back-off after a failed accept. Neither
//! listener has config keys for these; the front door's limits are its own and configurable.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::TokioTimer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// A request head (the first, or the next on a kept-alive connection) must be complete within
/// this, or the connection is closed.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A declared body must be complete within this after its head, or the answer is 408.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener. Past it, clients wait in the listen backlog instead of costing
/// a task and a descriptor each.
pub const MAX_CONNECTIONS: usize = 1024;

const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// An HTTP/1.1 server builder with the head deadline armed (hyper needs a timer for it).
pub fn http1() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    builder
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    #[error("the declared body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    TimedOut,
    #[error("reading the body failed: {0}")]
    Failed(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            BodyError::Failed(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// The whole body, at most `limit` bytes, within `BODY_TIMEOUT`: a client that declares a body
/// and stops sending must not hold the connection (and its cap permit) open.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Ok(Err(e)) => Err(BodyError::Failed(e.to_string())),
    }
}

/// Marks an answer as the connection's last. After a body error the rest of the body is unread,
/// so the connection cannot carry another request; saying so lets the client know why it ends.
pub fn closing<B>(mut resp: Response<B>) -> Response<B> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The pause after each failed accept: 50 ms doubling to 1 s, back to 50 ms after a success.
/// Failed accepts (out of descriptors, mostly) fail again at once; retrying without a pause spins.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl AcceptBackoff {
    /// The pause to take now; the next one is twice as long, up to the maximum.
    pub fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        pause
    }

    pub fn succeeded(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// Where a listener accepts: holds the connection cap and the accept back-off.
pub struct Gate {
    name: &'static str,
    cap: Arc<Semaphore>,
    backoff: AcceptBackoff,
}

impl Gate {
    pub fn new(name: &'static str) -> Gate {
        Gate::with_cap(name, MAX_CONNECTIONS)
    }

    fn with_cap(name: &'static str, cap: usize) -> Gate {
        Gate {
            name,
            cap: Arc::new(Semaphore::new(cap)),
            backoff: AcceptBackoff::default(),
        }
    }

    /// The next connection `accept` gives, with the permit its task must hold until it ends; no
    /// accept is tried while the cap is reached. `None` once `stop` is cancelled.
    pub async fn accept<T, F, Fut>(
        &mut self,
        stop: &CancellationToken,
        mut accept: F,
    ) -> Option<(T, OwnedSemaphorePermit)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<T>>,
    {
        let permit = tokio::select! {
            p = self.cap.clone().acquire_owned() => p.expect("the cap is never closed"),
            _ = stop.cancelled() => return None,
        };
        loop {
            let accepted = tokio::select! {
                a = accept() => a,
                _ = stop.cancelled() => return None,
            };
            match accepted {
                Ok(conn) => {
                    self.backoff.succeeded();
                    return Some((conn, permit));
                }
                Err(e) => {
                    let pause = self.backoff.failed();
                    tracing::warn!(listener = self.name, error = %e, pause_ms = pause.as_millis() as u64, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn backoff_doubles_from_50ms_to_1s_and_resets_on_success() {
        let mut b = AcceptBackoff::default();
        let ms: Vec<u128> = (0..7).map(|_| b.failed().as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn no_accept_is_tried_while_the_cap_is_reached() {
        let stop = CancellationToken::new();
        let mut gate = Gate::with_cap("test", 1);
        let tries = AtomicUsize::new(0);
        let accept = || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move { Ok(n) }
        };
        let (first, permit) = gate.accept(&stop, accept).await.unwrap();
        assert_eq!(first, 0);
        // With the only permit held, the gate waits on the cap before it calls `accept`.
        assert!(gate.accept(&stop, accept).now_or_never().is_none());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        drop(permit);
        let (second, _permit) = gate.accept(&stop, accept).now_or_never().unwrap().unwrap();
        assert_eq!(second, 1);
    }

    #[tokio::test]
    async fn failed_accepts_pause_and_a_success_resets_the_pause() {
        let stop = CancellationToken::new();
        let mut gate = Gate::with_cap("test", 1);
        let tries = AtomicUsize::new(0);
        let started = std::time::Instant::now();
        let (n, _permit) = gate
            .accept(&stop, || {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 | 1 => Err(std::io::Error::from_raw_os_error(libc::EMFILE)),
                        _ => Ok(n),
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(gate.backoff.next, BACKOFF_FIRST);
    }

    #[tokio::test]
    async fn stop_ends_the_wait_for_the_cap() {
        let stop = CancellationToken::new();
        let mut gate = Gate::with_cap("test", 0);
        stop.cancel();
        let accept = || async { Ok(()) };
        assert!(gate.accept(&stop, accept).await.is_none());
    }
}
