//! Shared learned sessions: entries learned here are published under
//! `<prefix>sessions/<pool>/<session>` (value: the backend id) with a lease of the learned-entry
//! idle time; the watch feeds every instance's local table. The hot path only `try_send`s into a
//! bounded queue: when it is full (etcd slow or down) the entry is not shared, and routing is
//! unaffected.

use super::connect::call;
use super::Core;
use crate::balance::learned::DEFAULT_IDLE;
use etcd_client::PutOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Called by a local learned table for each new entry: (pool, session, backend).
pub type LearnedPublisher = crate::balance::learned::OnPoolLearned;

const QUEUE: usize = 4096;
/// Entries published within this window share one lease: they live in etcd between the idle
/// time and the idle time plus this, not one lease per session.
const LEASE_SHARING: Duration = Duration::from_secs(60);

pub(super) struct SessionShare {
    tx: mpsc::Sender<(String, String, String)>,
}

impl SessionShare {
    pub(super) fn start(core: Arc<Core>, stop: CancellationToken) -> SessionShare {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish_loop(core, rx, stop));
        SessionShare { tx }
    }

    pub(super) fn publisher(&self) -> LearnedPublisher {
        let tx = self.tx.clone();
        Arc::new(move |pool: &str, session: &str, backend: &str| {
            let _ = tx.try_send((pool.to_string(), session.to_string(), backend.to_string()));
        })
    }
}

async fn publish_loop(
    core: Arc<Core>,
    mut rx: mpsc::Receiver<(String, String, String)>,
    stop: CancellationToken,
) {
    // (session lease it belongs to, shared entry lease, granted at)
    let mut shared: Option<(i64, i64, Instant)> = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = rx.recv() => next,
        };
        let Some((pool, session, backend)) = next else {
            return;
        };
        let Some(live) = core.live() else { continue };
        let mut client = live.client;
        let lease = match shared {
            Some((session_lease, lease, at))
                if session_lease == live.lease && at.elapsed() < LEASE_SHARING =>
            {
                lease
            }
            _ => {
                let ttl = (DEFAULT_IDLE + LEASE_SHARING).as_secs() as i64;
                match call("session lease", client.lease_grant(ttl, None)).await {
                    Ok(r) => {
                        shared = Some((live.lease, r.id(), Instant::now()));
                        r.id()
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cluster: a learned session was not shared");
                        continue;
                    }
                }
            }
        };
        let key = core.keys.session(&pool, &session);
        let put = client.put(key, backend, Some(PutOptions::new().with_lease(lease)));
        if let Err(e) = call("put session", put).await {
            tracing::debug!(error = %e, "cluster: a learned session was not shared");
            shared = None;
        }
    }
}
