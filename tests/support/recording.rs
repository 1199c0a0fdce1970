//! A recording backend on 127.0.0.1:0: it keeps every byte it receives, per connection, reads
//! the requests with the strict reference parser (`strict.rs`) and answers each with
//! `200 OK`, `X-Seen: <n>` and a body naming what it parsed, so a test can match the answers a
//! client got with the requests the backend read. Bytes the strict parser refuses are recorded
//! as an error and the connection is closed.

use super::strict::{self, Request, StrictError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A request the backend parsed, numbered in the order parsed (over all connections).
#[derive(Debug, Clone)]
pub struct Seen {
    pub seq: usize,
    pub conn: usize,
    pub req: Request,
}

/// Everything one backend connection received.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    pub bytes: Vec<u8>,
    pub requests: Vec<Seen>,
    /// The strict parser refused what came after the parsed requests.
    pub error: Option<StrictError>,
    /// The peer (the front door) closed or reset the connection.
    pub eof: bool,
    /// The recorder closed it (after a parse error or with `close_after_answer`).
    pub closed_by_us: bool,
    /// A 101 was sent: later bytes are recorded, not parsed.
    pub upgraded: bool,
}

impl ConnLog {
    pub fn closed(&self) -> bool {
        self.eof || self.closed_by_us
    }
}

pub type Script = Arc<dyn Fn(&Seen) -> Vec<u8> + Send + Sync>;

#[derive(Clone, Default)]
pub struct Options {
    /// Answer 101 to a valid WebSocket handshake, then only record.
    pub upgrade: bool,
    /// Answer with these bytes instead of `normal_answer` (a 101 stops the parsing).
    pub script: Option<Script>,
    /// Close the connection after each answer (without saying so).
    pub close_after_answer: bool,
}

/// `200 OK` with `X-Seen: <seq>` and a body naming the request line and body size.
pub fn normal_answer(s: &Seen) -> Vec<u8> {
    let body = format!(
        "seen {} on conn {}: {} (body {} bytes)",
        s.seq,
        s.conn,
        s.req.line_text(),
        s.req.body.len()
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Seen: {}\r\n\r\n{body}",
        body.len(),
        s.seq
    )
    .into_bytes()
}

fn websocket_answer(s: &Seen) -> Option<Vec<u8>> {
    let r = &s.req;
    let upgrade = r.header("upgrade")?;
    if !upgrade.eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let key = r.header("sec-websocket-key")?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    Some(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nX-Seen: {}\r\n\r\n",
            s.seq
        )
        .into_bytes(),
    )
}

#[derive(Default)]
struct Inner {
    conns: Mutex<Vec<ConnLog>>,
    opts: Mutex<Options>,
    next_seq: AtomicUsize,
    /// Reader tasks holding bytes they have not finished with.
    busy: AtomicUsize,
    /// Open connections' sockets, for `settle` to look at their receive queues.
    fds: Mutex<HashMap<usize, RawFd>>,
}

pub struct Recorder {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    listener_fd: RawFd,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Where the recorder was at one moment; see `Recorder::since`.
#[derive(Debug, Clone)]
pub struct Mark {
    per_conn: Vec<(usize, usize, bool)>,
}

/// What arrived after a `Mark`.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// Requests parsed since the mark, in order.
    pub requests: Vec<Seen>,
    /// Parse errors since the mark: `(conn, error, every byte that connection received)`.
    pub errors: Vec<(usize, StrictError, Vec<u8>)>,
    /// Bytes received since the mark, per connection that received any.
    pub bytes: Vec<(usize, Vec<u8>)>,
}

impl Delta {
    pub fn byte_count(&self) -> usize {
        self.bytes.iter().map(|(_, b)| b.len()).sum()
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        Recorder::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let listener_fd = listener.as_raw_fd();
        let inner = Arc::new(Inner::default());
        *inner.opts.lock().unwrap() = opts;
        let state = inner.clone();
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tcp.set_nodelay(true).ok();
                let id = {
                    let mut conns = state.conns.lock().unwrap();
                    conns.push(ConnLog::default());
                    conns.len() - 1
                };
                state.fds.lock().unwrap().insert(id, tcp.as_raw_fd());
                tokio::spawn(serve(state.clone(), id, tcp));
            }
        });
        Recorder {
            addr,
            inner,
            listener_fd,
            accept,
        }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn set(&self, opts: Options) {
        *self.inner.opts.lock().unwrap() = opts;
    }

    pub fn conns(&self) -> Vec<ConnLog> {
        self.inner.conns.lock().unwrap().clone()
    }

    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().unwrap().len()
    }

    /// Every request parsed so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        let mut all: Vec<Seen> = self.conns().into_iter().flat_map(|c| c.requests).collect();
        all.sort_by_key(|s| s.seq);
        all
    }

    /// The request answered with `X-Seen: seq`.
    pub fn seen(&self, seq: usize) -> Option<Seen> {
        self.requests().into_iter().find(|s| s.seq == seq)
    }

    pub fn mark(&self) -> Mark {
        let conns = self.inner.conns.lock().unwrap();
        Mark {
            per_conn: conns
                .iter()
                .map(|c| (c.bytes.len(), c.requests.len(), c.error.is_some()))
                .collect(),
        }
    }

    pub fn since(&self, mark: &Mark) -> Delta {
        let conns = self.inner.conns.lock().unwrap();
        let mut d = Delta::default();
        for (id, c) in conns.iter().enumerate() {
            let (bytes, reqs, had_error) = mark.per_conn.get(id).copied().unwrap_or_default();
            if c.bytes.len() > bytes {
                d.bytes.push((id, c.bytes[bytes..].to_vec()));
            }
            d.requests.extend(c.requests[reqs..].iter().cloned());
            if let (Some(e), false) = (&c.error, had_error) {
                d.errors.push((id, e.clone(), c.bytes.clone()));
            }
        }
        d.requests.sort_by_key(|s| s.seq);
        d
    }

    /// Waits (at most `secs`) until everything the kernel holds for the recorder is read and
    /// handled: no connection waiting to be accepted, no unread bytes, no reader mid-work. On
    /// loopback a byte the proxy has written is already in these queues, so once the proxy is
    /// done with a client, `settle` means the recorder has seen all of it.
    pub async fn settle(&self, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut idle_in_a_row = 0;
        while idle_in_a_row < 2 {
            if self.idle() {
                idle_in_a_row += 1;
            } else {
                idle_in_a_row = 0;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "recorder not idle in {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn idle(&self) -> bool {
        if self.inner.busy.load(Ordering::SeqCst) > 0 || readable(self.listener_fd) {
            return false;
        }
        let fds = self.inner.fds.lock().unwrap();
        fds.values().all(|fd| unread(*fd) == 0)
    }
}

fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

fn unread(fd: RawFd) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int; a closed fd only makes the call fail.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc < 0 {
        0
    } else {
        n
    }
}

async fn serve(state: Arc<Inner>, id: usize, mut tcp: TcpStream) {
    let mut unparsed: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut close = false;
    while !close {
        if tcp.readable().await.is_err() {
            break;
        }
        // Counted before the bytes leave the kernel queue, so `settle` never sees neither.
        state.busy.fetch_add(1, Ordering::SeqCst);
        let n = match tcp.try_read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                state.busy.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            Err(_) => 0,
        };
        if n == 0 {
            state.conns.lock().unwrap()[id].eof = true;
            state.busy.fetch_sub(1, Ordering::SeqCst);
            break;
        }
        let upgraded = {
            let mut conns = state.conns.lock().unwrap();
            conns[id].bytes.extend_from_slice(&chunk[..n]);
            conns[id].upgraded
        };
        if !upgraded {
            unparsed.extend_from_slice(&chunk[..n]);
            close = answer_all(&state, id, &mut unparsed, &mut tcp).await;
        }
        state.busy.fetch_sub(1, Ordering::SeqCst);
    }
    state.fds.lock().unwrap().remove(&id);
    if close {
        state.conns.lock().unwrap()[id].closed_by_us = true;
    }
    drop(tcp);
}

/// Answers every complete request in `unparsed`; true when the connection is to be closed.
async fn answer_all(state: &Inner, id: usize, unparsed: &mut Vec<u8>, tcp: &mut TcpStream) -> bool {
    loop {
        let req = match strict::parse_one(unparsed) {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                let mut conns = state.conns.lock().unwrap();
                let offset = conns[id].bytes.len() - unparsed.len();
                conns[id].error = Some(StrictError {
                    at: offset + e.at,
                    why: e.why,
                });
                return true;
            }
        };
        unparsed.drain(..req.raw.len());
        let opts = state.opts.lock().unwrap().clone();
        let seen = Seen {
            seq: state.next_seq.fetch_add(1, Ordering::SeqCst),
            conn: id,
            req,
        };
        let answer = match (&opts.script, opts.upgrade) {
            (Some(script), _) => script(&seen),
            (None, true) => websocket_answer(&seen).unwrap_or_else(|| normal_answer(&seen)),
            (None, false) => normal_answer(&seen),
        };
        let upgraded = answer.starts_with(b"HTTP/1.1 101");
        {
            let mut conns = state.conns.lock().unwrap();
            conns[id].requests.push(seen);
            conns[id].upgraded = upgraded;
        }
        if tcp.write_all(&answer).await.is_err() {
            return true;
        }
        if opts.close_after_answer {
            return true;
        }
        if upgraded {
            return false;
        }
    }
}
