//! Ordering the engines QPS offers, as a pure function of what is known about each.
//!
//! Order: engines that can take a new session (up, not draining, not saturated or hot), then
//! engines qlik-lb does not know in the order QPS sent them, then known engines that are busy
//! (saturated, CPU ≥ 90 %, draining), then known engines that are down. Within the first group an
//! engine that already holds the app in memory comes first unless its score is more than
//! `WARM_MARGIN` above the best, then lower score; scores within `TIE_BAND` of each other are
//! ties, and ties rotate with the caller's `tie` counter so repeated calls spread.

use crate::balance::load::LoadInputs;

/// How much more loaded (in node shares: 0.2 = 20 CPU points) a warm engine may be and still
/// be preferred: opening a cold app costs far more than a little extra CPU.
pub const WARM_MARGIN: f64 = 0.2;
/// Scores closer than this are equal for ordering.
pub const TIE_BAND: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineState {
    /// The string matched no backend of the pool.
    Unknown,
    Known {
        /// Up by health checks and not ejected.
        available: bool,
        draining: bool,
        load: LoadInputs,
        /// The app is in the engine's memory.
        warm: bool,
    },
}

/// Indexes of `engines`, best first; always a permutation of `0..engines.len()`.
pub fn rank(engines: &[EngineState], tie: usize) -> Vec<usize> {
    let n = engines.len().max(1);
    let group = |s: &EngineState| match s {
        EngineState::Known {
            available: true,
            draining: false,
            load,
            ..
        } if !load.is_hot() => 0,
        EngineState::Unknown => 1,
        EngineState::Known {
            available: true, ..
        } => 2,
        EngineState::Known { .. } => 3,
    };
    let score = |s: &EngineState| match s {
        EngineState::Known { load, .. } => load.score(),
        EngineState::Unknown => 0.0,
    };
    let best = engines
        .iter()
        .filter(|s| group(s) == 0)
        .map(score)
        .fold(f64::INFINITY, f64::min);
    let key = |i: usize| {
        let s = &engines[i];
        let g = group(s);
        let rotation = (i + tie) % n;
        match (g, s) {
            (0, EngineState::Known { warm, load, .. }) => {
                let warm_first = *warm && load.score() <= best + WARM_MARGIN;
                (g, !warm_first, band(load.score()), rotation)
            }
            (2, EngineState::Known { load, .. }) => (g, false, band(load.score()), rotation),
            _ => (g, false, 0, i),
        }
    };
    let mut order: Vec<usize> = (0..engines.len()).collect();
    order.sort_by_cached_key(|&i| key(i));
    order
}

fn band(score: f64) -> i64 {
    if score.is_finite() {
        (score / TIE_BAND).floor() as i64
    } else {
        i64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::load::EngineLoad;

    fn known(cpu: f64, warm: bool) -> EngineState {
        EngineState::Known {
            available: true,
            draining: false,
            warm,
            load: LoadInputs {
                engine: Some(EngineLoad {
                    pressure: cpu / 100.0,
                    sessions: 0,
                    hot: cpu >= 90.0,
                }),
                own: 0,
                recent: 0,
                weight: 1,
            },
        }
    }

    #[test]
    fn groups_and_scores() {
        let down = match known(5.0, false) {
            EngineState::Known { load, warm, .. } => EngineState::Known {
                available: false,
                draining: false,
                load,
                warm,
            },
            s => s,
        };
        let engines = [
            down,
            EngineState::Unknown,
            known(95.0, true),
            known(40.0, false),
            known(10.0, false),
        ];
        assert_eq!(rank(&engines, 0), [4, 3, 1, 2, 0]);
    }

    #[test]
    fn warm_wins_only_when_close() {
        assert_eq!(rank(&[known(10.0, false), known(25.0, true)], 0), [1, 0]);
        assert_eq!(rank(&[known(10.0, false), known(60.0, true)], 0), [0, 1]);
    }

    #[test]
    fn ties_rotate() {
        let engines = [known(30.0, false), known(30.5, false), known(30.2, false)];
        let firsts: std::collections::HashSet<usize> =
            (0..3).map(|t| rank(&engines, t)[0]).collect();
        assert_eq!(firsts.len(), 3);
    }
}
