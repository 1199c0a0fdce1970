//! What each instance writes about itself under `<prefix>members/<name>`, kept alive by its lease.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberValue {
    /// The admin listener's address (status page, API), as this instance bound it.
    pub admin: String,
    pub version: String,
    /// RFC 3339 start time.
    pub started: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberView {
    pub name: String,
    pub admin: String,
    pub version: String,
    pub started: String,
    pub leader: bool,
}

/// The cluster as this instance sees it, for the status and the metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub connected: bool,
    /// The leader's name; none while etcd is unreachable or no one leads.
    pub leader: Option<String>,
    pub members: Vec<MemberView>,
}
