//! A small raw HTTP/1.1 client: exact bytes out, parsed status/headers/body back.

use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value our sticky cookie was set to, if any.
    pub fn route_cookie(&self) -> Option<String> {
        self.all("set-cookie")
            .into_iter()
            .find_map(|c| c.strip_prefix("QLB_ROUTE="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_string())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads one head (up to and including the empty line) and leaves what follows in `buf`; for
/// interim answers and for checking framing headers before trusting them to read a body.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> String {
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.expect("read head");
        assert!(
            n > 0,
            "connection closed before a full head: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).expect("ascii head");
    buf.drain(..end);
    head
}

/// Reads one response (head + body by Content-Length or chunked or until close).
pub async fn read_reply<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Reply {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.expect("read reply");
        assert!(
            n > 0,
            "connection closed before a full head: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ascii head");
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap();
        while buf.len() < len {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..len).collect()
    } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await.expect("read chunk");
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&buf[..line_end])
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await.expect("read chunk");
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break body;
            }
        }
    } else if status == 101 || status == 204 || status == 304 {
        Vec::new()
    } else {
        let mut rest = std::mem::take(buf);
        s.read_to_end(&mut rest).await.ok();
        rest
    };
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Reply {
    s.write_all(request).await.expect("write request");
    read_reply(s, buf).await
}

/// One GET on a new connection with extra header lines.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut buf = Vec::new();
    exchange(&mut s, &mut buf, req.as_bytes()).await
}

/// A new connection with `GET <path>` written that nothing answers (nor closes) within `quiet`:
/// the front door holds it in the backlog because its connection limit is reached. An absence
/// can only be observed for a while; `quiet` is far above an answer's loopback latency.
pub async fn unanswered_get(addr: SocketAddr, path: &str, quiet: std::time::Duration) -> TcpStream {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect via the backlog");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut probe = [0u8; 1];
    let peeked = tokio::time::timeout(quiet, s.peek(&mut probe)).await;
    assert!(
        peeked.is_err(),
        "the connection was served (or closed: {peeked:?}) while the limit was reached"
    );
    s
}
