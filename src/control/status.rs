//! What the control plane shows in `/api/v1/status`: the last license snapshot and the last
//! release run, each with the error of the last failed attempt.

use super::monitor::LicenseSnapshot;
use super::release::ReleaseSummary;
use serde::Serialize;
use std::sync::RwLock;

#[derive(Debug, Clone, Default, Serialize)]
pub struct LicenseStatusView {
    pub license: Option<LicenseSnapshot>,
    pub license_error: Option<String>,
    pub last_release: Option<ReleaseSummary>,
}

#[derive(Debug, Default)]
pub struct LicenseStatus {
    inner: RwLock<LicenseStatusView>,
}

impl LicenseStatus {
    pub fn new() -> LicenseStatus {
        LicenseStatus::default()
    }

    /// A copy for serializing.
    pub fn view(&self) -> LicenseStatusView {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_license(&self, snapshot: LicenseSnapshot) {
        let mut v = self.inner.write().unwrap_or_else(|p| p.into_inner());
        v.license = Some(snapshot);
        v.license_error = None;
    }

    /// A failed monitor run: the last snapshot stays, the error is shown next to it.
    pub fn set_license_error(&self, error: String) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .license_error = Some(error);
    }

    pub fn set_release(&self, summary: ReleaseSummary) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_release = Some(summary);
    }
}
