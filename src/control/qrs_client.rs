//! The QRS client: HTTP/1.1 over mutual TLS with the QMC-exported certificates. Every call gets
//! a fresh xrfkey (query and header) and the `X-Qlik-User` security context; GETs are retried
//! with back-off on connect errors and 5xx answers.

use super::qrs_model::{AccessTypeOverview, AllocationRow, LicenseType, QrsUser};
use crate::config::{BackendUrl, Config};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::distributions::Alphanumeric;
use rand::Rng;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Users are looked up this many at a time (one `id eq A or id eq B ...` filter per call).
pub const USER_BATCH: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum QrsError {
    #[error("QRS client setup: {0}")]
    Setup(String),
    #[error("{endpoint}: cannot connect to the QRS at {addr}: {source}")]
    Connect {
        endpoint: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: TLS handshake with the QRS failed: {source}")]
    Tls {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint}: HTTP exchange with the QRS failed: {source}")]
    Http {
        endpoint: String,
        source: hyper::Error,
    },
    #[error("{endpoint}: no answer from the QRS within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("{endpoint}: the QRS answered {status}: {body}")]
    Status {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("{endpoint}: the QRS answer is not the expected JSON: {source}")]
    Json {
        endpoint: String,
        source: serde_json::Error,
    },
}

impl QrsError {
    fn retryable(&self) -> bool {
        match self {
            QrsError::Connect { .. } | QrsError::Http { .. } => true,
            QrsError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// GET retries: `attempts` tries in all, waiting `first_delay`, then twice that, and so on.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(500),
        }
    }
}

#[derive(Clone)]
pub struct QrsClient {
    url: BackendUrl,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    user_header: String,
    timeout: Duration,
    retry: RetryPolicy,
}

impl QrsClient {
    /// From `[qrs]` and `[qlik_certs]`; certificate paths resolve against the config file's folder.
    pub fn from_config(config: &Config) -> Result<QrsClient, QrsError> {
        let qrs = config
            .file
            .qrs
            .as_ref()
            .ok_or_else(|| QrsError::Setup("the config has no [qrs] section".into()))?;
        let certs = config.file.qlik_certs.as_ref().ok_or_else(|| {
            QrsError::Setup("the QRS needs the client certificate of [qlik_certs]".into())
        })?;
        let tls = crate::tls::qlik_client_config(
            &config.resolve(&certs.cert),
            &config.resolve(&certs.key),
            &config.resolve(&certs.ca),
            certs.verify_server,
        )
        .map_err(|e| QrsError::Setup(format!("[qlik_certs]: {e}")))?;
        QrsClient::new(&qrs.url, tls, &qrs.user, qrs.timeout.get())
    }

    pub fn new(
        url: &str,
        tls: Arc<ClientConfig>,
        user: &str,
        timeout: Duration,
    ) -> Result<QrsClient, QrsError> {
        let url = BackendUrl::parse(url).map_err(|e| QrsError::Setup(format!("[qrs] url: {e}")))?;
        if !url.tls {
            return Err(QrsError::Setup(format!(
                "[qrs] url: `{url}` must be https (the QRS needs mutual TLS)"
            )));
        }
        let (dir, id) = user
            .split_once('\\')
            .filter(|(d, i)| !d.is_empty() && !i.is_empty())
            .ok_or_else(|| {
                QrsError::Setup(format!("[qrs] user: `{user}` must be DIRECTORY\\userid"))
            })?;
        let server_name = ServerName::try_from(url.host.clone()).map_err(|e| {
            QrsError::Setup(format!(
                "[qrs] url: `{}` is not a valid server name: {e}",
                url.host
            ))
        })?;
        Ok(QrsClient {
            url,
            connector: TlsConnector::from(tls),
            server_name,
            user_header: format!("UserDirectory={dir}; UserId={id}"),
            timeout,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> QrsClient {
        self.retry = retry;
        self
    }

    pub async fn overview(&self) -> Result<AccessTypeOverview, QrsError> {
        self.get_json("/qrs/license/accesstypeoverview", &[]).await
    }

    pub async fn allocations(
        &self,
        kind: LicenseType,
        filter: Option<&str>,
    ) -> Result<Vec<AllocationRow>, QrsError> {
        let path = format!("/qrs/license/{}/full", kind.table());
        let query: Vec<(&str, &str)> = filter.map(|f| vec![("filter", f)]).unwrap_or_default();
        self.get_json(&path, &query).await
    }

    /// The users with these GUIDs, `USER_BATCH` per call; unknown ids are simply absent.
    pub async fn users(&self, ids: &[String]) -> Result<Vec<QrsUser>, QrsError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(USER_BATCH) {
            let filter = chunk
                .iter()
                .map(|id| format!("id eq {id}"))
                .collect::<Vec<_>>()
                .join(" or ");
            let batch: Vec<QrsUser> = self
                .get_json("/qrs/user/full", &[("filter", &filter)])
                .await?;
            out.extend(batch);
        }
        Ok(out)
    }

    /// DELETE of one allocation, never retried; answers the status the QRS gave.
    pub async fn delete_allocation(
        &self,
        kind: LicenseType,
        id: &str,
    ) -> Result<StatusCode, QrsError> {
        let path = format!("/qrs/license/{}/{}", kind.table(), percent_encode(id));
        let (status, _) = self.call(Method::DELETE, &path, &[]).await?;
        Ok(status)
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, QrsError> {
        let endpoint = format!("GET {path}");
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        let body = loop {
            let result = match self.call(Method::GET, path, query).await {
                Ok((status, body)) if status.is_success() => Ok(body),
                Ok((status, body)) => Err(QrsError::Status {
                    endpoint: endpoint.clone(),
                    status: status.as_u16(),
                    body: snippet(&body),
                }),
                Err(e) => Err(e),
            };
            match result {
                Ok(body) => break body,
                Err(e) if e.retryable() && attempt < self.retry.attempts => {
                    tracing::warn!(error = %e, attempt, "QRS call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        serde_json::from_slice(&body).map_err(|source| QrsError::Json { endpoint, source })
    }

    /// One request on a fresh connection, bounded by `[qrs] timeout`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), QrsError> {
        let endpoint = format!("{method} {path}");
        match tokio::time::timeout(self.timeout, self.exchange(&endpoint, method, path, query))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(QrsError::Timeout {
                endpoint,
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        endpoint: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), QrsError> {
        let addr = self.url.authority();
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| QrsError::Connect {
                endpoint: endpoint.to_string(),
                addr: addr.clone(),
                source,
            })?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| QrsError::Tls {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let http_err = |source| QrsError::Http {
            endpoint: endpoint.to_string(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http_err)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });

        let xrfkey = new_xrfkey();
        let mut uri = format!(
            "{}{path}?xrfkey={xrfkey}",
            self.url.path.trim_end_matches('/')
        );
        for (k, v) in query {
            uri.push_str(&format!("&{k}={}", percent_encode(v)));
        }
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", addr)
            .header("x-qlik-xrfkey", &xrfkey)
            .header("x-qlik-user", &self.user_header)
            .header("accept", "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| QrsError::Setup(format!("{endpoint}: cannot build the request: {e}")))?;
        let resp = sender.send_request(req).await.map_err(http_err)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(http_err)?
            .to_bytes();
        Ok((status, body))
    }
}

/// 16 random letters and digits, as the QRS expects.
pub fn new_xrfkey() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > 200 {
        format!("{}...", text.chars().take(200).collect::<String>())
    } else {
        text.to_string()
    }
}
