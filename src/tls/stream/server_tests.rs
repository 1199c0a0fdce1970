//! The stream against tokio-rustls's client over real loopback sockets: bytes both ways, records
//! that arrive a byte at a time, a client's key update, close_notify, and no buffer kept between
//! exchanges.

use super::test_pki::{self, localhost, pattern};
use super::TlsServerStream;
use rustls::{ClientConfig, ServerConfig};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    test_pki::configs(rustls::DEFAULT_VERSIONS, None)
}

/// A connected pair: the server side accepted by `TlsServerStream`, the client side by
/// tokio-rustls over `wrap(tcp)`.
async fn pair<W>(
    wrap: impl FnOnce(TcpStream) -> W,
) -> (TlsServerStream, tokio_rustls::client::TlsStream<W>)
where
    W: AsyncRead + AsyncWrite + Unpin,
{
    let (server_cfg, client_cfg) = configs();
    pair_with(server_cfg, client_cfg, wrap).await
}

async fn pair_with<W>(
    server_cfg: Arc<ServerConfig>,
    client_cfg: Arc<ClientConfig>,
    wrap: impl FnOnce(TcpStream) -> W,
) -> (TlsServerStream, tokio_rustls::client::TlsStream<W>)
where
    W: AsyncRead + AsyncWrite + Unpin,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        TlsServerStream::accept(tcp, server_cfg).await.unwrap()
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let client = TlsConnector::from(client_cfg)
        .connect(localhost(), wrap(tcp))
        .await
        .unwrap();
    (server.await.unwrap(), client)
}

/// Echoes until the client's close_notify, then closes with its own.
async fn echo(mut s: TlsServerStream) -> TlsServerStream {
    let mut buf = vec![0u8; 7000];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await.unwrap();
    }
    s.shutdown().await.unwrap();
    s
}

#[tokio::test]
async fn a_megabyte_goes_both_ways_and_both_sides_close_with_close_notify() {
    let (server, client) = pair(|t| t).await;
    let server = tokio::spawn(echo(server));
    let (mut rd, mut wr) = tokio::io::split(client);
    let sent = pattern(1 << 20);
    let to_send = sent.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&to_send).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    // tokio-rustls reports an end without close_notify as an error: Ok here means one was sent.
    rd.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the echo differs from what was sent");
    server.await.unwrap();
}

/// Writes one byte per call, so every TLS record reaches the server in pieces.
struct OneByteWrites(TcpStream);

impl AsyncRead for OneByteWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneByteWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let one = &buf[..buf.len().min(1)];
        Pin::new(&mut self.0).poll_write(cx, one)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_handshake_and_records_that_arrive_a_byte_at_a_time_are_read_whole() {
    let (server, mut client) = pair(OneByteWrites).await;
    let server = tokio::spawn(echo(server));
    let sent = pattern(40_000);
    client.write_all(&sent).await.unwrap();
    client.flush().await.unwrap();
    let mut back = vec![0u8; sent.len()];
    client.read_exact(&mut back).await.unwrap();
    assert!(back == sent, "the echo differs from what was sent");
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    server.await.unwrap();
}

#[tokio::test]
async fn a_key_update_from_the_client_is_followed_and_data_flows_on() {
    let (server, mut client) = pair(|t| t).await;
    let server = tokio::spawn(echo(server));
    for round in 0..3u8 {
        // Asks the server to update its keys too (update_requested).
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let sent = vec![round; 3000];
        client.write_all(&sent).await.unwrap();
        let mut back = vec![0u8; sent.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, sent, "round {round}");
    }
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn between_exchanges_the_stream_holds_no_buffer() {
    let (mut server, mut client) = pair(|t| t).await;
    assert_eq!(
        (server.incoming.capacity(), server.outgoing.capacity()),
        (0, 0),
        "after the handshake"
    );
    for size in [10usize, 20_000, 70_000] {
        let sent = pattern(size);
        let mut got = vec![0u8; size];
        let (w, r) = tokio::join!(client.write_all(&sent), server.read_exact(&mut got));
        w.unwrap();
        r.unwrap();
        assert!(got == sent);
        let mut back = vec![0u8; size];
        let (w, r) = tokio::join!(server.write_all(&sent), client.read_exact(&mut back));
        w.unwrap();
        r.unwrap();
        assert!(back == sent);
        server.flush().await.unwrap();
        assert_eq!(
            (
                server.incoming.capacity(),
                server.plaintext.capacity(),
                server.outgoing.capacity()
            ),
            (0, 0, 0),
            "after an exchange of {size} bytes"
        );
    }
}

#[tokio::test]
async fn a_client_that_is_not_tls_fails_the_handshake_with_an_alert() {
    let (server_cfg, _) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        TlsServerStream::accept(tcp, server_cfg).await.err()
    });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let err = server
        .await
        .unwrap()
        .expect("a plain HTTP request is not a handshake");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    // rustls's alert went out before the error was returned.
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
}

#[tokio::test]
async fn a_tls_1_2_client_is_served_too() {
    let (server_cfg, client_cfg) = test_pki::configs(&[&rustls::version::TLS12], None);
    let (server, mut client) = pair_with(server_cfg, client_cfg, |t| t).await;
    assert_eq!(
        client.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let server = tokio::spawn(echo(server));
    let sent = pattern(50_000);
    client.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; sent.len()];
    client.read_exact(&mut back).await.unwrap();
    assert!(back == sent, "the echo differs from what was sent");
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    server.await.unwrap();
}
