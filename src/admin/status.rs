//! The status document (`GET /api/v1/status`) and the readiness verdict (`GET /readyz`).

use super::AdminCtx;
use crate::balance::engine_health::BYTES_PER_MIB;
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
            "memory_committed_bytes": h.mem.committed * BYTES_PER_MIB,
            "memory_allocated_bytes": h.mem.allocated * BYTES_PER_MIB,
            "memory_free_bytes": h.mem.free * BYTES_PER_MIB,
            "memory_total_bytes": h.mem.total_physical.map(|t| t * BYTES_PER_MIB),
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
    let control = ctx.license_status.get().map(|f| f()).unwrap_or(Value::Null);
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
        "cluster": ctx.cluster.get().map(|c| c.status_json()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::engine_health::EngineHealth;
    use crate::balance::registry::{BackendTarget, HealthSample, Registry};
    use crate::config::BackendUrl;
    use std::time::Instant;

    #[test]
    fn engine_memory_is_reported_in_bytes() {
        let reg = Registry::new(std::sync::Arc::new(crate::metrics::Metrics::new()));
        let b = reg.upsert(
            "p",
            "n1",
            BackendTarget {
                url: BackendUrl::parse("http://127.0.0.1:1").unwrap(),
                weight: 1,
                engine_health: None,
            },
        );
        let mut health = EngineHealth::default();
        health.mem.committed = 1.5;
        health.mem.allocated = 2.0;
        health.mem.free = 1024.0;
        health.mem.total_physical = Some(32768.0);
        b.set_health(Some(HealthSample {
            health,
            taken: Instant::now(),
            taken_wall: SystemTime::now(),
        }));
        let h = &backend_status(&b)["health"];
        let mib = 1024.0 * 1024.0;
        assert_eq!(h["memory_committed_bytes"], json!(1.5 * mib));
        assert_eq!(h["memory_allocated_bytes"], json!(2.0 * mib));
        assert_eq!(h["memory_free_bytes"], json!(1024.0 * mib));
        assert_eq!(h["memory_total_bytes"], json!(32768.0 * mib));
    }
}
