//! Reading a backend's response head within `response_timeout`, and the checks only responses
//! need: a bare LF is refused (as in requests, so a client never reads a split answer), and
//! transfer codings may stack as long as `chunked` comes last (RFC 9112 §6.1).

use super::head::{
    body_framing, content_length, parsed, scan_head, trim, wants_close, Framing, Head, HeadError,
    HeadScan, MAX_HEADERS,
};
use super::upstream::BackendConn;
use bytes::Bytes;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Backends (QPS included) send far smaller heads; past this the answer is not trusted.
const MAX_RESPONSE_HEAD: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ResponseHeadError {
    #[error("backend sent no response headers in time")]
    Timeout,
    #[error("backend closed the connection before answering")]
    Closed,
    #[error("backend answer is not HTTP: {0}")]
    Malformed(&'static str),
    #[error("backend read failed: {0}")]
    Io(std::io::Error),
}

pub async fn read_response_head(
    up: &mut BackendConn,
    timeout: Duration,
    request_was_head: bool,
) -> Result<Head, ResponseHeadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut scanned = 0;
    loop {
        match scan_head(&up.buf, scanned) {
            HeadScan::Complete(end) => {
                let raw = up.buf.split_to(end).freeze();
                return parse_response(raw, request_was_head)
                    .map_err(|e| ResponseHeadError::Malformed(e.reason()));
            }
            HeadScan::BareLf => {
                return Err(ResponseHeadError::Malformed(
                    "a bare LF in the response head",
                ))
            }
            HeadScan::Partial => {}
        }
        if up.buf.len() > MAX_RESPONSE_HEAD {
            return Err(ResponseHeadError::Malformed("response head too large"));
        }
        scanned = up.buf.len();
        up.buf.reserve(4096);
        match tokio::time::timeout_at(deadline, up.io.read_buf(&mut up.buf)).await {
            Err(_) => return Err(ResponseHeadError::Timeout),
            Ok(Ok(0)) => return Err(ResponseHeadError::Closed),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(ResponseHeadError::Closed)
            }
            Ok(Err(e)) => return Err(ResponseHeadError::Io(e)),
            Ok(Ok(_)) => {}
        }
    }
}

/// Parses a complete response head; the request's method and the status decide whether a body
/// follows.
pub fn parse_response(raw: Bytes, request_was_head: bool) -> Result<Head, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut storage);
    parsed(res.parse(&raw), "malformed response head")?;
    let status = res.code.unwrap_or(0);
    let version_minor = res.version.unwrap_or(1);
    let mut head = Head::from_parsed(&raw, res.headers, version_minor, 0..0, 0..0, status);
    let last_coding = head.tokens("transfer-encoding").last().unwrap_or_default();
    let te = head.values("transfer-encoding").next().is_some();
    if te && !trim(last_coding).eq_ignore_ascii_case(b"chunked") {
        return Err(HeadError::Framing(
            "Transfer-Encoding without a final chunked",
        ));
    }
    let length = content_length(&head)?.map(|(n, _)| n);
    let declared = body_framing(&head, te, length)?;
    head.framing =
        if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Framing::Empty
        } else {
            declared.unwrap_or(Framing::UntilClose)
        };
    head.close = wants_close(&head) || head.framing == Framing::UntilClose;
    Ok(head)
}

/// Whether a `101` may be spliced: it must answer a valid WebSocket handshake and name
/// websocket, else the backend switched to something the client never asked for.
pub fn is_websocket_accept(resp: &Head, request: &Head) -> bool {
    request.request.websocket
        && resp.has_token("upgrade", "websocket")
        && resp.tokens("upgrade").count() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, head: bool) -> Head {
        parse_response(Bytes::copy_from_slice(s.as_bytes()), head).unwrap()
    }

    #[test]
    fn response_framing() {
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
        assert_eq!(
            r(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            )
            .framing,
            Framing::Chunked
        );
        let until_close = r("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(until_close.framing, Framing::UntilClose);
        assert!(until_close.close);
        assert!(parse_response(
            Bytes::from_static(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            false
        )
        .is_err());
        assert!(parse_response(
            Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            false
        )
        .is_err());
    }
}
