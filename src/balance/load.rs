//! The load of a backend, and how `least-loaded` spreads new users over it.
//!
//! **Score** (lower is better): the engine's *pressure* — CPU share, or memory in use once it
//! climbs past 60 % (a Qlik engine keeps apps cached in RAM on purpose, so moderate use says
//! nothing) — plus a small cost per active engine session, per request or tunnel qlik-lb has
//! open to it, and per new user sent to it since the sample (the engine's numbers do not show
//! those yet), divided by `weight`.
//!
//! **Spreading.** One health sample is seen by every pick until the next poll, possibly thousands
//! of them, so "send each user to the lowest score" would herd them all onto one node. Instead a
//! pick is *weighted random by spare capacity* (`weight × (1 − load)`): engines at 20 %, 50 % and
//! 80 % CPU receive new users in the ratio 80 : 50 : 20, in expectation from the very first pick
//! after a poll, with no shared counter on the hot path. Users sent since the sample, and open
//! requests and tunnels, lower a node's spare capacity as they build up, so the split also adapts
//! before the next sample arrives.
//!
//! **Hot engines** (CPU ≥ 90 % or `saturated`) get no new users while any other candidate is not
//! hot. **Missing health is not idleness**: a late sample keeps counting, aged towards hot (see
//! `aging.rs`). A node that never had a sample, among nodes that have, is given the engine load
//! of the busiest sampled cool node: it is up, so it may take users, but nothing says it is
//! idle, so it must not win them all by looking emptiest; the users sent to it since its last
//! check count on top, so between checks it fills up like any other node. Only when no candidate has any sample does
//! the pick fall back to connection counts: power of two choices over in-flight requests plus
//! tunnels per weight.

use super::aging::Aging;
use super::engine_health::EngineHealth;
use super::registry::Backend;
use rand::Rng;
use std::time::Instant;

/// CPU share at and above which an engine takes no new users while others can.
pub const HOT_CPU_PERCENT: f64 = 90.0;
/// Memory in use below this share adds no pressure; from here to 100 % it rises to full.
const MEMORY_PRESSURE_FROM: f64 = 0.6;
/// Load per active engine session (sessions also show in CPU; this orders idle engines).
const SESSION_COST: f64 = 0.001;
/// Load per request or tunnel qlik-lb has open to the backend.
const OWN_COST: f64 = 0.002;
/// Load per new user sent since the sample was taken (not yet visible in the engine's numbers).
pub const RECENT_USER_COST: f64 = 0.01;
/// Pressure assumed for a backend whose engine health is unknown when nothing else is known to
/// compare it with (ranking in the load balancing module).
const UNKNOWN_PRESSURE: f64 = 0.5;

/// What the last engine health sample says, reduced to what balancing uses.
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

    /// The load `heat` (0.0 on time ..= 1.0 long silent) of the way to hot: pressure only rises,
    /// and a fully aged sample is hot whatever it said.
    pub fn aged(self, heat: f64) -> EngineLoad {
        let heat = heat.clamp(0.0, 1.0);
        EngineLoad {
            pressure: self.pressure + (1.0 - self.pressure) * heat,
            hot: self.hot || heat >= 1.0,
            ..self
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
    /// The last sample, aged by its lateness; `None` when the engine never answered one.
    pub engine: Option<EngineLoad>,
    /// Requests and tunnels qlik-lb has open to the backend.
    pub own: u64,
    /// New users sent since the sample was taken (without a sample: since the last check).
    pub recent: u64,
    pub weight: u32,
}

impl LoadInputs {
    pub fn of(b: &Backend, aging: Aging, now: Instant) -> LoadInputs {
        let sample = b.health();
        let engine = sample.as_ref().map(|s| {
            EngineLoad::from_health(&s.health)
                .aged(aging.heat(now.saturating_duration_since(s.taken)))
        });
        LoadInputs {
            engine,
            own: (b.inflight() + b.tunnels()).max(0) as u64,
            recent: b.recent_users(),
            weight: b.target().weight.max(1),
        }
    }

    /// Load as a share of one node, before weighting; may exceed 1.0. `unknown` stands in for
    /// the pressure of an engine that never answered.
    fn load_with(&self, unknown: f64) -> f64 {
        self.sampled_load().unwrap_or(unknown)
            + OWN_COST * self.own as f64
            + RECENT_USER_COST * self.recent as f64
    }

    /// What the engine's own numbers say, without what qlik-lb added since.
    fn sampled_load(&self) -> Option<f64> {
        self.engine
            .map(|e| e.pressure + SESSION_COST * e.sessions as f64)
    }

    /// Lower is better.
    pub fn score(&self) -> f64 {
        self.score_with(UNKNOWN_PRESSURE)
    }

    fn score_with(&self, unknown: f64) -> f64 {
        self.load_with(unknown) / self.weight.max(1) as f64
    }

    /// Room for new users, in node-equivalents: `weight × (1 − load)`, never negative.
    pub fn spare(&self) -> f64 {
        self.spare_with(UNKNOWN_PRESSURE)
    }

    fn spare_with(&self, unknown: f64) -> f64 {
        self.weight.max(1) as f64 * (1.0 - self.load_with(unknown)).max(0.0)
    }

    pub fn is_hot(&self) -> bool {
        self.engine.is_some_and(|e| e.hot)
    }

    /// Open requests and tunnels per weight: the measure when no engine has answered yet.
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
    // The busiest sampled eligible engine stands in for those never sampled (module comment);
    // their own connections and recent users come on top, as for any node.
    let Some(unknown) = c
        .iter()
        .filter(|x| eligible(x))
        .filter_map(LoadInputs::sampled_load)
        .reduce(f64::max)
    else {
        return power_of_two(c, eligible, rng);
    };
    let spare = |x: &LoadInputs| x.spare_with(unknown);
    let total: f64 = c.iter().filter(|x| eligible(x)).map(spare).sum();
    if total > 0.0 {
        let mut point = rng.gen_range(0.0..total);
        let mut last = None;
        for (i, x) in c.iter().enumerate().filter(|(_, x)| eligible(x)) {
            let room = spare(x);
            if room <= 0.0 {
                continue;
            }
            last = Some(i);
            if point < room {
                return Some(i);
            }
            point -= room;
        }
        return last;
    }
    // Every eligible engine is full: the least full one still serves best.
    lowest(c, eligible, rng, |x| x.score_with(unknown))
}

/// Minimum by `key`, starting the scan at a random place so equals share the picks.
fn lowest<R: Rng + ?Sized>(
    c: &[LoadInputs],
    eligible: impl Fn(&LoadInputs) -> bool,
    rng: &mut R,
    key: impl Fn(&LoadInputs) -> f64,
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
    use std::time::Duration;

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

    fn unsampled(own: u64) -> LoadInputs {
        LoadInputs {
            engine: None,
            own,
            recent: 0,
            weight: 1,
        }
    }

    fn shares(c: &[LoadInputs], n: usize, seed: u64) -> Vec<f64> {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut counts = vec![0usize; c.len()];
        for _ in 0..n {
            counts[choose_least_loaded(c, &mut rng).expect("a candidate")] += 1;
        }
        counts.iter().map(|&k| k as f64 / n as f64).collect()
    }

    fn aged(mut x: LoadInputs, age_secs: u64) -> LoadInputs {
        let aging = Aging::new(Duration::from_secs(5), Duration::from_secs(2));
        x.engine = x
            .engine
            .map(|e| e.aged(aging.heat(Duration::from_secs(age_secs))));
        x
    }

    #[test]
    fn a_hot_engine_whose_samples_stop_gets_no_new_users() {
        // The busy engine has no connections from qlik-lb; the cool one has many.
        let mut cool = engine(40.0);
        cool.own = 50;
        for age in [10, 20, 60, 3600] {
            let c = [aged(engine(95.0), age), cool];
            assert_eq!(shares(&c, 500, age), vec![0.0, 1.0], "sample {age} s old");
        }
    }

    #[test]
    fn a_silent_engine_ages_towards_hot_never_idle() {
        let fresh = engine(20.0).engine.unwrap();
        let mut last = fresh.pressure;
        for age in [7, 10, 15, 21] {
            let p = aged(engine(20.0), age).engine.unwrap().pressure;
            assert!(p >= last, "{age} s: {p} < {last}");
            last = p;
        }
        assert!(last > fresh.pressure && last < 1.0);
        let long_silent = aged(engine(20.0), 22);
        assert!(long_silent.is_hot());
        // Among cool engines, the long silent one takes nobody.
        let c = [long_silent, engine(70.0)];
        assert_eq!(shares(&c, 300, 7), vec![0.0, 1.0]);
    }

    #[test]
    fn one_node_without_a_sample_leaves_the_others_on_load() {
        // Connection counts would send everyone to the unsampled node (0 open vs 40).
        let (mut a, mut b) = (engine(20.0), engine(60.0));
        a.own = 40;
        b.own = 40;
        let c = [a, b, unsampled(0)];
        let got = shares(&c, 6000, 11);
        // Spare 0.72 : 0.32 : 0.40 — the unsampled one counts as loaded as the busiest known
        // engine (60 %), less the 40 open connections that one has.
        let expected = [0.72 / 1.44, 0.32 / 1.44, 0.40 / 1.44];
        for i in 0..3 {
            assert!(
                (got[i] - expected[i]).abs() < 0.03,
                "{got:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn without_any_sample_the_pick_goes_by_connection_counts() {
        let c = [unsampled(4), unsampled(0)];
        assert_eq!(shares(&c, 200, 3), vec![0.0, 1.0]);
    }

    #[test]
    fn users_between_two_samples_spread_by_spare_capacity() {
        // Spare 0.8 : 0.4 over 1000 picks; binomial spread is about 1.5 points.
        let got = shares(&[engine(20.0), engine(60.0)], 1000, 42);
        assert!((got[0] - 2.0 / 3.0).abs() < 0.05, "{got:?}");
    }

    #[test]
    fn users_sent_since_the_sample_count_as_load() {
        let mut busy_since = engine(20.0);
        busy_since.recent = 40; // +0.4: now as loaded as the 60 % node
        let got = shares(&[busy_since, engine(60.0)], 4000, 5);
        assert!((got[0] - 0.5).abs() < 0.03, "{got:?}");
    }

    #[test]
    fn recent_users_reset_with_each_new_sample() {
        use crate::balance::registry::{BackendTarget, HealthSample, Registry};
        use crate::config::BackendUrl;
        let reg = Registry::new(std::sync::Arc::new(crate::metrics::Metrics::new()));
        let url = BackendUrl::parse("http://127.0.0.1:1").unwrap();
        let b = reg.upsert(
            "p",
            "n1",
            BackendTarget {
                url,
                weight: 1,
                engine_health: None,
            },
        );
        let sample = || HealthSample {
            health: EngineHealth::default(),
            taken: Instant::now(),
            taken_wall: std::time::SystemTime::now(),
        };
        let aging = Aging::new(Duration::from_secs(5), Duration::from_secs(2));
        b.note_new_user();
        assert_eq!(LoadInputs::of(&b, aging, Instant::now()).recent, 1);
        b.record_check(Ok(()), 1, 1);
        assert_eq!(
            LoadInputs::of(&b, aging, Instant::now()).recent,
            0,
            "no sample: per check"
        );
        b.note_new_user();
        b.set_health(Some(sample()));
        b.record_check(Ok(()), 1, 1);
        (0..3).for_each(|_| b.note_new_user());
        assert_eq!(
            LoadInputs::of(&b, aging, Instant::now()).recent,
            3,
            "kept past checks"
        );
        b.set_health(Some(sample()));
        assert_eq!(LoadInputs::of(&b, aging, Instant::now()).recent, 0);
    }

    #[test]
    fn weight_scales_score_and_spare() {
        let mut x = engine(50.0);
        x.weight = 2;
        assert_eq!(x.score(), 0.25);
        assert_eq!(x.spare(), 1.0);
    }
}
