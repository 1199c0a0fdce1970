//! One simulated Qlik node (engine + QPS) on one port, and a handle to steer it in-process.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::{self, NodeStatus};
use super::engine::{Engine, HealthReport};
use super::qps::SessionBook;
use super::serve::serve_connection;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("node {0} has stopped")]
    Stopped(String),
}

type AcceptCommand = (bool, oneshot::Sender<Result<(), SimError>>);

/// Opens and closes a node's listening socket from outside the accept loop.
pub(crate) struct AcceptSwitch {
    node_id: String,
    accepting: AtomicBool,
    commands: mpsc::Sender<AcceptCommand>,
}

impl AcceptSwitch {
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Returns once the listener is closed (new connections refused) or listening again.
    pub(crate) async fn set(&self, accepting: bool) -> Result<(), SimError> {
        let stopped = || SimError::Stopped(self.node_id.clone());
        let (ack, done) = oneshot::channel();
        self.commands
            .send((accepting, ack))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }
}

/// What the connections of one node share.
pub(crate) struct NodeInner {
    pub(crate) id: String,
    pub(crate) engine: Arc<Engine>,
    pub(crate) sessions: SessionBook,
    pub(crate) accept: AcceptSwitch,
}

pub struct SimNode;

impl SimNode {
    /// Starts serving on `listener` until the handle is shut down or dropped.
    pub async fn start(id: &str, listener: TcpListener) -> io::Result<SimNodeHandle> {
        let addr = listener.local_addr()?;
        let (commands, command_rx) = mpsc::channel(4);
        let inner = Arc::new(NodeInner {
            id: id.to_string(),
            engine: Arc::new(Engine::new()),
            sessions: SessionBook::default(),
            accept: AcceptSwitch {
                node_id: id.to_string(),
                accepting: AtomicBool::new(true),
                commands,
            },
        });
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            listener,
            addr,
            Arc::clone(&inner),
            command_rx,
            stop.clone(),
            tracker.clone(),
        ));
        Ok(SimNodeHandle {
            inner,
            addr,
            stop,
            tracker,
        })
    }
}

/// Binds `n` nodes `node1..nodeN` on `bind`, on `base_port..base_port+n-1` or on ephemeral ports.
pub async fn start_nodes(
    n: u16,
    bind: IpAddr,
    base_port: Option<u16>,
) -> Result<Vec<SimNodeHandle>, SimError> {
    let mut nodes = Vec::with_capacity(usize::from(n));
    for i in 0..n {
        let port = match base_port {
            Some(base) => base.checked_add(i).ok_or_else(|| SimError::Listen {
                addr: SocketAddr::new(bind, base),
                source: io::Error::new(io::ErrorKind::InvalidInput, "port range passes 65535"),
            })?,
            None => 0,
        };
        let addr = SocketAddr::new(bind, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Listen { addr, source })?;
        let node = SimNode::start(&format!("node{}", i + 1), listener)
            .await
            .map_err(|source| SimError::Listen { addr, source })?;
        nodes.push(node);
    }
    Ok(nodes)
}

/// Owns a running node: dropping it stops the node.
pub struct SimNodeHandle {
    inner: Arc<NodeInner>,
    addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl SimNodeHandle {
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_cpu(&self, percent: f64) {
        self.inner.engine.update_knobs(|k| k.cpu = percent);
    }

    pub fn set_memory_free_mb(&self, free_mb: f64) {
        self.inner
            .engine
            .update_knobs(|k| k.memory_free_mb = free_mb);
    }

    /// Forces the reported `saturated` flag (otherwise derived from CPU and memory).
    pub fn set_saturated(&self, saturated: bool) {
        self.inner
            .engine
            .update_knobs(|k| k.saturated = Some(saturated));
    }

    /// Delay added before every answer except the control API's.
    pub fn set_latency(&self, latency: Duration) {
        self.inner.engine.update_knobs(|k| k.latency = latency);
    }

    /// Every answer except the control API's becomes a 500.
    pub fn set_fail(&self, fail: bool) {
        self.inner.engine.update_knobs(|k| k.fail = fail);
    }

    /// `false` closes the listening socket (new connections are refused, open ones go on);
    /// `true` listens again on the same address. Returns once in effect.
    pub async fn set_accepting(&self, accepting: bool) -> Result<(), SimError> {
        self.inner.accept.set(accepting).await
    }

    /// QIX WebSockets open on this node right now.
    pub fn open_websockets(&self) -> u64 {
        self.inner.engine.open_sessions()
    }

    /// What `/engine/healthcheck` would answer now.
    pub fn health(&self) -> HealthReport {
        self.inner.engine.health()
    }

    /// What `GET /__sim/control` would answer now.
    pub fn status(&self) -> NodeStatus {
        control::status(&self.inner)
    }

    /// Stops accepting, closes every connection and WebSocket, and waits for them to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for SimNodeHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    node: Arc<NodeInner>,
    mut commands: mpsc::Receiver<AcceptCommand>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut listener = Some(listener);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            command = commands.recv() => {
                let Some((accepting, ack)) = command else { return };
                let result = switch_listener(&mut listener, accepting, addr);
                if result.is_ok() {
                    node.accept.accepting.store(accepting, Ordering::SeqCst);
                }
                let _ = ack.send(result);
            }
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(stream) => {
                    tracker.spawn(serve_connection(stream, Arc::clone(&node), stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(node = %node.id, error = %e, "simulated node cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

fn switch_listener(
    listener: &mut Option<TcpListener>,
    accepting: bool,
    addr: SocketAddr,
) -> Result<(), SimError> {
    if !accepting {
        // Dropping the socket makes the kernel refuse new connections at once.
        *listener = None;
        return Ok(());
    }
    if listener.is_none() {
        *listener = Some(rebind(addr).map_err(|source| SimError::Listen { addr, source })?);
    }
    Ok(())
}

fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
