//! `redirect_https`: a plain listener that only sends browsers to the https site. Every request
//! the strict reader accepted gets `308 Permanent Redirect` (the method and body are kept by the
//! browser) to `https://<Host without port>[:https_port]<target>`; no backend is touched.

use super::head::{Framing, Head};

/// The host of the request (absolute-form authority first, else `Host`), without its port.
fn host_without_port(head: &Head) -> Option<&[u8]> {
    let authority = match &head.request.authority {
        Some(a) => head.bytes(a),
        None => head.first("host")?,
    };
    let authority = super::head::trim(authority);
    let host = if authority.starts_with(b"[") {
        // An IPv6 literal keeps its brackets: `[::1]:8080` → `[::1]`.
        let end = authority.iter().position(|b| *b == b']')?;
        &authority[..=end]
    } else {
        authority.split(|b| *b == b':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// `https://host[:port]/target`.
pub(super) fn location(head: &Head, https_port: u16) -> Option<Vec<u8>> {
    let host = host_without_port(head)?;
    let mut target = head.target();
    if target.is_empty() || target == b"*" {
        target = b"/";
    }
    let mut out = Vec::with_capacity(16 + host.len() + target.len());
    out.extend_from_slice(b"https://");
    out.extend_from_slice(host);
    if https_port != 443 {
        out.extend_from_slice(format!(":{https_port}").as_bytes());
    }
    out.extend_from_slice(target);
    Some(out)
}

/// Whether the connection can carry another request after the redirect: only when this one
/// had no body (a body would have to be read and thrown away first).
pub(super) fn keeps_alive(head: &Head) -> bool {
    !head.close && head.framing == Framing::Empty
}

/// The whole answer.
pub(super) fn answer(location: &[u8], request_id: &str, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + location.len());
    out.extend_from_slice(b"HTTP/1.1 308 Permanent Redirect\r\nLocation: ");
    out.extend_from_slice(location);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\nCache-Control: no-store\r\nX-Request-Id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request_head::parse_request;
    use bytes::Bytes;

    fn loc(req: &str, port: u16) -> String {
        let head = parse_request(Bytes::copy_from_slice(req.as_bytes())).unwrap();
        String::from_utf8(location(&head, port).unwrap()).unwrap()
    }

    #[test]
    fn host_port_is_replaced_and_target_kept() {
        assert_eq!(
            loc(
                "GET /hub/?a=1 HTTP/1.1\r\nHost: qlik.example:80\r\n\r\n",
                443
            ),
            "https://qlik.example/hub/?a=1"
        );
        assert_eq!(
            loc("GET /x HTTP/1.1\r\nHost: qlik.example\r\n\r\n", 8443),
            "https://qlik.example:8443/x"
        );
        assert_eq!(
            loc("GET /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 443),
            "https://[::1]/x"
        );
        assert_eq!(
            loc(
                "GET http://a.example:81/b HTTP/1.1\r\nHost: other\r\n\r\n",
                443
            ),
            "https://a.example/b"
        );
        assert_eq!(
            loc("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 443),
            "https://a/"
        );
    }
}
