//! One HTTP/1.1 GET for a probe, over plain TCP or TLS, with errors that say which step failed.

use crate::config::BackendUrl;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::error::Error as StdError;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A health body larger than this is not a health body.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("`{host}` is not a valid TLS server name")]
    ServerName { host: String },
    #[error("TLS handshake with {target} failed: {reason}")]
    Tls { target: String, reason: String },
    #[error("TLS refused by {target}: {reason} (the server did not accept our client certificate, or its absence)")]
    TlsRefused { target: String, reason: String },
    #[error("GET {url} failed: {reason}")]
    Request { url: String, reason: String },
    #[error("GET {url}: body over {MAX_BODY} bytes")]
    BodyTooLarge { url: String },
}

pub struct Fetched {
    pub status: u16,
    pub body: Bytes,
}

/// `GET <url.authority()><path>`; TLS with `tls` when given.
pub async fn get(
    url: &BackendUrl,
    path: &str,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Fetched, FetchError> {
    let target = url.authority();
    let tcp = TcpStream::connect(&target)
        .await
        .map_err(|source| FetchError::Connect {
            target: target.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let shown = format!(
        "{}://{}{}",
        if tls.is_some() { "https" } else { "http" },
        target,
        path
    );
    match tls {
        Some(cfg) => {
            let name =
                ServerName::try_from(url.host.clone()).map_err(|_| FetchError::ServerName {
                    host: url.host.clone(),
                })?;
            let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Tls {
                    target: target.clone(),
                    reason: chain(&e),
                })?;
            request(TokioIo::new(stream), url, path, &shown).await
        }
        None => request(TokioIo::new(tcp), url, path, &shown).await,
    }
}

async fn request<T>(io: T, url: &BackendUrl, path: &str, shown: &str) -> Result<Fetched, FetchError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |e: &(dyn StdError + 'static)| match tls_cause(e) {
        Some(reason) => FetchError::TlsRefused {
            target: url.authority(),
            reason,
        },
        None => FetchError::Request {
            url: shown.to_string(),
            reason: chain(e),
        },
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| failed(&e))?;
    // The connection task ends with the probe: the response is read to the end below.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path)
        .header(http::header::HOST, url.authority())
        .header(
            http::header::USER_AGENT,
            concat!("qlik-lb/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| FetchError::Request {
            url: shown.to_string(),
            reason: e.to_string(),
        })?;
    let resp = sender.send_request(req).await.map_err(|e| failed(&e))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::BodyTooLarge {
                    url: shown.to_string(),
                }
            } else {
                failed(e.as_ref())
            }
        })?
        .to_bytes();
    Ok(Fetched { status, body })
}

/// The rustls error behind an I/O failure, if that is what it was: with TLS 1.3 a server that
/// rejects the client certificate says so only after the handshake, on the first read.
fn tls_cause(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(t.to_string());
            }
        }
        cur = err.source();
    }
    None
}

/// An error and all its causes on one line.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
