//! The PROXY protocol header (v1 text, v2 binary) that a load balancer in front (AWS NLB,
//! HAProxy `send-proxy`) writes before the client's bytes. Exactly the header's bytes are
//! consumed, so the TLS handshake or the HTTP request starts right after it; `ppp` parses.

use ppp::v1::Addresses as V1Addresses;
use ppp::v2::{Addresses as V2Addresses, Command};
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature (`ppp::v2::PROTOCOL_PREFIX`).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2: signature, version/command, family/protocol and the 2-byte length of what follows.
const V2_FIXED: usize = 16;
/// The longest v1 line the protocol allows, CRLF included.
const V1_MAX: usize = 107;
/// The shortest valid header of either version is longer (`PROXY UNKNOWN\r\n` is 15 bytes),
/// so reading this much first never takes a byte of what follows the header.
const FIRST_READ: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection closed before a complete PROXY header")]
    Closed,
    #[error("reading the PROXY header failed: {0}")]
    Io(std::io::Error),
    #[error("no PROXY protocol header at the start of the connection")]
    Missing,
    #[error("the PROXY v1 line is longer than 107 bytes")]
    TooLong,
    #[error("the PROXY header is not valid: {0}")]
    Invalid(String),
}

fn io_error(e: std::io::Error) -> HeaderError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        HeaderError::Closed
    } else {
        HeaderError::Io(e)
    }
}

/// Reads one header and returns the client address it names; `peer` (the TCP peer, i.e. the
/// load balancer) when it names none: v2 `LOCAL` (a health check), v1 `UNKNOWN`, or a family
/// other than TCP over IPv4/IPv6. The caller bounds the time it may take.
pub async fn read_header(tcp: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, HeaderError> {
    let mut header = vec![0u8; FIRST_READ];
    tcp.read_exact(&mut header).await.map_err(io_error)?;
    if header[..] == V2_SIGNATURE[..] {
        read_v2(tcp, header, peer).await
    } else if header.starts_with(b"PROXY ") {
        read_v1(tcp, header, peer).await
    } else {
        Err(HeaderError::Missing)
    }
}

/// `ppp` reports a v2 header shorter than its fixed part only as incomplete, without the
/// length still to come; so the fixed part is read here, its length field says how much
/// follows, and exactly that is read before `ppp` parses the whole.
async fn read_v2(
    tcp: &mut TcpStream,
    mut header: Vec<u8>,
    peer: SocketAddr,
) -> Result<SocketAddr, HeaderError> {
    header.resize(V2_FIXED, 0);
    tcp.read_exact(&mut header[FIRST_READ..])
        .await
        .map_err(io_error)?;
    let rest = u16::from_be_bytes([header[14], header[15]]) as usize;
    header.resize(V2_FIXED + rest, 0);
    tcp.read_exact(&mut header[V2_FIXED..])
        .await
        .map_err(io_error)?;
    let parsed =
        ppp::v2::Header::try_from(&header[..]).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    if parsed.command == Command::Local {
        return Ok(peer);
    }
    Ok(match parsed.addresses {
        V2Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        V2Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        V2Addresses::Unspecified | V2Addresses::Unix(_) => peer,
    })
}

/// A v1 line ends at CRLF, wherever that is: the bytes that have arrived are peeked at, and
/// only those up to the CRLF are read, so nothing after the line is taken from the socket.
async fn read_v1(
    tcp: &mut TcpStream,
    mut header: Vec<u8>,
    peer: SocketAddr,
) -> Result<SocketAddr, HeaderError> {
    let mut peeked = [0u8; V1_MAX];
    while !header.ends_with(b"\r\n") {
        let room = V1_MAX - header.len();
        if room == 0 {
            return Err(HeaderError::TooLong);
        }
        let n = tcp
            .peek(&mut peeked[..room])
            .await
            .map_err(HeaderError::Io)?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        // The CR may be the last byte already read.
        let lf = peeked[..n].iter().position(|b| *b == b'\n');
        let take = lf.map_or(n, |i| i + 1);
        let start = header.len();
        header.resize(start + take, 0);
        // Everything peeked up to here is taken, so the next peek waits for new bytes.
        tcp.read_exact(&mut header[start..])
            .await
            .map_err(io_error)?;
        if lf.is_some() && !header.ends_with(b"\r\n") {
            return Err(HeaderError::Invalid("a bare LF in the PROXY line".into()));
        }
    }
    let parsed =
        ppp::v1::Header::try_from(&header[..]).map_err(|e| HeaderError::Invalid(e.to_string()))?;
    Ok(match parsed.addresses {
        V1Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
        V1Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
        V1Addresses::Unknown => peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Writes `parts` one by one (with a flush between) and returns what `read_header` gave,
    /// plus the bytes the socket still held after it.
    async fn over_socket(parts: Vec<Vec<u8>>) -> (Result<SocketAddr, String>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.set_nodelay(true).unwrap();
            for p in parts {
                c.write_all(&p).await.unwrap();
                c.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let (mut s, peer) = listener.accept().await.unwrap();
        let got = read_header(&mut s, peer).await.map_err(|e| e.to_string());
        writer.await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        (got, rest)
    }

    #[tokio::test]
    async fn v1_split_over_writes_leaves_the_request_untouched() {
        let (got, rest) = over_socket(vec![
            b"PROXY TCP4 203.0.113.7 10.0.0.1 ".to_vec(),
            b"51000 443\r".to_vec(),
            b"\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        ])
        .await;
        assert_eq!(got.unwrap(), "203.0.113.7:51000".parse().unwrap());
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn v2_in_two_writes_and_v1_unknown() {
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0xC0, 0x00, 1, 187,
        ]);
        let (head, tail) = v2.split_at(7);
        let mut tail = tail.to_vec();
        tail.extend(b"\x16\x03\x01");
        let (got, rest) = over_socket(vec![head.to_vec(), tail]).await;
        assert_eq!(got.unwrap(), "198.51.100.9:49152".parse().unwrap());
        assert_eq!(rest, b"\x16\x03\x01");
        let (got, rest) = over_socket(vec![b"PROXY UNKNOWN\r\nX".to_vec()]).await;
        assert_eq!(got.unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(rest, b"X");
    }

    #[tokio::test]
    async fn garbage_and_overlong_lines_are_refused() {
        let (got, _) = over_socket(vec![b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()]).await;
        assert!(got.is_err());
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        let (got, _) = over_socket(vec![long.into_bytes()]).await;
        assert!(got.unwrap_err().contains("107"));
        let (got, _) = over_socket(vec![b"PROXY TCP4 1.2.3.4 x 1 2\r\n".to_vec()]).await;
        assert!(got.is_err());
    }
}
