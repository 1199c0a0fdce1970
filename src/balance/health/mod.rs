//! Active health checks: per pool, every `health.interval`, probe all its backends at once with
//! `health.timeout`, apply rise/fall, and keep the engine health samples the load score uses.
//! Each turn asks its caller for the pools to check now, so a reload changes what is probed next
//! time.

mod fetch;
mod probe;

pub use fetch::FetchError;
pub use probe::{probe_once, Prober};

use crate::balance::Pool;
use crate::config::Config;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often to look for pools added by a reload when no pool has checks to run.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// What the checks run against at one moment: the config the probers are built from (TLS
/// identities) and its pools.
pub struct CheckTargets {
    pub config: Arc<Config>,
    pub pools: Vec<Arc<Pool>>,
}

/// Runs the checks of every pool `targets` gives until `shutdown`. `targets` is asked again at
/// each turn of the loop (a round ending, a pool falling due), never on a request's path.
pub fn spawn_health_checks<F>(
    targets: F,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    F: Fn() -> CheckTargets + Send + 'static,
{
    tokio::spawn(run(targets, metrics, shutdown))
}

async fn run<F>(targets: F, metrics: Arc<Metrics>, shutdown: CancellationToken)
where
    F: Fn() -> CheckTargets,
{
    let mut next_due: HashMap<String, Instant> = HashMap::new();
    // A slow round is not overlapped by the next one of the same pool.
    let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut rounds: JoinSet<()> = JoinSet::new();
    let mut prober: Option<(Arc<Config>, Arc<Prober>)> = None;
    loop {
        let rt = targets();
        let current = match &prober {
            Some((cfg, p)) if Arc::ptr_eq(cfg, &rt.config) => p.clone(),
            _ => {
                let p = Arc::new(Prober::from_config(&rt.config));
                prober = Some((rt.config.clone(), p.clone()));
                p
            }
        };
        let now = Instant::now();
        next_due.retain(|name, _| rt.pools.iter().any(|p| p.name == *name));
        for pool in &rt.pools {
            let name = &pool.name;
            let due = next_due.entry(name.clone()).or_insert(now);
            if *due <= now && !busy.values().any(|b| b == name) {
                *due = now + pool.cfg.health.interval.get();
                let task = rounds.spawn(round(pool.clone(), current.clone(), metrics.clone()));
                busy.insert(task.id(), name.clone());
            }
        }
        let wake = next_due
            .values()
            .min()
            .copied()
            .unwrap_or(now + IDLE_RECHECK);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
            Some(done) = rounds.join_next_with_id(), if !rounds.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                busy.remove(&id);
            }
        }
    }
    rounds.abort_all();
}

/// One probe of every backend of the pool, all at once.
async fn round(pool: Arc<Pool>, prober: Arc<Prober>, metrics: Arc<Metrics>) {
    let mut probes = JoinSet::new();
    for backend in pool.backends.iter().filter(|b| !b.is_removed()) {
        let (pool, prober, backend, metrics) = (
            pool.clone(),
            prober.clone(),
            backend.clone(),
            metrics.clone(),
        );
        probes.spawn(async move {
            let _ = probe_once(&prober, &pool.cfg.health, &backend, &metrics).await;
        });
    }
    while probes.join_next().await.is_some() {}
}
