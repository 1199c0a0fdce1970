//! A simulated engine's state and its health check JSON (`/engine/healthcheck`).
//!
//! CPU, memory, saturation, latency and failure are knobs set from outside; sessions, users and
//! documents follow the QIX WebSockets actually open on the node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

/// The engine version the simulator reports everywhere.
pub const ENGINE_VERSION: &str = "12.2027.0";

/// Qlik flags an engine as saturated above 90 % CPU or 90 % of physical memory in use.
const SATURATION_PERCENT: f64 = 90.0;

/// What one QIX answer costs an idle engine.
const BASE_ANSWER: Duration = Duration::from_millis(2);
/// CPU one open session keeps busy, percent: a few thousand sessions load a node noticeably.
const SESSION_CPU_PERCENT: f64 = 0.02;
/// Busiest the model lets an engine get, so an answer time stays finite.
const MAX_UTILISATION: f64 = 0.98;
/// A saturated engine queues every answer behind this much extra work.
const SATURATED_EXTRA: Duration = Duration::from_millis(250);

/// How long a QIX answer takes on an engine at `cpu` percent with `sessions` open: the answer
/// time of a single queue (`base / (1 - utilisation)`, so it doubles at 50 % and grows steeply
/// towards 100 %), plus a fixed delay when saturated. The extra latency knob comes on top.
pub fn answer_time(cpu: f64, sessions: u64, saturated: bool) -> Duration {
    let utilisation =
        ((cpu + sessions as f64 * SESSION_CPU_PERCENT) / 100.0).clamp(0.0, MAX_UTILISATION);
    let queued = BASE_ANSWER.div_f64(1.0 - utilisation);
    if saturated {
        queued + SATURATED_EXTRA
    } else {
        queued
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    /// CPU in use, percent.
    pub cpu: f64,
    pub memory_free_mb: f64,
    pub memory_total_mb: f64,
    /// `None`: derived from CPU and memory as Qlik does; `Some`: reported as set.
    pub saturated: Option<bool>,
    /// Added before every answer except the control API's.
    pub latency: Duration,
    /// Every answer except the control API's is a 500.
    pub fail: bool,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs {
            cpu: 5.0,
            memory_free_mb: 26_000.0,
            memory_total_mb: 32_768.0,
            saturated: None,
            latency: Duration::ZERO,
            fail: false,
        }
    }
}

impl Knobs {
    pub fn reported_saturated(&self) -> bool {
        self.saturated.unwrap_or_else(|| {
            let used_percent = if self.memory_total_mb > 0.0 {
                100.0 * (self.memory_total_mb - self.memory_free_mb) / self.memory_total_mb
            } else {
                0.0
            };
            self.cpu > SATURATION_PERCENT || used_percent > SATURATION_PERCENT
        })
    }
}

#[derive(Debug, Default)]
struct Activity {
    sessions_active: u64,
    sessions_total: u64,
    /// Open engine sessions per QPS session (one user may hold several WebSockets).
    open_per_user: HashMap<String, u64>,
    /// Users arrived since start; one who leaves and comes back counts again.
    users_total: u64,
    /// Apps loaded on this engine, in the order first opened; they stay in memory.
    loaded_docs: Vec<String>,
    /// Apps open in a live engine session, with how many sessions hold each.
    active_docs: HashMap<String, u64>,
}

pub struct Engine {
    started: String,
    knobs: Mutex<Knobs>,
    activity: Mutex<Activity>,
    calls: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent at every await-free step, so a poisoned lock is usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            started: chrono::Utc::now()
                .format("%Y%m%dT%H%M%S%.3f+0000")
                .to_string(),
            knobs: Mutex::new(Knobs::default()),
            activity: Mutex::new(Activity::default()),
            calls: AtomicU64::new(0),
        }
    }

    pub fn knobs(&self) -> Knobs {
        lock(&self.knobs).clone()
    }

    pub fn update_knobs(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut lock(&self.knobs));
    }

    pub fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn open_sessions(&self) -> u64 {
        lock(&self.activity).sessions_active
    }

    /// How long the next QIX answer takes (see `answer_time`).
    pub fn answer_delay(&self) -> Duration {
        let knobs = self.knobs();
        answer_time(knobs.cpu, self.open_sessions(), knobs.reported_saturated())
    }

    /// Apps this engine knows: the loaded ones.
    pub fn loaded_docs(&self) -> Vec<String> {
        lock(&self.activity).loaded_docs.clone()
    }

    /// Registers an engine session for the QPS session `user`; it ends when the guard drops.
    pub fn open_session(self: &Arc<Self>, user: &str) -> EngineSession {
        let mut activity = lock(&self.activity);
        activity.sessions_active += 1;
        activity.sessions_total += 1;
        let open = activity.open_per_user.entry(user.to_string()).or_insert(0);
        *open += 1;
        let arrived = *open == 1;
        if arrived {
            activity.users_total += 1;
        }
        EngineSession {
            engine: Arc::clone(self),
            user: user.to_string(),
            doc: None,
        }
    }

    pub fn health(&self) -> HealthReport {
        let knobs = self.knobs();
        let activity = lock(&self.activity);
        let active_docs: Vec<String> = activity
            .loaded_docs
            .iter()
            .filter(|d| activity.active_docs.contains_key(*d))
            .cloned()
            .collect();
        let allocated = (knobs.memory_total_mb - knobs.memory_free_mb).max(0.0);
        HealthReport {
            version: ENGINE_VERSION,
            started: self.started.clone(),
            mem: MemReport {
                committed: round1(allocated * 0.92),
                allocated: round1(allocated),
                free: knobs.memory_free_mb,
                total_physical: knobs.memory_total_mb,
            },
            cpu: CpuReport { total: knobs.cpu },
            session: CountReport {
                active: activity.sessions_active,
                total: activity.sessions_total,
            },
            apps: AppsReport {
                active_docs,
                in_memory_docs: activity.loaded_docs.clone(),
                loaded_docs: activity.loaded_docs.clone(),
                calls: self.calls.load(Ordering::Relaxed),
                selections: 0,
            },
            users: CountReport {
                active: activity.open_per_user.len() as u64,
                total: activity.users_total,
            },
            cache: CacheReport::default(),
            saturated: knobs.reported_saturated(),
        }
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// One live engine session (one QIX WebSocket).
pub struct EngineSession {
    engine: Arc<Engine>,
    user: String,
    doc: Option<String>,
}

impl EngineSession {
    pub fn doc(&self) -> Option<&str> {
        self.doc.as_deref()
    }

    /// Counts one QIX call for `apps.calls`.
    pub fn count_call(&self) {
        self.engine.count_call();
    }

    /// How long the engine takes to answer now.
    pub fn answer_delay(&self) -> Duration {
        self.engine.answer_delay()
    }

    /// Opens `app` in this session; the engine loads it if it was not in memory.
    pub fn open_doc(&mut self, app: &str) {
        let mut activity = lock(&self.engine.activity);
        if !activity.loaded_docs.iter().any(|d| d == app) {
            activity.loaded_docs.push(app.to_string());
        }
        *activity.active_docs.entry(app.to_string()).or_insert(0) += 1;
        self.doc = Some(app.to_string());
    }
}

impl Drop for EngineSession {
    fn drop(&mut self) {
        let mut activity = lock(&self.engine.activity);
        activity.sessions_active = activity.sessions_active.saturating_sub(1);
        if let Some(open) = activity.open_per_user.get_mut(&self.user) {
            *open -= 1;
            if *open == 0 {
                activity.open_per_user.remove(&self.user);
            }
        }
        if let Some(doc) = self.doc.take() {
            if let Some(holders) = activity.active_docs.get_mut(&doc) {
                *holders -= 1;
                if *holders == 0 {
                    activity.active_docs.remove(&doc);
                }
            }
        }
    }
}

/// The health check JSON, fields in the order Qlik sends them.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub version: &'static str,
    pub started: String,
    pub mem: MemReport,
    pub cpu: CpuReport,
    pub session: CountReport,
    pub apps: AppsReport,
    pub users: CountReport,
    pub cache: CacheReport,
    pub saturated: bool,
}

#[derive(Debug, Serialize)]
pub struct MemReport {
    pub committed: f64,
    pub allocated: f64,
    pub free: f64,
    #[serde(rename = "totalPhysical")]
    pub total_physical: f64,
}

#[derive(Debug, Serialize)]
pub struct CpuReport {
    pub total: f64,
}

#[derive(Debug, Serialize)]
pub struct CountReport {
    pub active: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct AppsReport {
    pub active_docs: Vec<String>,
    pub in_memory_docs: Vec<String>,
    pub loaded_docs: Vec<String>,
    pub calls: u64,
    pub selections: u64,
}

/// The simulated engine does no caching; the counters are there because clients expect the object.
#[derive(Debug, Default, Serialize)]
pub struct CacheReport {
    pub hits: u64,
    pub lookups: u64,
    pub added: u64,
    pub replaced: u64,
    pub bytes_added: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn answers_slow_down_with_cpu_doubling_at_half_load() {
        let idle = ms(answer_time(0.0, 0, false));
        assert_eq!(idle, 2.0);
        assert_eq!(ms(answer_time(50.0, 0, false)), 2.0 * idle);
        assert!((ms(answer_time(95.0, 0, false)) - 20.0 * idle).abs() < 1e-9);
        assert_eq!(
            answer_time(100.0, 0, false),
            answer_time(250.0, 0, false),
            "bounded"
        );
    }

    #[test]
    fn open_sessions_add_load_and_saturation_a_fixed_delay() {
        assert!(answer_time(5.0, 2000, false) > answer_time(5.0, 0, false));
        assert_eq!(
            answer_time(5.0, 2500, false),
            answer_time(55.0, 0, false),
            "2,500 sessions weigh as 50 % CPU"
        );
        assert_eq!(
            answer_time(20.0, 0, true),
            answer_time(20.0, 0, false) + SATURATED_EXTRA
        );
    }

    #[test]
    fn an_engine_reads_its_own_knobs_and_sessions() {
        let engine = Arc::new(Engine::new());
        let before = engine.answer_delay();
        let _held: Vec<EngineSession> = (0..500)
            .map(|i| engine.open_session(&format!("u{i}")))
            .collect();
        assert!(engine.answer_delay() > before);
        engine.update_knobs(|k| k.cpu = 95.0);
        assert!(
            engine.answer_delay() >= SATURATED_EXTRA,
            "95 % CPU reports saturated"
        );
    }
}
