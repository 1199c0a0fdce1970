//! A small HTTP/1.1 server side for the simulated nodes.
//!
//! The simulator parses requests itself (with `httparse`) rather than through hyper so that the
//! echo endpoint can report header names in their received case and order, duplicates included:
//! that is what lets front-door tests check forwarding byte for byte.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head accepted (QPS allows 16 KiB of headers; leave room for the request line).
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
const MAX_CHUNK_LINE: usize = 4096;
/// Bytes of a request body kept in memory; the rest is read and counted only.
pub const KEPT_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("request head larger than {MAX_HEAD_BYTES} bytes or more than {MAX_HEADERS} headers")]
    HeadTooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("no request within the keep-alive timeout")]
    Idle,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// The status to answer before closing, when the client can still be told.
    pub fn status(&self) -> Option<u16> {
        match self {
            WireError::HeadTooLarge => Some(431),
            WireError::Malformed(_) => Some(400),
            WireError::Truncated | WireError::Idle | WireError::Io(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target exactly as received (path and query).
    pub target: String,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names and values as received, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The first `KEPT_BODY_BYTES` of the body.
    pub body: Vec<u8>,
    /// The whole body length, kept or not.
    pub body_len: u64,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether a comma-separated header (any occurrence) lists `token`, case-insensitively.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn wants_close(&self) -> bool {
        if self.minor_version == 0 {
            return !self.header_has_token("connection", "keep-alive");
        }
        self.header_has_token("connection", "close")
    }

    pub fn is_websocket_upgrade(&self) -> bool {
        self.method == "GET"
            && self.header_has_token("connection", "upgrade")
            && self.header_has_token("upgrade", "websocket")
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(body)
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body.into().into_bytes())
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        302 => "Found",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// One client connection: a socket and the bytes read from it but not yet consumed.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Reads the next request. `Ok(None)` when the client closed between requests.
    pub async fn read_request(&mut self, idle: Duration) -> Result<Option<Request>, WireError> {
        let head = match tokio::time::timeout(idle, self.read_head()).await {
            Ok(head) => head?,
            Err(_) => return Err(WireError::Idle),
        };
        let Some(mut request) = head else {
            return Ok(None);
        };
        let framing = framing(&request)?;
        if !matches!(framing, Framing::None) && request.header_has_token("expect", "100-continue") {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        match framing {
            Framing::None => {}
            Framing::Length(len) => self.read_body_bytes(len, &mut request).await?,
            Framing::Chunked => self.read_chunked(&mut request).await?,
        }
        Ok(Some(request))
    }

    async fn fill(&mut self) -> Result<usize, WireError> {
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    async fn read_head(&mut self) -> Result<Option<Request>, WireError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let request = Request {
                        method: parsed.method.unwrap_or_default().to_string(),
                        target: parsed.path.unwrap_or_default().to_string(),
                        minor_version: parsed.version.unwrap_or(1),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), h.value.to_vec()))
                            .collect(),
                        body: Vec::new(),
                        body_len: 0,
                    };
                    self.buf.advance(len);
                    return Ok(Some(request));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
                Err(e) => return Err(WireError::Malformed(e.to_string())),
            }
            if self.buf.len() >= MAX_HEAD_BYTES {
                return Err(WireError::HeadTooLarge);
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated)
                };
            }
        }
    }

    async fn read_body_bytes(
        &mut self,
        mut remaining: u64,
        request: &mut Request,
    ) -> Result<(), WireError> {
        while remaining > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(WireError::Truncated);
            }
            let take = self
                .buf
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let room = KEPT_BODY_BYTES.saturating_sub(request.body.len()).min(take);
            request.body.extend_from_slice(&self.buf[..room]);
            self.buf.advance(take);
            request.body_len += take as u64;
            remaining -= take as u64;
        }
        Ok(())
    }

    async fn read_line(&mut self) -> Result<String, WireError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.advance(end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_CHUNK_LINE {
                return Err(WireError::Malformed("chunk line too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(WireError::Truncated);
            }
        }
    }

    async fn read_chunked(&mut self, request: &mut Request) -> Result<(), WireError> {
        loop {
            let line = self.read_line().await?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| WireError::Malformed(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers end with an empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(());
            }
            self.read_body_bytes(size, request).await?;
            if !self.read_line().await?.is_empty() {
                return Err(WireError::Malformed("chunk not followed by CRLF".into()));
            }
        }
    }

    pub async fn write_response(
        &mut self,
        response: &Response,
        head_only: bool,
    ) -> std::io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            response.status,
            reason(response.status)
        );
        for (name, value) in &response.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if response.status != 101 {
            out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&response.body);
        }
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    /// The socket and any bytes the client already sent past the last request (after an upgrade).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf.to_vec())
    }
}

/// Rejects ambiguous framing rather than guessing, as a careful server must.
fn framing(request: &Request) -> Result<Framing, WireError> {
    let has_te = request
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    let lengths: Vec<&[u8]> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_slice())
        .collect();
    if has_te && !lengths.is_empty() {
        return Err(WireError::Malformed(
            "both Transfer-Encoding and Content-Length".into(),
        ));
    }
    if has_te {
        let te = request.header_str("transfer-encoding").unwrap_or("");
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if !last.eq_ignore_ascii_case("chunked") {
            return Err(WireError::Malformed(format!(
                "unsupported Transfer-Encoding {te:?}"
            )));
        }
        return Ok(Framing::Chunked);
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::None);
    };
    if lengths.iter().any(|l| l != first) {
        return Err(WireError::Malformed(
            "differing Content-Length headers".into(),
        ));
    }
    let len = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| WireError::Malformed("bad Content-Length".into()))?;
    Ok(if len == 0 {
        Framing::None
    } else {
        Framing::Length(len)
    })
}
