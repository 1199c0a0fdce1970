//! Reading a backend's response head within `response_timeout`.

use super::head::{head_end, parse_response, Head};
use super::upstream::BackendConn;
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
        if let Some(end) = head_end(&up.buf, scanned) {
            let raw = up.buf.split_to(end).freeze();
            return parse_response(raw, request_was_head)
                .map_err(|e| ResponseHeadError::Malformed(e.reason()));
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
