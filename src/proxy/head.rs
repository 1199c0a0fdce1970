//! Parsing HTTP/1.1 message heads with httparse, keeping byte offsets into the raw head so that
//! everything not rewritten is forwarded byte-for-byte (name case, order, values).
//!
//! Framing is decided here and ambiguity is refused (RFC 9112 §6.3): a request with both
//! Content-Length and Transfer-Encoding, differing Content-Lengths, or a transfer coding other
//! than a final `chunked` is a 400 and is never forwarded.

use bytes::Bytes;
use std::ops::Range;

/// Most header lines one head may carry; Qlik pages send well under 50.
pub const MAX_HEADERS: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length and no Transfer-Encoding on a request; HEAD/1xx/204/304 answers).
    Empty,
    Length(u64),
    Chunked,
    /// A response with no length: the body runs until the backend closes.
    UntilClose,
}

#[derive(Debug, Clone)]
pub struct Header {
    /// The whole line without CRLF.
    pub line: Range<usize>,
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// A parsed head; ranges point into `raw`.
#[derive(Debug, Clone)]
pub struct Head {
    pub raw: Bytes,
    /// Request: the request line; response: the status line (without CRLF).
    pub first_line: Range<usize>,
    pub headers: Vec<Header>,
    pub version_minor: u8,
    pub framing: Framing,
    /// The sender asked to close after this message (or spoke HTTP/1.0 without keep-alive).
    pub close: bool,
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub status: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP, bad request line, bad header syntax.
    Malformed(&'static str),
    /// Ambiguous or invalid message framing.
    Framing(&'static str),
    TooManyHeaders,
}

impl HeadError {
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Malformed(r) | HeadError::Framing(r) => r,
            HeadError::TooManyHeaders => "too many header lines",
        }
    }
}

impl Head {
    pub fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.raw[r.clone()]
    }

    pub fn method(&self) -> &[u8] {
        self.bytes(&self.method)
    }

    pub fn target(&self) -> &[u8] {
        self.bytes(&self.target)
    }

    pub fn name(&self, h: &Header) -> &[u8] {
        self.bytes(&h.name)
    }

    pub fn value(&self, h: &Header) -> &[u8] {
        self.bytes(&h.value)
    }

    /// Values of every header with this (lower-case) name.
    pub fn values<'a>(&'a self, lower_name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| self.name(h).eq_ignore_ascii_case(lower_name.as_bytes()))
            .map(move |h| self.value(h))
    }

    pub fn first<'a>(&'a self, lower_name: &'a str) -> Option<&'a [u8]> {
        self.values(lower_name).next()
    }

    /// Whether a comma-separated header (e.g. Connection) holds `token`.
    pub fn has_token(&self, lower_name: &str, token: &str) -> bool {
        self.values(lower_name)
            .flat_map(|v| v.split(|b| *b == b','))
            .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
    }

    pub fn is_websocket_upgrade(&self) -> bool {
        self.has_token("connection", "upgrade") && self.has_token("upgrade", "websocket")
    }
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn offset(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Where the head ends (index just past CRLFCRLF), if it is complete in `buf`.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 4)
}

fn collect_headers(raw: &[u8], parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|h| {
            let name = offset(raw, h.name.as_bytes());
            let value = offset(raw, h.value);
            // The line runs from the name to the end of the value (httparse trims trailing space).
            let line = name.start..value.end.max(name.end + 1);
            Header { line, name, value }
        })
        .collect()
}

fn parse_len(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Content-Length / Transfer-Encoding of a message, strictly.
fn body_framing(head: &Head) -> Result<Option<Framing>, HeadError> {
    let mut length: Option<u64> = None;
    for v in head.values("content-length") {
        // A list like "5, 5" is one value repeated; anything differing is ambiguous.
        for part in v.split(|b| *b == b',') {
            let n = parse_len(part).ok_or(HeadError::Framing("invalid Content-Length"))?;
            match length {
                Some(prev) if prev != n => {
                    return Err(HeadError::Framing("differing Content-Length values"))
                }
                _ => length = Some(n),
            }
        }
    }
    let mut te_seen = false;
    let mut last_coding: &[u8] = b"";
    for v in head.values("transfer-encoding") {
        te_seen = true;
        for coding in v.split(|b| *b == b',') {
            let c = trim(coding);
            if !c.is_empty() {
                last_coding = c;
            }
        }
    }
    match (te_seen, length) {
        (true, Some(_)) => Err(HeadError::Framing(
            "both Content-Length and Transfer-Encoding",
        )),
        (true, None) if head.version_minor == 0 => Err(HeadError::Framing(
            "Transfer-Encoding in an HTTP/1.0 message",
        )),
        (true, None) if last_coding.eq_ignore_ascii_case(b"chunked") => Ok(Some(Framing::Chunked)),
        (true, None) => Err(HeadError::Framing(
            "Transfer-Encoding without a final chunked",
        )),
        (false, Some(n)) => Ok(Some(Framing::Length(n))),
        (false, None) => Ok(None),
    }
}

fn wants_close(head: &Head) -> bool {
    if head.version_minor == 0 {
        !head.has_token("connection", "keep-alive")
    } else {
        head.has_token("connection", "close")
    }
}

fn parsed(status: httparse::Result<usize>, what: &'static str) -> Result<(), HeadError> {
    match status {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(_) => Err(HeadError::Malformed(what)),
    }
}

impl Head {
    fn new(
        raw: Bytes,
        headers: Vec<Header>,
        version_minor: u8,
        method: Range<usize>,
        target: Range<usize>,
        status: u16,
    ) -> Head {
        let line_end = raw.iter().position(|b| *b == b'\r').unwrap_or(0);
        Head {
            first_line: 0..line_end,
            headers,
            version_minor,
            framing: Framing::Empty,
            close: false,
            method,
            target,
            status,
            raw,
        }
    }
}

/// Parses a complete request head (`raw` ends with CRLFCRLF).
pub fn parse_request(raw: Bytes) -> Result<Head, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    parsed(req.parse(&raw), "malformed request head")?;
    let method = offset(&raw, req.method.unwrap_or_default().as_bytes());
    let path = req.path.unwrap_or_default();
    if !(path.starts_with('/')
        || path == "*"
        || path.starts_with("http://")
        || path.starts_with("https://"))
    {
        return Err(HeadError::Malformed("request target is not a path"));
    }
    let target = offset(&raw, path.as_bytes());
    let version_minor = req.version.unwrap_or(1);
    let headers = collect_headers(&raw, req.headers);
    let mut head = Head::new(raw, headers, version_minor, method, target, 0);
    let hosts = head.values("host").count();
    if hosts > 1 || (hosts == 0 && version_minor == 1) {
        return Err(HeadError::Malformed(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    head.framing = body_framing(&head)?.unwrap_or(Framing::Empty);
    head.close = wants_close(&head);
    Ok(head)
}

/// Parses a complete response head; `request_method` and the status decide whether a body follows.
pub fn parse_response(raw: Bytes, request_was_head: bool) -> Result<Head, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut storage);
    parsed(res.parse(&raw), "malformed response head")?;
    let status = res.code.unwrap_or(0);
    let version_minor = res.version.unwrap_or(1);
    let headers = collect_headers(&raw, res.headers);
    let mut head = Head::new(raw, headers, version_minor, 0..0, 0..0, status);
    let declared = body_framing(&head)?;
    head.framing =
        if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::Empty
        } else {
            declared.unwrap_or(Framing::UntilClose)
        };
    head.close = wants_close(&head) || head.framing == Framing::UntilClose;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Head, HeadError> {
        parse_request(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn plain_get_keeps_offsets() {
        let h = req("GET /a?b=1 HTTP/1.1\r\nHost: X\r\nCookie: a=1\r\n\r\n").unwrap();
        assert_eq!(h.method(), b"GET");
        assert_eq!(h.target(), b"/a?b=1");
        assert_eq!(h.first("cookie"), Some(&b"a=1"[..]));
        assert_eq!(h.bytes(&h.headers[1].line), b"Cookie: a=1");
        assert_eq!(h.framing, Framing::Empty);
        assert!(!h.close);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        assert!(matches!(
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::Framing(_))
        ));
        assert!(matches!(
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            Err(HeadError::Framing(_))
        ));
        assert!(matches!(
            req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HeadError::Framing(_))
        ));
        assert!(matches!(
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
            Err(HeadError::Framing(_))
        ));
        let same =
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .unwrap();
        assert_eq!(same.framing, Framing::Length(3));
    }

    #[test]
    fn malformed_heads_are_refused() {
        assert!(req("GARBAGE\r\n\r\n").is_err());
        assert!(req("GET / HTTP/1.1\r\n\r\n").is_err(), "no Host");
        assert!(req("GET nopath HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
    }

    #[test]
    fn websocket_upgrade_is_recognised() {
        let h = req("GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(h.is_websocket_upgrade());
    }

    #[test]
    fn response_framing() {
        let r = |s: &str, head| parse_response(Bytes::copy_from_slice(s.as_bytes()), head).unwrap();
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).framing,
            Framing::Length(5)
        );
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).framing,
            Framing::Empty
        );
        assert_eq!(
            r("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::Empty
        );
        let until_close = r("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(until_close.close);
        assert_eq!(
            r(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                false
            )
            .status,
            101
        );
    }
}
