//! The session with etcd: lease, member key, campaign, one watch over the prefix. It ends on
//! the first failure (or when the lease would lapse before a renewal is answered); the loop
//! around it reconnects with back-off and starts afresh.

use super::connect::{call, Connector};
use super::leadership::campaign;
use super::mirror::{Change, Touched};
use super::read::read_prefix;
use super::{Core, Live};
use etcd_client::{EventType, PutOptions, WatchOptions};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) async fn keep_session(core: Arc<Core>, connector: Connector, stop: CancellationToken) {
    let mut backoff = BACKOFF_FIRST;
    // A lease from a session that broke: revoked first thing in the next one, so its member and
    // leader keys do not linger for a TTL after etcd returns.
    let mut stale_lease: Option<i64> = None;
    while !stop.is_cancelled() {
        let began = Instant::now();
        let result = session(&core, &connector, &stop, &mut stale_lease).await;
        core.disconnected();
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "cluster: etcd session ended; reconnecting"),
        }
        if began.elapsed() > BACKOFF_MAX * 2 {
            backoff = BACKOFF_FIRST;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One session; Ok when stopped, Err when etcd failed it.
async fn session(
    core: &Core,
    connector: &Connector,
    stop: &CancellationToken,
    stale_lease: &mut Option<i64>,
) -> Result<(), String> {
    let mut client = connector.connect().await?;
    if let Some(old) = stale_lease.take() {
        let _ = call("lease revoke", client.lease_revoke(old)).await;
    }
    let ttl = core.ttl();
    let granted_at = Instant::now();
    let lease = call(
        "lease grant",
        client.lease_grant(ttl.as_secs() as i64, None),
    )
    .await?
    .id();
    *stale_lease = Some(lease);
    let member = serde_json::to_string(&core.me).expect("member value serializes");
    let name = core.cfg.name.clone();
    call(
        "put member",
        client.put(
            core.keys.member(&name),
            member,
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await?;
    let (mut keeper, mut renewals) = call("keepalive", client.lease_keep_alive(lease)).await?;
    let prefix = core.keys.prefix().to_string();
    let (revision, all) = read_prefix(&mut client, &prefix).await?;
    let mut watch = call(
        "watch",
        client.watch(
            prefix,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        ),
    )
    .await?;
    let mut touched = Touched::default();
    {
        let mut mirror = core.mirror.lock().expect("cluster mirror lock");
        mirror.reset(&mut touched);
        for kv in &all {
            let (Ok(key), value) = (kv.key_str(), kv.value_str().ok()) else {
                continue;
            };
            let change = Change {
                key,
                value,
                create_revision: kv.create_revision(),
                lease: kv.lease(),
            };
            mirror.apply(&core.keys, change, &mut touched);
        }
    }
    // Drains and sessions are in place before anyone reads `connected`.
    publish(core, touched);
    core.with_live(|l| {
        *l = Some(Live {
            client: client.clone(),
            lease,
            term: None,
            renewed_at: granted_at,
        })
    });
    campaign(core, &mut client, lease).await?;
    tracing::info!(name = %name, lease, "cluster: joined");

    let mut renew = tokio::time::interval(ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: VecDeque<Instant> = VecDeque::new();
    loop {
        let lapses_at = core.live().map_or(granted_at, |l| l.renewed_at) + ttl;
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = call("lease revoke", client.lease_revoke(lease)).await;
                *stale_lease = None;
                return Ok(());
            }
            _ = renew.tick() => {
                sent.push_back(Instant::now());
                call("keepalive", keeper.keep_alive()).await?;
            }
            answer = renewals.message() => {
                let at = sent.pop_front().unwrap_or(granted_at);
                match answer {
                    Ok(Some(r)) if r.ttl() > 0 => core.with_live(|l| {
                        if let Some(l) = l {
                            l.renewed_at = l.renewed_at.max(at);
                        }
                    }),
                    Ok(Some(_)) => return Err("the lease expired".into()),
                    Ok(None) => return Err("the keepalive stream closed".into()),
                    Err(e) => return Err(format!("keepalive: {e}")),
                }
            }
            // Leadership lapses on this instance's own clock, before etcd could give it away.
            _ = tokio::time::sleep_until(lapses_at) => {
                return Err("no keepalive answered within lease_ttl".into());
            }
            event = watch.message() => {
                let resp = match event {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err("the watch closed".into()),
                    Err(e) => return Err(format!("watch: {e}")),
                };
                if resp.canceled() {
                    return Err(format!("the watch was cancelled: {}", resp.cancel_reason()));
                }
                let mut touched = Touched::default();
                {
                    let mut mirror = core.mirror.lock().expect("cluster mirror lock");
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        let value = match ev.event_type() {
                            EventType::Put => kv.value_str().ok(),
                            EventType::Delete => None,
                        };
                        let change = Change {
                            key,
                            value,
                            create_revision: kv.create_revision(),
                            lease: kv.lease(),
                        };
                        mirror.apply(&core.keys, change, &mut touched);
                    }
                }
                let leader_changed = touched.view;
                publish(core, touched);
                if leader_changed {
                    campaign(core, &mut client, lease).await?;
                }
            }
        }
    }
}

/// Hands what changed to its readers.
fn publish(core: &Core, touched: Touched) {
    let mirror = core.mirror.lock().expect("cluster mirror lock");
    let drains = touched.drains.then(|| Arc::new(mirror.drains.clone()));
    let license = touched.license.then(|| mirror.license.clone());
    drop(mirror);
    if let Some(d) = drains {
        core.drains.send_if_modified(|cur| {
            let changed = **cur != *d;
            *cur = d;
            changed
        });
    }
    if let Some(l) = license {
        core.license.send_replace(l);
    }
    if core.cfg.share_learned_sessions {
        for (pool, session, backend) in &touched.sessions {
            (core.learned_elsewhere)(pool, session, backend);
        }
    }
    if touched.view {
        core.publish_view();
    }
}
