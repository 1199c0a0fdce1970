//! Starting and stopping a whole instance from a config: bind every listener, start the
//! background work, and shut down in order (stop accepting, finish requests, grace for tunnels).

mod cluster;
mod commands;
mod listeners;
mod shutdown;

pub use commands::{check, instance_runtime, run_from_file, wait_for_stop_signal};

use crate::admin::AdminCtx;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::control::jobs::{spawn_led_jobs, ConfigFeed};
use crate::control::LicenseStatus;
use crate::control::{Alone, Leadership};
use crate::metrics::Metrics;
use crate::proxy::{Lifecycle, ProxyCtx};
use crate::reload::triggers::{self, WatchError};
use crate::reload::{ReloadOutcome, Reloader, Trigger};
use crate::snapshot::{Shared, SharedSnapshot, Snapshot};
use crate::threads::workers::Workers;
use arc_swap::ArcSwap;
use listeners::{
    admin_context, bind_listeners, frontend_key, lb_module_tls, ADMIN_KEY, LB_MODULE_KEY,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("{what}: {message}")]
    Tls { what: String, message: String },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: String,
        addr: String,
        source: std::io::Error,
    },
}

/// A running instance.
pub struct Instance {
    pub shared: Arc<Shared>,
    pub runtime: SharedSnapshot,
    pub lifecycle: Arc<Lifecycle>,
    /// Front-door addresses as bound at start (`frontend_addr` follows reloads).
    pub frontends: Vec<(String, SocketAddr)>,
    /// Admin address as bound at start (`admin_addr` follows reloads).
    pub admin: Option<SocketAddr>,
    pub lb_module: Option<SocketAddr>,
    /// Last license snapshot and release run, for the status API.
    pub license_status: Arc<LicenseStatus>,
    pub reloader: Arc<Reloader>,
    pub admin_ctx: Arc<AdminCtx>,
    /// This instance's membership, with `[cluster]`.
    pub cluster: Option<Arc<Cluster>>,
    background: CancellationToken,
    grace: Duration,
    workers: Arc<Workers>,
}

impl Instance {
    pub async fn start(config: Config) -> Result<Instance, StartError> {
        Instance::start_with_metrics(config, Arc::new(Metrics::new())).await
    }

    pub async fn start_with_metrics(
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Result<Instance, StartError> {
        let token = crate::config::admin_token::load_token(&config)?;
        let shared = Shared::new(metrics);
        let runtime: SharedSnapshot =
            Arc::new(ArcSwap::from_pointee(Snapshot::build(config, &shared)?));
        shared
            .metrics
            .config_reloads_total
            .with_label_values(&["ok"]);
        shared
            .metrics
            .config_reloads_total
            .with_label_values(&["error"]);
        shared
            .metrics
            .config_last_reload_success_timestamp_seconds
            .set(chrono::Utc::now().timestamp() as f64);
        let lifecycle = Lifecycle::new();
        let background = CancellationToken::new();
        let cfg = runtime.load().config.clone();
        let workers = Workers::start().map_err(StartError::Workers)?;
        let ctx = ProxyCtx::new(
            runtime.clone(),
            shared.clone(),
            lifecycle.clone(),
            workers.clone(),
        );
        // A bad certificate fails the start here, not later inside the listener task.
        lb_module_tls(&cfg)?;
        let admin_ctx = admin_context(&runtime, &shared, &lifecycle, &ctx, &background, token);
        let frontends = bind_listeners(&admin_ctx.reloader, &cfg).await?;
        let admin = admin_ctx.reloader.listeners().addr(ADMIN_KEY);
        let lb_module = admin_ctx.reloader.listeners().addr(LB_MODULE_KEY);
        crate::snapshot::spawn_health_checks(runtime.clone(), &shared, background.clone());
        let control = Arc::new(LicenseStatus::new());
        let cluster = cluster::join(&runtime, &shared, admin, &control, &background).await?;
        let leadership: Arc<dyn Leadership> = match &cluster {
            Some(c) => {
                let _ = admin_ctx.cluster.set(c.clone());
                c.leadership()
            }
            None => Alone::new(),
        };
        // The jobs read the serving snapshot at each run and plan again after each reload; in a
        // cluster they run only while this instance leads.
        spawn_led_jobs(
            ConfigFeed::serving(runtime.clone(), shared.config_changes()),
            shared.metrics.clone(),
            control.clone(),
            leadership,
            background.clone(),
        );
        let view = control.clone();
        let _ = admin_ctx.license_status.set(Arc::new(move || view.json()));
        let grace = cfg
            .file
            .admin
            .as_ref()
            .map(|a| a.shutdown_grace.get())
            .unwrap_or(Duration::from_secs(30));
        Ok(Instance {
            shared,
            runtime,
            lifecycle,
            frontends,
            admin,
            lb_module,
            license_status: control,
            reloader: admin_ctx.reloader.clone(),
            admin_ctx,
            cluster,
            background,
            grace,
            workers,
        })
    }

    /// The front-door address of a frontend now (after reloads too).
    pub fn frontend_addr(&self, name: &str) -> Option<SocketAddr> {
        self.reloader.listeners().addr(&frontend_key(name))
    }

    /// The admin address now (after reloads too).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.reloader.listeners().addr(ADMIN_KEY)
    }

    /// Reloads the config file now (what SIGHUP, a file change and `POST /api/v1/reload` do).
    pub async fn reload(&self, trigger: Trigger) -> Arc<ReloadOutcome> {
        self.reloader.reload(trigger).await
    }

    /// Reloads on SIGHUP and whenever the config file or a frontend certificate changes, and
    /// reopens the access log on SIGUSR1, until shutdown.
    pub fn watch_for_reloads(&self) -> Result<(), WatchError> {
        triggers::reload_on_sighup(self.reloader.clone(), self.background.clone())?;
        crate::reload::certificates::reload_on_certificate_change(
            self.reloader.clone(),
            self.background.clone(),
        )?;
        triggers::reopen_access_log_on_sigusr1(self.runtime.clone(), self.background.clone())?;
        triggers::reload_on_file_change(self.reloader.clone(), self.background.clone())
    }

    /// Stops accepting, lets in-flight requests finish, gives open tunnels the shutdown grace,
    /// then closes them; returns as soon as everything is done.
    pub async fn shutdown(self) {
        shutdown::shutdown_in_order(&self.lifecycle, self.grace, &self.runtime).await;
        // Leaving revokes the lease: another instance may lead at once.
        if let Some(c) = &self.cluster {
            c.stop().await;
        }
        let access_log = self.runtime.load().access_log.clone();
        if let Some(log) = access_log {
            log.flushed(Duration::from_secs(2)).await;
        }
        self.background.cancel();
        self.workers.stop();
    }
}
