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
    /// `keep_framing`: a response's own framing headers stay whatever its Connection names,
    /// since the proxy framed the body by them (a request naming them is refused earlier).
    fn of(head: &'h Head, keep_framing: bool) -> HopByHop<'h> {
        let named = head
            .tokens("connection")
            .filter(|t| {
                !(keep_framing
                    && (t.eq_ignore_ascii_case(b"content-length")
                        || t.eq_ignore_ascii_case(b"transfer-encoding")))
            })
            .collect();
        HopByHop { named }
    }

    fn contains(&self, name: &[u8]) -> bool {
        HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || self.named.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

/// Request headers the proxy answers or drops itself: `Expect` (the proxy sends the 100) and
/// `HTTP2-Settings` (only a WebSocket upgrade is forwarded).
fn answered_here(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"expect") || name.eq_ignore_ascii_case(b"http2-settings")
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
    let websocket = head.request.websocket;
    let hop = HopByHop::of(head, false);
    out.reserve(head.raw.len() + 160);
    request_line(head, out);
    let mut forwarded_for: Option<BytesMut> = None;
    let mut host: &[u8] = b"";
    let mut length_sent = false;
    let mut upgrade_sent = false;
    if let (Some(authority), None) = (&head.request.authority, head.first("host")) {
        // An HTTP/1.0 request in absolute form may come without Host; the backend gets one.
        host = head.bytes(authority);
        out.put_slice(b"Host: ");
        out.put_slice(host);
        out.put_slice(b"\r\n");
    }
    for h in &head.headers {
        let name = head.name(h);
        let value = head.value(h);
        if name.eq_ignore_ascii_case(b"host") {
            host = value;
            if let Some(authority) = &head.request.authority {
                // Absolute form: the target's authority is the host (RFC 9112 §3.2.2).
                host = head.bytes(authority);
                out.put_slice(b"Host: ");
                out.put_slice(host);
                out.put_slice(b"\r\n");
                continue;
            }
        }
        if name.eq_ignore_ascii_case(b"upgrade") {
            if websocket && !upgrade_sent {
                upgrade_sent = put_websocket_upgrade(head, h, out);
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") && head.request.repeated_length {
            if !length_sent {
                length_sent = true;
                if let super::head::Framing::Length(n) = head.framing {
                    out.put_slice(b"Content-Length: ");
                    out.put_slice(n.to_string().as_bytes());
                    out.put_slice(b"\r\n");
                }
            }
            continue;
        }
        if hop.contains(name)
            || answered_here(name)
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

/// The request line as received, or rebuilt in origin form for an absolute-form target.
fn request_line(head: &Head, out: &mut BytesMut) {
    if head.request.authority.is_none() {
        put_line(out, head.bytes(&head.first_line));
        return;
    }
    out.put_slice(head.method());
    out.put_slice(b" ");
    let target = head.target();
    out.put_slice(if target.is_empty() { b"/" } else { target });
    out.put_slice(if head.version_minor == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
}

/// A WebSocket handshake's Upgrade line: as sent when it offers websocket alone, else only
/// that token (an `h2c` offered beside it never reaches the backend). Whether it wrote one.
fn put_websocket_upgrade(head: &Head, h: &super::head::Header, out: &mut BytesMut) -> bool {
    let value = trim(head.value(h));
    if value.eq_ignore_ascii_case(b"websocket") {
        put_line(out, head.bytes(&h.line));
        return true;
    }
    let offered = value
        .split(|b| *b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(b"websocket"));
    if offered {
        out.put_slice(b"Upgrade: websocket\r\n");
    }
    offered
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
/// `hsts`: the frontend's `Strict-Transport-Security`, replacing any the backend sent.
pub fn client_response(
    head: &Head,
    set_cookie: Option<&str>,
    close: bool,
    hsts: Option<&str>,
    out: &mut BytesMut,
) {
    let upgrade = head.status == 101;
    let hop = HopByHop::of(head, true);
    out.reserve(head.raw.len() + 128);
    out.put_slice(head.bytes(&head.first_line));
    out.put_slice(b"\r\n");
    for h in &head.headers {
        let name = head.name(h);
        if !upgrade && hop.contains(name) {
            continue;
        }
        if hsts.is_some() && name.eq_ignore_ascii_case(b"strict-transport-security") {
            continue;
        }
        put_line(out, head.bytes(&h.line));
    }
    if let Some(value) = hsts {
        out.put_slice(b"Strict-Transport-Security: ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
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
    use crate::proxy::request_head::parse_request;
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
        const KEY: &str =
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";
        let out = rewrite(&format!("GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{KEY}\r\n\r\n"));
        assert!(out.contains("Upgrade: websocket\r\n"), "{out}");
        assert!(out.contains("Connection: Upgrade\r\n"), "{out}");
        assert!(out.contains(KEY));
        let h2c = rewrite(&format!("GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c, WebSocket\r\nHTTP2-Settings: AAA\r\n{KEY}\r\n\r\n"));
        assert!(h2c.contains("\r\nUpgrade: websocket\r\n"), "{h2c}");
        assert!(
            !h2c.contains("h2c") && !h2c.contains("HTTP2-Settings"),
            "{h2c}"
        );
    }

    #[test]
    fn other_upgrades_expect_and_repeated_lengths_are_dropped_or_normalised() {
        let out = rewrite("POST /x HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\nExpect: 100-continue\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert!(
            !out.contains("h2c") && !out.contains("HTTP2") && !out.contains("Expect"),
            "{out}"
        );
        assert_eq!(out.matches("Content-Length").count(), 1, "{out}");
        assert!(out.contains("Content-Length: 5\r\n"), "{out}");
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let out = rewrite("GET http://a.example/b?q HTTP/1.1\r\nHost: other\r\n\r\n");
        assert!(
            out.starts_with("GET /b?q HTTP/1.1\r\nHost: a.example\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Host: a.example\r\n"), "{out}");
        let bare = rewrite("GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert!(bare.starts_with("GET / HTTP/1.1\r\n"), "{bare}");
    }

    #[test]
    fn responses_keep_framing_headers_their_connection_names() {
        let resp = crate::proxy::backend_head::parse_response(
            Bytes::from_static(b"HTTP/1.1 200 OK\r\nConnection: Content-Length, X-Drop\r\nContent-Length: 5\r\nX-Drop: 1\r\n\r\n"),
            false,
        )
        .unwrap();
        let mut out = BytesMut::new();
        client_response(&resp, None, false, None, &mut out);
        let out = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            out.contains("Content-Length: 5\r\n") && !out.contains("X-Drop"),
            "{out}"
        );
    }
}
