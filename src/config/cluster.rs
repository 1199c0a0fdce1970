//! `[cluster]`: several instances as one site front door, coordinated through etcd v3.

use super::duration::Dur;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_PREFIX: &str = "/qlik-lb/";
/// etcd leases count whole seconds; below two, one missed keepalive loses the lease.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub etcd: Vec<String>,
    #[serde(default = "host_name")]
    pub name: String,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: Dur,
    #[serde(default = "default_true")]
    pub share_learned_sessions: bool,
    #[serde(default)]
    pub tls: Option<ClusterTls>,
}

/// Files for talking TLS to etcd: the CA that signed the etcd servers, and a client certificate
/// when etcd asks for one.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl ClusterConfig {
    /// The lease TTL in whole seconds, as etcd takes it (rounded up).
    pub fn lease_ttl_secs(&self) -> i64 {
        let d = self.lease_ttl.get();
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)) as i64
    }
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}
fn default_lease_ttl() -> Dur {
    Dur::secs(10)
}
fn default_true() -> bool {
    true
}

/// This machine's host name; "qlik-lb" when the system will not say.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "qlik-lb".into(),
    }
}
