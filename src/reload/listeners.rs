//! The listening sockets of a running instance, by role. A reload binds the sockets whose address
//! is new or changed before anything is swapped in (so a busy port fails the reload and loses
//! nothing), then starts them and stops the ones that moved or went away. Stopping a listener only
//! stops accepting: connections and tunnels it accepted carry on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Starts serving a bound listener until its token is cancelled.
pub type StartListener = Box<dyn FnOnce(TcpListener, CancellationToken) + Send>;

/// One listener the config asks for.
pub struct ListenerSpec {
    /// Stable role name, e.g. `frontend public` or `admin`.
    pub key: String,
    /// Where it is in the config, e.g. `frontend[0].listen`, for error reports.
    pub config_key: String,
    /// The address as written in the config.
    pub listen: String,
    /// Cancelling this stops the listener too (instance shutdown).
    pub parent: CancellationToken,
    pub start: StartListener,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({key}): {source}")]
pub struct BindFailure {
    pub key: String,
    pub config_key: String,
    pub addr: String,
    pub source: std::io::Error,
}

struct Bound {
    listen: String,
    addr: SocketAddr,
    stop: CancellationToken,
}

/// Sockets bound for a new config, not yet serving. Dropping it closes them.
pub struct Plan {
    fresh: Vec<(ListenerSpec, TcpListener)>,
    wanted: HashSet<String>,
}

#[derive(Default)]
pub struct Listeners {
    bound: Mutex<HashMap<String, Bound>>,
}

impl Listeners {
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// Binds every listener that is new or whose address changed; the others stay as they are.
    pub async fn prepare(&self, specs: Vec<ListenerSpec>) -> Result<Plan, Vec<BindFailure>> {
        let mut fresh = Vec::new();
        let mut failures = Vec::new();
        let mut wanted = HashSet::new();
        for spec in specs {
            wanted.insert(spec.key.clone());
            let unchanged = self
                .bound
                .lock()
                .expect("listeners lock")
                .get(&spec.key)
                .is_some_and(|b| b.listen == spec.listen && !b.stop.is_cancelled());
            if unchanged {
                continue;
            }
            match TcpListener::bind(&spec.listen).await {
                Ok(l) => fresh.push((spec, l)),
                Err(source) => failures.push(BindFailure {
                    key: spec.key,
                    config_key: spec.config_key,
                    addr: spec.listen,
                    source,
                }),
            }
        }
        if failures.is_empty() {
            Ok(Plan { fresh, wanted })
        } else {
            Err(failures)
        }
    }

    /// Starts the freshly bound listeners, then stops the ones they replace and the ones no
    /// longer wanted.
    pub fn commit(&self, plan: Plan) {
        let mut bound = self.bound.lock().expect("listeners lock");
        for (spec, listener) in plan.fresh {
            let addr = listener.local_addr().expect("bound address");
            let stop = spec.parent.child_token();
            (spec.start)(listener, stop.clone());
            let previous = bound.insert(
                spec.key,
                Bound {
                    listen: spec.listen,
                    addr,
                    stop,
                },
            );
            if let Some(old) = previous {
                old.stop.cancel();
            }
        }
        bound.retain(|key, b| {
            let keep = plan.wanted.contains(key);
            if !keep {
                b.stop.cancel();
            }
            keep
        });
    }

    /// The address a listener is bound to now.
    pub fn addr(&self, key: &str) -> Option<SocketAddr> {
        self.bound
            .lock()
            .expect("listeners lock")
            .get(key)
            .map(|b| b.addr)
    }

    /// Every bound listener: (key, address).
    pub fn all(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self
            .bound
            .lock()
            .expect("listeners lock")
            .iter()
            .map(|(k, b)| (k.clone(), b.addr))
            .collect();
        v.sort();
        v
    }
}
