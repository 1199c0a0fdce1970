//! Picking a backend for a new user: round-robin, least-conn, and least-loaded (engine RAM/CPU
//! health, spread by spare capacity so new users do not herd onto one node).

use super::aging::Aging;
use super::load::{choose_least_loaded, LoadInputs};
use super::pool::Pool;
use super::registry::Backend;
use crate::config::{Balance, WhenAllDown};
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// The outcome of a selection for a new user.
pub enum Selected<'a> {
    Backend(&'a Arc<Backend>),
    /// Nothing is up; `try-anyway` picked this one regardless.
    AllDown(&'a Arc<Backend>),
    None,
}

/// Picks a backend for a new user by the pool's policy. `exclude` is a backend that just
/// refused the connection: the retry goes by the same policy, weights and `when_all_down`,
/// among the others.
pub fn select<'a>(pool: &'a Pool, exclude: Option<&Arc<Backend>>) -> Selected<'a> {
    let eligible = |b: &&'a Arc<Backend>| exclude.is_none_or(|x| !Arc::ptr_eq(x, b));
    let candidates: Vec<&Arc<Backend>> = pool
        .backends
        .iter()
        .filter(eligible)
        .filter(|b| b.accepts_new_users())
        .collect();
    if let Some(b) = pick(pool, &candidates) {
        return Selected::Backend(b);
    }
    match pool.cfg.when_all_down {
        WhenAllDown::Reject => Selected::None,
        WhenAllDown::TryAnyway => {
            let others: Vec<&Arc<Backend>> = pool.backends.iter().filter(eligible).collect();
            let not_draining: Vec<&Arc<Backend>> = others
                .iter()
                .copied()
                .filter(|b| !b.is_draining())
                .collect();
            let fallback = if not_draining.is_empty() {
                others
            } else {
                not_draining
            };
            match pick_round_robin(pool, &fallback) {
                Some(b) => Selected::AllDown(b),
                None => Selected::None,
            }
        }
    }
}

fn pick<'a>(pool: &Pool, c: &[&'a Arc<Backend>]) -> Option<&'a Arc<Backend>> {
    match pool.cfg.balance {
        Balance::RoundRobin => pick_round_robin(pool, c),
        Balance::LeastConn => pick_least_conn(c),
        Balance::LeastLoaded => pick_least_loaded(c, Aging::of(&pool.cfg.health)),
    }
}

fn pick_round_robin<'a>(pool: &Pool, c: &[&'a Arc<Backend>]) -> Option<&'a Arc<Backend>> {
    if c.is_empty() {
        return None;
    }
    let n = pool.rr_next.fetch_add(1, Ordering::Relaxed);
    Some(c[n % c.len()])
}

fn conn_load(b: &Backend) -> f64 {
    (b.inflight() + b.tunnels()) as f64 / b.target().weight.max(1) as f64
}

fn pick_least_conn<'a>(c: &[&'a Arc<Backend>]) -> Option<&'a Arc<Backend>> {
    // Ties start at a random place so equal backends share new users.
    if c.is_empty() {
        return None;
    }
    let start = rand::thread_rng().gen_range(0..c.len());
    (0..c.len())
        .map(|i| c[(start + i) % c.len()])
        .min_by(|a, b| conn_load(a).total_cmp(&conn_load(b)))
}

/// `least-loaded`: weighted random by spare capacity over the last engine health, aged towards
/// hot when late (see `load.rs` for why and how). The chosen backend counts the new user until
/// its next sample.
pub fn pick_least_loaded<'a>(c: &[&'a Arc<Backend>], aging: Aging) -> Option<&'a Arc<Backend>> {
    let now = Instant::now();
    let inputs: Vec<LoadInputs> = c.iter().map(|b| LoadInputs::of(b, aging, now)).collect();
    let chosen = choose_least_loaded(&inputs, &mut rand::thread_rng()).map(|i| c[i])?;
    chosen.note_new_user();
    Some(chosen)
}
