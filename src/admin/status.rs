//! The status document (`GET /api/v1/status`) and the readiness verdict (`GET /readyz`).

use super::AdminCtx;
use crate::balance::registry::Backend;
use serde_json::{json, Value};
use std::time::SystemTime;

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn state(b: &Backend) -> &'static str {
    if !b.is_up() {
        "down"
    } else if b.is_draining() {
        "draining"
    } else {
        "up"
    }
}

fn backend_status(b: &Backend) -> Value {
    let checks = b.check_state();
    let health = b.health().map(|s| {
        let h = &s.health;
        json!({
            "cpu_percent": h.cpu.total,
            "memory_committed_bytes": h.mem.committed,
            "memory_allocated_bytes": h.mem.allocated,
            "memory_free_bytes": h.mem.free,
            "memory_total_bytes": h.mem.total_physical,
            "sessions_active": h.session.active,
            "users_active": h.users.active,
            "saturated": h.saturated,
            "taken": rfc3339(s.taken_wall),
        })
    });
    json!({
        "id": b.id,
        "url": b.target().url.to_string(),
        "state": state(b),
        "up": b.is_up(),
        "draining": b.is_draining(),
        "ejected": b.is_ejected(),
        "health": health,
        "last_check": checks.last_check.map(rfc3339),
        "last_error": checks.last_error,
        "inflight": b.inflight(),
        "tunnels": b.tunnels(),
    })
}

pub fn status(ctx: &AdminCtx) -> Value {
    let rt = ctx.runtime.load();
    let cfg = &rt.config;
    let pools: Vec<Value> = cfg
        .file
        .pool
        .iter()
        .filter_map(|p| rt.pools.get(&p.name))
        .map(|pool| {
            json!({
                "name": pool.name,
                "balance": pool.cfg.balance.as_str(),
                "backends": pool.backends.iter().map(|b| backend_status(b)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let listeners = ctx.reloader.listeners();
    let frontends: Vec<Value> = cfg
        .file
        .frontend
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "listen": f.listen,
                "bound": listeners.addr(&format!("frontend {}", f.name)).map(|a| a.to_string()),
                "pool": f.pool,
            })
        })
        .collect();
    let control = ctx.control.get().map(|f| f()).unwrap_or(Value::Null);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": readiness(ctx).is_ok(),
        "config": {
            "file": cfg.path.as_ref().map(|p| p.display().to_string()),
            "hash": cfg.hash,
            "last_reload": &*ctx.reloader.last(),
        },
        "frontends": frontends,
        "pools": pools,
        "license": control.get("license").cloned().unwrap_or(Value::Null),
        "release": control.get("release").cloned().unwrap_or(Value::Null),
    })
}

/// Ready when the config is loaded, every listener it asks for is bound, every pool has a backend
/// up, and the instance is not shutting down; otherwise the reasons.
pub fn readiness(ctx: &AdminCtx) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if ctx.lifecycle.is_stopping() {
        reasons.push("shutting down".to_string());
    }
    let rt = ctx.runtime.load();
    let listeners = ctx.reloader.listeners();
    for spec in ctx.reloader.specs(&rt.config) {
        if listeners.addr(&spec.key).is_none() {
            reasons.push(format!("{} is not listening on {}", spec.key, spec.listen));
        }
    }
    for p in &rt.config.file.pool {
        let Some(pool) = rt.pools.get(&p.name) else {
            reasons.push(format!("pool {} is not built", p.name));
            continue;
        };
        if !pool.backends.iter().any(|b| b.is_up()) {
            reasons.push(format!("pool {} has no backend up", p.name));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}
