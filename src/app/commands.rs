//! The `check` and `run` commands.

use super::Instance;
use crate::config::Config;
use std::path::Path;
use std::process::ExitCode;
use tracing::{error, info, warn};

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
            for warning in &cfg.warnings {
                println!("warning: {}: {warning}", path.display());
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
    for warning in &config.warnings {
        warn!("{}: {warning}", path.display());
    }
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
