//! Probing one backend: the up/down check of its pool's kind, and the engine health poll that
//! feeds the load score.

use super::fetch::{self, chain};
use crate::balance::engine_health::EngineHealth;
use crate::balance::registry::{Backend, HealthSample};
use crate::config::{BackendUrl, CheckKind, Config, HealthConfig};
use crate::metrics::Metrics;
use rustls::ClientConfig;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The TLS identities probes use, built once per config snapshot.
pub struct Prober {
    /// For `http` checks of https backends: no client certificate and no server verification.
    /// The check sends no credentials and reads only a status code, so an unverified peer can
    /// at worst fake an up/down answer; front-door nodes usually present QMC-issued or internal
    /// certificates whose names do not match the address qlik-lb is configured with, and a check
    /// that failed on that would mark every such node down.
    plain: Arc<ClientConfig>,
    /// The `[qlik_certs]` mutual-TLS identity (qix checks, https engine health), or why there is none.
    qlik: Result<Arc<ClientConfig>, String>,
}

impl Prober {
    /// Never fails: missing or unreadable `[qlik_certs]` make the probes that need them fail
    /// with that reason instead, so every other check keeps running.
    pub fn from_config(cfg: &Config) -> Prober {
        let plain = crate::tls::client_config_from(None, Vec::new(), false)
            .expect("a client config without identity or roots always builds");
        let qlik = match &cfg.file.qlik_certs {
            Some(c) => crate::tls::qlik_client_config(
                &cfg.resolve(&c.cert),
                &cfg.resolve(&c.key),
                &cfg.resolve(&c.ca),
                c.verify_server,
            )
            .map_err(|e| format!("[qlik_certs]: {e}")),
            None => Err("no [qlik_certs] configured for mutual TLS".to_string()),
        };
        Prober { plain, qlik }
    }

    fn qlik_tls(&self) -> Result<&Arc<ClientConfig>, String> {
        self.qlik.as_ref().map_err(Clone::clone)
    }
}

/// Probes one backend now: runs its pool's check, applies rise/fall, polls `engine_health`
/// when configured, stores the samples and sets the engine gauges. Returns the check result.
pub async fn probe_once(
    prober: &Prober,
    health: &HealthConfig,
    backend: &Backend,
    metrics: &Metrics,
) -> Result<(), String> {
    let target = backend.target();
    let timeout = health.timeout.get();
    let check = async {
        match health.check {
            CheckKind::Tcp => tokio::net::TcpStream::connect(target.url.authority())
                .await
                .map(drop)
                .map_err(|e| format!("cannot connect to {}: {e}", target.url.authority())),
            CheckKind::Http => {
                let tls = target.url.tls.then_some(&prober.plain);
                let path = format!("{}{}", target.url.path.trim_end_matches('/'), health.path);
                let got = fetch::get(&target.url, &path, tls)
                    .await
                    .map_err(|e| chain(&e))?;
                if got.status < 500 {
                    Ok(())
                } else {
                    Err(format!("GET {}{path} answered {}", target.url, got.status))
                }
            }
            CheckKind::Qix => {
                let path = format!(
                    "{}/engine/healthcheck",
                    target.url.path.trim_end_matches('/')
                );
                let h = engine_health(prober, &target.url, &path).await?;
                store(backend, metrics, h);
                Ok(())
            }
        }
    };
    // The engine health poll runs beside the check, so a probe takes one timeout at most.
    let poll = async {
        let url = target.engine_health.as_ref()?;
        let path = if url.path.is_empty() {
            "/"
        } else {
            url.path.as_str()
        };
        Some(within(timeout, engine_health(prober, url, path)).await)
    };
    let (result, polled) = tokio::join!(within(timeout, check), poll);
    match polled {
        Some(Ok(h)) => store(backend, metrics, h),
        Some(Err(reason)) => {
            tracing::debug!(pool = %backend.pool, backend = %backend.id, %reason, "engine health poll failed")
        }
        None => {}
    }
    if let Err(reason) = &result {
        tracing::debug!(pool = %backend.pool, backend = %backend.id, %reason, "health check failed");
    }
    let was_up = backend.is_up();
    let up = backend.record_check(result.clone(), health.rise, health.fall);
    if was_up != up {
        tracing::warn!(pool = %backend.pool, backend = %backend.id, up, reason = ?result.as_ref().err(), "backend state changed by health checks");
    }
    result
}

async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// GET an engine health URL (mutual TLS when https) and parse it.
async fn engine_health(
    prober: &Prober,
    url: &BackendUrl,
    path: &str,
) -> Result<EngineHealth, String> {
    let tls = if url.tls {
        Some(prober.qlik_tls()?)
    } else {
        None
    };
    let got = fetch::get(url, path, tls).await.map_err(|e| chain(&e))?;
    if got.status != 200 {
        return Err(format!(
            "GET {}{path} answered {}, not 200",
            url.authority(),
            got.status
        ));
    }
    EngineHealth::parse(&got.body).map_err(|e| format!("GET {}{path}: {e}", url.authority()))
}

fn store(backend: &Backend, metrics: &Metrics, h: EngineHealth) {
    set_engine_gauges(backend, metrics, &h);
    backend.set_health(Some(HealthSample {
        health: h,
        taken: Instant::now(),
        taken_wall: SystemTime::now(),
    }));
}

const MIB: f64 = crate::balance::engine_health::BYTES_PER_MIB;

fn set_engine_gauges(backend: &Backend, m: &Metrics, h: &EngineHealth) {
    let l = [backend.pool.as_str(), backend.id.as_str()];
    m.engine_cpu_percent.with_label_values(&l).set(h.cpu.total);
    m.engine_memory_committed_bytes
        .with_label_values(&l)
        .set(h.mem.committed * MIB);
    m.engine_memory_free_bytes
        .with_label_values(&l)
        .set(h.mem.free * MIB);
    m.engine_sessions_active
        .with_label_values(&l)
        .set(h.session.active as i64);
    m.engine_users_active
        .with_label_values(&l)
        .set(h.users.active as i64);
    m.engine_saturated
        .with_label_values(&l)
        .set(h.saturated as i64);
}
