//! Streaming a message body from one side to the other by its framing, without buffering it:
//! at most one read buffer of bytes is in flight. Chunked bodies are passed through as they are
//! (less a request's trailers), while `chunked.rs` validates them and finds where they end.

use super::chunked::{BadChunk, ChunkedScanner, Scanned};
use super::head::Framing;
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read size for bodies: large enough for throughput, small enough to keep memory flat.
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the body failed: {0}")]
    Read(std::io::Error),
    #[error("the sender closed before the body was complete")]
    Truncated,
    #[error("writing the body failed: {0}")]
    Write(std::io::Error),
    #[error("the receiver took no bytes for {0:?}")]
    Stalled(Duration),
    #[error("invalid chunked encoding: {0}")]
    BadChunk(&'static str),
    #[error("no body bytes for {0:?}")]
    Idle(Duration),
}

/// Bodies up to this size that are already read ride in the same write as their head.
const INLINE_BODY: u64 = 16 * 1024;

/// Moves a small, fully buffered fixed-length body from `buf` to the end of `out` (one write
/// instead of two for the common small answer). Returns whether the body is now in `out`.
pub fn inline_small_body(buf: &mut BytesMut, framing: Framing, out: &mut BytesMut) -> bool {
    match framing {
        Framing::Empty => true,
        Framing::Length(n) if n <= INLINE_BODY && buf.len() as u64 >= n => {
            out.extend_from_slice(&buf.split_to(n as usize));
            true
        }
        _ => false,
    }
}

impl From<BadChunk> for BodyError {
    fn from(BadChunk(why): BadChunk) -> BodyError {
        BodyError::BadChunk(why)
    }
}

/// How one body moves.
#[derive(Debug, Clone, Copy)]
pub struct BodyCopy {
    pub framing: Framing,
    /// Longest wait for the sender's next bytes.
    pub idle: Duration,
    /// Longest wait for the receiver to take bytes (`send_timeout`).
    pub send_timeout: Duration,
    /// A request body: its trailer section is dropped.
    pub request: bool,
}

/// Checks the body bytes that arrived with a head before the head is forwarded, so that a bad
/// chunk in the first packet is refused with nothing sent (§3.1).
pub fn check_buffered(framing: Framing, buf: &[u8]) -> Result<(), BodyError> {
    if framing == Framing::Chunked {
        ChunkedScanner::new(true).scan(buf)?;
    }
    Ok(())
}

/// Writes all of `bytes`, failing when the receiver takes none of them for `send_timeout`
/// (a write of at most one read buffer: no progress for that long is a stalled receiver).
pub async fn write_within<W: AsyncWrite + Unpin>(
    dst: &mut W,
    bytes: &[u8],
    send_timeout: Duration,
) -> Result<(), BodyError> {
    let write = async {
        dst.write_all(bytes).await?;
        dst.flush().await
    };
    match tokio::time::timeout(send_timeout, write).await {
        Ok(r) => r.map_err(BodyError::Write),
        Err(_) => Err(BodyError::Stalled(send_timeout)),
    }
}

/// Closes the write side (a TLS close_notify included), giving up after `send_timeout`.
pub async fn close_within<W: AsyncWrite + Unpin>(dst: &mut W, send_timeout: Duration) {
    let _ = tokio::time::timeout(send_timeout, dst.shutdown()).await;
}

async fn flush_within<W: AsyncWrite + Unpin>(
    dst: &mut W,
    send_timeout: Duration,
) -> Result<(), BodyError> {
    match tokio::time::timeout(send_timeout, dst.flush()).await {
        Ok(r) => r.map_err(BodyError::Write),
        Err(_) => Err(BodyError::Stalled(send_timeout)),
    }
}

/// Copies one body from `src` (with bytes already read into `buf`) to `dst`. On return `buf`
/// holds only bytes after the body (a pipelined next message). Returns the bytes copied.
pub async fn copy_body<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    how: BodyCopy,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut copied = 0u64;
    let mut remaining = match how.framing {
        Framing::Empty => return Ok(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::UntilClose => None,
    };
    let mut chunked = (how.framing == Framing::Chunked).then(|| ChunkedScanner::new(how.request));
    loop {
        if !buf.is_empty() {
            let Scanned { consumed, forward } = match (&mut remaining, &mut chunked) {
                (Some(n), _) => {
                    let take = (*n).min(buf.len() as u64) as usize;
                    *n -= take as u64;
                    Scanned {
                        consumed: take,
                        forward: take,
                    }
                }
                (None, Some(scanner)) => scanner.scan(buf)?,
                (None, None) => Scanned {
                    consumed: buf.len(),
                    forward: buf.len(),
                },
            };
            if forward > 0 {
                write_within(dst, &buf[..forward], how.send_timeout).await?;
                copied += forward as u64;
            }
            buf.advance(consumed);
        }
        let done = match (&remaining, &chunked) {
            (Some(n), _) => *n == 0,
            (None, Some(s)) => s.is_done(),
            (None, None) => false,
        };
        if done {
            if how.request && how.framing == Framing::Chunked {
                // The empty trailer section in place of the dropped one.
                write_within(dst, b"\r\n", how.send_timeout).await?;
            }
            flush_within(dst, how.send_timeout).await?;
            return Ok(copied);
        }
        if buf.is_empty() {
            // Reuse the allocation rather than growing a new one per read.
            buf.clear();
        }
        buf.reserve(READ_CHUNK);
        let n = tokio::time::timeout(how.idle, src.read_buf(buf))
            .await
            .map_err(|_| BodyError::Idle(how.idle))?
            .map_err(BodyError::Read)?;
        if n == 0 {
            if how.framing == Framing::UntilClose {
                flush_within(dst, how.send_timeout).await?;
                return Ok(copied);
            }
            return Err(BodyError::Truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_exact_length_and_keeps_the_rest() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut buf = BytesMut::from(&b"hel"[..]);
        let writer = tokio::spawn(async move {
            a.write_all(b"lo world NEXT").await.unwrap();
            a
        });
        let mut out = Vec::new();
        let how = BodyCopy {
            framing: Framing::Length(11),
            idle: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            request: true,
        };
        let n = copy_body(&mut b, &mut buf, &mut out, how).await.unwrap();
        let _a = writer.await.unwrap();
        assert_eq!(n, 11);
        assert_eq!(out, b"hello world");
        // Whatever arrived past the body stays for the next message.
        assert!(b" NEXT".starts_with(&buf[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_that_takes_nothing_is_given_up_after_send_timeout() {
        let (mut src_w, mut src) = tokio::io::duplex(1024);
        let (_dst_r, mut dst) = tokio::io::duplex(16);
        src_w.write_all(&[b'x'; 1000]).await.unwrap();
        let mut buf = BytesMut::new();
        let how = BodyCopy {
            framing: Framing::Length(1000),
            idle: Duration::from_secs(60),
            send_timeout: Duration::from_secs(2),
            request: false,
        };
        let r = copy_body(&mut src, &mut buf, &mut dst, how).await;
        assert!(matches!(r, Err(BodyError::Stalled(_))), "{r:?}");
    }
}
