//! Starting and stopping a whole instance from a config: bind every listener, start the
//! background work, and shut down in order (stop accepting, finish requests, grace for tunnels).

use crate::admin::{self, AdminCtx};
use crate::config::Config;
use crate::control::{jobs::spawn_jobs, ControlStatus};
use crate::metrics::Metrics;
use crate::proxy::{listener::serve_frontend, Lifecycle, ProxyCtx};
use crate::runtime::{Runtime, Shared, SharedRuntime};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("{what}: {message}")]
    Tls { what: String, message: String },
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
    pub frontends: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    pub lb_module: Option<SocketAddr>,
    /// Last license snapshot and release run, for the status API.
    pub control: Arc<ControlStatus>,
    background: CancellationToken,
    grace: Duration,
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: what.to_string(),
            addr: addr.to_string(),
            source,
        })
}

impl Instance {
    pub async fn start(config: Config) -> Result<Instance, StartError> {
        Instance::start_with_metrics(config, Arc::new(Metrics::new())).await
    }

    pub async fn start_with_metrics(
        config: Config,
        metrics: Arc<Metrics>,
    ) -> Result<Instance, StartError> {
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
        let ctx = ProxyCtx::new(runtime.clone(), shared.clone(), lifecycle.clone());

        let mut frontends = Vec::new();
        for fe in &cfg.file.frontend {
            let listener = bind(&format!("frontend {}", fe.name), &fe.listen).await?;
            frontends.push((
                fe.name.clone(),
                listener.local_addr().expect("bound address"),
            ));
            tokio::spawn(serve_frontend(listener, fe.name.clone(), ctx.clone()));
        }
        let admin = match &cfg.file.admin {
            Some(a) => {
                let listener = bind("admin", &a.listen).await?;
                let addr = listener.local_addr().expect("bound address");
                let actx = Arc::new(AdminCtx {
                    runtime: runtime.clone(),
                    shared: shared.clone(),
                });
                tokio::spawn(admin::serve(listener, actx, background.clone()));
                Some(addr)
            }
            None => None,
        };
        let lb_module = match &cfg.file.lb_module {
            Some(lbm) => {
                let tls = match &lbm.tls {
                    Some(t) => Some(
                        crate::tls::server_config(
                            &cfg.resolve(&t.cert),
                            &cfg.resolve(&t.key),
                            None,
                        )
                        .map_err(|e| StartError::Tls {
                            what: "lb_module.tls".into(),
                            message: e.to_string(),
                        })?,
                    ),
                    None => None,
                };
                let listener = bind("lb_module", &lbm.listen).await?;
                let addr = listener.local_addr().expect("bound address");
                tokio::spawn(crate::lbmodule::serve(
                    listener,
                    tls,
                    runtime.clone(),
                    shared.clone(),
                    background.clone(),
                ));
                Some(addr)
            }
            None => None,
        };
        crate::balance::health::spawn_health_checks(
            runtime.clone(),
            shared.clone(),
            background.clone(),
        );
        let control = Arc::new(ControlStatus::new());
        spawn_jobs(
            cfg.clone(),
            shared.metrics.clone(),
            control.clone(),
            background.clone(),
        );
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
            background,
            grace,
        })
    }

    pub fn frontend_addr(&self, name: &str) -> Option<SocketAddr> {
        self.frontends
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting, lets in-flight requests finish, gives open tunnels the shutdown grace,
    /// then closes them; returns as soon as everything is done.
    pub async fn shutdown(self) {
        self.lifecycle.stop.cancel();
        self.lifecycle.tracker.close();
        if tokio::time::timeout(self.grace, self.lifecycle.tracker.wait())
            .await
            .is_err()
        {
            self.lifecycle.close_tunnels.cancel();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.lifecycle.tracker.wait()).await;
        }
        self.background.cancel();
    }
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
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
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
