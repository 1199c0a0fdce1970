//! Streaming a message body from one side to the other by its framing, without buffering it:
//! at most one read buffer of bytes is in flight. Chunked bodies are passed through as they are,
//! while a small state machine validates chunk sizes and finds where the message ends.

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
    #[error("invalid chunked encoding: {0}")]
    BadChunk(&'static str),
    #[error("no body bytes for {0:?}")]
    Idle(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size {
        value: u64,
        digits: u8,
        in_ext: bool,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    Trailer {
        empty_line: bool,
    },
    TrailerLf {
        empty_line: bool,
    },
    Done,
}

const SIZE_START: Chunk = Chunk::Size {
    value: 0,
    digits: 0,
    in_ext: false,
};

/// Tracks where a chunked body ends, validating as it goes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkedScanner(Chunk);

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner(SIZE_START)
    }
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.0 == Chunk::Done
    }

    /// Consumes bytes of the body; returns how many belong to it (fewer than `bytes.len()` only
    /// when the body ended inside `bytes`).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, BodyError> {
        self.scan_data(bytes, |_| {})
    }

    /// `scan`, also handing each run of chunk data to `data` (the decoded body, in order).
    pub fn scan_data(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, BodyError> {
        let mut i = 0;
        while i < bytes.len() {
            if let Chunk::Data(n) = self.0 {
                let take = (n as usize).min(bytes.len() - i);
                data(&bytes[i..i + take]);
                i += take;
                let left = n - take as u64;
                self.0 = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let b = bytes[i];
            self.0 = match self.0 {
                Chunk::Done => return Ok(i),
                Chunk::Data(_) => unreachable!("handled above"),
                Chunk::Size {
                    value,
                    digits,
                    in_ext,
                } => match b {
                    _ if !in_ext && b.is_ascii_hexdigit() => {
                        if digits >= 15 {
                            return Err(BodyError::BadChunk("chunk size too large"));
                        }
                        let d = (b as char).to_digit(16).expect("hex digit") as u64;
                        Chunk::Size {
                            value: value * 16 + d,
                            digits: digits + 1,
                            in_ext,
                        }
                    }
                    b'\r' if digits > 0 => Chunk::SizeLf { value },
                    // Extensions and whitespace after the size are allowed and passed on as sent.
                    b';' | b' ' | b'\t' if digits > 0 => Chunk::Size {
                        value,
                        digits,
                        in_ext: true,
                    },
                    _ if in_ext && b != b'\n' => Chunk::Size {
                        value,
                        digits,
                        in_ext,
                    },
                    _ => return Err(BodyError::BadChunk("bad chunk size line")),
                },
                Chunk::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => Chunk::Trailer { empty_line: true },
                    (b'\n', n) => Chunk::Data(n),
                    _ => return Err(BodyError::BadChunk("chunk size line without LF")),
                },
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => SIZE_START,
                Chunk::DataCr | Chunk::DataLf => {
                    return Err(BodyError::BadChunk("chunk data not followed by CRLF"))
                }
                Chunk::Trailer { empty_line } => match b {
                    b'\r' => Chunk::TrailerLf { empty_line },
                    b'\n' => return Err(BodyError::BadChunk("bare LF in trailer")),
                    _ => Chunk::Trailer { empty_line: false },
                },
                Chunk::TrailerLf { empty_line } => match (b, empty_line) {
                    (b'\n', true) => Chunk::Done,
                    (b'\n', false) => Chunk::Trailer { empty_line: true },
                    _ => return Err(BodyError::BadChunk("trailer line without LF")),
                },
            };
            i += 1;
        }
        Ok(i)
    }
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

/// Copies one body from `src` (with bytes already read into `buf`) to `dst`. On return `buf`
/// holds only bytes after the body (a pipelined next message). Returns the bytes copied.
pub async fn copy_body<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    framing: Framing,
    idle: Duration,
) -> Result<u64, BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut copied = 0u64;
    let mut remaining = match framing {
        Framing::Empty => return Ok(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::UntilClose => None,
    };
    let mut chunked = (framing == Framing::Chunked).then(ChunkedScanner::default);
    loop {
        if !buf.is_empty() {
            let take = match (&mut remaining, &mut chunked) {
                (Some(n), _) => (*n).min(buf.len() as u64) as usize,
                (None, Some(scanner)) => scanner.scan(buf)?,
                (None, None) => buf.len(),
            };
            if take > 0 {
                dst.write_all(&buf[..take])
                    .await
                    .map_err(BodyError::Write)?;
                buf.advance(take);
                copied += take as u64;
                if let Some(n) = &mut remaining {
                    *n -= take as u64;
                }
            }
        }
        let done = match (&remaining, &chunked) {
            (Some(n), _) => *n == 0,
            (None, Some(s)) => s.is_done(),
            (None, None) => false,
        };
        if done {
            dst.flush().await.map_err(BodyError::Write)?;
            return Ok(copied);
        }
        if buf.is_empty() {
            // Reuse the allocation rather than growing a new one per read.
            buf.clear();
        }
        buf.reserve(READ_CHUNK);
        let n = tokio::time::timeout(idle, src.read_buf(buf))
            .await
            .map_err(|_| BodyError::Idle(idle))?
            .map_err(BodyError::Read)?;
        if n == 0 {
            if framing == Framing::UntilClose {
                dst.flush().await.map_err(BodyError::Write)?;
                return Ok(copied);
            }
            return Err(BodyError::Truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), BodyError> {
        let mut s = ChunkedScanner::default();
        let n = s.scan(input)?;
        Ok((n, s.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_chunked_body() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET /next";
        assert_eq!(scan_all(body).unwrap(), (body.len() - 9, true));
    }

    #[test]
    fn extensions_and_trailers_pass() {
        let body = b"5;name=v\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(scan_all(body).unwrap(), (body.len(), true));
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let body = b"a\r\n0123456789\r\n1\r\nx\r\n0\r\n\r\n";
        let mut s = ChunkedScanner::default();
        for b in body.iter() {
            assert_eq!(s.scan(std::slice::from_ref(b)).unwrap(), 1);
        }
        assert!(s.is_done());
    }

    #[test]
    fn scan_data_hands_over_the_decoded_body() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        let mut s = ChunkedScanner::default();
        let mut decoded = Vec::new();
        for piece in body.chunks(4) {
            s.scan_data(piece, |d| decoded.extend_from_slice(d))
                .unwrap();
        }
        assert!(s.is_done());
        assert_eq!(decoded, b"hello world");
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"1234567890abcdef0\r\n",
            b"5\nhello",
        ] {
            assert!(scan_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(scan_all(b"3\r\nabcX").is_err(), "data longer than its size");
    }

    #[tokio::test]
    async fn copies_exact_length_and_keeps_the_rest() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut buf = BytesMut::from(&b"hel"[..]);
        let writer = tokio::spawn(async move {
            a.write_all(b"lo world NEXT").await.unwrap();
            a
        });
        let mut out = Vec::new();
        let n = copy_body(
            &mut b,
            &mut buf,
            &mut out,
            Framing::Length(11),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let _a = writer.await.unwrap();
        assert_eq!(n, 11);
        assert_eq!(out, b"hello world");
        // Whatever arrived past the body stays for the next message.
        assert!(b" NEXT".starts_with(&buf[..]));
    }
}
