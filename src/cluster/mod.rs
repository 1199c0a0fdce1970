//! Several instances as one site front door (`[cluster]`), coordinated in etcd v3: membership
//! under a lease, one leader for the control plane, site-wide drains and shared learned sessions.
//!
//! One task keeps a session with etcd (`session.rs`): a lease, this instance's member key, a
//! campaign for the leader key and one watch over the whole prefix that feeds a local mirror.
//! Readers never wait on etcd: they read watch channels (the view, `leading`, the drain set).
//! When etcd cannot be reached the session ends: `connected` turns false, leadership is dropped
//! at once, and the last known drains and sessions stay in force; the task reconnects with
//! back-off and starts a fresh session (new lease, full read) when etcd answers again.

mod connect;
mod drain;
mod keys;
mod leadership;
mod license;
mod membership;
mod mirror;
mod read;
mod session;
mod sessions;

pub use membership::{ClusterView, MemberValue, MemberView};
pub use mirror::DrainSet;
pub use sessions::LearnedPublisher;

use crate::config::{ClusterConfig, Config};
use crate::control::LicenseStatus;
use crate::metrics::Metrics;
use etcd_client::Client;
use keys::Keys;
use mirror::Mirror;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Puts an entry learned by another instance into the local table: (pool, session, backend).
pub type LearnedElsewhere = Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// A term of leadership: the leader key as this instance created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Term {
    create_revision: i64,
    lease: i64,
}

/// The session with etcd while there is one.
#[derive(Clone)]
struct Live {
    client: Client,
    lease: i64,
    term: Option<Term>,
    /// When the last keepalive that etcd answered was sent: the lease holds until this + TTL.
    renewed_at: Instant,
}

struct Core {
    cfg: ClusterConfig,
    keys: Keys,
    me: MemberValue,
    metrics: Arc<Metrics>,
    live: Mutex<Option<Live>>,
    mirror: Mutex<Mirror>,
    view: watch::Sender<ClusterView>,
    leading: watch::Sender<bool>,
    drains: watch::Sender<Arc<DrainSet>>,
    /// The leader's published license status, by part (`snapshot`, `release`).
    license: watch::Sender<BTreeMap<String, Value>>,
    learned_elsewhere: LearnedElsewhere,
}

impl Core {
    fn ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.lease_ttl_secs() as u64)
    }

    fn live(&self) -> Option<Live> {
        self.live.lock().expect("cluster session lock").clone()
    }

    fn with_live<T>(&self, f: impl FnOnce(&mut Option<Live>) -> T) -> T {
        let out = f(&mut self.live.lock().expect("cluster session lock"));
        self.publish_view();
        out
    }

    /// The session ended: no client, no leadership, from this instant.
    fn disconnected(&self) {
        self.with_live(|l| *l = None);
    }

    /// Recomputes what readers see from the session and the mirror.
    fn publish_view(&self) {
        let live = self.live();
        let term = live.as_ref().and_then(|l| l.term);
        let mirror = self.mirror.lock().expect("cluster mirror lock");
        let connected = live.is_some();
        let leader = mirror
            .leader
            .as_ref()
            .filter(|_| connected)
            .map(|l| l.name.clone());
        let members = mirror
            .members
            .iter()
            .map(|(name, m)| MemberView {
                name: name.clone(),
                admin: m.admin.clone(),
                version: m.version.clone(),
                started: m.started.clone(),
                leader: leader.as_deref() == Some(name.as_str()),
            })
            .collect::<Vec<_>>();
        drop(mirror);
        let g = &self.metrics.cluster;
        g.connected.set(i64::from(connected));
        g.leader.set(i64::from(term.is_some()));
        g.members.set(members.len() as i64);
        self.view.send_if_modified(|v| {
            let new = ClusterView {
                name: self.cfg.name.clone(),
                connected,
                leader,
                members,
            };
            let changed = *v != new;
            *v = new;
            changed
        });
        self.leading.send_if_modified(|l| {
            let changed = *l != term.is_some();
            *l = term.is_some();
            changed
        });
    }
}

/// This instance's membership of the cluster.
pub struct Cluster {
    core: Arc<Core>,
    stop: CancellationToken,
    session: Mutex<Option<tokio::task::JoinHandle<()>>>,
    sessions: Option<sessions::SessionShare>,
}

/// What the cluster needs from the instance it runs in.
pub struct ClusterStart<'a> {
    pub config: &'a Config,
    pub cfg: ClusterConfig,
    pub admin: Option<std::net::SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub license: Arc<LicenseStatus>,
    pub learned_elsewhere: LearnedElsewhere,
}

/// How long a start waits for the first full read of the cluster (drains, members), so an
/// instance that restarts serves with the site's drains from its first request when etcd is up.
const FIRST_READ_WAIT: Duration = Duration::from_secs(3);

impl Cluster {
    pub async fn start(s: ClusterStart<'_>) -> Result<Arc<Cluster>, String> {
        let connector = connect::Connector::new(&s.cfg, s.config)?;
        let me = MemberValue {
            admin: s.admin.map(|a| a.to_string()).unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: chrono::Utc::now().to_rfc3339(),
        };
        let core = Arc::new(Core {
            keys: Keys::new(&s.cfg.prefix),
            view: watch::Sender::new(ClusterView {
                name: s.cfg.name.clone(),
                connected: false,
                leader: None,
                members: Vec::new(),
            }),
            cfg: s.cfg,
            me,
            metrics: s.metrics,
            live: Mutex::new(None),
            mirror: Mutex::new(Mirror::default()),
            leading: watch::Sender::new(false),
            drains: watch::Sender::new(Arc::new(DrainSet::new())),
            license: watch::Sender::new(BTreeMap::new()),
            learned_elsewhere: s.learned_elsewhere,
        });
        let stop = CancellationToken::new();
        let mut first = core.view.subscribe();
        let task = tokio::spawn(session::keep_session(core.clone(), connector, stop.clone()));
        license::spawn(core.clone(), s.license, stop.clone());
        let sessions = core
            .cfg
            .share_learned_sessions
            .then(|| sessions::SessionShare::start(core.clone(), stop.clone()));
        let _ = tokio::time::timeout(FIRST_READ_WAIT, first.wait_for(|v| v.connected)).await;
        Ok(Arc::new(Cluster {
            core,
            stop,
            session: Mutex::new(Some(task)),
            sessions,
        }))
    }

    pub fn view(&self) -> ClusterView {
        self.core.view.borrow().clone()
    }

    pub fn status_json(&self) -> Value {
        serde_json::to_value(self.view()).unwrap_or(Value::Null)
    }

    /// The drain set of the site, as last read from etcd.
    pub fn drains(&self) -> watch::Receiver<Arc<DrainSet>> {
        self.core.drains.subscribe()
    }

    /// The hook for the local learned tables: queues an entry for publishing, never waits.
    pub fn learned_publisher(&self) -> Option<LearnedPublisher> {
        self.sessions.as_ref().map(|s| s.publisher())
    }

    /// The leadership the license jobs follow.
    pub fn leadership(&self) -> Arc<dyn crate::control::Leadership> {
        Arc::new(leadership::EtcdLeadership(self.core.clone()))
    }

    /// Leaves the cluster: revokes the lease, so the member and leader keys go at once and
    /// another instance can lead without waiting for the TTL.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.session.lock().expect("cluster task lock").take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(connect::CALL_TIMEOUT * 2, task).await;
        }
    }
}

impl Cluster {
    /// Drops out without a word to etcd: the lease is not revoked, so the others see this
    /// instance go only when its lease lapses — what a crash or a cut network looks like.
    pub async fn abandon(&self) {
        let task = self.session.lock().expect("cluster task lock").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.stop.cancel();
        self.core.disconnected();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
