//! The immutable snapshot the hot path reads (one `arc-swap` load per request), and the state
//! that outlives snapshots: metrics, the backend registry, learned Qlik sessions.

use crate::access_log::AccessLog;
use crate::balance::health::CheckTargets;
use crate::balance::learned::{LearnedSessions, OnPoolLearned, DEFAULT_CAPACITY, DEFAULT_IDLE};
use crate::balance::spec::backend_specs;
use crate::balance::{Pool, Registry};
use crate::config::url::BackendUrl;
use crate::config::{Config, ConfigError, ConfigErrors, FrontendConfig, FrontendTls};
use crate::conn_limit::ConnLimit;
use crate::metrics::Metrics;
use crate::tls::backend::{BackendTls, BackendTlsKey, BackendTlsSpec, Trust};
use crate::tls::frontend::{frontend_server_config, load_pair, SniResolver};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// State that survives reloads.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub registry: Registry,
    learned: Mutex<HashMap<String, Arc<LearnedSessions>>>,
    /// Told of entries learned in any pool: (pool, session, backend). Set in a cluster.
    on_learned: std::sync::OnceLock<OnPoolLearned>,
    /// Open client connections per frontend name, across reloads and re-bound listeners.
    conn_limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
    /// Ticks after each reload is swapped in; the license jobs plan again on it.
    config_changes: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Shared> {
        Arc::new(Shared {
            registry: Registry::new(metrics.clone()),
            metrics,
            learned: Mutex::new(HashMap::new()),
            on_learned: std::sync::OnceLock::new(),
            conn_limits: Mutex::new(HashMap::new()),
            config_changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn conn_limit(&self, frontend: &str) -> Arc<ConnLimit> {
        self.conn_limits
            .lock()
            .expect("connection limits lock")
            .entry(frontend.to_string())
            .or_default()
            .clone()
    }

    /// After a new config is swapped in: acceptors waiting on a full frontend read its limit again.
    pub fn limits_changed(&self) {
        for limit in self
            .conn_limits
            .lock()
            .expect("connection limits lock")
            .values()
        {
            limit.wake();
        }
    }

    /// A notice of each config swapped in after this call.
    pub fn config_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.config_changes.subscribe()
    }

    /// After a new config is swapped in: whatever reads it on its own schedule reads it again.
    pub fn config_swapped(&self) {
        self.config_changes.send_modify(|n| *n += 1);
    }

    fn learned_for(&self, pool: &str) -> Arc<LearnedSessions> {
        self.learned
            .lock()
            .expect("learned table lock")
            .entry(pool.to_string())
            .or_insert_with(|| {
                let table = Arc::new(LearnedSessions::new(DEFAULT_IDLE, DEFAULT_CAPACITY));
                if let Some(hook) = self.on_learned.get() {
                    attach(&table, pool, hook);
                }
                table
            })
            .clone()
    }

    /// Every learned table, now and for pools a reload adds, tells `hook` what it learns.
    pub fn on_learned(&self, hook: OnPoolLearned) {
        let tables = self.learned.lock().expect("learned table lock");
        if self.on_learned.set(hook.clone()).is_ok() {
            for (pool, table) in tables.iter() {
                attach(table, pool, &hook);
            }
        }
    }

    /// An entry another instance learned, for this pool's table (when the pool exists here).
    pub fn learned_elsewhere(&self, pool: &str, session: &str, backend: &str) {
        let table = self
            .learned
            .lock()
            .expect("learned table lock")
            .get(pool)
            .cloned();
        if let Some(table) = table {
            table.learn_elsewhere(session, backend);
        }
    }
}

fn attach(table: &LearnedSessions, pool: &str, hook: &OnPoolLearned) {
    let (pool, hook) = (pool.to_string(), hook.clone());
    table.on_learned(Arc::new(move |session: &str, backend: &str| {
        hook(&pool, session, backend)
    }));
}

/// A TLS frontend's server config and the resolver behind it, whose certificates the file
/// watcher replaces in place.
pub struct FrontendTlsState {
    pub config: Arc<rustls::ServerConfig>,
    pub resolver: Arc<SniResolver>,
}

pub struct FrontendSnapshot {
    pub cfg: FrontendConfig,
    pub tls: Option<FrontendTlsState>,
    /// Lower-cased header names never forwarded from a client.
    pub strip: Vec<String>,
}

pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub frontends: Vec<Arc<FrontendSnapshot>>,
    /// Client configs of the pools with https:// backends, by pool name.
    /// Opened anew by every build: a reload reopens the file at its path.
    pub access_log: Option<Arc<AccessLog>>,
}

impl Snapshot {
    /// Builds everything the config describes that can fail (secrets, certificates) before
    /// anything is swapped in; on error nothing changes.
    pub fn build(config: Config, shared: &Shared) -> Result<Snapshot, ConfigErrors> {
        // Files may have been absent when the config was checked; to start, they must exist.
        let mut errors = config.missing_files.clone();
        let access_log = open_access_log(&config, shared, &mut errors);
        let mut secrets = HashMap::new();
        for (i, p) in config.file.pool.iter().enumerate() {
            if let Some(secret_file) = &p.sticky.secret_file {
                let path = config.resolve(secret_file);
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let trimmed = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
                        if trimmed.len() < 16 {
                            errors.push(ConfigError {
                                key: format!("pool[{i}].sticky.secret_file"),
                                line: None,
                                message: format!(
                                    "{} holds {} bytes; use at least 16 random bytes",
                                    path.display(),
                                    trimmed.len()
                                ),
                            });
                        }
                        secrets.insert(p.name.clone(), trimmed);
                    }
                    Err(e) => errors.push(ConfigError {
                        key: format!("pool[{i}].sticky.secret_file"),
                        line: None,
                        message: format!("cannot read {}: {e}", path.display()),
                    }),
                }
            }
        }
        let mut frontends = Vec::new();
        for (i, fe) in config.file.frontend.iter().enumerate() {
            let tls = match &fe.tls {
                Some(t) => frontend_tls(&config, i, t, &mut errors),
                None => None,
            };
            frontends.push(Arc::new(FrontendSnapshot {
                strip: fe
                    .strip_request_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                cfg: fe.clone(),
                tls,
            }));
        }
        let mut parsed = Vec::new();
        for (i, p) in config.file.pool.iter().enumerate() {
            match backend_specs(p, &format!("pool[{i}]")) {
                Ok(specs) => parsed.push((p, specs)),
                Err(bad) => errors.extend(bad.into_iter().map(|e| ConfigError {
                    key: e.key,
                    line: None,
                    message: e.message,
                })),
            }
        }
        let mut backend_tls = HashMap::new();
        for (i, p) in config.file.pool.iter().enumerate() {
            if let Some(t) = pool_backend_tls(&config, i, &mut errors) {
                backend_tls.insert(p.name.clone(), Arc::new(t));
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors {
                file: config.path.clone(),
                errors,
            });
        }
        // Nothing can fail from here on: the registry is only touched by a config that builds.
        let pools = parsed
            .into_iter()
            .map(|(p, specs)| {
                let mut pool = Pool::build(
                    p,
                    specs,
                    secrets.get(&p.name).map(|s| s.as_slice()),
                    &shared.registry,
                    shared.learned_for(&p.name),
                );
                pool.backend_tls = backend_tls.remove(&p.name);
                (p.name.clone(), Arc::new(pool))
            })
            .collect();
        let keep: Vec<(String, String)> = config
            .file
            .pool
            .iter()
            .flat_map(|p| p.backend.iter().map(|b| (p.name.clone(), b.id.clone())))
            .collect();
        shared.registry.retain(&keep);
        let snapshot = Snapshot {
            config: Arc::new(config),
            pools,
            frontends,
            access_log,
        };
        snapshot.publish_certificate_expiry(&shared.metrics);
        Ok(snapshot)
    }

    /// Sets the expiry gauge to the certificates this snapshot serves now, and only those.
    pub fn publish_certificate_expiry(&self, metrics: &Metrics) {
        let gauge = &metrics.tls_certificate_expiry_timestamp_seconds;
        gauge.reset();
        for fe in &self.frontends {
            let Some(tls) = &fe.tls else { continue };
            for cert in tls.resolver.certs().iter() {
                gauge
                    .with_label_values(&[&fe.cfg.name, cert.first_name()])
                    .set(cert.not_after as f64);
            }
        }
    }

    pub fn frontend(&self, name: &str) -> Option<&Arc<FrontendSnapshot>> {
        self.frontends.iter().find(|f| f.cfg.name == name)
    }

    /// What the active health checks run against in this snapshot.
    pub fn check_targets(&self) -> CheckTargets {
        CheckTargets {
            config: self.config.clone(),
            pools: self.pools.values().cloned().collect(),
        }
    }
}

/// Loads every certificate pair of frontend `i`; each failure is reported with its key path.
fn frontend_tls(
    config: &Config,
    i: usize,
    tls: &FrontendTls,
    errors: &mut Vec<ConfigError>,
) -> Option<FrontendTlsState> {
    let mut loaded = Vec::new();
    for (sub, files) in tls.pairs() {
        let key = match sub.as_str() {
            "" => format!("frontend[{i}].tls"),
            s => format!("frontend[{i}].tls.{s}"),
        };
        match load_pair(&config.resolve(&files.cert), &config.resolve(&files.key)) {
            Ok(c) => loaded.push(Arc::new(c)),
            Err(e) => errors.push(ConfigError {
                key,
                line: None,
                message: e.to_string(),
            }),
        }
    }
    if loaded.len() != tls.pairs().len() {
        return None;
    }
    let resolver = SniResolver::new(loaded);
    match frontend_server_config(resolver.clone()) {
        Ok(config) => Some(FrontendTlsState { config, resolver }),
        Err(e) => {
            errors.push(ConfigError {
                key: format!("frontend[{i}].tls"),
                line: None,
                message: e.to_string(),
            });
            None
        }
    }
}

/// The client config of pool `i`, when it has https:// backends.
fn pool_backend_tls(
    config: &Config,
    i: usize,
    errors: &mut Vec<ConfigError>,
) -> Option<BackendTls> {
    let pool = &config.file.pool[i];
    let any_https = pool
        .backend
        .iter()
        .any(|b| BackendUrl::parse(&b.url).is_ok_and(|u| u.tls));
    if !any_https {
        return None;
    }
    let t = &pool.tls;
    let ca =
        t.ca.clone()
            .or_else(|| config.file.qlik_certs.as_ref().map(|q| q.ca.clone()))
            .map(|p| config.resolve(&p));
    let identity = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some((config.resolve(c), config.resolve(k))),
        _ => None,
    };
    let trust = match (&ca, t.verify) {
        (_, false) => Trust::Anything,
        (Some(ca), true) => Trust::CaFile(ca),
        (None, true) => Trust::SystemRoots,
    };
    let spec = BackendTlsSpec {
        trust,
        server_name: t.server_name.as_deref(),
        identity: identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    };
    match BackendTls::build(&spec) {
        Ok(b) => Some(b),
        Err((key, e)) => {
            // The default ca comes from [qlik_certs]: name that key when it is the one read.
            let key = match (key, &t.ca) {
                (BackendTlsKey::Ca, None) if t.verify && config.file.qlik_certs.is_some() => {
                    "qlik_certs.ca".to_string()
                }
                (k, _) => format!("pool[{i}].tls.{}", k.as_str()),
            };
            errors.push(ConfigError {
                key,
                line: None,
                message: e.to_string(),
            });
            None
        }
    }
}

/// Opens the access log the config asks for; a file that cannot be opened is a config error.
fn open_access_log(
    config: &Config,
    shared: &Shared,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<AccessLog>> {
    let cfg = config.file.access_log.as_ref()?;
    match AccessLog::open(
        cfg,
        &config.dir,
        shared.metrics.access_log_dropped_total.clone(),
    ) {
        Ok(log) => Some(Arc::new(log)),
        Err(e) => {
            errors.push(ConfigError {
                key: "access_log.path".into(),
                line: None,
                message: format!(
                    "cannot open {} for appending: {e}",
                    config.resolve(&cfg.path).display()
                ),
            });
            None
        }
    }
}

/// Runs the active health checks of whatever snapshot `runtime` serves at each turn, until
/// `shutdown`.
pub fn spawn_health_checks(
    runtime: SharedSnapshot,
    shared: &Shared,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    crate::balance::health::spawn_health_checks(
        move || runtime.load().check_targets(),
        shared.metrics.clone(),
        shutdown,
    )
}

pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;
