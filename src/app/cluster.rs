//! Joining the cluster at start (`[cluster]`): the session with etcd, the site's drains applied
//! to this instance's backends, learned sessions shared both ways.

use super::StartError;
use crate::cluster::{Cluster, ClusterStart, DrainSet};
use crate::control::LicenseStatus;
use crate::snapshot::{Shared, SharedSnapshot};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(super) async fn join(
    runtime: &SharedSnapshot,
    shared: &Arc<Shared>,
    admin: Option<SocketAddr>,
    license: &Arc<LicenseStatus>,
    background: &CancellationToken,
) -> Result<Option<Arc<Cluster>>, StartError> {
    let config = runtime.load().config.clone();
    let Some(cfg) = config.file.cluster.clone() else {
        return Ok(None);
    };
    let elsewhere = shared.clone();
    let cluster = Cluster::start(ClusterStart {
        config: &config,
        cfg,
        admin,
        metrics: shared.metrics.clone(),
        license: license.clone(),
        learned_elsewhere: Arc::new(move |pool: &str, session: &str, backend: &str| {
            elsewhere.learned_elsewhere(pool, session, backend)
        }),
    })
    .await
    .map_err(StartError::Cluster)?;
    if let Some(publisher) = cluster.learned_publisher() {
        shared.on_learned(publisher);
    }
    // The site's drains as read at start hold from here, not from the follower's first turn.
    apply(runtime, &cluster.drains().borrow());
    spawn_drain_follower(runtime.clone(), shared, &cluster, background.clone());
    Ok(Some(cluster))
}

/// Keeps every backend's drain flag equal to the site's drain set: when the set changes, and
/// after each reload (a backend id the reload adds may be drained already).
fn spawn_drain_follower(
    runtime: SharedSnapshot,
    shared: &Arc<Shared>,
    cluster: &Cluster,
    stop: CancellationToken,
) {
    let mut drains = cluster.drains();
    let mut reloads = shared.config_changes();
    tokio::spawn(async move {
        loop {
            let set = drains.borrow_and_update().clone();
            reloads.borrow_and_update();
            apply(&runtime, &set);
            tokio::select! {
                _ = stop.cancelled() => return,
                r = drains.changed() => if r.is_err() { return },
                r = reloads.changed() => if r.is_err() { return },
            }
        }
    });
}

fn apply(runtime: &SharedSnapshot, set: &DrainSet) {
    let rt = runtime.load();
    for (name, pool) in rt.pools.iter() {
        for b in &pool.backends {
            let on = set.contains(&(name.clone(), b.id.clone()));
            if b.is_draining() != on {
                tracing::info!(pool = %name, backend = %b.id, draining = on, "cluster: site drain applied");
                b.set_draining(on);
            }
        }
    }
}
