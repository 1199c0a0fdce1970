//! A pool as the hot path sees it: the backends' live state in config order, the cookie codec,
//! and the learned Qlik sessions. Rebuilt on reload around the same live backends.

use super::cookie::{set_cookie_line, CookieCodec};
use super::learned::LearnedSessions;
use super::registry::{Backend, Registry};
use super::spec::BackendSpec;
use crate::config::PoolConfig;
use crate::metrics::Metrics;
use crate::tls::backend::BackendTls;
use prometheus::IntCounter;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// How a request's backend was decided, as the pool's sticky-decision counters count it: our
/// cookie (`Hit`), a learned Qlik session (`Learned`), the balancer for a user with no usable
/// pin (`Miss`), or the balancer again because the pinned backend could not take it
/// (`Reassigned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Learned,
    Miss,
    Reassigned,
}

/// The pool's sticky-decision counters, resolved once per pool.
pub struct StickyCounters {
    pub hit: IntCounter,
    pub learned: IntCounter,
    pub miss: IntCounter,
    pub reassigned: IntCounter,
    pub invalid: IntCounter,
}

impl StickyCounters {
    fn new(pool: &str, m: &Metrics) -> StickyCounters {
        let c = |outcome: &str| m.sticky_decisions_total.with_label_values(&[pool, outcome]);
        StickyCounters {
            hit: c("hit"),
            learned: c("learned"),
            miss: c("miss"),
            reassigned: c("reassigned"),
            invalid: c("invalid"),
        }
    }

    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Hit => self.hit.inc(),
            Outcome::Learned => self.learned.inc(),
            Outcome::Miss => self.miss.inc(),
            Outcome::Reassigned => self.reassigned.inc(),
        }
    }
}

/// Lets a log line through at most once per interval, so an outage is logged, not flooded.
pub struct LogThrottle {
    last_ms: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    const INTERVAL_MS: u64 = 10_000;

    fn new() -> LogThrottle {
        LogThrottle {
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn should_log(&self) -> bool {
        use std::sync::atomic::Ordering;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
            + Self::INTERVAL_MS;
        let last = self.last_ms.load(Ordering::Relaxed);
        now >= last + Self::INTERVAL_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

pub struct Pool {
    pub name: String,
    pub cfg: PoolConfig,
    pub backends: Vec<Arc<Backend>>,
    by_id: HashMap<String, usize>,
    pub codec: CookieCodec,
    pub learned: Arc<LearnedSessions>,
    /// The pinning `Set-Cookie` value per backend (index as `backends`), over plain HTTP and
    /// over TLS: fixed for a config, so built here rather than per response.
    pins: Vec<[String; 2]>,
    pub decisions: StickyCounters,
    /// "Every backend is down; trying anyway" is logged at most every 10 s.
    pub all_down_log: LogThrottle,
    pub(crate) rr_next: AtomicUsize,
    /// How this pool's https:// backends are verified and what it presents to them; `None`
    /// when the pool has none. Set once when the snapshot is built.
    pub backend_tls: Option<Arc<BackendTls>>,
}

impl Pool {
    /// Builds the pool around the live backends of `registry`. `backends` is the config's
    /// backend list parsed (`spec::backend_specs`); `secret` is the sticky HMAC key, already read.
    pub fn build(
        cfg: &PoolConfig,
        backends: Vec<BackendSpec>,
        secret: Option<&[u8]>,
        registry: &Registry,
        learned: Arc<LearnedSessions>,
    ) -> Pool {
        let backends: Vec<Arc<Backend>> = backends
            .into_iter()
            .map(|b| registry.upsert(&cfg.name, &b.id, b.target))
            .collect();
        let by_id = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id.clone(), i))
            .collect();
        let codec = CookieCodec::new(&cfg.name, secret);
        let pins = backends
            .iter()
            .map(|b| {
                let value = codec.encode(&b.id);
                [false, true].map(|tls| set_cookie_line(&cfg.sticky, &value, tls))
            })
            .collect();
        Pool {
            name: cfg.name.clone(),
            cfg: cfg.clone(),
            backends,
            by_id,
            codec,
            pins,
            learned,
            decisions: StickyCounters::new(&cfg.name, registry.metrics()),
            all_down_log: LogThrottle::new(),
            rr_next: AtomicUsize::new(0),
            backend_tls: None,
        }
    }

    /// The `Set-Cookie` value that pins a user to `backend`.
    pub fn pin_cookie(&self, backend: &Backend, client_tls: bool) -> Option<&str> {
        let i = *self.by_id.get(&backend.id)?;
        Some(&self.pins[i][client_tls as usize])
    }

    pub fn backend(&self, id: &str) -> Option<&Arc<Backend>> {
        self.by_id.get(id).map(|i| &self.backends[*i])
    }
}

#[cfg(test)]
mod tests {
    use super::LogThrottle;

    #[test]
    fn the_throttle_lets_one_line_through_per_interval() {
        let t = LogThrottle::new();
        assert!(t.should_log(), "the first line passes");
        assert!(!t.should_log(), "the next one within the interval does not");
        assert!(!t.should_log());
    }
}
