//! One single-threaded runtime per core for front-door connections, as HAProxy runs one thread
//! per core: a connection, its backend connection and its tunnel stay on the thread that got
//! them, with their own timers and idle pool, instead of being handed between the workers of a
//! shared runtime. Listeners accept on the instance's runtime and deal connections out in turn,
//! so each worker gets an even share of them.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Workers look for I/O readiness after every 8 tasks rather than tokio's default 61, since a
/// proxy's tasks are tiny.
const EVENT_INTERVAL: u32 = 8;

thread_local! {
    /// 1-based index of the worker running on this thread; 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Worker threads an instance starts: one per core.
pub fn worker_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_WORKERS)
    })
}

const MAX_WORKERS: usize = 64;

/// Slots for per-worker state: one per worker, plus slot 0 for every other thread.
pub fn slot_count() -> usize {
    worker_count() + 1
}

/// This thread's slot in per-worker state.
pub fn current_slot() -> usize {
    WORKER.with(Cell::get)
}

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `worker_count()` threads, each running its own current-thread runtime until `stop`.
    pub fn start() -> std::io::Result<Arc<Workers>> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(worker_count());
        for index in 1..=worker_count() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .event_interval(EVENT_INTERVAL)
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("qlb-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(index));
                    rt.block_on(stop.cancelled());
                })?;
        }
        Ok(Arc::new(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
        }))
    }

    /// Runs `task` on the next worker in turn.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }

    /// Ends the worker threads; tasks still on them are dropped.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Tasks on a worker hold what they need (and so these workers) until they end: the last one
/// gone, the threads go too.
impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A listening socket polled on the instance's runtime whose accepted sockets are not tied to
/// it, so a worker can register them with its own runtime. mio accepts with `accept4`, so a
/// socket comes out non-blocking without a second system call.
pub struct Acceptor {
    fd: AsyncFd<mio::net::TcpListener>,
}

impl Acceptor {
    pub fn new(listener: tokio::net::TcpListener) -> std::io::Result<Acceptor> {
        let listener = mio::net::TcpListener::from_std(listener.into_std()?);
        // SAFETY: the listener owns its descriptor and is moved into the AsyncFd, which keeps it
        // open, unchanged, until the registration is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Acceptor { fd })
    }

    /// The next connection, non-blocking and with `TCP_NODELAY` set.
    pub async fn accept(&self) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            if let Ok(accepted) = ready.try_io(|l| l.get_ref().accept()) {
                let (tcp, peer) = accepted?;
                let _ = tcp.set_nodelay(true);
                return Ok((tcp.into(), peer));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn tasks_are_dealt_to_every_worker_in_turn() {
        let workers = Workers::start().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..3 * worker_count() {
            let tx = tx.clone();
            workers.spawn(async move {
                let name = std::thread::current().name().map(str::to_string);
                tx.send((name, current_slot())).unwrap();
            });
        }
        let mut per_worker: HashMap<usize, usize> = HashMap::new();
        for _ in 0..3 * worker_count() {
            let (name, slot) = rx.recv().await.unwrap();
            assert_eq!(name, Some(format!("qlb-worker-{slot}")));
            *per_worker.entry(slot).or_default() += 1;
        }
        assert_eq!(per_worker.len(), worker_count());
        assert!(per_worker.values().all(|&n| n == 3), "{per_worker:?}");
        assert_eq!(current_slot(), 0, "the test's own thread is not a worker");
    }

    #[tokio::test]
    async fn accepted_sockets_are_non_blocking_and_carry_on_another_runtime() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = Acceptor::new(listener).unwrap();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"ping").unwrap();
            let mut answer = [0u8; 4];
            c.read_exact(&mut answer).unwrap();
            answer
        });
        let (tcp, peer) = acceptor.accept().await.unwrap();
        assert_eq!(peer.ip(), addr.ip());
        // SAFETY: F_GETFL on a socket this test owns.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&tcp), libc::F_GETFL) };
        assert_ne!(
            flags & libc::O_NONBLOCK,
            0,
            "a read must never block the worker"
        );
        let workers = Workers::start().unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        workers.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
            let mut got = [0u8; 4];
            tcp.read_exact(&mut got).await.unwrap();
            tcp.write_all(b"pong").await.unwrap();
            let _ = done_tx.send(got);
        });
        assert_eq!(&done_rx.await.unwrap(), b"ping");
        assert_eq!(&client.join().unwrap(), b"pong");
    }
}
