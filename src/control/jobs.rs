//! The scheduled license jobs inside `qlik-lb run`.
//!
//! Each job (monitor, release) is one task started with the instance and kept for its whole life,
//! enabled or not. It holds no settings of its own: it reads the serving config snapshot (the one
//! a reload swaps in) when it plans its next firing and again when a firing comes, and a reload
//! wakes it to plan again. So a reload that changes the schedule moves the next firing, one that
//! disables the job (or removes its section) leaves it waiting for a reload that enables it, and
//! one that enables it starts its schedule; `dry_run`, the rules, `[qrs]` and `[qlik_certs]` (the
//! QRS client is built per run) are those of the config serving when a run starts. This is
//! simpler than stopping and restarting tasks on reload: there is never a second task for a job,
//! so two runs of a job never overlap, and a run in progress is never cut — it finishes with the
//! snapshot it started with, even during shutdown, so no DELETE is left without its audit line.
//! `run_at_start` applies once, when the task starts with the process; a reload is not a start.
//!
//! In a cluster the schedule runs only while the instance leads: `run_at_start` applies when it
//! becomes leader, and losing leadership stops the schedule (a release run in progress is
//! stopped by its fence before its next DELETE).

use super::leadership::{Alone, Fence, Leadership};
use super::monitor::run_monitor;
use super::qrs_client::QrsClient;
use super::release::ReleaseRun;
use super::status::LicenseStatus;
use crate::config::schedule::Schedule;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::snapshot::SharedSnapshot;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where the jobs read their config: the serving snapshot, and a notice each time it changes.
#[derive(Clone)]
pub struct ConfigFeed {
    current: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
    changes: watch::Receiver<u64>,
    /// Keeps a fixed feed's channel open, so it reads as "no change yet" rather than closed.
    _fixed: Option<Arc<watch::Sender<u64>>>,
}

impl ConfigFeed {
    /// The serving config of an instance; `changes` ticks after each reload is swapped in.
    pub fn serving(runtime: SharedSnapshot, changes: watch::Receiver<u64>) -> ConfigFeed {
        ConfigFeed {
            current: Arc::new(move || runtime.load().config.clone()),
            changes,
            _fixed: None,
        }
    }

    /// One config that never changes.
    pub fn fixed(config: Arc<Config>) -> ConfigFeed {
        let (tx, changes) = watch::channel(0);
        ConfigFeed {
            current: Arc::new(move || config.clone()),
            changes,
            _fixed: Some(Arc::new(tx)),
        }
    }

    fn current(&self) -> Arc<Config> {
        (self.current)()
    }
}

#[derive(Clone, Copy, Debug)]
enum Job {
    Monitor,
    Release,
}

impl Job {
    /// The job's schedule and `run_at_start` in `config`; `None` when it is disabled or absent.
    /// The schedule was parsed and checked when the config was loaded.
    fn plan(self, config: &Config) -> Option<(Schedule, bool)> {
        let license = config.file.license.as_ref()?;
        let (enabled, schedule, at_start) = match self {
            Job::Monitor => license
                .monitor
                .as_ref()
                .map(|m| (m.enabled, &m.schedule, m.run_at_start))?,
            Job::Release => license
                .release
                .as_ref()
                .map(|r| (r.enabled, &r.schedule, r.run_at_start))?,
        };
        if !enabled {
            return None;
        }
        match schedule.value() {
            Ok(schedule) => Some((*schedule, at_start)),
            Err(e) => {
                tracing::error!(job = ?self, error = %e, "the job's schedule is not valid; it will not run");
                None
            }
        }
    }

    async fn run(self, config: Arc<Config>, ctx: &JobCtx, mut leading: watch::Receiver<bool>) {
        let (metrics, status) = (&ctx.metrics, &ctx.status);
        match self {
            // A monitor run has nothing to finish once another instance leads.
            Job::Monitor => tokio::select! {
                _ = monitor_once(config, metrics, status) => {}
                _ = leading.wait_for(|l| !*l) => {}
            },
            // A release run is not cut: its fence stops it before the next DELETE, and every
            // candidate still gets its audit line.
            Job::Release => release_once(config, metrics, status, &*ctx.leadership.fence()).await,
        }
    }
}

/// Starts the license jobs reading `feed`, for an instance that leads itself (no `[cluster]`).
pub fn spawn_jobs(
    feed: ConfigFeed,
    metrics: Arc<Metrics>,
    status: Arc<LicenseStatus>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    spawn_led_jobs(feed, metrics, status, Alone::new(), shutdown)
}

/// Starts the license jobs reading `feed`; they run only while `leadership` says this instance
/// leads, and stop when `shutdown` is cancelled. Both tasks start whether or not their job is
/// enabled, since a reload may enable it.
pub fn spawn_led_jobs(
    feed: ConfigFeed,
    metrics: Arc<Metrics>,
    status: Arc<LicenseStatus>,
    leadership: Arc<dyn Leadership>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    [Job::Monitor, Job::Release]
        .into_iter()
        .map(|job| {
            let ctx = JobCtx {
                metrics: metrics.clone(),
                status: status.clone(),
                leadership: leadership.clone(),
            };
            tokio::spawn(job_loop(job, feed.clone(), ctx, shutdown.clone()))
        })
        .collect()
}

struct JobCtx {
    metrics: Arc<Metrics>,
    status: Arc<LicenseStatus>,
    leadership: Arc<dyn Leadership>,
}

/// One term of leadership after another: a follower waits, a leader runs the schedule.
async fn job_loop(job: Job, mut feed: ConfigFeed, ctx: JobCtx, shutdown: CancellationToken) {
    let mut leading = ctx.leadership.leading();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            became = leading.wait_for(|l| *l) => if became.is_err() { return },
        }
        led_term(job, &mut feed, &ctx, &mut leading, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        // A follower exports no license or job series: the leader's are the site's.
        ctx.metrics.clear_control_plane_series();
    }
}

/// The schedule while this instance leads; returns when it stops leading (or at shutdown).
async fn led_term(
    job: Job,
    feed: &mut ConfigFeed,
    ctx: &JobCtx,
    leading: &mut watch::Receiver<bool>,
    shutdown: &CancellationToken,
) {
    feed.changes.borrow_and_update();
    let config = feed.current();
    // `run_at_start`: when the term begins (the process start, alone).
    if let Some((_, true)) = job.plan(&config) {
        if !shutdown.is_cancelled() {
            job.run(config, ctx, leading.clone()).await;
        }
    }
    // The last firing: the next one is strictly after it, even if the timer woke a little before
    // the wall clock reached it.
    let mut last: Option<DateTime<Utc>> = None;
    loop {
        if !*leading.borrow_and_update() {
            return;
        }
        // Mark the notices seen before reading the snapshot: a reload swapped in after the read
        // still wakes the wait below.
        feed.changes.borrow_and_update();
        let config = feed.current();
        let wait = match job.plan(&config) {
            Some((schedule, _)) => {
                let now = Utc::now();
                let at = schedule.next_after(last.map_or(now, |l| l.max(now)));
                Some((at, (at - now).to_std().unwrap_or_default()))
            }
            None => None,
        };
        drop(config);
        let fired = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed(&mut feed.changes) => None,
            lost = leading.changed() => if lost.is_err() { return } else { None },
            at = sleep_until(wait) => Some(at),
        };
        let Some(at) = fired else { continue };
        last = Some(at);
        // The run uses the config serving now, if it still has the job enabled.
        let config = feed.current();
        if job.plan(&config).is_some() && *leading.borrow() {
            job.run(config, ctx, leading.clone()).await;
        }
    }
}

/// Resolves after the next config change; never, when the feed can no longer change.
async fn changed(changes: &mut watch::Receiver<u64>) {
    if changes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sleeps until the firing and answers it; without one (job disabled), never resolves.
async fn sleep_until(wait: Option<(DateTime<Utc>, std::time::Duration)>) -> DateTime<Utc> {
    match wait {
        Some((at, wait)) => {
            tokio::time::sleep(wait).await;
            at
        }
        None => std::future::pending().await,
    }
}

async fn monitor_once(config: Arc<Config>, metrics: &Metrics, status: &LicenseStatus) {
    let result = match QrsClient::from_config(&config) {
        Ok(client) => run_monitor(&client, metrics).await,
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

async fn release_once(
    config: Arc<Config>,
    metrics: &Metrics,
    status: &LicenseStatus,
    fence: &dyn Fence,
) {
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
        metrics,
        now: Utc::now(),
        dry_run: release.dry_run,
        fence,
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
