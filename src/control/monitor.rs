//! The license monitor: `accesstypeoverview` → the `qlb_license_*` gauges and a snapshot for the
//! status API. A failed run changes no gauge, so dashboards keep the last good values.

use super::qrs_client::{QrsClient, QrsError};
use super::qrs_model::{AccessDetails, AccessTypeOverview, AnalyzerTimeAccess};
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub const JOB: &str = "license_monitor";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LicenseSnapshot {
    pub fetched_at: DateTime<Utc>,
    pub professional: AccessDetails,
    pub analyzer: AccessDetails,
    pub analyzer_capacity_minutes: AnalyzerTimeAccess,
    pub tokens_total: f64,
    pub tokens_available: f64,
}

impl LicenseSnapshot {
    pub fn from_overview(o: &AccessTypeOverview, fetched_at: DateTime<Utc>) -> LicenseSnapshot {
        LicenseSnapshot {
            fetched_at,
            professional: o.professional_access,
            analyzer: o.analyzer_access,
            analyzer_capacity_minutes: o.analyzer_time_access,
            tokens_total: o.total_tokens,
            tokens_available: o.available_tokens,
        }
    }

    pub fn apply(&self, m: &Metrics) {
        for (label, d) in [
            ("professional", &self.professional),
            ("analyzer", &self.analyzer),
        ] {
            m.license_entitled.with_label_values(&[label]).set(d.total);
            m.license_allocated
                .with_label_values(&[label])
                .set(d.allocated);
            m.license_used.with_label_values(&[label]).set(d.used);
            m.license_available
                .with_label_values(&[label])
                .set(d.available);
            m.license_quarantined
                .with_label_values(&[label])
                .set(d.quarantined);
            m.license_excess.with_label_values(&[label]).set(d.excess);
        }
        let minutes = &self.analyzer_capacity_minutes;
        for (kind, v) in [
            ("allocated", minutes.allocated_minutes),
            ("used", minutes.used_minutes),
            ("unavailable", minutes.unavailable_minutes),
        ] {
            m.license_analyzer_capacity_seconds
                .with_label_values(&[kind])
                .set(v.saturating_mul(60));
        }
        m.license_tokens
            .with_label_values(&["total"])
            .set(self.tokens_total);
        m.license_tokens
            .with_label_values(&["available"])
            .set(self.tokens_available);
    }

    /// The usage table `license monitor --once` prints.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<14}{:>8}{:>11}{:>7}{:>11}{:>13}{:>8}\n",
            "license", "total", "allocated", "used", "available", "quarantined", "excess"
        );
        for (name, d) in [
            ("professional", &self.professional),
            ("analyzer", &self.analyzer),
        ] {
            out.push_str(&format!(
                "{name:<14}{:>8}{:>11}{:>7}{:>11}{:>13}{:>8}\n",
                d.total, d.allocated, d.used, d.available, d.quarantined, d.excess
            ));
        }
        let m = &self.analyzer_capacity_minutes;
        out.push_str(&format!(
            "analyzer capacity minutes: allocated {}, used {}, unavailable {}\n",
            m.allocated_minutes, m.used_minutes, m.unavailable_minutes
        ));
        out.push_str(&format!(
            "tokens: total {}, available {}\n",
            self.tokens_total, self.tokens_available
        ));
        out
    }
}

/// One monitor run: fetch, set the gauges, count the run.
pub async fn run_monitor(
    client: &QrsClient,
    metrics: &Metrics,
) -> Result<LicenseSnapshot, QrsError> {
    match client.overview().await {
        Ok(o) => {
            let snapshot = LicenseSnapshot::from_overview(&o, Utc::now());
            snapshot.apply(metrics);
            metrics.job_runs_total.with_label_values(&[JOB, "ok"]).inc();
            metrics
                .job_last_success_timestamp_seconds
                .with_label_values(&[JOB])
                .set(snapshot.fetched_at.timestamp_millis() as f64 / 1000.0);
            Ok(snapshot)
        }
        Err(e) => {
            tracing::error!(error = %e, "license monitor run failed; keeping the last values");
            metrics
                .job_runs_total
                .with_label_values(&[JOB, "error"])
                .inc();
            Err(e)
        }
    }
}
