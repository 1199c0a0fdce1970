//! Building the heads that leave the proxy. Every header line that is not rewritten is copied
//! as received (name case, order, value bytes); only hop-by-hop headers, the configured
//! stripped headers and the sticky cookie are removed, and the X-Forwarded-* headers are set.

use super::head::{trim, Head};
use bytes::{BufMut, BytesMut};

const HOP_BY_HOP: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
];

/// Header names that end at this hop: the fixed list plus those the Connection header names.
/// The Connection tokens are collected once per head (it is usually absent or `keep-alive`).
struct HopByHop<'h> {
    named: Vec<&'h [u8]>,
}

impl<'h> HopByHop<'h> {
    fn of(head: &'h Head) -> HopByHop<'h> {
        let named = head
            .values("connection")
            .flat_map(|v| v.split(|b| *b == b','))
            .map(trim)
            .filter(|t| !t.is_empty())
            .collect();
        HopByHop { named }
    }

    fn contains(&self, name: &[u8]) -> bool {
        HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || self.named.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

pub struct RequestRewrite<'a> {
    pub strip: &'a [String],
    pub sticky_cookie: &'a str,
    /// The client address as text, formatted once per connection.
    pub client_ip: &'a str,
    pub client_tls: bool,
}

/// The head sent to the backend.
pub fn upstream_request(head: &Head, rw: &RequestRewrite<'_>, out: &mut BytesMut) {
    let websocket = head.is_websocket_upgrade();
    let hop = HopByHop::of(head);
    out.reserve(head.raw.len() + 160);
    out.put_slice(head.bytes(&head.first_line));
    out.put_slice(b"\r\n");
    let mut forwarded_for: Option<BytesMut> = None;
    let mut host: &[u8] = b"";
    for h in &head.headers {
        let name = head.name(h);
        let value = head.value(h);
        if name.eq_ignore_ascii_case(b"host") {
            host = value;
        }
        if name.eq_ignore_ascii_case(b"upgrade") && websocket {
            put_line(out, head.bytes(&h.line));
            continue;
        }
        if hop.contains(name)
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || rw
                .strip
                .iter()
                .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            let acc = forwarded_for.get_or_insert_with(BytesMut::new);
            if !acc.is_empty() {
                acc.put_slice(b", ");
            }
            acc.put_slice(value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"cookie") {
            match without_cookie(value, rw.sticky_cookie.as_bytes()) {
                CookieEdit::Unchanged => put_line(out, head.bytes(&h.line)),
                CookieEdit::Empty => {}
                CookieEdit::Rewritten(v) => {
                    out.put_slice(name);
                    out.put_slice(b": ");
                    out.put_slice(&v);
                    out.put_slice(b"\r\n");
                }
            }
            continue;
        }
        put_line(out, head.bytes(&h.line));
    }
    out.put_slice(b"X-Forwarded-For: ");
    if let Some(prev) = forwarded_for.filter(|p| !p.is_empty()) {
        out.put_slice(&prev);
        out.put_slice(b", ");
    }
    out.put_slice(rw.client_ip.as_bytes());
    out.put_slice(b"\r\nX-Forwarded-Proto: ");
    out.put_slice(if rw.client_tls { b"https" } else { b"http" });
    if !host.is_empty() {
        out.put_slice(b"\r\nX-Forwarded-Host: ");
        out.put_slice(host);
    }
    if websocket {
        out.put_slice(b"\r\nConnection: Upgrade");
    } else if head.version_minor == 0 {
        out.put_slice(b"\r\nConnection: keep-alive");
    }
    out.put_slice(b"\r\n\r\n");
}

fn put_line(out: &mut BytesMut, line: &[u8]) {
    out.put_slice(line);
    out.put_slice(b"\r\n");
}

pub enum CookieEdit {
    Unchanged,
    Empty,
    Rewritten(Vec<u8>),
}

/// Removes every `name=...` pair from a Cookie header value, keeping the others as sent.
pub fn without_cookie(value: &[u8], name: &[u8]) -> CookieEdit {
    let pairs: Vec<&[u8]> = value.split(|b| *b == b';').map(trim).collect();
    let is_ours = |p: &&[u8]| cookie_name(p).eq(name);
    if !pairs.iter().any(is_ours) {
        return CookieEdit::Unchanged;
    }
    let kept: Vec<&[u8]> = pairs
        .into_iter()
        .filter(|p| !is_ours(p) && !p.is_empty())
        .collect();
    if kept.is_empty() {
        return CookieEdit::Empty;
    }
    CookieEdit::Rewritten(kept.join(&b"; "[..]))
}

fn cookie_name(pair: &[u8]) -> &[u8] {
    let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
    trim(name)
}

/// `(name, value)` pairs of every Cookie header.
pub fn request_cookies(head: &Head) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.values("cookie")
        .flat_map(|v| v.split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            Some((trim(&pair[..eq]), trim(&pair[eq + 1..])))
        })
}

/// `(name, value)` of every Set-Cookie in a response.
pub fn response_set_cookies(head: &Head) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.values("set-cookie").filter_map(|v| {
        let first = v.split(|b| *b == b';').next()?;
        let eq = first.iter().position(|b| *b == b'=')?;
        Some((trim(&first[..eq]), trim(&first[eq + 1..])))
    })
}

pub fn is_qlik_session_cookie(name: &[u8]) -> bool {
    name.len() >= 14 && name[..14].eq_ignore_ascii_case(b"X-Qlik-Session")
}

/// The head sent to the client: hop-by-hop headers dropped (kept for a 101), our Set-Cookie
/// added when the user was pinned, `Connection: close` when this connection ends after it.
pub fn client_response(head: &Head, set_cookie: Option<&str>, close: bool, out: &mut BytesMut) {
    let upgrade = head.status == 101;
    let hop = HopByHop::of(head);
    out.reserve(head.raw.len() + 128);
    out.put_slice(head.bytes(&head.first_line));
    out.put_slice(b"\r\n");
    for h in &head.headers {
        let name = head.name(h);
        if !upgrade && hop.contains(name) {
            continue;
        }
        put_line(out, head.bytes(&h.line));
    }
    if let Some(cookie) = set_cookie {
        out.put_slice(b"Set-Cookie: ");
        out.put_slice(cookie.as_bytes());
        out.put_slice(b"\r\n");
    }
    if close && !upgrade {
        out.put_slice(b"Connection: close\r\n");
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::head::parse_request;
    use bytes::Bytes;

    fn rewrite(req: &str) -> String {
        let head = parse_request(Bytes::copy_from_slice(req.as_bytes())).unwrap();
        let strip = vec!["x-qlik-user".to_string()];
        let rw = RequestRewrite {
            strip: &strip,
            sticky_cookie: "QLB_ROUTE",
            client_ip: "10.1.2.3",
            client_tls: true,
        };
        let mut out = BytesMut::new();
        upstream_request(&head, &rw, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn keeps_lines_byte_for_byte_and_adds_forwarded() {
        let out = rewrite("GET /a%20b?x=1&xrfkey=ABC HTTP/1.1\r\nHost: Qlik.Example:443\r\nAuthorization: Bearer x\r\nX-Forwarded-For: 1.1.1.1\r\nConnection: keep-alive\r\n\r\n");
        assert!(out.starts_with("GET /a%20b?x=1&xrfkey=ABC HTTP/1.1\r\nHost: Qlik.Example:443\r\nAuthorization: Bearer x\r\n"), "{out}");
        assert!(
            out.contains("X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Proto: https\r\n"));
        assert!(out.contains("X-Forwarded-Host: Qlik.Example:443\r\n"));
        assert!(!out.to_ascii_lowercase().contains("connection: keep-alive"));
    }

    #[test]
    fn strips_reserved_headers_and_our_cookie() {
        let out = rewrite("GET / HTTP/1.1\r\nHost: x\r\nX-Qlik-User: UserDirectory=A; UserId=admin\r\nCookie: a=1; QLB_ROUTE=node1;  X-Qlik-Session=abc\r\n\r\n");
        assert!(!out.contains("X-Qlik-User"), "{out}");
        assert!(out.contains("Cookie: a=1; X-Qlik-Session=abc\r\n"), "{out}");
        let only_ours = rewrite("GET / HTTP/1.1\r\nHost: x\r\nCookie: QLB_ROUTE=node1\r\n\r\n");
        assert!(!only_ours.contains("Cookie"), "{only_ours}");
    }

    #[test]
    fn websocket_keeps_upgrade() {
        let out = rewrite("GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n");
        assert!(out.contains("Upgrade: websocket\r\n"), "{out}");
        assert!(out.contains("Connection: Upgrade\r\n"), "{out}");
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
    }
}
