//! Checks of `[cluster]`.

use super::{check_file, k, Report};
use crate::config::cluster::{ClusterConfig, MIN_LEASE_TTL};
use std::path::Path;

pub(super) fn check_cluster(r: &mut Report<'_>, c: &ClusterConfig, dir: &Path) {
    let key = |name: &str| [k("cluster"), k(name)];
    if c.etcd.is_empty() {
        r.err(
            &key("etcd"),
            "list at least one etcd endpoint, like [\"http://127.0.0.1:2379\"]",
        );
    }
    for endpoint in &c.etcd {
        let ok = endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .is_some_and(|u| u.host().is_some_and(|h| !h.is_empty()) && u.port().is_some());
        if !ok {
            r.err(
                &key("etcd"),
                format!("`{endpoint}` is not an etcd endpoint; write http(s)://HOST:PORT, like \"http://127.0.0.1:2379\""),
            );
        }
    }
    if c.name.is_empty() || c.name.contains('/') || c.name.chars().any(char::is_whitespace) {
        r.err(
            &key("name"),
            format!(
                "`{}` cannot name this instance: it must be non-empty, without `/` or spaces",
                c.name
            ),
        );
    }
    if !c.prefix.starts_with('/') || !c.prefix.ends_with('/') {
        r.err(
            &key("prefix"),
            format!(
                "`{}` must start and end with `/`, like \"/qlik-lb/\"",
                c.prefix
            ),
        );
    }
    if c.lease_ttl.get() < MIN_LEASE_TTL {
        r.err(
            &key("lease_ttl"),
            format!(
                "{:?} is too short; etcd leases count whole seconds and need at least 2s",
                c.lease_ttl
            ),
        );
    }
    if let Some(tls) = &c.tls {
        let base = [k("cluster"), k("tls")];
        if tls.cert.is_some() != tls.key.is_some() {
            r.err(&base, "give both cert and key, or neither");
        }
        if tls.ca.is_none() && tls.cert.is_none() {
            r.err(&base, "name a ca, or a cert and key, or remove tls");
        }
        for (name, file) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
            if let Some(file) = file {
                check_file(r, &[k("cluster"), k("tls"), k(name)], dir, file);
            }
        }
    }
}
