//! The strict reading of a client's request head (PRODUCT.md §3.1): one reading or a refusal,
//! decided here, before any byte of the request reaches a backend. The rows of the contract's
//! table that a head decides are checked in this one place; chunked bodies are checked by
//! `body.rs`, bare LFs by `head::scan_head` as the head arrives.

use super::head::{
    body_framing, content_length, offset, parsed, trim, wants_close, Framing, Head, HeadError,
    MAX_HEADERS,
};
use bytes::Bytes;

/// Headers the front door reads to frame or route a request: a `Connection` header naming one
/// would have the proxy drop it as hop-by-hop after reading it, so a backend would read the
/// message without it (a `Content-Length` dropped that way turns the body into a second request).
const READ_HERE: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "cookie",
    "expect",
    "authorization",
    "sec-websocket-key",
    "sec-websocket-version",
];

/// Which of the headers this reader decides by a head carries, found in one pass so that the
/// common request (Host, cookies, no body) costs one walk over its lines, not one per rule.
#[derive(Default)]
struct Present {
    host: u8,
    connection: bool,
    content_length: bool,
    transfer_encoding: bool,
    expect: bool,
}

impl Present {
    fn of(head: &Head) -> Present {
        let mut p = Present::default();
        for h in &head.headers {
            let name = head.name(h);
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            match name.len() {
                4 if is("host") => p.host = p.host.saturating_add(1),
                6 if is("expect") => p.expect = true,
                10 if is("connection") => p.connection = true,
                14 if is("content-length") => p.content_length = true,
                17 if is("transfer-encoding") => p.transfer_encoding = true,
                _ => {}
            }
        }
        p
    }
}

/// Parses and checks a complete request head (`raw` ends with CRLFCRLF and has no bare LF).
pub fn parse_request(raw: Bytes) -> Result<Head, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    parsed(req.parse(&raw), "malformed request head")?;
    let method = offset(&raw, req.method.unwrap_or_default().as_bytes());
    let target = offset(&raw, req.path.unwrap_or_default().as_bytes());
    let version_minor = req.version.unwrap_or(1);
    let mut head = Head::from_parsed(&raw, req.headers, version_minor, method, target, 0);
    let present = Present::of(&head);
    check_target(&mut head)?;
    check_host(&head, present.host)?;
    if present.connection {
        check_connection(&head)?;
    }
    let length = if present.content_length {
        content_length(&head)?
    } else {
        None
    };
    if present.transfer_encoding {
        check_transfer_encoding(&head)?;
    }
    head.framing = body_framing(&head, present.transfer_encoding, length.map(|(n, _)| n))?
        .unwrap_or(Framing::Empty);
    head.request.repeated_length = length.is_some_and(|(_, repeated)| repeated);
    if present.connection {
        head.request.websocket = websocket_handshake(&head)?;
    }
    if present.expect {
        head.request.expect_continue = expectation(&head)?;
    }
    head.close = if present.connection {
        wants_close(&head)
    } else {
        version_minor == 0
    };
    Ok(head)
}

/// Origin form; absolute form (rewritten to origin form, its authority replacing Host,
/// RFC 9112 §3.2.2); `*` for OPTIONS only; never CONNECT.
fn check_target(head: &mut Head) -> Result<(), HeadError> {
    if head.method() == b"CONNECT" {
        return Err(HeadError::Method("CONNECT is not forwarded"));
    }
    let target = head.target();
    if target.starts_with(b"/") {
        return Ok(());
    }
    if target == b"*" {
        return match head.method() {
            b"OPTIONS" => Ok(()),
            _ => Err(HeadError::Malformed(
                "asterisk-form target on a method other than OPTIONS",
            )),
        };
    }
    let scheme_len = [&b"http://"[..], b"https://"]
        .iter()
        .find(|s| target.len() >= s.len() && target[..s.len()].eq_ignore_ascii_case(s))
        .map(|s| s.len())
        .ok_or(HeadError::Malformed(
            "request target is not a path or an http(s) URL",
        ))?;
    let rest = &target[scheme_len..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if !is_authority(authority) {
        return Err(HeadError::Malformed(
            "the request target's authority is not valid",
        ));
    }
    let start = head.target.start + scheme_len;
    head.request.authority = Some(start..start + end);
    head.target = start + end..head.target.end;
    Ok(())
}

fn check_host(head: &Head, count: u8) -> Result<(), HeadError> {
    match count {
        0 if head.version_minor == 1 => Err(HeadError::Malformed(
            "an HTTP/1.1 request needs a Host header",
        )),
        0 => Ok(()),
        1 if head.first("host").is_some_and(is_authority) => Ok(()),
        1 => Err(HeadError::Malformed(
            "the Host header is not a valid authority",
        )),
        _ => Err(HeadError::Malformed("more than one Host header")),
    }
}

/// `host [":" port]` with a DNS-style name, an IPv4 address or an IPv6 literal. Stricter than
/// RFC 3986's reg-name (no sub-delims, no userinfo): a name DNS cannot hold has no use as a
/// Qlik host, and one a backend's allow list could read differently is refused.
pub fn is_authority(a: &[u8]) -> bool {
    let (host, port) = if a.starts_with(b"[") {
        let Some(close) = a.iter().position(|b| *b == b']') else {
            return false;
        };
        let literal = &a[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        (&a[..=close], &a[close + 1..])
    } else {
        let colon = a.iter().position(|b| *b == b':').unwrap_or(a.len());
        let name = &a[..colon];
        if name.is_empty()
            || !name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return false;
        }
        (name, &a[colon..])
    };
    debug_assert!(!host.is_empty());
    match port {
        [] => true,
        [b':', digits @ ..] => {
            !digits.is_empty()
                && digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u32>().ok())
                    .is_some_and(|p| p <= 65535)
        }
        _ => false,
    }
}

fn check_connection(head: &Head) -> Result<(), HeadError> {
    for token in head.tokens("connection") {
        if READ_HERE
            .iter()
            .any(|h| token.eq_ignore_ascii_case(h.as_bytes()))
        {
            return Err(HeadError::Framing(
                "Connection names a header the message is framed or routed by",
            ));
        }
    }
    Ok(())
}

/// Exactly one Transfer-Encoding line whose value is `chunked`: a list, a repeat or another
/// coding is read differently by different servers (and none is needed from a browser).
fn check_transfer_encoding(head: &Head) -> Result<(), HeadError> {
    let mut lines = head.values("transfer-encoding");
    match (lines.next(), lines.next()) {
        (None, _) => Ok(()),
        (Some(v), None) if trim(v).eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(HeadError::Framing(
            "Transfer-Encoding other than exactly one chunked",
        )),
    }
}

/// Whether the request is a valid WebSocket handshake. A `Connection: upgrade` on anything
/// else is refused rather than half-forwarded; an `Upgrade` header without it asks for nothing
/// and is dropped by the rewrite, as every protocol but websocket is.
fn websocket_handshake(head: &Head) -> Result<bool, HeadError> {
    let asks_upgrade = head.has_token("connection", "upgrade");
    let offers_websocket = head.has_token("upgrade", "websocket");
    if !asks_upgrade {
        return Ok(false);
    }
    let mut keys = head.values("sec-websocket-key");
    let one_key = match (keys.next(), keys.next()) {
        (Some(k), None) => is_websocket_key(trim(k)),
        _ => false,
    };
    let mut versions = head.values("sec-websocket-version");
    let version_13 =
        matches!((versions.next(), versions.next()), (Some(v), None) if trim(v) == b"13");
    let valid = asks_upgrade
        && offers_websocket
        && head.method() == b"GET"
        && head.version_minor == 1
        && head.framing == Framing::Empty
        && one_key
        && version_13;
    if valid {
        Ok(true)
    } else {
        Err(HeadError::Malformed(
            "an upgrade that is not a valid WebSocket handshake",
        ))
    }
}

/// Base64 of 16 bytes (RFC 6455 §4.1): 22 characters and `==`.
fn is_websocket_key(k: &[u8]) -> bool {
    k.len() == 24
        && k.ends_with(b"==")
        && k[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

/// `Expect: 100-continue` on an HTTP/1.1 request with a body; any other expectation is 417.
fn expectation(head: &Head) -> Result<bool, HeadError> {
    let mut continue_asked = false;
    for token in head.tokens("expect") {
        if token.eq_ignore_ascii_case(b"100-continue") {
            continue_asked = true;
        } else {
            return Err(HeadError::Expectation);
        }
    }
    // An HTTP/1.0 client is never sent a 100 (RFC 9110 §10.1.1).
    Ok(continue_asked && head.framing != Framing::Empty && head.version_minor == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Head, HeadError> {
        parse_request(Bytes::copy_from_slice(s.as_bytes()))
    }

    const WS: &str = "GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

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
        for bad in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ] {
            assert!(matches!(req(bad), Err(HeadError::Framing(_))), "{bad}");
        }
        let same =
            req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .unwrap();
        assert_eq!(same.framing, Framing::Length(3));
        assert!(same.request.repeated_length);
        let listed = req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n").unwrap();
        assert!(listed.request.repeated_length);
    }

    #[test]
    fn connection_may_not_name_what_frames_or_routes() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "HOST",
            "Cookie",
            "Expect",
        ] {
            let r = req(&format!(
                "POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, {name}\r\nContent-Length: 1\r\n\r\n"
            ));
            assert!(r.is_err(), "{name}");
        }
        assert!(req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Custom\r\n\r\n").is_ok());
    }

    #[test]
    fn targets_and_hosts() {
        let abs = req("GET http://a.example:81/b?q HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
        assert_eq!(abs.target(), b"/b?q");
        assert_eq!(
            abs.bytes(abs.request.authority.as_ref().unwrap()),
            b"a.example:81"
        );
        let bare = req("GET HTTPS://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n").unwrap();
        assert_eq!(bare.target(), b"");
        assert!(req("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").is_ok());
        assert!(matches!(
            req("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            Err(HeadError::Method(_))
        ));
        for bad in [
            "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET ftp://a/b HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET http://u@a/b HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET nopath HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h:x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
        ] {
            assert!(req(bad).is_err(), "{bad}");
        }
        assert!(is_authority(b"[::1]:8443"));
        assert!(is_authority(b"qs-node1.corp.example:443"));
        assert!(!is_authority(b"h:99999"));
        assert!(
            req("GET / HTTP/1.0\r\n\r\n").is_ok(),
            "HTTP/1.0 needs no Host"
        );
    }

    #[test]
    fn websocket_handshakes() {
        assert!(req(WS).unwrap().request.websocket);
        let h2c_too = WS.replace("Upgrade: websocket", "Upgrade: h2c, websocket");
        assert!(req(&h2c_too).unwrap().request.websocket);
        for broken in [
            WS.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            WS.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            WS.replace("GET", "POST"),
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n".into(),
        ] {
            assert!(req(&broken).is_err(), "{broken}");
        }
        for asks_nothing in ["Upgrade: h2c", "Upgrade: websocket"] {
            let h = req(&format!(
                "GET / HTTP/1.1\r\nHost: x\r\n{asks_nothing}\r\n\r\n"
            ))
            .unwrap();
            assert!(!h.request.websocket);
        }
        let no_connection_upgrade = req(&WS.replace("keep-alive, Upgrade", "keep-alive")).unwrap();
        assert!(!no_connection_upgrade.request.websocket);
    }

    #[test]
    fn expectations() {
        let with_body =
            req("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                .unwrap();
        assert!(with_body.request.expect_continue);
        let no_body = req("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!no_body.request.expect_continue);
        assert!(matches!(
            req("GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n"),
            Err(HeadError::Expectation)
        ));
    }
}
