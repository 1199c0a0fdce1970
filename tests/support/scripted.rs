//! A raw TCP backend on 127.0.0.1:0 that runs a per-test script on every connection it accepts,
//! for the behaviours that need exact bytes or a misbehaving backend: stray bytes after an answer,
//! a wrong `101`, a backend that never reads. Every request a script reads is logged with the
//! number of the connection it came on (1, 2, ... in accept order), so a test can tell whether a
//! connection was reused. Dropping it stops the listener and every connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The connection it came on, numbered in accept order from 1.
    pub conn: usize,
    /// The head, request line to the empty line, exactly as received.
    pub head: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or_default()
    }

    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    /// Every value of a header (any case spelling of its name).
    pub fn all(&self, name: &str) -> Vec<&str> {
        header_values(&self.head, name)
    }
}

/// Every value of a header in a raw head (request or response), any case spelling of its name.
pub fn header_values<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// A backend-side connection handed to the script.
pub struct Conn {
    pub index: usize,
    pub tcp: TcpStream,
    /// Bytes read and not yet consumed as a request.
    pub buf: Vec<u8>,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Conn {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.tcp.read(&mut chunk).await {
            Ok(n) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next head (up to CRLFCRLF), without its body; `None` if the peer closed first.
    pub async fn read_head(&mut self) -> Option<String> {
        loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..p + 4]).into_owned();
                self.buf.drain(..p + 4);
                return Some(head);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next request: its head and a `Content-Length` body (none without one). Logged.
    pub async fn read_request(&mut self) -> Option<Request> {
        let head = self.read_head().await?;
        let mut req = Request {
            conn: self.index,
            head,
            body: Vec::new(),
        };
        let len: usize = req
            .all("content-length")
            .first()
            .map(|v| v.parse().expect("numeric Content-Length"))
            .unwrap_or(0);
        while self.buf.len() < len {
            if !self.fill().await {
                return None;
            }
        }
        req.body = self.buf.drain(..len).collect();
        self.log.lock().unwrap().push(req.clone());
        Some(req)
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// Everything that arrives until the peer closes (EOF or reset), buffered bytes included.
    pub async fn drain(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

/// A complete `200` answer with a `Content-Length` body.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

pub struct Scripted {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl Scripted {
    /// Listens and runs `script` on every accepted connection, each in its own task.
    pub async fn start<F, Fut>(script: F) -> Scripted
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let (log2, conns2) = (log.clone(), conns.clone());
        let accepted = AtomicUsize::new(0);
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = Conn {
                    index: accepted.fetch_add(1, Ordering::SeqCst) + 1,
                    tcp,
                    buf: Vec::new(),
                    log: log2.clone(),
                };
                conns2.lock().unwrap().spawn(script(conn));
            }
        });
        Scripted {
            addr,
            log,
            accept,
            conns,
        }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Every request read so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.accept.abort();
        self.conns.lock().unwrap().abort_all();
    }
}

/// A scripted backend `node1` and a front door over it (`frontdoor_config` extras).
pub async fn frontdoor<F, Fut>(
    script: F,
    pool_extra: &str,
    frontend_extra: &str,
) -> (Scripted, qlik_lb::app::Instance)
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let backend = Scripted::start(script).await;
    let cfg = super::frontdoor_config(
        &[("node1", backend.addr_string())],
        pool_extra,
        frontend_extra,
    );
    let lb = super::start(&cfg).await;
    (backend, lb)
}
