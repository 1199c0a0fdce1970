//! A whole simulated Qlik site: N engine/QPS nodes, the QRS over mutual TLS, and the
//! certificates a QMC would export, written where a qlik-lb config can point at them.

use super::certs::{CertError, SimCerts};
use super::node::{start_nodes, SimError, SimNodeHandle};
use super::qrs::{self, seed, QrsHandle};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

/// People in the seeded QRS population: enough for a realistic license table.
const SEEDED_USERS: usize = 300;
const SEED: u64 = 2024;

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Nodes(#[from] SimError),
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("cannot listen for the QRS on {addr}: {source}")]
    QrsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct SimSite {
    pub nodes: Vec<SimNodeHandle>,
    pub qrs: QrsHandle,
    pub certs: SimCerts,
    pub cert_dir: PathBuf,
}

impl SimSite {
    /// `base_port`/`qrs_port` `None` take free ports; certificates go to `cert_dir`.
    pub async fn start(
        nodes: u16,
        bind: IpAddr,
        base_port: Option<u16>,
        qrs_port: Option<u16>,
        cert_dir: &Path,
    ) -> Result<SimSite, SiteError> {
        let certs = SimCerts::generate()?;
        certs.write_to(cert_dir)?;
        let node_handles = start_nodes(nodes, bind, base_port).await?;
        let qrs_addr = SocketAddr::new(bind, qrs_port.unwrap_or(0));
        let listener = TcpListener::bind(qrs_addr)
            .await
            .map_err(|source| SiteError::QrsBind {
                addr: qrs_addr,
                source,
            })?;
        let population = seed::seeded(SEED, SEEDED_USERS, chrono::Utc::now());
        let qrs = qrs::start(listener, &certs, population).await;
        Ok(SimSite {
            nodes: node_handles,
            qrs,
            certs,
            cert_dir: cert_dir.to_path_buf(),
        })
    }

    pub async fn shutdown(self) {
        self.qrs.stop().await;
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}
