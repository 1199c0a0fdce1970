//! Every listener a config asks for (front doors, admin, LB module), bound at start and
//! re-bound by the reloader when an address changes.

use super::StartError;
use crate::admin::{self, AdminCtx};
use crate::config::Config;
use crate::proxy::{listener::serve_frontend, Lifecycle, ProxyCtx};
use crate::reload::listeners::{ListenerSpec, Listeners};
use crate::reload::{ListenerSpecs, Reloader};
use crate::snapshot::{Shared, SharedSnapshot};
use arc_swap::ArcSwapOption;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use tokio_util::sync::CancellationToken;
use tracing::error;

pub(super) const ADMIN_KEY: &str = "admin";
pub(super) const LB_MODULE_KEY: &str = "lb_module";

/// The LB module's server TLS, when configured.
pub(super) fn lb_module_tls(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
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

pub(super) fn frontend_key(name: &str) -> String {
    format!("frontend {name}")
}

/// Binds and starts every listener of the first config; returns the front-door addresses.
pub(super) async fn bind_listeners(
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
pub(super) fn admin_context(
    runtime: &SharedSnapshot,
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
            license_status: OnceLock::new(),
            cluster: OnceLock::new(),
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
