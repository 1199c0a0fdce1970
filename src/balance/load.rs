//! The load of a backend, and how `least-loaded` spreads new users over it.
//!
//! **Score** (lower is better): the engine's *pressure* — CPU share, or memory in use once it
//! climbs past 60 % (a Qlik engine keeps apps cached in RAM on purpose, so moderate use says
//! nothing) — plus a small cost per active engine session and per request or tunnel qlik-lb has
//! open to it, divided by `weight`. A backend without a fresh sample scores a neutral pressure.
//!
//! **Spreading.** One health sample is seen by every pick until the next poll, possibly thousands
//! of them, so "send each user to the lowest score" would herd them all onto one node. Instead a
//! pick is *weighted random by spare capacity* (`weight × (1 − load)`): engines at 20 %, 50 % and
//! 80 % CPU receive new users in the ratio 80 : 50 : 20, in expectation from the very first pick
//! after a poll, with no shared counter on the hot path. Open requests and tunnels lower a node's
//! spare capacity as they build up, so the split also adapts before the next sample arrives.
//!
//! **Hot engines** (CPU ≥ 90 % or `saturated`, from a fresh sample) get no new users while any
//! other candidate is not hot. **Stale samples** (older than three health intervals, or none)
//! carry no information, so when any candidate lacks a fresh sample the pick falls back to
//! connection counts: power of two choices over in-flight requests plus tunnels per weight.

use super::engine_health::EngineHealth;
use super::registry::Backend;
use rand::Rng;
use std::time::{Duration, Instant};

/// CPU share at and above which an engine takes no new users while others can.
pub const HOT_CPU_PERCENT: f64 = 90.0;
/// How many health intervals a sample stays fresh.
pub const FRESH_INTERVALS: u32 = 3;
/// Memory in use below this share adds no pressure; from here to 100 % it rises to full.
const MEMORY_PRESSURE_FROM: f64 = 0.6;
/// Load per active engine session (sessions also show in CPU; this orders idle engines).
const SESSION_COST: f64 = 0.001;
/// Load per request or tunnel qlik-lb has open to the backend.
const OWN_COST: f64 = 0.002;
/// Load per new user sent since the sample was taken (not yet visible in the engine's numbers).
pub const RECENT_USER_COST: f64 = 0.01;
/// Pressure assumed for a backend whose engine health is unknown.
const UNKNOWN_PRESSURE: f64 = 0.5;

/// What a fresh engine health sample says, reduced to what balancing uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLoad {
    /// 0.0 (idle) ..= 1.0 (full).
    pub pressure: f64,
    pub sessions: u64,
    /// CPU ≥ 90 % or `saturated`.
    pub hot: bool,
}

impl EngineLoad {
    pub fn from_health(h: &EngineHealth) -> EngineLoad {
        let cpu = (h.cpu.total / 100.0).clamp(0.0, 1.0);
        let memory = memory_in_use(h)
            .map(|m| ((m - MEMORY_PRESSURE_FROM) / (1.0 - MEMORY_PRESSURE_FROM)).clamp(0.0, 1.0))
            .unwrap_or(0.0);
        let pressure = if h.saturated { 1.0 } else { cpu.max(memory) };
        EngineLoad {
            pressure,
            sessions: h.session.active,
            hot: h.saturated || h.cpu.total >= HOT_CPU_PERCENT,
        }
    }
}

/// Share of memory in use: free vs `totalPhysical` when reported, else committed vs committed
/// plus free (older engines do not report the machine's total).
pub fn memory_in_use(h: &EngineHealth) -> Option<f64> {
    h.memory_used_fraction().or_else(|| {
        let known = h.mem.committed + h.mem.free;
        (h.mem.committed > 0.0 && known > 0.0).then(|| (h.mem.committed / known).clamp(0.0, 1.0))
    })
}

/// Everything a score depends on, taken from live state once, so scoring and ranking are pure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadInputs {
    /// `None` when there is no sample fresher than the staleness limit.
    pub engine: Option<EngineLoad>,
    /// Requests and tunnels qlik-lb has open to the backend.
    pub own: u64,
    /// New users sent since the sample was taken.
    pub recent: u64,
    pub weight: u32,
}

impl LoadInputs {
    pub fn of(b: &Backend, fresh_for: Duration, now: Instant) -> LoadInputs {
        let engine = b
            .health()
            .filter(|s| now.saturating_duration_since(s.taken) <= fresh_for)
            .map(|s| EngineLoad::from_health(&s.health));
        LoadInputs {
            engine,
            own: (b.inflight() + b.tunnels()).max(0) as u64,
            recent: 0,
            weight: b.target().weight.max(1),
        }
    }

    /// Load as a share of one node, before weighting; may exceed 1.0.
    fn load(&self) -> f64 {
        let (pressure, sessions) = match self.engine {
            Some(e) => (e.pressure, e.sessions),
            None => (UNKNOWN_PRESSURE, 0),
        };
        pressure
            + SESSION_COST * sessions as f64
            + OWN_COST * self.own as f64
            + RECENT_USER_COST * self.recent as f64
    }

    /// Lower is better.
    pub fn score(&self) -> f64 {
        self.load() / self.weight.max(1) as f64
    }

    /// Room for new users, in node-equivalents: `weight × (1 − load)`, never negative.
    pub fn spare(&self) -> f64 {
        self.weight.max(1) as f64 * (1.0 - self.load()).max(0.0)
    }

    pub fn is_hot(&self) -> bool {
        self.engine.is_some_and(|e| e.hot)
    }

    /// Open requests and tunnels per weight: the measure when engine health is stale.
    pub fn connection_load(&self) -> f64 {
        self.own as f64 / self.weight.max(1) as f64
    }
}

/// Picks the index of the candidate a new user goes to (see the module comment); pure apart
/// from `rng`, so it can be tested and measured without sockets.
pub fn choose_least_loaded<R: Rng + ?Sized>(c: &[LoadInputs], rng: &mut R) -> Option<usize> {
    if c.len() <= 1 {
        return (!c.is_empty()).then_some(0);
    }
    let any_cool = c.iter().any(|x| !x.is_hot());
    let eligible = |x: &LoadInputs| !any_cool || !x.is_hot();
    if c.iter().filter(|x| eligible(x)).all(|x| x.engine.is_some()) {
        let total: f64 = c
            .iter()
            .filter(|x| eligible(x))
            .map(LoadInputs::spare)
            .sum();
        if total > 0.0 {
            let mut point = rng.gen_range(0.0..total);
            let mut last = None;
            for (i, x) in c.iter().enumerate().filter(|(_, x)| eligible(x)) {
                let spare = x.spare();
                if spare <= 0.0 {
                    continue;
                }
                last = Some(i);
                if point < spare {
                    return Some(i);
                }
                point -= spare;
            }
            return last;
        }
        // Every eligible engine is full: the least full one still serves best.
        return lowest(c, eligible, rng, LoadInputs::score);
    }
    power_of_two(c, eligible, rng)
}

/// Minimum by `key`, starting the scan at a random place so equals share the picks.
fn lowest<R: Rng + ?Sized>(
    c: &[LoadInputs],
    eligible: impl Fn(&LoadInputs) -> bool,
    rng: &mut R,
    key: fn(&LoadInputs) -> f64,
) -> Option<usize> {
    let start = rng.gen_range(0..c.len());
    (0..c.len())
        .map(|k| (start + k) % c.len())
        .filter(|&i| eligible(&c[i]))
        .min_by(|&a, &b| key(&c[a]).total_cmp(&key(&c[b])))
}

/// Two random eligible candidates; the one with fewer open connections per weight wins.
fn power_of_two<R: Rng + ?Sized>(
    c: &[LoadInputs],
    eligible: impl Fn(&LoadInputs) -> bool,
    rng: &mut R,
) -> Option<usize> {
    let pool: Vec<usize> = (0..c.len()).filter(|&i| eligible(&c[i])).collect();
    match pool.len() {
        0 => None,
        1 => Some(pool[0]),
        n => {
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (pool[a], pool[b]);
            if c[b].connection_load() < c[a].connection_load() {
                Some(b)
            } else {
                Some(a)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(cpu: f64) -> LoadInputs {
        LoadInputs {
            engine: Some(EngineLoad {
                pressure: cpu / 100.0,
                sessions: 0,
                hot: cpu >= HOT_CPU_PERCENT,
            }),
            own: 0,
            recent: 0,
            weight: 1,
        }
    }

    #[test]
    fn memory_counts_only_when_high() {
        let mut h = EngineHealth::default();
        h.mem.total_physical = Some(1000.0);
        h.mem.free = 500.0;
        h.cpu.total = 10.0;
        assert_eq!(EngineLoad::from_health(&h).pressure, 0.1);
        h.mem.free = 50.0;
        assert!((EngineLoad::from_health(&h).pressure - 0.875).abs() < 1e-9);
    }

    #[test]
    fn committed_stands_in_for_total_physical() {
        let h = EngineHealth::parse(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/qlik/fixtures/engine-healthcheck-old.json"
        )))
        .unwrap();
        let used = memory_in_use(&h).unwrap();
        assert!((used - 460.5 / (460.5 + 11254.3)).abs() < 1e-9);
    }

    #[test]
    fn hot_engine_only_when_nothing_else() {
        let mut rng = rand::thread_rng();
        let c = [engine(95.0), engine(60.0)];
        assert!((0..500).all(|_| choose_least_loaded(&c, &mut rng) == Some(1)));
        let all_hot = [engine(95.0), engine(99.0)];
        assert!(choose_least_loaded(&all_hot, &mut rng).is_some());
    }

    #[test]
    fn weight_scales_score_and_spare() {
        let mut x = engine(50.0);
        x.weight = 2;
        assert_eq!(x.score(), 0.25);
        assert_eq!(x.spare(), 1.0);
    }
}
