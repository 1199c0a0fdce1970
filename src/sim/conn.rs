//! One client connection of a simulated node, read with the front door's own reader
//! (`proxy::client_head` for heads, `proxy::body` for bodies): the simulator has no HTTP/1
//! parser of its own, so it can never read framing differently from qlik-lb.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::request::{BodySink, Request};
use super::response::Response;
use crate::proxy::body::{copy_body, BodyCopy, BodyError};
use crate::proxy::client_head::{read_request_head, HeadLimits, HeadRead};
use crate::proxy::stream::{ClientStream, Stream};

/// QPS's default HTTP keep-alive; also how long a head or a body may take to arrive.
const KEEP_ALIVE: Duration = Duration::from_secs(300);

/// Room for several X-Qlik-Session cookies, as qlik-lb's default `max_header_bytes`.
const LIMITS: HeadLimits = HeadLimits {
    header_timeout: KEEP_ALIVE,
    keepalive_timeout: KEEP_ALIVE,
    max_header_bytes: 64 * 1024,
};

pub(crate) enum Incoming {
    Request(Request),
    /// The client went away or stayed idle: close quietly.
    Closed,
    /// Answer this status and reason, then close.
    Refused(u16, &'static str),
}

pub(crate) struct Conn {
    io: ClientStream,
    /// Bytes read but not yet consumed (a pipelined request, or the first WebSocket frames).
    buf: BytesMut,
    accepted: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Conn {
        Conn {
            io: Stream::Plain(stream),
            buf: BytesMut::with_capacity(2048),
            accepted: Some(Instant::now()),
        }
    }

    pub(crate) async fn read_request(&mut self) -> Incoming {
        // Callers race this against their own stop signal.
        let mut never = std::future::pending::<()>();
        let head = match read_request_head(
            &mut self.io,
            &mut self.buf,
            &LIMITS,
            self.accepted.take(),
            &mut never,
        )
        .await
        {
            HeadRead::Head(head) => head,
            HeadRead::Closed => return Incoming::Closed,
            HeadRead::Refused(err, why) => return Incoming::Refused(err.status().0, why),
        };
        if head.request.expect_continue
            && self
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return Incoming::Closed;
        }
        let mut body = BodySink::new(head.framing);
        let how = BodyCopy {
            framing: head.framing,
            idle: KEEP_ALIVE,
            send_timeout: KEEP_ALIVE,
            request: true,
        };
        match copy_body(&mut self.io, &mut self.buf, &mut body, how).await {
            Ok(_) => Incoming::Request(body.into_request(head)),
            Err(BodyError::BadChunk(why)) => Incoming::Refused(400, why),
            Err(_) => Incoming::Closed,
        }
    }

    pub(crate) async fn write_response(
        &mut self,
        response: &Response,
        head_only: bool,
    ) -> std::io::Result<()> {
        self.io.write_all(&response.encode(head_only)).await?;
        self.io.flush().await
    }

    /// The socket and any bytes the client already sent past the last request (after an upgrade).
    pub(crate) fn into_parts(self) -> (ClientStream, Vec<u8>) {
        (self.io, self.buf.to_vec())
    }
}
