//! What the control plane shows in `/api/v1/status`: the last license snapshot and the last
//! release run, each with the error of the last failed attempt. In a cluster a follower shows
//! what the leader published instead of its own (it runs no jobs).

use super::monitor::LicenseSnapshot;
use super::release::ReleaseSummary;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::RwLock;
use tokio::sync::watch;

#[derive(Debug, Clone, Default, Serialize)]
pub struct LicenseStatusView {
    pub license: Option<LicenseSnapshot>,
    pub license_error: Option<String>,
    pub last_release: Option<ReleaseSummary>,
}

#[derive(Debug)]
pub struct LicenseStatus {
    inner: RwLock<LicenseStatusView>,
    /// The leader's published status (`json()` shape), shown while this instance follows.
    leaders: RwLock<Option<Value>>,
    /// Ticks after each local change, for whoever publishes the status.
    changes: watch::Sender<u64>,
}

impl Default for LicenseStatus {
    fn default() -> Self {
        LicenseStatus {
            inner: RwLock::default(),
            leaders: RwLock::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl LicenseStatus {
    pub fn new() -> LicenseStatus {
        LicenseStatus::default()
    }

    /// A copy of this instance's own results, for serializing.
    pub fn view(&self) -> LicenseStatusView {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This instance's own results as the status shows them:
    /// `{license, license_error, release}`.
    pub fn local_json(&self) -> Value {
        let v = self.view();
        json!({
            "license": v.license,
            "license_error": v.license_error,
            "release": v.last_release,
        })
    }

    /// What the status shows: the leader's results while following, else this instance's own.
    pub fn json(&self) -> Value {
        match &*self.leaders.read().unwrap_or_else(|p| p.into_inner()) {
            Some(v) => v.clone(),
            None => self.local_json(),
        }
    }

    /// Following: show `published` (the leader's `local_json`); `None` when leading or alone.
    pub fn show_leaders(&self, published: Option<Value>) {
        *self.leaders.write().unwrap_or_else(|p| p.into_inner()) = published;
    }

    /// Ticks after each change of this instance's own results.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn set_license(&self, snapshot: LicenseSnapshot) {
        {
            let mut v = self.inner.write().unwrap_or_else(|p| p.into_inner());
            v.license = Some(snapshot);
            v.license_error = None;
        }
        self.changed();
    }

    /// A failed monitor run: the last snapshot stays, the error is shown next to it.
    pub fn set_license_error(&self, error: String) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .license_error = Some(error);
        self.changed();
    }

    pub fn set_release(&self, summary: ReleaseSummary) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_release = Some(summary);
        self.changed();
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}
