//! Who may run the license jobs. Alone, an instance always may; in a cluster only the leader may,
//! and a release run proves before each DELETE that it still leads (its fence). The traits keep
//! the jobs free of the store behind the cluster.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

pub type FenceCheck<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// Asked before each DELETE of a release run: true while the run's leadership still holds.
pub trait Fence: Send + Sync {
    fn still_leading(&self) -> FenceCheck<'_>;
}

pub trait Leadership: Send + Sync {
    /// True while this instance leads; the jobs run only then.
    fn leading(&self) -> watch::Receiver<bool>;
    /// A fence for a run starting now, tied to the current term of leadership.
    fn fence(&self) -> Arc<dyn Fence>;
}

/// A fence that always holds: an instance without `[cluster]`.
pub struct NoFence;

impl Fence for NoFence {
    fn still_leading(&self) -> FenceCheck<'_> {
        Box::pin(std::future::ready(true))
    }
}

/// An instance without `[cluster]` leads itself, for its whole life.
pub struct Alone {
    leading: watch::Sender<bool>,
}

impl Alone {
    pub fn new() -> Arc<Alone> {
        Arc::new(Alone {
            leading: watch::Sender::new(true),
        })
    }
}

impl Leadership for Alone {
    fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }
    fn fence(&self) -> Arc<dyn Fence> {
        Arc::new(NoFence)
    }
}
