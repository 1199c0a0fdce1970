//! Live per-backend state, keyed by (pool, backend id). It lives outside the swapped config so a
//! reload keeps health, in-flight counts, open tunnels and back-off for every id that stays.

use super::engine_health::EngineHealth;
use crate::config::BackendUrl;
use crate::metrics::Metrics;
use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus::{Histogram, IntCounter, IntGauge};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// What the config says about a backend; replaced on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendTarget {
    pub url: BackendUrl,
    pub weight: u32,
    pub engine_health: Option<BackendUrl>,
}

/// The last engine health sample and when it was taken.
#[derive(Debug, Clone)]
pub struct HealthSample {
    pub health: EngineHealth,
    pub taken: Instant,
    pub taken_wall: SystemTime,
}

#[derive(Debug, Default, Clone)]
pub struct CheckState {
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    pub last_check: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// Idle keep-alive connections a backend holds for whoever forwards to it. The concrete pool
/// belongs to the proxy (per worker thread, see `proxy::upstream`); here it is only cleared
/// when the backend goes down, is ejected or is retired.
pub trait IdleConnections: Any + Send + Sync {
    fn clear(&self);
}

/// Stands in for the idle pool of a backend retired before anything was ever pooled on it, so
/// nothing can be pooled on it afterwards.
struct NoIdle;

impl IdleConnections for NoIdle {
    fn clear(&self) {}
}

/// Label children resolved once, so the hot path never hashes label values.
pub struct BackendMetrics {
    pub up: IntGauge,
    pub draining: IntGauge,
    pub inflight: IntGauge,
    pub tunnels_active: IntGauge,
    pub tunnels_total: IntCounter,
    pub bytes_to_backend: IntCounter,
    pub bytes_to_client: IntCounter,
    pub ejections: IntCounter,
    pub checks_ok: IntCounter,
    pub checks_fail: IntCounter,
    pub duration: Histogram,
}

pub struct Backend {
    pub pool: String,
    pub id: String,
    target: ArcSwap<BackendTarget>,
    up: AtomicBool,
    draining: AtomicBool,
    removed: AtomicBool,
    inflight: AtomicI64,
    tunnels: AtomicI64,
    health: ArcSwapOption<HealthSample>,
    /// New users sent here since the last engine health sample was stored, or, while there is
    /// none, since the last finished check.
    recent_users: AtomicU64,
    checks: Mutex<CheckState>,
    /// The ejection deadline in ms after `born`, so a request checks it with one atomic load.
    ejected_until_ms: AtomicU64,
    /// tokio's clock, so tests can pause it and step through the back-off.
    born: tokio::time::Instant,
    ejection_streak: AtomicU32,
    /// Closed when the backend is found dead, so its open tunnels end too.
    dead_signal: tokio::sync::watch::Sender<u64>,
    pub metrics: BackendMetrics,
    /// Idle keep-alive connections to this backend, created by the first user (see `idle`).
    idle: OnceLock<Box<dyn IdleConnections>>,
    /// `qlb_http_requests_total` children per frontend, by status class; read without locks.
    responses: ArcSwap<Vec<(String, [IntCounter; 5])>>,
}

/// Longest passive ejection; doubling starts at one second.
const MAX_EJECTION: Duration = Duration::from_secs(30);

impl Backend {
    fn new(pool: &str, id: &str, target: BackendTarget, m: &Metrics) -> Backend {
        let l = [pool, id];
        let metrics = BackendMetrics {
            up: m.backend_up.with_label_values(&l),
            draining: m.backend_draining.with_label_values(&l),
            inflight: m.backend_inflight_requests.with_label_values(&l),
            tunnels_active: m.websocket_tunnels_active.with_label_values(&l),
            tunnels_total: m.websocket_tunnels_total.with_label_values(&l),
            bytes_to_backend: m
                .websocket_bytes_total
                .with_label_values(&[pool, id, "to_backend"]),
            bytes_to_client: m
                .websocket_bytes_total
                .with_label_values(&[pool, id, "to_client"]),
            ejections: m.backend_ejections_total.with_label_values(&l),
            checks_ok: m
                .backend_health_checks_total
                .with_label_values(&[pool, id, "ok"]),
            checks_fail: m
                .backend_health_checks_total
                .with_label_values(&[pool, id, "fail"]),
            duration: m.http_request_duration_seconds.with_label_values(&l),
        };
        metrics.up.set(1);
        metrics.draining.set(0);
        Backend {
            pool: pool.to_string(),
            id: id.to_string(),
            target: ArcSwap::from_pointee(target),
            up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            inflight: AtomicI64::new(0),
            tunnels: AtomicI64::new(0),
            health: ArcSwapOption::empty(),
            recent_users: AtomicU64::new(0),
            checks: Mutex::new(CheckState::default()),
            ejected_until_ms: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
            ejection_streak: AtomicU32::new(0),
            dead_signal: tokio::sync::watch::channel(0).0,
            metrics,
            idle: OnceLock::new(),
            responses: ArcSwap::from_pointee(Vec::new()),
        }
    }

    fn age_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    pub fn target(&self) -> Arc<BackendTarget> {
        self.target.load_full()
    }

    pub fn set_target(&self, t: BackendTarget) {
        if *self.target.load_full() != t {
            self.target.store(Arc::new(t));
        }
    }

    /// Up by active checks (ignores passive ejection).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        self.age_ms() < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// Up and not ejected: may receive traffic of users already pinned to it.
    pub fn is_available(&self) -> bool {
        self.is_up() && !self.is_ejected()
    }

    /// Available and not draining: may receive new users.
    pub fn accepts_new_users(&self) -> bool {
        self.is_available() && !self.is_draining()
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
        self.metrics.draining.set(on as i64);
    }

    pub fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        if !self.is_removed() {
            // A late probe of a replaced backend must not overwrite its successor's gauge.
            self.metrics.up.set(up as i64);
        }
        if was && !up {
            self.clear_idle();
            self.dead_signal.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    /// Replaced by a backend at a new address under the same id: out of every later snapshot,
    /// its idle connections closed. In-flight requests and tunnels keep their leases on it.
    fn retire(&self) {
        self.mark_removed();
        // With no pool yet, a stand-in takes its place for good, so a connection returned later
        // finds no pool to go into and is closed. Only one of the stand-in and a first user's
        // pool gets in; if the pool did, it is cleared here, and a connection put into it after
        // that sees `is_removed` and clears it again.
        if self.idle.set(Box::new(NoIdle)).is_err() {
            self.clear_idle();
        }
    }

    /// The idle pool of type `T`, created on first use; `None` once the backend was retired
    /// before any pool was created (or when asked for another type than the one created first).
    ///
    /// The pool lives in the backend, not in a map of the caller's, so taking an idle connection
    /// on every keep-alive request costs one atomic load and a type id compare, no hash lookup
    /// or lock; created lazily, it needs no hook registered before backends are made.
    ///
    /// Whoever returns connections to it checks `is_removed` before and again after pooling one
    /// (clearing the pool then), as `retire` may have cleared it in between.
    pub fn idle<T: IdleConnections + Default>(&self) -> Option<&T> {
        let idle: &dyn Any = &**self.idle.get_or_init(|| Box::new(T::default()));
        idle.downcast_ref::<T>()
    }

    /// Closes the idle connections, if any pool was created.
    pub fn clear_idle(&self) {
        if let Some(idle) = self.idle.get() {
            idle.clear();
        }
    }

    /// A connect failure or reset: take the backend out of rotation for a doubling back-off at
    /// once, before the active check confirms. Open tunnels are left alone: one refused connect
    /// (a full backlog, say) must not cut every user's open app; a dead node closes them itself,
    /// and the active check marking it down ends any that linger.
    pub fn eject(&self) {
        let streak = self.ejection_streak.fetch_add(1, Ordering::Relaxed).min(16);
        let backoff = Duration::from_secs(1)
            .saturating_mul(1u32 << streak.min(5))
            .min(MAX_EJECTION);
        self.ejected_until_ms.store(
            self.age_ms() + backoff.as_millis() as u64,
            Ordering::Relaxed,
        );
        self.metrics.ejections.inc();
        self.clear_idle();
    }

    /// A successful connect resets the back-off.
    pub fn connect_succeeded(&self) {
        if self.ejection_streak.load(Ordering::Relaxed) != 0 {
            self.ejection_streak.store(0, Ordering::Relaxed);
            self.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Fires whenever the active checks mark the backend down.
    pub fn dead_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.dead_signal.subscribe()
    }

    /// Counts one answer to a client of `frontend` in `qlb_http_requests_total`.
    pub fn count_response(&self, frontend: &str, status: u16, m: &Metrics) {
        let class = crate::metrics::code_class_index(status);
        if let Some((_, counters)) = self.responses.load().iter().find(|(f, _)| f == frontend) {
            counters[class].inc();
            return;
        }
        let counters = crate::metrics::CODE_CLASSES.map(|c| {
            m.http_requests_total
                .with_label_values(&[frontend, &self.pool, &self.id, c])
        });
        counters[class].inc();
        self.responses.rcu(|list| {
            let mut list = (**list).clone();
            if !list.iter().any(|(f, _)| f == frontend) {
                list.push((frontend.to_string(), counters.clone()));
            }
            list
        });
    }

    pub fn inflight(&self) -> i64 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn tunnels(&self) -> i64 {
        self.tunnels.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Option<Arc<HealthSample>> {
        self.health.load_full()
    }

    /// Stores a new sample; the users sent since the previous one now show in its numbers.
    pub fn set_health(&self, sample: Option<HealthSample>) {
        self.health.store(sample.map(Arc::new));
        self.recent_users.store(0, Ordering::Relaxed);
    }

    /// New users sent here since the last sample (or check, while there is no sample).
    pub fn recent_users(&self) -> u64 {
        self.recent_users.load(Ordering::Relaxed)
    }

    /// Counts one new user sent here, as load until the next sample shows it.
    pub fn note_new_user(&self) {
        self.recent_users.fetch_add(1, Ordering::Relaxed);
    }

    pub fn check_state(&self) -> CheckState {
        self.checks.lock().expect("check state lock").clone()
    }

    /// Records one active check and applies rise/fall. Returns the new up state.
    pub fn record_check(&self, result: Result<(), String>, rise: u32, fall: u32) -> bool {
        let mut st = self.checks.lock().expect("check state lock");
        st.last_check = Some(SystemTime::now());
        // Without a sample nothing else ever clears them, and they would pile up for good.
        if self.health.load().is_none() {
            self.recent_users.store(0, Ordering::Relaxed);
        }
        let up = self.is_up();
        match result {
            Ok(()) => {
                self.metrics.checks_ok.inc();
                st.consecutive_ok += 1;
                st.consecutive_fail = 0;
                st.last_error = None;
                if !up && st.consecutive_ok >= rise {
                    self.set_up(true);
                }
            }
            Err(e) => {
                self.metrics.checks_fail.inc();
                st.consecutive_fail += 1;
                st.consecutive_ok = 0;
                st.last_error = Some(e);
                if up && st.consecutive_fail >= fall {
                    self.set_up(false);
                }
            }
        }
        self.is_up()
    }

    pub fn inflight_lease(self: &Arc<Self>) -> InflightLease {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.metrics.inflight.inc();
        InflightLease(self.clone())
    }

    pub fn tunnel_lease(self: &Arc<Self>) -> TunnelLease {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        self.metrics.tunnels_active.inc();
        self.metrics.tunnels_total.inc();
        TunnelLease(self.clone())
    }
}

/// Counts one forwarded request as load until the response body ends.
pub struct InflightLease(Arc<Backend>);

impl InflightLease {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InflightLease {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.inflight.dec();
    }
}

/// Counts one open WebSocket tunnel as load for its whole life.
pub struct TunnelLease(Arc<Backend>);

impl TunnelLease {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for TunnelLease {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.tunnels_active.dec();
    }
}

/// All live backends of one running instance.
pub struct Registry {
    metrics: Arc<Metrics>,
    backends: Mutex<HashMap<(String, String), Arc<Backend>>>,
}

impl Registry {
    pub fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            metrics,
            backends: Mutex::new(HashMap::new()),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The live backend for (pool, id), created on first sight; its target is updated. An id
    /// whose url changed gets a new backend with fresh state (health, checks, back-off, idle
    /// connections); the old one is retired: its idle connections to the old address are closed
    /// and its in-flight requests and tunnels run to their end on their own counters. Only the
    /// operator's drain flag carries over, as it is about the id, not the address.
    pub fn upsert(&self, pool: &str, id: &str, target: BackendTarget) -> Arc<Backend> {
        let mut map = self.backends.lock().expect("registry lock");
        let key = (pool.to_string(), id.to_string());
        let mut draining = false;
        if let Some(b) = map.get(&key) {
            if b.target().url == target.url {
                b.set_target(target);
                return b.clone();
            }
            draining = b.is_draining();
            b.retire();
        }
        let b = Arc::new(Backend::new(pool, id, target, &self.metrics));
        if draining {
            b.set_draining(true);
        }
        map.insert(key, b.clone());
        b
    }

    pub fn get(&self, pool: &str, id: &str) -> Option<Arc<Backend>> {
        self.backends
            .lock()
            .expect("registry lock")
            .get(&(pool.to_string(), id.to_string()))
            .cloned()
    }

    /// Forgets backends no longer in the config; their open tunnels finish on their own.
    pub fn retain(&self, keep: &[(String, String)]) {
        let mut map = self.backends.lock().expect("registry lock");
        map.retain(|k, b| {
            let stays = keep.contains(k);
            if !stays {
                b.mark_removed();
                // Gauges of a removed backend would otherwise report its last value forever.
                let l = [k.0.as_str(), k.1.as_str()];
                let m = &self.metrics;
                let _ = m.backend_up.remove_label_values(&l);
                let _ = m.backend_draining.remove_label_values(&l);
                let _ = m.engine_cpu_percent.remove_label_values(&l);
                let _ = m.engine_memory_committed_bytes.remove_label_values(&l);
                let _ = m.engine_memory_free_bytes.remove_label_values(&l);
                let _ = m.engine_sessions_active.remove_label_values(&l);
                let _ = m.engine_users_active.remove_label_values(&l);
                let _ = m.engine_saturated.remove_label_values(&l);
            }
            stays
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl IdleConnections for Counting {
        fn clear(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn target(url: &str) -> BackendTarget {
        BackendTarget {
            url: BackendUrl::parse(url).unwrap(),
            weight: 1,
            engine_health: None,
        }
    }

    fn clears(b: &Backend) -> usize {
        b.idle::<Counting>().unwrap().0.load(Ordering::Relaxed)
    }

    #[test]
    fn the_idle_pool_is_made_on_first_use_and_cleared_when_the_backend_goes_down() {
        let reg = Registry::new(Arc::new(Metrics::new()));
        let b = reg.upsert("web", "n1", target("http://10.0.0.1:80"));
        b.clear_idle(); // no pool yet: nothing to clear, none made
        assert_eq!(clears(&b), 0);
        b.eject();
        assert_eq!(clears(&b), 1);
        b.set_up(false);
        assert_eq!(clears(&b), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_backs_off_doubling_to_thirty_seconds_and_a_connect_resets_it() {
        let reg = Registry::new(Arc::new(Metrics::new()));
        let b = reg.upsert("web", "n1", target("http://10.0.0.1:80"));
        let ms = Duration::from_millis;
        for expected in [1, 2, 4, 8, 16, 30, 30] {
            b.eject();
            assert!(!b.is_available() && !b.accepts_new_users());
            tokio::time::advance(Duration::from_secs(expected) - ms(1)).await;
            assert!(b.is_ejected(), "still out just before {expected} s");
            tokio::time::advance(ms(1)).await;
            assert!(b.is_available(), "back after {expected} s");
        }
        assert_eq!(b.metrics.ejections.get(), 7);

        b.connect_succeeded();
        b.eject();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.is_available(), "a good connect starts the doubling again");

        b.eject();
        b.connect_succeeded();
        assert!(b.is_available(), "a good connect ends an ejection at once");
    }

    #[test]
    fn a_reload_keeps_live_state_at_the_same_url_and_starts_afresh_at_a_new_one() {
        let reg = Registry::new(Arc::new(Metrics::new()));
        let b = reg.upsert("web", "n1", target("http://10.0.0.1:80"));
        let _lease = b.inflight_lease();
        b.set_draining(true);
        b.eject();
        b.record_check(Err("refused".into()), 1, 1);
        assert!(!b.is_up());

        let mut reweighted = target("http://10.0.0.1:80");
        reweighted.weight = 3;
        let same = reg.upsert("web", "n1", reweighted);
        assert!(
            Arc::ptr_eq(&b, &same),
            "same id and url: the same live backend"
        );
        assert_eq!(same.target().weight, 3, "its target follows the config");
        assert_eq!(same.inflight(), 1);

        let moved = reg.upsert("web", "n1", target("http://10.0.0.9:80"));
        assert!(!Arc::ptr_eq(&b, &moved));
        assert!(
            moved.is_up() && !moved.is_ejected(),
            "health and ejection reset"
        );
        assert_eq!(moved.inflight(), 0);
        assert_eq!(moved.check_state().consecutive_fail, 0);
        assert!(moved.is_draining(), "the operator's drain is about the id");
        assert_eq!(
            b.inflight(),
            1,
            "the old one's requests finish on their own counters"
        );
        assert!(Arc::ptr_eq(&reg.get("web", "n1").unwrap(), &moved));
    }

    #[test]
    fn a_retired_backend_clears_its_pool_or_never_gets_one() {
        let reg = Registry::new(Arc::new(Metrics::new()));
        let used = reg.upsert("web", "n1", target("http://10.0.0.1:80"));
        assert_eq!(clears(&used), 0);
        let unused = reg.upsert("web", "n2", target("http://10.0.0.2:80"));

        let moved = reg.upsert("web", "n1", target("http://10.0.0.3:80"));
        assert!(used.is_removed() && !Arc::ptr_eq(&used, &moved));
        assert_eq!(
            clears(&used),
            1,
            "the old address's idle connections are closed"
        );
        assert_eq!(clears(&moved), 0);

        reg.upsert("web", "n2", target("http://10.0.0.4:80"));
        assert!(
            unused.idle::<Counting>().is_none(),
            "nothing can be pooled on a backend retired before it had a pool"
        );
    }
}
