//! A pool as the hot path sees it: the backends' live state in config order, the cookie codec,
//! and the learned Qlik sessions. Rebuilt on reload around the same live backends.

use super::cookie::CookieCodec;
use super::learned::LearnedSessions;
use super::registry::{Backend, BackendTarget, Registry};
use crate::config::{BackendUrl, PoolConfig};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

pub struct Pool {
    pub name: String,
    pub cfg: PoolConfig,
    pub backends: Vec<Arc<Backend>>,
    by_id: HashMap<String, usize>,
    pub codec: CookieCodec,
    pub learned: Arc<LearnedSessions>,
    pub(crate) rr_next: AtomicUsize,
}

impl Pool {
    /// Builds the pool from validated config. `secret` is the sticky HMAC key, already read.
    pub fn build(
        cfg: &PoolConfig,
        secret: Option<&[u8]>,
        registry: &Registry,
        learned: Arc<LearnedSessions>,
    ) -> Pool {
        let backends: Vec<Arc<Backend>> = cfg
            .backend
            .iter()
            .map(|b| {
                let target = BackendTarget {
                    url: BackendUrl::parse(&b.url).expect("validated url"),
                    weight: b.weight.max(1),
                    engine_health: b
                        .engine_health
                        .as_deref()
                        .map(|u| BackendUrl::parse(u).expect("validated url")),
                };
                registry.upsert(&cfg.name, &b.id, target)
            })
            .collect();
        let by_id = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        Pool {
            name: cfg.name.clone(),
            cfg: cfg.clone(),
            backends,
            by_id,
            codec: CookieCodec::new(&cfg.name, secret),
            learned,
            rr_next: AtomicUsize::new(0),
        }
    }

    pub fn backend(&self, id: &str) -> Option<&Arc<Backend>> {
        self.by_id.get(id).map(|i| &self.backends[*i])
    }
}
