//! Pools built from plain values for unit tests: no config file, no sockets.

use super::learned::{LearnedSessions, DEFAULT_IDLE};
use super::spec::BackendSpec;
use super::{Pool, Registry};
use crate::config::{BackendUrl, PoolConfig};
use crate::metrics::Metrics;
use std::sync::Arc;

/// A pool named `web` with backends `ids` (at 10.0.0.1, 10.0.0.2, ...; weights as given, 1 when
/// `weights` is shorter), after `configure` set whatever the test is about.
pub fn pool(ids: &[&str], weights: &[u32], configure: impl FnOnce(&mut PoolConfig)) -> Pool {
    pool_with_secret(ids, weights, None, configure)
}

pub fn pool_with_secret(
    ids: &[&str],
    weights: &[u32],
    secret: Option<&[u8]>,
    configure: impl FnOnce(&mut PoolConfig),
) -> Pool {
    let mut cfg = PoolConfig::named("web");
    configure(&mut cfg);
    let specs = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let url = BackendUrl::parse(&format!("http://10.0.0.{}:80", i + 1)).expect("test url");
            let mut spec = BackendSpec::new(id, url);
            spec.target.weight = weights.get(i).copied().unwrap_or(1);
            spec
        })
        .collect();
    let registry = Registry::new(Arc::new(Metrics::new()));
    let learned = Arc::new(LearnedSessions::new(DEFAULT_IDLE, 1000));
    Pool::build(&cfg, specs, secret, &registry, learned)
}
