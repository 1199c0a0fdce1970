//! The chunked transfer coding read strictly (RFC 9112 §7.1): a byte-at-a-time state machine
//! that validates chunk sizes and extensions as they stream past, finds where the body ends, and
//! tells which bytes to forward (all, less a request's trailer section).

/// What is wrong with a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk(pub &'static str);

/// Where a chunked body is. The chunk-size line is read to RFC 9112 §7.1.1 exactly:
/// `chunk-size *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) CRLF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size or an extension: only `;` (or `=` after a name) may follow.
    Bws {
        after_name: bool,
    },
    ExtNameStart,
    ExtName,
    ExtValueStart,
    ExtToken,
    Quoted,
    QuotedEscape,
    /// Just after a closing quote.
    QuotedEnd,
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
};

/// Longest chunk-size line (size and extensions) accepted; real clients send a few bytes.
const MAX_SIZE_LINE: u16 = 4096;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// How much of the bytes given to `ChunkedScanner::scan` belong to the body and how much of it
/// is forwarded (all of it, except a trailer section that is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub consumed: usize,
    pub forward: usize,
}

/// Tracks where a chunked body ends, validating as it goes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkedScanner {
    state: Chunk,
    /// The size of the chunk whose extensions are being read.
    size: u64,
    size_line: u16,
    /// Request trailers never reach a backend (§3.1): the proxy reads what a backend might
    /// merge into the head, so they are consumed and an empty trailer section is sent instead.
    drop_trailers: bool,
}

impl ChunkedScanner {
    pub fn new(drop_trailers: bool) -> ChunkedScanner {
        ChunkedScanner {
            state: SIZE_START,
            size: 0,
            size_line: 0,
            drop_trailers,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == Chunk::Done
    }

    fn in_trailer(&self) -> bool {
        matches!(
            self.state,
            Chunk::Trailer { .. } | Chunk::TrailerLf { .. } | Chunk::Done
        )
    }

    /// Consumes bytes of the body; `consumed` is fewer than `bytes.len()` only when the body
    /// ended inside `bytes`.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<Scanned, BadChunk> {
        self.scan_data(bytes, |_| {})
    }

    /// `scan`, also handing each run of chunk data to `data` (the decoded body, in order).
    pub fn scan_data(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Scanned, BadChunk> {
        let dropping = |s: &ChunkedScanner| s.drop_trailers && s.in_trailer();
        let mut forward = if dropping(self) { Some(0) } else { None };
        let mut i = 0;
        while i < bytes.len() {
            if let Chunk::Data(n) = self.state {
                let take = (n as usize).min(bytes.len() - i);
                data(&bytes[i..i + take]);
                i += take;
                let left = n - take as u64;
                self.state = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            if self.state == Chunk::Done {
                break;
            }
            self.state = self.step(bytes[i])?;
            i += 1;
            if forward.is_none() && dropping(self) {
                forward = Some(i);
            }
        }
        Ok(Scanned {
            consumed: i,
            forward: forward.unwrap_or(i),
        })
    }

    fn step(&mut self, b: u8) -> Result<Chunk, BadChunk> {
        let bad = |why| Err(BadChunk(why));
        if matches!(
            self.state,
            Chunk::Size { .. }
                | Chunk::Bws { .. }
                | Chunk::ExtNameStart
                | Chunk::ExtName
                | Chunk::ExtValueStart
                | Chunk::ExtToken
                | Chunk::Quoted
                | Chunk::QuotedEscape
                | Chunk::QuotedEnd
        ) {
            self.size_line += 1;
            if self.size_line > MAX_SIZE_LINE {
                return bad("chunk size line too long");
            }
        }
        let next = match (self.state, b) {
            (Chunk::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return bad("chunk size too large");
                }
                let d = (b as char).to_digit(16).expect("hex digit") as u64;
                Chunk::Size {
                    value: value * 16 + d,
                    digits: digits + 1,
                }
            }
            (Chunk::Size { digits: 0, .. }, _) => return bad("chunk size is not hex"),
            (Chunk::Size { value, .. }, b'\r') => Chunk::SizeLf { value },
            (Chunk::Size { .. } | Chunk::ExtToken | Chunk::QuotedEnd, b';') => Chunk::ExtNameStart,
            (Chunk::Size { .. } | Chunk::ExtToken | Chunk::QuotedEnd, _) if is_ws(b) => {
                Chunk::Bws { after_name: false }
            }
            (Chunk::Bws { .. }, _) if is_ws(b) => self.state,
            (Chunk::Bws { .. }, b';') => Chunk::ExtNameStart,
            (Chunk::Bws { after_name: true }, b'=') => Chunk::ExtValueStart,
            (Chunk::ExtNameStart, _) if is_ws(b) => Chunk::ExtNameStart,
            (Chunk::ExtNameStart | Chunk::ExtName, _) if is_tchar(b) => Chunk::ExtName,
            (Chunk::ExtName, b';') => Chunk::ExtNameStart,
            (Chunk::ExtName, b'=') => Chunk::ExtValueStart,
            (Chunk::ExtName, _) if is_ws(b) => Chunk::Bws { after_name: true },
            (Chunk::ExtValueStart, _) if is_ws(b) => Chunk::ExtValueStart,
            (Chunk::ExtValueStart | Chunk::ExtToken, _) if is_tchar(b) => Chunk::ExtToken,
            (Chunk::ExtValueStart, b'"') => Chunk::Quoted,
            (Chunk::Quoted, b'"') => Chunk::QuotedEnd,
            (Chunk::Quoted, b'\\') => Chunk::QuotedEscape,
            (Chunk::Quoted, _)
                if b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80 =>
            {
                Chunk::Quoted
            }
            (Chunk::QuotedEscape, _) if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => {
                Chunk::Quoted
            }
            (Chunk::ExtName | Chunk::ExtToken | Chunk::QuotedEnd, b'\r') => {
                // The size was read when the first extension began.
                Chunk::SizeLf { value: self.size }
            }
            (Chunk::SizeLf { value }, b'\n') => {
                self.size_line = 0;
                if value == 0 {
                    Chunk::Trailer { empty_line: true }
                } else {
                    Chunk::Data(value)
                }
            }
            (Chunk::SizeLf { .. }, _) => return bad("chunk size line without LF"),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => SIZE_START,
            (Chunk::DataCr | Chunk::DataLf, _) => return bad("chunk data not followed by CRLF"),
            (Chunk::Trailer { empty_line }, b'\r') => Chunk::TrailerLf { empty_line },
            (Chunk::Trailer { .. }, b'\n') => return bad("bare LF in trailer"),
            (Chunk::Trailer { .. }, _) => Chunk::Trailer { empty_line: false },
            (Chunk::TrailerLf { empty_line: true }, b'\n') => Chunk::Done,
            (Chunk::TrailerLf { empty_line: false }, b'\n') => Chunk::Trailer { empty_line: true },
            (Chunk::TrailerLf { .. }, _) => return bad("trailer line without LF"),
            _ => return bad("bad chunk size line"),
        };
        if let (Chunk::Size { value, .. }, Chunk::ExtNameStart | Chunk::Bws { .. }) =
            (self.state, next)
        {
            self.size = value;
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut s = ChunkedScanner::new(false);
        let n = s.scan(input)?.consumed;
        Ok((n, s.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_chunked_body() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET /next";
        assert_eq!(scan_all(body).unwrap(), (body.len() - 9, true));
    }

    #[test]
    fn extensions_and_trailers_pass() {
        for body in [
            &b"5;name=v\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"[..],
            b"5 ; a ; b = \"q \\\" d\" ;c=tok\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(scan_all(body).unwrap(), (body.len(), true), "{body:?}");
        }
    }

    #[test]
    fn request_trailers_are_not_forwarded() {
        let body = b"5\r\nhello\r\n0;x=1\r\nX-Qlik-User: a\r\n\r\nNEXT";
        let mut s = ChunkedScanner::new(true);
        let r = s.scan(body).unwrap();
        assert!(s.is_done());
        assert_eq!(r.consumed, body.len() - 4);
        assert_eq!(&body[..r.forward], b"5\r\nhello\r\n0;x=1\r\n");
        // Split anywhere, the forwarded bytes are the same.
        for cut in 1..body.len() - 4 {
            let mut s = ChunkedScanner::new(true);
            let a = s.scan(&body[..cut]).unwrap();
            let b = s.scan(&body[cut..]).unwrap();
            let mut fwd = body[..a.forward].to_vec();
            fwd.extend_from_slice(&body[cut..cut + b.forward]);
            assert_eq!(fwd, b"5\r\nhello\r\n0;x=1\r\n", "cut at {cut}");
        }
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let body = b"a;e=\"1\"\r\n0123456789\r\n1\r\nx\r\n0\r\n\r\n";
        let mut s = ChunkedScanner::new(false);
        for b in body.iter() {
            assert_eq!(s.scan(std::slice::from_ref(b)).unwrap().consumed, 1);
        }
        assert!(s.is_done());
    }

    #[test]
    fn bad_sizes_and_extensions_are_refused() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"1234567890abcdef0\r\n",
            b"5\nhello",
            b"5 \r\nhello",
            b"5;\r\nhello",
            b"5;a b\r\n",
            b"5;a=\r\n",
            b"5;a=\"x\r\n",
            b"5;a=b c\r\n",
            b"5;a@b\r\n",
            b"5\r\x0bhello",
            b"0x5\r\n",
        ] {
            assert!(scan_all(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(scan_all(b"3\r\nabcX").is_err(), "data longer than its size");
        let long = [b"5;".as_slice(), &[b'a'; 5000]].concat();
        assert!(scan_all(&long).is_err(), "an endless extension");
    }

    #[test]
    fn scan_data_hands_over_the_decoded_body() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        let mut s = ChunkedScanner::new(false);
        let mut decoded = Vec::new();
        for piece in body.chunks(4) {
            s.scan_data(piece, |d| decoded.extend_from_slice(d))
                .unwrap();
        }
        assert!(s.is_done());
        assert_eq!(decoded, b"hello world");
    }
}
