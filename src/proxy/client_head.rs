//! Reading a request head from a client within `header_timeout` and `max_header_bytes`; a bare
//! LF is refused as soon as it arrives, the rest of §3.1 by `request_head.rs`.

use super::head::{scan_head, Head, HeadError, HeadScan};
use super::request_head::parse_request;
use super::respond::ProxyError;
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

pub struct HeadLimits {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_header_bytes: usize,
}

pub enum HeadRead {
    Head(Head),
    /// The client went away or stayed idle past keep-alive: close quietly.
    Closed,
    Refused(ProxyError, &'static str),
}

/// `first` marks the first request of a connection: its head deadline runs from `accepted`
/// (a slowloris guard); later heads get `keepalive_timeout` to start and `header_timeout` to finish.
pub async fn read_request_head(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    limits: &HeadLimits,
    first: Option<Instant>,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> HeadRead {
    let mut deadline = first.map(|t| t + limits.header_timeout);
    if buf.is_empty() {
        let wait_until = deadline.unwrap_or_else(|| Instant::now() + limits.keepalive_timeout);
        let read = tokio::select! {
            r = tokio::time::timeout_at(wait_until, io.read_buf(buf)) => r,
            _ = stop => return HeadRead::Closed,
        };
        match read {
            Err(_) if first.is_some() => {
                return HeadRead::Refused(ProxyError::HeaderTimeout, "no request head in time")
            }
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Closed,
            Ok(Ok(_)) => {}
        }
    }
    let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
    let mut scanned = 0;
    loop {
        // RFC 9112 §2.2: ignore empty lines before a request line.
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        match scan_head(buf, scanned) {
            HeadScan::Complete(end) if end > limits.max_header_bytes => {
                return HeadRead::Refused(ProxyError::HeaderTooLarge, "header section too large");
            }
            HeadScan::Complete(end) => {
                let raw = buf.split_to(end).freeze();
                return match parse_request(raw) {
                    Ok(head) => HeadRead::Head(head),
                    Err(HeadError::TooManyHeaders) => {
                        HeadRead::Refused(ProxyError::HeaderTooLarge, "too many header lines")
                    }
                    Err(HeadError::Method(why)) => {
                        HeadRead::Refused(ProxyError::MethodNotAllowed, why)
                    }
                    Err(HeadError::Expectation) => HeadRead::Refused(
                        ProxyError::ExpectationFailed,
                        HeadError::Expectation.reason(),
                    ),
                    Err(e) => HeadRead::Refused(ProxyError::BadRequest, e.reason()),
                };
            }
            HeadScan::BareLf => {
                return HeadRead::Refused(ProxyError::BadRequest, "a bare LF in the request head")
            }
            HeadScan::Partial => {}
        }
        if buf.len() > limits.max_header_bytes {
            return HeadRead::Refused(ProxyError::HeaderTooLarge, "header section too large");
        }
        scanned = buf.len();
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_) => {
                return HeadRead::Refused(
                    ProxyError::HeaderTimeout,
                    "request head not complete in time",
                )
            }
            Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Closed,
            Ok(Ok(_)) => {}
        }
    }
}
