//! Starting and stopping a whole instance from a config: bind every listener, start the
//! background work, and shut down in order (stop accepting, finish requests, grace for tunnels).

use crate::admin::{self, AdminCtx};
use crate::config::Config;
use crate::control::jobs::{spawn_jobs, ConfigFeed};
use crate::control::ControlStatus;
use crate::metrics::Metrics;
use crate::proxy::workers::Workers;
use crate::proxy::{listener::serve_frontend, Lifecycle, ProxyCtx};
use crate::reload::listeners::{ListenerSpec, Listeners};
use crate::reload::triggers::{self, WatchError};
use crate::reload::{ListenerSpecs, ReloadOutcome, Reloader, Trigger};
use crate::runtime::{Runtime, Shared, SharedRuntime};
use arc_swap::{ArcSwap, ArcSwapOption};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("{what}: {message}")]
    Tls { what: String, message: String },
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
    pub runtime: SharedRuntime,
    pub lifecycle: Arc<Lifecycle>,
    /// Front-door addresses as bound at start (`frontend_addr` follows reloads).
    pub frontends: Vec<(String, SocketAddr)>,
    /// Admin address as bound at start (`admin_addr` follows reloads).
    pub admin: Option<SocketAddr>,
    pub lb_module: Option<SocketAddr>,
    /// Last license snapshot and release run, for the status API.
    pub control: Arc<ControlStatus>,
    pub reloader: Arc<Reloader>,
    pub admin_ctx: Arc<AdminCtx>,
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
        let runtime: SharedRuntime =
            Arc::new(ArcSwap::from_pointee(Runtime::build(config, &shared)?));
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
        crate::runtime::spawn_health_checks(runtime.clone(), &shared, background.clone());
        let control = Arc::new(ControlStatus::new());
        // The jobs read the serving snapshot at each run and plan again after each reload.
        spawn_jobs(
            ConfigFeed::serving(runtime.clone(), shared.config_changes()),
            shared.metrics.clone(),
            control.clone(),
            background.clone(),
        );
        let view = control.clone();
        let _ = admin_ctx.control.set(Arc::new(move || {
            let v = view.view();
            serde_json::json!({
                "license": v.license,
                "license_error": v.license_error,
                "release": v.last_release,
            })
        }));
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
            control,
            reloader: admin_ctx.reloader.clone(),
            admin_ctx,
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

    /// Reloads on SIGHUP and whenever the config file changes, until shutdown.
    pub fn watch_for_reloads(&self) -> Result<(), WatchError> {
        triggers::reload_on_sighup(self.reloader.clone(), self.background.clone())?;
        triggers::reload_on_file_change(self.reloader.clone(), self.background.clone())
    }

    /// Stops accepting, lets in-flight requests finish, gives open tunnels the shutdown grace,
    /// then closes them; returns as soon as everything is done.
    pub async fn shutdown(self) {
        shutdown_in_order(&self.lifecycle, self.grace, &self.runtime).await;
        self.background.cancel();
        self.workers.stop();
    }
}

const ADMIN_KEY: &str = "admin";
const LB_MODULE_KEY: &str = "lb_module";

/// The LB module's server TLS, when configured.
fn lb_module_tls(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    let Some(t) = cfg.file.lb_module.as_ref().and_then(|l| l.tls.as_ref()) else {
        return Ok(None);
    };
    crate::tls::server_config(&cfg.resolve(&t.cert), &cfg.resolve(&t.key), None)
        .map(Some)
        .map_err(|e| StartError::Tls {
            what: "lb_module.tls".into(),
            message: e.to_string(),
        })
}

fn frontend_key(name: &str) -> String {
    format!("frontend {name}")
}

/// Binds and starts every listener of the first config; returns the front-door addresses.
async fn bind_listeners(
    reloader: &Reloader,
    cfg: &Config,
) -> Result<Vec<(String, SocketAddr)>, StartError> {
    let listeners = reloader.listeners();
    let plan = listeners
        .prepare(reloader.specs(cfg))
        .await
        .map_err(|failures| {
            let f = failures.into_iter().next().expect("at least one failure");
            StartError::Bind {
                what: f.key,
                addr: f.addr,
                source: f.source,
            }
        })?;
    listeners.commit(plan);
    Ok(cfg
        .file
        .frontend
        .iter()
        .filter_map(|fe| {
            listeners
                .addr(&frontend_key(&fe.name))
                .map(|a| (fe.name.clone(), a))
        })
        .collect())
}

/// The admin context, with a reloader that knows every listener a config asks for.
fn admin_context(
    runtime: &SharedRuntime,
    shared: &Arc<Shared>,
    lifecycle: &Arc<Lifecycle>,
    proxy: &Arc<ProxyCtx>,
    background: &CancellationToken,
    token: Option<String>,
) -> Arc<AdminCtx> {
    let token = Arc::new(ArcSwapOption::from(token.map(Arc::new)));
    Arc::new_cyclic(|me: &Weak<AdminCtx>| {
        let specs = listener_specs(proxy.clone(), me.clone(), background.clone());
        let reloader = Arc::new(Reloader::new(
            runtime.clone(),
            shared.clone(),
            Arc::new(Listeners::new()),
            specs,
            token.clone(),
        ));
        AdminCtx {
            runtime: runtime.clone(),
            shared: shared.clone(),
            lifecycle: lifecycle.clone(),
            reloader,
            token,
            control: OnceLock::new(),
        }
    })
}

/// Every listener a config asks for. Used at start and on each reload, which re-binds the ones
/// whose address changed.
fn listener_specs(
    proxy: Arc<ProxyCtx>,
    admin: Weak<AdminCtx>,
    background: CancellationToken,
) -> ListenerSpecs {
    Box::new(move |cfg: &Config| {
        let mut specs = Vec::new();
        for (i, fe) in cfg.file.frontend.iter().enumerate() {
            let proxy = proxy.clone();
            let name = fe.name.clone();
            specs.push(ListenerSpec {
                key: frontend_key(&fe.name),
                config_key: format!("frontend[{i}].listen"),
                listen: fe.listen.clone(),
                parent: proxy.lifecycle.stop.clone(),
                start: Box::new(move |listener, stop| {
                    tokio::spawn(serve_frontend(listener, name, proxy, stop));
                }),
            });
        }
        if let Some(a) = &cfg.file.admin {
            let admin = admin.clone();
            specs.push(ListenerSpec {
                key: ADMIN_KEY.to_string(),
                config_key: "admin.listen".to_string(),
                listen: a.listen.clone(),
                parent: background.clone(),
                start: Box::new(move |listener, stop| {
                    if let Some(ctx) = admin.upgrade() {
                        tokio::spawn(admin::serve(listener, ctx, stop));
                    }
                }),
            });
        }
        if let Some(lbm) = &cfg.file.lb_module {
            let (runtime, shared, workers) = (
                proxy.runtime.clone(),
                proxy.shared.clone(),
                proxy.workers.clone(),
            );
            let tls = lb_module_tls(cfg);
            specs.push(ListenerSpec {
                key: LB_MODULE_KEY.to_string(),
                config_key: "lb_module.listen".to_string(),
                listen: lbm.listen.clone(),
                parent: background.clone(),
                start: Box::new(move |listener, stop| match tls {
                    Ok(tls) => {
                        tokio::spawn(crate::lbmodule::serve(
                            listener, tls, runtime, shared, workers, stop,
                        ));
                    }
                    Err(e) => error!("load balancing module not started: {e}"),
                }),
            });
        }
        specs
    })
}

/// The shutdown contract: stop accepting (and close idle keep-alive connections); wait for
/// in-flight requests and open tunnels; after `grace` close the tunnels; then give requests still
/// running up to the longest response timeout to end.
async fn shutdown_in_order(lifecycle: &Lifecycle, grace: Duration, runtime: &SharedRuntime) {
    lifecycle.begin_shutdown();
    lifecycle.tracker.close();
    if tokio::time::timeout(grace, lifecycle.tracker.wait())
        .await
        .is_ok()
    {
        return;
    }
    info!("shutdown grace of {grace:?} over: closing open WebSocket tunnels");
    lifecycle.close_tunnels.cancel();
    let longest_response = runtime
        .load()
        .config
        .file
        .pool
        .iter()
        .map(|p| p.response_timeout.get())
        .max()
        .unwrap_or_default();
    let _ = tokio::time::timeout(
        longest_response.max(Duration::from_secs(5)),
        lifecycle.tracker.wait(),
    )
    .await;
}

/// The instance's own runtime: accepting, admin, health checks, license jobs, reloads. Proxied
/// connections run on the per-core workers (`proxy::workers`), so one thread is enough here.
pub fn instance_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

/// `qlik-lb check`: prints `ok` or every error, exit 0 or 1.
pub fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            for missing in &cfg.missing_files {
                println!("warning: {}: {missing} (needed to start)", path.display());
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            println!("{errors}");
            ExitCode::from(1)
        }
    }
}

/// `qlik-lb run`: serve until SIGTERM or SIGINT, then shut down gracefully.
pub fn run_from_file(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let rt = match instance_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qlik-lb run: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let instance = match Instance::start(config).await {
            Ok(i) => i,
            Err(e) => {
                error!("{e}");
                return ExitCode::from(1);
            }
        };
        for (name, addr) in &instance.frontends {
            info!(frontend = %name, %addr, "front door listening");
        }
        if let Some(addr) = instance.admin {
            info!(%addr, "admin listening");
        }
        if let Some(addr) = instance.lb_module {
            info!(%addr, "load balancing module listening");
        }
        if let Err(e) = instance.watch_for_reloads() {
            warn!("{e}; reload with POST /api/v1/reload instead");
        }
        wait_for_stop_signal().await;
        info!("shutting down");
        instance.shutdown().await;
        ExitCode::SUCCESS
    })
}

pub async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
