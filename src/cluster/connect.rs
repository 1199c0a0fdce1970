//! Opening a client to the configured etcd endpoints, with TLS when `[cluster] tls` is set.

use crate::config::{ClusterConfig, Config};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::time::Duration;

/// Bounds every call, so a stopped etcd is noticed in seconds rather than hanging a task.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Connector {
    endpoints: Vec<String>,
    options: ConnectOptions,
}

impl Connector {
    /// Reads the TLS files now: a missing or bad file fails the start, not a later reconnect.
    pub(super) fn new(cfg: &ClusterConfig, config: &Config) -> Result<Connector, String> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), CALL_TIMEOUT);
        if let Some(tls) = &cfg.tls {
            let read = |p: &std::path::Path| {
                let full = config.resolve(p);
                std::fs::read(&full).map_err(|e| format!("cluster.tls: {}: {e}", full.display()))
            };
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(t);
        }
        Ok(Connector {
            endpoints: cfg.etcd.clone(),
            options,
        })
    }

    pub(super) async fn connect(&self) -> Result<Client, String> {
        match tokio::time::timeout(
            CALL_TIMEOUT * 2,
            Client::connect(&self.endpoints, Some(self.options.clone())),
        )
        .await
        {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!("cannot connect to etcd: {e}")),
            Err(_) => Err("cannot connect to etcd: timed out".into()),
        }
    }
}

/// Runs one etcd call with the call timeout; errors become text.
pub(super) async fn call<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("etcd {what}: {e}")),
        Err(_) => Err(format!("etcd {what}: timed out")),
    }
}
