//! The chunked body of the strict reference parser: 1 to 15 hex digits of size, extensions by
//! the RFC 9112 grammar, and an empty trailer section.

use super::{err, is_field_byte, line, skip_ows, token_len, Request, StrictError};

/// Reads a chunked body starting at `at`: the end of the message, or `None` if incomplete.
pub(super) fn chunked(
    buf: &[u8],
    mut at: usize,
    req: &mut Request,
) -> Result<Option<usize>, StrictError> {
    loop {
        let Some((end, next)) = line(buf, at, is_field_byte)? else {
            return partial_size_line(&buf[at..]).map_err(|why| StrictError { at, why });
        };
        let size = chunk_line(&buf[at..end]).map_err(|why| StrictError { at, why })?;
        if size == 0 {
            req.last_chunk = Some(buf[at..end].to_vec());
            // Only an empty trailer section is accepted.
            return match &buf[next..] {
                [] | [b'\r'] => Ok(None),
                [b'\r', b'\n', ..] => Ok(Some(next + 2)),
                _ => err(next, "trailer field present"),
            };
        }
        if buf.len() - next < size + 2 {
            // Whatever data has arrived is fine; a CR/LF in the wrong place is caught once the
            // chunk is complete.
            let have = buf.len() - next;
            if have > size && buf[next + size] != b'\r' {
                return err(next + size, "chunk data not followed by CRLF");
            }
            return Ok(None);
        }
        if &buf[next + size..next + size + 2] != b"\r\n" {
            return err(next + size, "chunk data not followed by CRLF");
        }
        req.body.extend_from_slice(&buf[next..next + size]);
        at = next + size + 2;
    }
}

/// The size of a complete chunk line (without CRLF), checking its extensions.
fn chunk_line(l: &[u8]) -> Result<usize, String> {
    let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("chunk size is not hex".into());
    }
    if digits > 15 {
        return Err("chunk size over 15 hex digits".into());
    }
    chunk_ext(&l[digits..])?;
    let size = usize::from_str_radix(std::str::from_utf8(&l[..digits]).unwrap(), 16).unwrap();
    Ok(size)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`
fn chunk_ext(s: &[u8]) -> Result<(), String> {
    let mut i = 0;
    loop {
        let ws = i;
        i = skip_ows(s, i);
        if i == s.len() {
            return if i == ws {
                Ok(())
            } else {
                Err("whitespace not followed by a chunk extension".into())
            };
        }
        if s[i] != b';' {
            return Err(format!("byte {:#04x} in the chunk size line", s[i]));
        }
        i = skip_ows(s, i + 1);
        let n = token_len(&s[i..]);
        if n == 0 {
            return Err("chunk extension without a name".into());
        }
        i += n;
        let k = skip_ows(s, i);
        if k < s.len() && s[k] == b'=' {
            i = skip_ows(s, k + 1);
            if i < s.len() && s[i] == b'"' {
                i = quoted_end(s, i)?;
            } else {
                let n = token_len(&s[i..]);
                if n == 0 {
                    return Err("chunk extension without a value after `=`".into());
                }
                i += n;
            }
        }
    }
}

/// Index just past the quoted-string starting at `s[i] == '"'`.
fn quoted_end(s: &[u8], mut i: usize) -> Result<usize, String> {
    i += 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok(i + 1),
            b'\\' if i + 1 < s.len() && is_field_byte(s[i + 1]) => i += 2,
            b if is_field_byte(b) => i += 1,
            _ => return Err("bad byte in a quoted chunk extension".into()),
        }
    }
    Err("unterminated quoted chunk extension".into())
}

/// An incomplete chunk line is a valid start if it starts like one.
fn partial_size_line(l: &[u8]) -> Result<Option<usize>, String> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 15 {
        return Err("chunk size over 15 hex digits".into());
    }
    if digits == 0 && !l.is_empty() {
        return Err("chunk size is not hex".into());
    }
    Ok(None)
}
