//! HTTP/1.1 message heads parsed with httparse, keeping byte offsets into the raw head so that
//! everything not rewritten is forwarded byte-for-byte (name case, order, values), and the
//! framing rules both directions share (RFC 9112 §6.3). What only requests must satisfy
//! (PRODUCT.md §3.1) is `request_head.rs`; what only responses must satisfy, `backend_head.rs`.

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

/// What reading a request decided beyond its framing (set by `request_head.rs`).
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// A valid WebSocket handshake (RFC 6455 §4.1): the only upgrade that is forwarded.
    pub websocket: bool,
    /// Absolute-form target: the authority that replaces `Host`; `target` is then the path.
    pub authority: Option<Range<usize>>,
    /// Content-Length came repeated with equal values: forward it once.
    pub repeated_length: bool,
    /// `Expect: 100-continue` on a request with a body: the proxy answers the 100 itself.
    pub expect_continue: bool,
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
    pub request: RequestFacts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP, bad request line, bad header syntax.
    Malformed(&'static str),
    /// Ambiguous or invalid message framing.
    Framing(&'static str),
    TooManyHeaders,
    /// A method the front door never forwards (CONNECT).
    Method(&'static str),
    /// An expectation other than 100-continue.
    Expectation,
}

impl HeadError {
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Malformed(r) | HeadError::Framing(r) | HeadError::Method(r) => r,
            HeadError::TooManyHeaders => "too many header lines",
            HeadError::Expectation => "an expectation other than 100-continue",
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

    /// The non-empty elements of every line of a comma-separated header (e.g. Connection).
    pub fn tokens<'a>(&'a self, lower_name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.values(lower_name)
            .flat_map(|v| v.split(|b| *b == b','))
            .map(trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether a comma-separated header (e.g. Connection) holds `token`.
    pub fn has_token(&self, lower_name: &str, token: &str) -> bool {
        self.tokens(lower_name)
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
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

pub(super) fn offset(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// How far a head has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadScan {
    /// Complete: the index just past its CRLFCRLF.
    Complete(usize),
    /// A line of it ends in a bare LF: a head with two readings (RFC 9112 §2.2 allows a
    /// recipient to accept it, and some backends do), so it is refused, never normalised.
    BareLf,
    Partial,
}

/// Scans `buf` for the end of a head, resuming at `from` (where the last scan stopped).
pub fn scan_head(buf: &[u8], from: usize) -> HeadScan {
    let mut i = from.saturating_sub(3);
    while let Some(p) = buf[i..].iter().position(|b| *b == b'\n') {
        let lf = i + p;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return HeadScan::BareLf;
        }
        if lf >= 3 && &buf[lf - 3..=lf] == b"\r\n\r\n" {
            return HeadScan::Complete(lf + 1);
        }
        i = lf + 1;
    }
    HeadScan::Partial
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

/// The Content-Length of a message: `Ok(None)` when absent; a list like "5, 5" or repeated
/// lines are one value repeated, anything differing is ambiguous. The flag says it repeated.
pub(super) fn content_length(head: &Head) -> Result<Option<(u64, bool)>, HeadError> {
    let mut length: Option<(u64, bool)> = None;
    for part in head
        .values("content-length")
        .flat_map(|v| v.split(|b| *b == b','))
    {
        let n = parse_len(part).ok_or(HeadError::Framing("invalid Content-Length"))?;
        length = match length {
            Some((prev, _)) if prev != n => {
                return Err(HeadError::Framing("differing Content-Length values"))
            }
            Some(_) => Some((n, true)),
            None => Some((n, false)),
        };
    }
    Ok(length)
}

/// The framing of a message whose transfer codings (`te`: present) the caller found acceptable.
pub(super) fn body_framing(
    head: &Head,
    te: bool,
    length: Option<u64>,
) -> Result<Option<Framing>, HeadError> {
    match (te, length) {
        (true, Some(_)) => Err(HeadError::Framing(
            "both Content-Length and Transfer-Encoding",
        )),
        (true, None) if head.version_minor == 0 => Err(HeadError::Framing(
            "Transfer-Encoding in an HTTP/1.0 message",
        )),
        (true, None) => Ok(Some(Framing::Chunked)),
        (false, Some(n)) => Ok(Some(Framing::Length(n))),
        (false, None) => Ok(None),
    }
}

pub(super) fn wants_close(head: &Head) -> bool {
    if head.version_minor == 0 {
        !head.has_token("connection", "keep-alive")
    } else {
        head.has_token("connection", "close")
    }
}

pub(super) fn parsed(status: httparse::Result<usize>, what: &'static str) -> Result<(), HeadError> {
    match status {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(_) => Err(HeadError::Malformed(what)),
    }
}

impl Head {
    pub(super) fn new(
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
            request: RequestFacts::default(),
        }
    }

    /// Builds a head from httparse's headers (`raw` holds a complete head).
    pub(super) fn from_parsed(
        raw: &Bytes,
        parsed: &[httparse::Header<'_>],
        version_minor: u8,
        method: Range<usize>,
        target: Range<usize>,
        status: u16,
    ) -> Head {
        let headers = collect_headers(raw, parsed);
        Head::new(raw.clone(), headers, version_minor, method, target, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_the_end_and_refuses_bare_lf() {
        let ok = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\n";
        assert_eq!(scan_head(ok, 0), HeadScan::Complete(ok.len() - 5));
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\nHo", 0), HeadScan::Partial);
        for bad in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"\nGET / HTTP/1.1\r\n",
        ] {
            assert_eq!(scan_head(bad, 0), HeadScan::BareLf, "{bad:?}");
        }
        // Resuming a scan sees a CRLFCRLF split across reads.
        let split = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            scan_head(split, split.len() - 2),
            HeadScan::Complete(split.len())
        );
    }
}
