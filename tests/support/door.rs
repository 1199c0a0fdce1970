//! A front door over one recording backend, and a client that sends exact bytes and reads the
//! answers without assuming the connection stays usable (for rows where the proxy may refuse
//! and close at any point).

use super::raw::Reply;
use super::recording::{Delta, Recorder};
use super::{frontdoor_config, start};
use qlik_lb::app::Instance;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Door {
    pub lb: Instance,
    pub rec: Recorder,
    pub addr: SocketAddr,
}

/// What one raw exchange gave: the client's answers and what the backend got meanwhile.
#[derive(Debug)]
pub struct Sent {
    pub replies: Vec<Reply>,
    /// The front door closed the client connection (EOF or reset) after those answers.
    pub closed: bool,
    pub backend: Delta,
}

impl Sent {
    /// The first answer that is not a 1xx.
    pub fn reply(&self) -> Option<&Reply> {
        self.replies
            .iter()
            .find(|r| r.status >= 200 || r.status == 101)
    }

    pub fn status(&self) -> Option<u16> {
        self.reply().map(|r| r.status)
    }

    /// The `X-Seen` numbers of the backend answers the client got, in order.
    pub fn seen(&self) -> Vec<usize> {
        self.replies
            .iter()
            .filter_map(|r| {
                r.header("x-seen")
                    .map(|v| v.parse().expect("X-Seen number"))
            })
            .collect()
    }
}

impl Door {
    /// With a short `header_timeout`, so a head the proxy waits on ends quickly (as a 408).
    pub async fn start() -> Door {
        Door::start_with("header_timeout = \"2s\"", "").await
    }

    pub async fn start_with(frontend_extra: &str, pool_extra: &str) -> Door {
        Door::start_edited(frontend_extra, pool_extra, |c| c).await
    }

    /// `start_with`, the config text passed through `edit` first.
    pub async fn start_edited(
        frontend_extra: &str,
        pool_extra: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Door {
        let rec = Recorder::start().await;
        let cfg = frontdoor_config(&[("node1", rec.addr_string())], pool_extra, frontend_extra);
        let lb = start(&edit(cfg)).await;
        let addr = lb.frontend_addr("public").expect("front door listener");
        Door { lb, rec, addr }
    }

    /// Sends `bytes` in one write on a new connection and reads one final answer (or a close).
    pub async fn send(&self, bytes: &[u8]) -> Sent {
        self.send_parts(&[bytes], 1).await
    }

    /// Sends the parts as separate writes, reads until `answers` final answers arrived or the
    /// connection closed, then lets the recorder catch up.
    pub async fn send_parts(&self, parts: &[&[u8]], answers: usize) -> Sent {
        self.send_parts_within(parts, answers, Duration::from_secs(10))
            .await
    }

    /// `send_parts`, giving up reading after `limit` (the connection is then dropped).
    pub async fn send_parts_within(
        &self,
        parts: &[&[u8]],
        answers: usize,
        limit: Duration,
    ) -> Sent {
        let mark = self.rec.mark();
        let mut s = TcpStream::connect(self.addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        for p in parts {
            if s.write_all(p).await.is_err() {
                break;
            }
        }
        let mut client = Client::new(s);
        let (replies, mut closed) = client.read_answers(answers, limit).await;
        // An answer of the proxy's own is followed by a close when the table says so.
        if !closed && replies.last().is_some_and(|r| r.header("x-seen").is_none()) {
            closed = client.closes_within(5).await;
        }
        drop(client);
        self.rec.settle(5).await;
        Sent {
            replies,
            closed,
            backend: self.rec.since(&mark),
        }
    }
}

/// A client connection reading answers by hand.
pub struct Client {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    pub eof: bool,
}

impl Client {
    pub fn new(s: TcpStream) -> Client {
        Client {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// One answer, 1xx included; `None` if the connection ended first.
    pub async fn next_reply(&mut self) -> Option<Reply> {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if status < 200 || status == 204 || status == 304 {
            return Some(reply);
        }
        if let Some(len) = reply.header("content-length") {
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if !self.fill().await {
                    return None;
                }
            }
            reply.body = self.buf.drain(..len).collect();
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            reply.body = self.chunked_body().await?;
        } else {
            while self.fill().await {}
            reply.body = std::mem::take(&mut self.buf);
        }
        Some(reply)
    }

    async fn chunked_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                if !self.fill().await {
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailer section: lines up to an empty one.
                loop {
                    let p = loop {
                        if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            break p;
                        }
                        if !self.fill().await {
                            return None;
                        }
                    };
                    self.buf.drain(..p + 2);
                    if p == 0 {
                        return Some(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads answers until `finals` non-1xx ones arrived or the connection ended (within
    /// `limit`); returns them (1xx included) and whether the connection ended.
    pub async fn read_answers(&mut self, finals: usize, limit: Duration) -> (Vec<Reply>, bool) {
        let mut out = Vec::new();
        let read = async {
            let mut got = 0;
            while got < finals {
                match self.next_reply().await {
                    Some(r) => {
                        if r.status >= 200 || r.status == 101 {
                            got += 1;
                        }
                        out.push(r);
                    }
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(limit, read).await;
        (out, self.eof)
    }

    /// Whether the peer closes the connection within `secs` (reading and dropping any bytes).
    pub async fn closes_within(&mut self, secs: u64) -> bool {
        let wait = async { while self.fill().await {} };
        tokio::time::timeout(Duration::from_secs(secs), wait)
            .await
            .is_ok()
    }
}
