//! A request as a simulated node received it: the head as the front door parses it
//! (`proxy::head`), so header names keep their case and order, duplicates included, and framing
//! is read exactly as qlik-lb reads it; then the start of the decoded body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use crate::proxy::chunked::{BadChunk, ChunkedScanner};
use crate::proxy::head::{Framing, Head, HeadError};
use crate::proxy::request_head::parse_request;

/// Bytes of a request body kept in memory; the rest is read and counted only.
pub const KEPT_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    head: Head,
    /// The first `KEPT_BODY_BYTES` of the decoded body.
    pub body: Vec<u8>,
    /// The whole decoded body length, kept or not.
    pub body_len: u64,
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

impl Request {
    /// A request without a body from its raw head (ending with an empty line).
    pub fn parse(raw: &[u8]) -> Result<Request, HeadError> {
        parse_request(Bytes::copy_from_slice(raw)).map(|head| Request {
            head,
            body: Vec::new(),
            body_len: 0,
        })
    }

    pub fn method(&self) -> &str {
        text(self.head.method())
    }

    /// The request target exactly as received (path and query).
    pub fn target(&self) -> &str {
        text(self.head.target())
    }

    pub fn path(&self) -> &str {
        self.target().split('?').next().unwrap_or("")
    }

    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn minor_version(&self) -> u8 {
        self.head.version_minor
    }

    /// Header names and values as received, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.head
            .headers
            .iter()
            .map(|h| (text(self.head.name(h)), self.head.value(h)))
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn wants_close(&self) -> bool {
        self.head.close
    }

    pub fn is_websocket_upgrade(&self) -> bool {
        self.head.request.websocket
    }
}

/// Where the front door's body reader (`proxy::body::copy_body`) copies a request body to: it
/// writes the body as sent, so a chunked one is decoded here by the same scanner that found its
/// end.
pub(crate) struct BodySink {
    kept: Vec<u8>,
    len: u64,
    chunks: Option<ChunkedScanner>,
}

impl BodySink {
    pub(crate) fn new(framing: Framing) -> BodySink {
        BodySink {
            kept: Vec::new(),
            len: 0,
            chunks: (framing == Framing::Chunked).then(|| ChunkedScanner::new(false)),
        }
    }

    pub(crate) fn into_request(self, head: Head) -> Request {
        Request {
            head,
            body: self.kept,
            body_len: self.len,
        }
    }
}

impl AsyncWrite for BodySink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let BodySink { kept, len, chunks } = self.get_mut();
        let mut keep = |data: &[u8]| {
            let room = KEPT_BODY_BYTES.saturating_sub(kept.len()).min(data.len());
            kept.extend_from_slice(&data[..room]);
            *len += data.len() as u64;
        };
        match chunks {
            Some(scanner) => {
                scanner
                    .scan_data(bytes, keep)
                    .map_err(|BadChunk(why)| io::Error::new(io::ErrorKind::InvalidData, why))?;
            }
            None => keep(bytes),
        }
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
