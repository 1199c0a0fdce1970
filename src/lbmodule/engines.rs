//! Matching QPS's engine strings to the pool's backends, and what is known about each.

use super::rank::EngineState;
use crate::balance::aging::Aging;
use crate::balance::load::LoadInputs;
use crate::balance::{Backend, Pool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Host and optional port of `wss://host:4747/x`, `https://host:4747`, `host:4747`, `host`,
/// `[::1]:4747`; `None` when no host can be read.
pub fn host_port(engine: &str) -> Option<(&str, Option<u16>)> {
    let s = engine.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let authority = s.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// The backend an engine string names: same host (any case) and, when given, same port.
pub fn match_backend<'a>(pool: &'a Pool, engine: &str) -> Option<&'a Arc<Backend>> {
    let (host, port) = host_port(engine)?;
    pool.backends.iter().find(|b| {
        let url = &b.target().url;
        url.host.eq_ignore_ascii_case(host) && port.is_none_or(|p| p == url.port)
    })
}

/// New sessions each engine was ranked first for since its last health sample: the engine's
/// own numbers do not show them yet, so they are added to its load to keep calls between two
/// polls from all landing on the same engine.
#[derive(Default)]
pub struct RecentFirsts(Mutex<HashMap<String, (Instant, u64)>>);

impl RecentFirsts {
    fn get(&self, b: &Backend, taken: Instant) -> u64 {
        let map = self.0.lock().expect("recent firsts lock");
        match map.get(&b.id) {
            Some((t, n)) if *t == taken => *n,
            _ => 0,
        }
    }

    pub fn record(&self, b: &Backend) {
        let Some(sample) = b.health() else { return };
        let mut map = self.0.lock().expect("recent firsts lock");
        let entry = map.entry(b.id.clone()).or_insert((sample.taken, 0));
        if entry.0 != sample.taken {
            *entry = (sample.taken, 0);
        }
        entry.1 += 1;
    }
}

/// The engines of one request as the ranking sees them.
pub struct Matched {
    pub states: Vec<EngineState>,
    /// The backend each engine string named, if any.
    pub backends: Vec<Option<Arc<Backend>>>,
    /// Whether any matched backend has a health sample or a finished check to judge by.
    pub any_data: bool,
}

pub fn match_engines(
    pool: &Pool,
    engines: &[String],
    app: Option<&str>,
    recent: &RecentFirsts,
) -> Matched {
    let now = Instant::now();
    let aging = Aging::of(&pool.cfg.health);
    let mut any_data = false;
    let mut matched = Vec::with_capacity(engines.len());
    let states = engines
        .iter()
        .map(|e| {
            let Some(b) = match_backend(pool, e) else {
                matched.push(None);
                return EngineState::Unknown;
            };
            matched.push(Some(b.clone()));
            let mut load = LoadInputs::of(b, aging, now);
            let sample = b.health().filter(|_| load.engine.is_some());
            load.recent = sample.as_ref().map_or(0, |s| recent.get(b, s.taken));
            any_data |= sample.is_some() || b.check_state().last_check.is_some();
            EngineState::Known {
                available: b.is_available(),
                draining: b.is_draining(),
                load,
                warm: match (&sample, app) {
                    (Some(s), Some(app)) => s.health.has_app(app),
                    _ => false,
                },
            }
        })
        .collect();
    Matched {
        states,
        backends: matched,
        any_data,
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn engine_string_forms() {
        assert_eq!(
            host_port("wss://QS-Node1:4747"),
            Some(("QS-Node1", Some(4747)))
        );
        assert_eq!(host_port("https://node:4747/x"), Some(("node", Some(4747))));
        assert_eq!(host_port("node:4747"), Some(("node", Some(4747))));
        assert_eq!(host_port("node"), Some(("node", None)));
        assert_eq!(host_port("[::1]:4747"), Some(("::1", Some(4747))));
        assert_eq!(host_port("node:http"), None);
        assert_eq!(host_port(""), None);
    }
}
