//! The scheduled license jobs inside `qlik-lb run`: each runs once at start (unless
//! `run_at_start = false`) and then at every firing of its schedule. A job's runs are sequential,
//! so a run never overlaps the previous one; a run in progress finishes even during shutdown, so
//! no DELETE is left without its audit line.

use super::monitor::run_monitor;
use super::qrs_client::QrsClient;
use super::release::ReleaseRun;
use super::schedule::Schedule;
use super::status::ControlStatus;
use crate::config::Config;
use crate::metrics::Metrics;
use chrono::Utc;
use std::future::Future;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starts the enabled license jobs of `config`; they stop when `shutdown` is cancelled.
pub fn spawn_jobs(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    status: Arc<ControlStatus>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut jobs = Vec::new();
    let license = config.file.license.clone().unwrap_or_default();
    if let Some(m) = license.monitor.filter(|m| m.enabled) {
        match Schedule::parse(&m.schedule) {
            Ok(schedule) => {
                let (config, metrics, status) = (config.clone(), metrics.clone(), status.clone());
                jobs.push(tokio::spawn(every(
                    schedule,
                    m.run_at_start,
                    shutdown.clone(),
                    move || monitor_once(config.clone(), metrics.clone(), status.clone()),
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "license.monitor.schedule: the monitor will not run")
            }
        }
    }
    if let Some(r) = license.release.filter(|r| r.enabled) {
        match Schedule::parse(&r.schedule) {
            Ok(schedule) => {
                jobs.push(tokio::spawn(every(
                    schedule,
                    r.run_at_start,
                    shutdown,
                    move || release_once(config.clone(), metrics.clone(), status.clone()),
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "license.release.schedule: the release job will not run")
            }
        }
    }
    jobs
}

async fn every<F, Fut>(
    schedule: Schedule,
    run_at_start: bool,
    shutdown: CancellationToken,
    mut run: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    if run_at_start && !shutdown.is_cancelled() {
        run().await;
    }
    loop {
        let now = Utc::now();
        let wait = (schedule.next_after(now) - now)
            .to_std()
            .unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        run().await;
    }
}

async fn monitor_once(config: Arc<Config>, metrics: Arc<Metrics>, status: Arc<ControlStatus>) {
    let result = match QrsClient::from_config(&config) {
        Ok(client) => run_monitor(&client, &metrics).await,
        Err(e) => {
            metrics
                .job_runs_total
                .with_label_values(&[super::monitor::JOB, "error"])
                .inc();
            Err(e)
        }
    };
    match result {
        Ok(snapshot) => status.set_license(snapshot),
        Err(e) => {
            tracing::error!(error = %e, "license monitor run failed");
            status.set_license_error(e.to_string());
        }
    }
}

async fn release_once(config: Arc<Config>, metrics: Arc<Metrics>, status: Arc<ControlStatus>) {
    let Some(release) = config.file.license_release() else {
        return;
    };
    let client = match QrsClient::from_config(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "license release run cannot start");
            metrics
                .job_runs_total
                .with_label_values(&[super::release::JOB, "error"])
                .inc();
            return;
        }
    };
    let audit_path = config.resolve(&release.audit_log);
    let report = ReleaseRun {
        client: &client,
        config: release,
        audit_path: &audit_path,
        metrics: &metrics,
        now: Utc::now(),
        dry_run: release.dry_run,
    }
    .run()
    .await;
    tracing::info!(
        run_id = %report.summary.run_id,
        outcome = ?report.summary.outcome,
        counts = ?report.summary.counts,
        "license release run finished"
    );
    status.set_release(report.summary);
}
