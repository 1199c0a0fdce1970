//! A strict RFC 9112 request parser, the reference the front door's output is checked against.
//!
//! It is written by hand on purpose and shares nothing with `src/proxy` (no httparse either): a
//! reading the proxy gets wrong must not be repeated by the parser that judges it. It reads a
//! byte stream as a sequence of requests and refuses anything that has two readings, and, where
//! the front door's output never needs RFC leniency, is stricter than the RFC:
//! - every line ends in CRLF (no bare LF or CR), no obs-fold, no whitespace before a colon, no
//!   empty line before a request line;
//! - method and field names are tokens; field values hold no control bytes but HTAB;
//! - no CONNECT; the target is in origin form (`/...`), or `*` with OPTIONS;
//! - HTTP/1.1 needs exactly one `Host` (1.0 at most one), a URI authority without user info,
//!   with a numeric port if any, not empty, and no comma (a list has two readings);
//! - at most one `Content-Length` line, all digits; `Transfer-Encoding` only as one line saying
//!   `chunked`, never with `Content-Length`, never in HTTP/1.0;
//! - `Connection` may not name `Content-Length`, `Transfer-Encoding` or `Host`;
//! - chunk sizes are 1 to 15 hex digits, extensions follow
//!   `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, and the trailer section
//!   is empty.

mod chunked;

use chunked::chunked;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictError {
    /// Offset into the buffer given to the parser.
    pub at: usize,
    pub why: String,
}

fn err<T>(at: usize, why: impl Into<String>) -> Result<T, StrictError> {
    Err(StrictError {
        at,
        why: why.into(),
    })
}

#[derive(Debug, Clone)]
pub struct Request {
    /// The request line without CRLF.
    pub request_line: Vec<u8>,
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// `(name as sent, value without surrounding OWS)` in order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The head as received, CRLFCRLF included.
    pub head: Vec<u8>,
    /// The body, de-framed.
    pub body: Vec<u8>,
    pub chunked: bool,
    /// For a chunked body: the last-chunk line without CRLF (`0`, `0;a=b`).
    pub last_chunk: Option<Vec<u8>>,
    /// Every byte of the message.
    pub raw: Vec<u8>,
}

impl Request {
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.all(name).into_iter().next()
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn line_text(&self) -> String {
        String::from_utf8_lossy(&self.request_line).into_owned()
    }
}

/// What a whole byte stream read as.
#[derive(Debug, Clone)]
pub struct Stream {
    pub requests: Vec<Request>,
    pub tail: Tail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The stream ends where a request ended.
    Clean,
    /// The last bytes, from this offset, are a valid start of a request that is not complete.
    Partial(usize),
    Error(StrictError),
}

pub fn parse_stream(buf: &[u8]) -> Stream {
    let mut requests = Vec::new();
    let mut at = 0;
    let tail = loop {
        if at == buf.len() {
            break Tail::Clean;
        }
        match parse_one(&buf[at..]) {
            Ok(Some(r)) => {
                at += r.raw.len();
                requests.push(r);
            }
            Ok(None) => break Tail::Partial(at),
            Err(e) => {
                break Tail::Error(StrictError {
                    at: at + e.at,
                    why: e.why,
                })
            }
        }
    };
    Stream { requests, tail }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|b| is_tchar(**b)).count()
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && token_len(s) == s.len()
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ows(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ows(s[i]) {
        i += 1;
    }
    i
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = skip_ows(s, 0);
    let mut end = s.len();
    while end > start && is_ows(s[end - 1]) {
        end -= 1;
    }
    &s[start..end]
}

/// Bytes allowed in a field value besides the CRLF that ends it.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// The next line starting at `from`: `Some((end of content, start of next line))`, or `None`
/// while the line is not complete (its bytes so far checked by `partial_ok`).
fn line(
    buf: &[u8],
    from: usize,
    partial_ok: fn(u8) -> bool,
) -> Result<Option<(usize, usize)>, StrictError> {
    for i in from..buf.len() {
        match buf[i] {
            b'\n' => return err(i, "bare LF"),
            b'\r' if i + 1 == buf.len() => return Ok(None),
            b'\r' if buf[i + 1] == b'\n' => return Ok(Some((i, i + 2))),
            b'\r' => return err(i, "bare CR"),
            b if !partial_ok(b) => return err(i, format!("byte {b:#04x} not allowed here")),
            _ => {}
        }
    }
    Ok(None)
}

/// Parses one request from the start of `buf`: `Ok(None)` when `buf` is a valid beginning of a
/// request that is not complete yet.
pub fn parse_one(buf: &[u8]) -> Result<Option<Request>, StrictError> {
    let Some((rl_end, mut at)) = line(buf, 0, is_field_byte)? else {
        return Ok(None);
    };
    let request_line = &buf[..rl_end];
    if request_line.is_empty() {
        return err(0, "empty line before the request line");
    }
    let (method, target, minor) = request_line_parts(request_line)?;
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let Some((end, next)) = line(buf, at, is_field_byte)? else {
            return Ok(None);
        };
        let l = &buf[at..end];
        if l.is_empty() {
            at = next;
            break;
        }
        if is_ows(l[0]) {
            return err(at, "obs-fold (a line starting with whitespace)");
        }
        let Some(colon) = l.iter().position(|b| *b == b':') else {
            return err(at, "header line without a colon");
        };
        let name = &l[..colon];
        if name.last().is_some_and(|b| is_ows(*b)) {
            return err(at, "whitespace before the colon");
        }
        if !is_token(name) {
            return err(at, "header name is not a token");
        }
        headers.push((name.to_vec(), trim_ows(&l[colon + 1..]).to_vec()));
        at = next;
    }
    let head_len = at;
    let mut req = Request {
        request_line: request_line.to_vec(),
        method: method.to_vec(),
        target: target.to_vec(),
        minor,
        headers,
        head: buf[..head_len].to_vec(),
        body: Vec::new(),
        chunked: false,
        last_chunk: None,
        raw: Vec::new(),
    };
    let framing = check_semantics(&req).map_err(|why| StrictError { at: 0, why })?;
    let end = match framing {
        Framing::None => head_len,
        Framing::Length(n) => {
            if buf.len() - head_len < n {
                return Ok(None);
            }
            req.body = buf[head_len..head_len + n].to_vec();
            head_len + n
        }
        Framing::Chunked => {
            req.chunked = true;
            match chunked(buf, head_len, &mut req)? {
                Some(end) => end,
                None => return Ok(None),
            }
        }
    };
    req.raw = buf[..end].to_vec();
    Ok(Some(req))
}

fn request_line_parts(l: &[u8]) -> Result<(&[u8], &[u8], u8), StrictError> {
    let parts: Vec<&[u8]> = l.split(|b| *b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return err(0, "request line is not `method SP target SP version`");
    };
    if !is_token(method) {
        return err(0, "method is not a token");
    }
    if method == b"CONNECT" {
        return err(0, "CONNECT (a tunnel, not a request to forward)");
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return err(method.len() + 1, "bad bytes in the request target");
    }
    let asterisk_ok = target == b"*" && method == b"OPTIONS";
    if !(target[0] == b'/' || asterisk_ok) {
        return err(method.len() + 1, "target not in origin form (or OPTIONS *)");
    }
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => {
            return err(
                l.len() - version.len(),
                "version is not HTTP/1.0 or HTTP/1.1",
            )
        }
    };
    Ok((method, target, minor))
}

enum Framing {
    None,
    Length(usize),
    Chunked,
}

fn check_semantics(req: &Request) -> Result<Framing, String> {
    let hosts = req.all("host");
    match (hosts.len(), req.minor) {
        (0, 1) => return Err("HTTP/1.1 request without Host".into()),
        (0, _) | (1, _) => {}
        _ => return Err("more than one Host".into()),
    }
    if let Some(h) = hosts.first() {
        valid_authority(h)?;
    }
    for v in req.all("connection") {
        for t in v.split(|b| *b == b',').map(trim_ows) {
            if t.is_empty() {
                continue;
            }
            if !is_token(t) {
                return Err("Connection option is not a token".into());
            }
            for framing in ["content-length", "transfer-encoding", "host"] {
                if t.eq_ignore_ascii_case(framing.as_bytes()) {
                    return Err(format!("Connection names {framing}"));
                }
            }
        }
    }
    let cls = req.all("content-length");
    let tes = req.all("transfer-encoding");
    if !cls.is_empty() && !tes.is_empty() {
        return Err("both Content-Length and Transfer-Encoding".into());
    }
    if !tes.is_empty() {
        if req.minor == 0 {
            return Err("Transfer-Encoding in HTTP/1.0".into());
        }
        if tes.len() > 1 || !tes[0].eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding other than one `chunked`".into());
        }
        return Ok(Framing::Chunked);
    }
    match cls[..] {
        [] => Ok(Framing::None),
        [v] if !v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit) => Ok(
            Framing::Length(std::str::from_utf8(v).unwrap().parse().unwrap()),
        ),
        [_] => Err("Content-Length is not 1 to 18 digits".into()),
        _ => Err("more than one Content-Length".into()),
    }
}

/// `uri-host [ ":" port ]`: reg-name or IPv4 (unreserved, pct-encoded, sub-delims but the
/// comma), or `[IP-literal]`; no user info; a port of digits.
fn valid_authority(h: &[u8]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("Host {:?}: {why}", String::from_utf8_lossy(h)));
    let (host, port) = if h.first() == Some(&b'[') {
        let Some(close) = h.iter().position(|b| *b == b']') else {
            return bad("unclosed IP literal");
        };
        let lit = &h[1..close];
        if lit.is_empty()
            || !lit
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(b))
        {
            return bad("bad IP literal");
        }
        match &h[close + 1..] {
            [] => (&h[..0], None),
            [b':', port @ ..] => (&h[..0], Some(port)),
            _ => return bad("bytes after the IP literal"),
        }
    } else {
        match h.iter().position(|b| *b == b':') {
            Some(c) => (&h[..c], Some(&h[c + 1..])),
            None => (h, None),
        }
    };
    if h.first() != Some(&b'[') {
        if host.is_empty() {
            return bad("empty host");
        }
        let mut i = 0;
        while i < host.len() {
            let b = host[i];
            if b == b'%' {
                if i + 2 >= host.len()
                    || !(host[i + 1].is_ascii_hexdigit() && host[i + 2].is_ascii_hexdigit())
                {
                    return bad("bad percent-encoding");
                }
                i += 3;
                continue;
            }
            if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+;=".contains(&b)) {
                return bad("byte not allowed in a host");
            }
            i += 1;
        }
    }
    if let Some(p) = port {
        if !p.iter().all(u8::is_ascii_digit) || p.len() > 5 {
            return bad("port is not a number");
        }
    }
    Ok(())
}

/// Chunk-size lines that have no one reading (RFC 9112 §7.1.1), shared by the parser's own
/// tests and the front door's: each must be refused by both.
pub const BAD_CHUNK_LINES: &[&[u8]] = &[
    b"zz",
    b"0000000000000005",
    b"5 ",
    b"5;",
    b"5;a b",
    b"5;a=",
    b"5;a=\"x",
    b"5;a=\x01",
    b"5;=x",
    b";a",
    b"-5",
    b"5\n",
    b"5\r",
    b"5;a\nb",
];
