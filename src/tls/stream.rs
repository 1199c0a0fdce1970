//! Both ends of a TLS connection the front door makes or takes: rustls's unbuffered connection
//! over a tokio `TcpStream`, holding buffers only while they hold bytes.
//!
//! Written here rather than taken from `tokio-rustls` because of what an idle connection costs:
//! rustls's buffered connection keeps a 4 KiB receive buffer for its whole life, and most of the
//! front door's TLS connections are idle — WebSocket tunnels of open Qlik apps between clicks,
//! and pooled keep-alive connections to https backends — so that buffer was a third of what a
//! `wss` tunnel held. Here the bytes read from the socket land in a per-thread scratch buffer and
//! are decrypted there; only a record that arrived in part, a read the caller's buffer could not
//! take, or a write the socket could not take stays with the connection, and only until it is
//! used. The TLS protocol itself (handshake, certificate checks, alerts, key updates,
//! close_notify, session tickets) stays entirely in rustls.

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use rustls::{ClientConfig, ServerConfig};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A socket read: room for several full TLS records (16 KiB of plaintext + 256 bytes each).
const READ_SCRATCH: usize = 64 * 1024;
/// Plaintext encrypted per write: four full records.
const WRITE_CHUNK: usize = 4 * 16 * 1024;
/// Room for `WRITE_CHUNK` once encrypted (a record adds at most 5 + 256 bytes in TLS 1.3).
const WRITE_SCRATCH: usize = WRITE_CHUNK + 4 * 512;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; READ_SCRATCH]);
    static WRITE_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; WRITE_SCRATCH]);
    static GATHER_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(WRITE_CHUNK));
}

/// rustls's two unbuffered connections share their states but not a trait: each side has its
/// own `process_tls_records`.
pub trait Side: Unpin {
    type Data;
    fn process_records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process_records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process_records<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
}

/// A client's connection to the front door.
pub type TlsServerStream = TlsStream<UnbufferedServerConnection>;
/// The front door's connection to an https backend.
pub type TlsClientStream = TlsStream<UnbufferedClientConnection>;

pub struct TlsStream<C> {
    tcp: TcpStream,
    conn: C,
    /// TLS bytes from the peer that rustls has not consumed yet: a record that came in part.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet, from `plaintext_at` on.
    plaintext: Vec<u8>,
    plaintext_at: usize,
    /// TLS bytes for the peer the socket has not taken yet, from `outgoing_at` on.
    outgoing: Vec<u8>,
    outgoing_at: usize,
    /// The peer sent close_notify or closed its side of the socket.
    read_closed: bool,
    close_notify_sent: bool,
}

/// Where the connection stands once rustls has consumed every whole record it was given.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Standing {
    Handshaking,
    Open,
    PeerClosed,
    Closed,
}

/// What to do once rustls has consumed what it was given and is open for application data.
enum OnOpen<'d> {
    Nothing,
    Encrypt(&'d [u8]),
    CloseNotify,
}

impl TlsServerStream {
    /// Runs the server side of the TLS handshake on `tcp` (the caller bounds it in time).
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        TlsStream::handshake(tcp, conn).await
    }
}

impl TlsClientStream {
    /// Runs the client side of the TLS handshake on `tcp` (the caller bounds it in time); a
    /// certificate that fails verification is an `InvalidData` error carrying rustls's reason.
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
        TlsStream::handshake(tcp, conn).await
    }
}

impl<C: Side> TlsStream<C> {
    async fn handshake(tcp: TcpStream, conn: C) -> io::Result<Self> {
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_at: 0,
            outgoing: Vec::new(),
            outgoing_at: 0,
            read_closed: false,
            close_notify_sent: false,
        };
        loop {
            let standing = s.process_incoming(None, OnOpen::Nothing)?;
            s.flush_outgoing_all().await?;
            match standing {
                Standing::Open => break,
                Standing::PeerClosed | Standing::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed during the TLS handshake",
                    ))
                }
                Standing::Handshaking => {
                    if s.read_socket_into_incoming().await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed during the TLS handshake",
                        ));
                    }
                }
            }
        }
        // The handshake's buffers are not needed again unless a record is split.
        if s.incoming.is_empty() {
            s.incoming = Vec::new();
        }
        Ok(s)
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Appends what the socket has to `incoming` (during the handshake); 0 at its end.
    async fn read_socket_into_incoming(&mut self) -> io::Result<usize> {
        let start = self.incoming.len();
        loop {
            self.tcp.readable().await?;
            self.incoming.resize(start + 16 * 1024 + 512, 0);
            let r = self.tcp.try_read(&mut self.incoming[start..]);
            self.incoming.truncate(start + *r.as_ref().unwrap_or(&0));
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    async fn flush_outgoing_all(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush_outgoing(cx)).await
    }

    /// Lets rustls consume the whole records in `incoming` (held bytes), then does `on_open`.
    fn process_incoming(
        &mut self,
        sink: Option<&mut ReadBuf<'_>>,
        on_open: OnOpen<'_>,
    ) -> io::Result<Standing> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let r = self.process(&mut incoming, sink, on_open);
        match r {
            Ok((consumed, standing)) => {
                incoming.drain(..consumed);
                // Between records the connection holds no receive buffer at all.
                self.incoming = if incoming.is_empty() {
                    Vec::new()
                } else {
                    incoming
                };
                Ok(standing)
            }
            Err(e) => {
                self.incoming = incoming;
                Err(e)
            }
        }
    }

    /// Lets rustls consume the whole records at the front of `buf`: decrypted bytes go to `sink`
    /// while it has room, then to `plaintext`; records to send go to `outgoing`. Once rustls is
    /// open for application data, does `on_open`. Returns how many bytes of `buf` were consumed
    /// (rustls's discard contract: removed from its front before the next call) and where the
    /// connection stands.
    fn process(
        &mut self,
        buf: &mut [u8],
        mut sink: Option<&mut ReadBuf<'_>>,
        on_open: OnOpen<'_>,
    ) -> io::Result<(usize, Standing)> {
        let mut consumed = 0;
        loop {
            let status = self.conn.process_records(&mut buf[consumed..]);
            let discard = status.discard;
            let standing = match status.state {
                Err(e) => {
                    self.queue_alert();
                    return Err(invalid(e));
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        let mut payload = record.payload;
                        if let Some(out) = sink.as_deref_mut() {
                            let n = payload.len().min(out.remaining());
                            out.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        if !payload.is_empty() {
                            self.plaintext.extend_from_slice(payload);
                        }
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut self.outgoing)?;
                    None
                }
                // `outgoing` goes to the socket in order before anything encrypted later, so the
                // records are as good as sent once they are in it.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Standing::Handshaking),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    match on_open {
                        OnOpen::Nothing => {}
                        OnOpen::Encrypt(data) => WRITE_BUF.with(|cell| -> io::Result<()> {
                            let mut scratch = cell.borrow_mut();
                            let len = match traffic.encrypt(data, &mut scratch[..]) {
                                Ok(len) => len,
                                Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                    required_size,
                                })) => {
                                    scratch.resize(required_size, 0);
                                    traffic.encrypt(data, &mut scratch[..]).map_err(invalid)?
                                }
                                Err(e) => return Err(invalid(e)),
                            };
                            write_now_or_keep(
                                &self.tcp,
                                &mut self.outgoing,
                                self.outgoing_at,
                                &scratch[..len],
                            );
                            Ok(())
                        })?,
                        OnOpen::CloseNotify => {
                            let mut alert = [0u8; 64];
                            let n = traffic.queue_close_notify(&mut alert).map_err(invalid)?;
                            self.outgoing.extend_from_slice(&alert[..n]);
                        }
                    }
                    Some(Standing::Open)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Some(Standing::Closed)
                }
                // Early data is never enabled in the front door's configs.
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS early data",
                    ))
                }
            };
            consumed += discard;
            if let Some(standing) = standing {
                let standing = match standing {
                    Standing::Open if self.read_closed => Standing::PeerClosed,
                    s => s,
                };
                return Ok((consumed, standing));
            }
        }
    }

    /// After a protocol error rustls has an alert queued; it goes out if the socket takes it.
    fn queue_alert(&mut self) {
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) =
            self.conn.process_records(&mut []).state
        {
            let _ = encode_into(&mut encode, &mut self.outgoing);
        }
        while self.outgoing_at < self.outgoing.len() {
            match self.tcp.try_write(&self.outgoing[self.outgoing_at..]) {
                Ok(n) if n > 0 => self.outgoing_at += n,
                _ => break,
            }
        }
    }

    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_at < self.outgoing.len() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.outgoing_at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.outgoing_at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Nothing waiting: no send buffer kept.
        self.outgoing = Vec::new();
        self.outgoing_at = 0;
        Poll::Ready(Ok(()))
    }

    fn take_plaintext(&mut self, out: &mut ReadBuf<'_>) {
        let n = (self.plaintext.len() - self.plaintext_at).min(out.remaining());
        out.put_slice(&self.plaintext[self.plaintext_at..self.plaintext_at + n]);
        self.plaintext_at += n;
        if self.plaintext_at == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_at = 0;
        }
    }

    /// One read from the socket through the thread's scratch buffer, decrypted there. Returns
    /// Ready(Ok(false)) at the socket's end.
    fn poll_read_socket(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        READ_BUF.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let n = loop {
                ready!(self.tcp.poll_read_ready(cx))?;
                match self.tcp.try_read(&mut scratch[..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            };
            if n == 0 {
                return Poll::Ready(Ok(false));
            }
            if self.incoming.is_empty() {
                let (consumed, _) = self.process(&mut scratch[..n], Some(out), OnOpen::Nothing)?;
                if consumed < n {
                    self.incoming = scratch[consumed..n].to_vec();
                }
            } else {
                // The rest of a record that came in part: rustls needs it whole in one buffer.
                self.incoming.extend_from_slice(&scratch[..n]);
                drop(scratch);
                self.process_incoming(Some(out), OnOpen::Nothing)?;
            }
            Poll::Ready(Ok(true))
        })
    }

    /// Encrypts up to `WRITE_CHUNK` bytes of `data` and writes them, keeping what the socket does
    /// not take. Returns how many plaintext bytes were taken.
    fn encrypt_and_write(&mut self, data: &[u8]) -> io::Result<usize> {
        let data = &data[..data.len().min(WRITE_CHUNK)];
        match self.process_incoming(None, OnOpen::Encrypt(data))? {
            Standing::Open | Standing::PeerClosed => Ok(data.len()),
            Standing::Closed => Err(io::ErrorKind::BrokenPipe.into()),
            Standing::Handshaking => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS connection not ready for data",
            )),
        }
    }
}

/// Writes TLS bytes straight to the socket when nothing waits before them; what the socket does
/// not take waits in `outgoing`.
fn write_now_or_keep(tcp: &TcpStream, outgoing: &mut Vec<u8>, outgoing_at: usize, tls: &[u8]) {
    let mut at = 0;
    if outgoing_at == outgoing.len() {
        while at < tls.len() {
            match tcp.try_write(&tls[at..]) {
                Ok(n) if n > 0 => at += n,
                // WouldBlock, or an error the next flush reports.
                _ => break,
            }
        }
    }
    if at < tls.len() {
        outgoing.extend_from_slice(&tls[at..]);
    }
}

fn encode_into<Data>(
    encode: &mut EncodeTlsData<'_, Data>,
    outgoing: &mut Vec<u8>,
) -> io::Result<()> {
    let start = outgoing.len();
    outgoing.resize(start + 4096, 0);
    let n = match encode.encode(&mut outgoing[start..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            outgoing.resize(start + required_size, 0);
            encode.encode(&mut outgoing[start..]).map_err(invalid)?
        }
        Err(e) => {
            outgoing.truncate(start);
            return Err(invalid(e));
        }
    };
    outgoing.truncate(start + n);
    Ok(())
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<C: Side> AsyncRead for TlsStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plaintext_at < this.plaintext.len() {
                this.take_plaintext(out);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Alerts and key-update answers rustls produced while reading go out first.
            if let Poll::Ready(Err(e)) = this.poll_flush_outgoing(cx) {
                return Poll::Ready(Err(e));
            }
            let before = out.filled().len();
            if !ready!(this.poll_read_socket(cx, out))? {
                // The socket ended without close_notify: an end all the same for the reader
                // (HTTP's own framing tells a cut message), never bytes that were not sent.
                this.read_closed = true;
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed in the middle of a TLS record",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            if out.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<C: Side> AsyncWrite for TlsStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Bytes the socket did not take go first: this is where a slow reader pushes back.
        ready!(this.poll_flush_outgoing(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(this.encrypt_and_write(data))
    }

    /// A head and a body chunk written together go out in one record, as one socket write.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        let non_empty = bufs.iter().filter(|b| !b.is_empty()).count();
        if non_empty <= 1 {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            if first.is_empty() {
                return Poll::Ready(Ok(0));
            }
            return Poll::Ready(this.encrypt_and_write(first));
        }
        GATHER_BUF.with(|cell| {
            let mut gathered = cell.borrow_mut();
            gathered.clear();
            for b in bufs {
                let room = WRITE_CHUNK - gathered.len();
                if room == 0 {
                    break;
                }
                gathered.extend_from_slice(&b[..b.len().min(room)]);
            }
            Poll::Ready(this.encrypt_and_write(&gathered))
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_outgoing(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            // Best effort, as a close is: the socket is shut down either way.
            let _ = this.process_incoming(None, OnOpen::CloseNotify);
            ready!(this.poll_flush_outgoing(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod test_pki;
