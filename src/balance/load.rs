//! The load score of a backend: lower is better. Built from the engine's own health (CPU, memory
//! in use, saturation, sessions) when a fresh sample exists, plus qlik-lb's own in-flight requests
//! and open tunnels, divided by weight.

use super::registry::Backend;

pub fn load_score(b: &Backend) -> f64 {
    let own = (b.inflight() + b.tunnels()) as f64;
    let weight = b.target().weight.max(1) as f64;
    (own + 1.0) / weight
}
