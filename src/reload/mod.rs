//! Hot reload: load and validate the file, bind moved listeners, build the new runtime — all off
//! the hot path — then swap it in with one `arc-swap` store. Any error keeps the old config
//! serving; the outcome is counted, logged and kept for the status API. Reloads run one at a time.

pub mod certificates;
pub mod listeners;
pub mod triggers;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::snapshot::{Shared, SharedSnapshot, Snapshot};
use arc_swap::{ArcSwap, ArcSwapOption};
use listeners::{ListenerSpec, Listeners};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{error, info};

/// What set a reload off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Start,
    Signal,
    File,
    Api,
    /// A frontend's certificate or key file changed on disk.
    Certificate,
}

/// The result of the last load or reload, as the status API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub trigger: Trigger,
    pub at: chrono::DateTime<chrono::Utc>,
    pub ok: bool,
    /// sha256 of the file that is serving after this reload.
    pub hash: Option<String>,
    /// Every problem found, with key path and line where known.
    pub errors: Vec<ConfigError>,
}

/// Builds the listeners a config asks for (front door, admin, and any other role).
pub type ListenerSpecs = Box<dyn Fn(&Config) -> Vec<ListenerSpec> + Send + Sync>;

pub struct Reloader {
    path: Option<PathBuf>,
    runtime: SharedSnapshot,
    shared: Arc<Shared>,
    listeners: Arc<Listeners>,
    specs: ListenerSpecs,
    /// The admin bearer token of the serving config.
    admin_token: Arc<ArcSwapOption<String>>,
    serial: tokio::sync::Mutex<()>,
    last: ArcSwap<ReloadOutcome>,
}

impl Reloader {
    pub fn new(
        runtime: SharedSnapshot,
        shared: Arc<Shared>,
        listeners: Arc<Listeners>,
        specs: ListenerSpecs,
        admin_token: Arc<ArcSwapOption<String>>,
    ) -> Reloader {
        let cfg = runtime.load().config.clone();
        Reloader {
            path: cfg.path.clone(),
            last: ArcSwap::from_pointee(ReloadOutcome {
                trigger: Trigger::Start,
                at: chrono::Utc::now(),
                ok: true,
                hash: Some(cfg.hash.clone()),
                errors: Vec::new(),
            }),
            runtime,
            shared,
            listeners,
            specs,
            admin_token,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// The config file reloads read, if the instance was started from one.
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    pub fn last(&self) -> Arc<ReloadOutcome> {
        self.last.load_full()
    }

    pub fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// The listeners the given config asks for.
    pub fn specs(&self, cfg: &Config) -> Vec<ListenerSpec> {
        (self.specs)(cfg)
    }

    /// Reloads the config file now; waits for a reload already running to finish first.
    pub async fn reload(&self, trigger: Trigger) -> Arc<ReloadOutcome> {
        let _one_at_a_time = self.serial.lock().await;
        self.reload_locked(trigger).await
    }

    async fn reload_locked(&self, trigger: Trigger) -> Arc<ReloadOutcome> {
        let result = self.try_reload().await;
        self.record(trigger, result)
    }

    /// Counts, logs and keeps the outcome of a reload (of the file, or of certificates alone).
    fn record(&self, trigger: Trigger, result: Result<String, ConfigErrors>) -> Arc<ReloadOutcome> {
        let outcome = match result {
            Ok(hash) => {
                let m = &self.shared.metrics;
                m.config_reloads_total.with_label_values(&["ok"]).inc();
                m.config_last_reload_success_timestamp_seconds
                    .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
                info!(?trigger, %hash, "config reloaded");
                ReloadOutcome {
                    trigger,
                    at: chrono::Utc::now(),
                    ok: true,
                    hash: Some(hash),
                    errors: Vec::new(),
                }
            }
            Err(errors) => {
                self.shared
                    .metrics
                    .config_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                // A good reload opens the log anew; a failed one still reopens the serving log,
                // so logrotate's rename + SIGHUP works with a broken file too.
                if let Some(log) = &self.runtime.load().access_log {
                    log.reopen();
                }
                error!(
                    ?trigger,
                    "config reload failed; the previous config keeps serving:\n{errors}"
                );
                ReloadOutcome {
                    trigger,
                    at: chrono::Utc::now(),
                    ok: false,
                    hash: Some(self.runtime.load().config.hash.clone()),
                    errors: errors.errors,
                }
            }
        };
        let outcome = Arc::new(outcome);
        self.last.store(outcome.clone());
        outcome
    }

    /// Reloads unless the file holds exactly the serving config and the last reload went well:
    /// a change notice for it (an editor saving twice, a touch) needs no reload. Returns `None`
    /// when nothing was done.
    pub async fn reload_if_changed(&self, trigger: Trigger) -> Option<Arc<ReloadOutcome>> {
        let _one_at_a_time = self.serial.lock().await;
        if self.file_unchanged() {
            return None;
        }
        Some(self.reload_locked(trigger).await)
    }

    fn file_unchanged(&self) -> bool {
        let Some(path) = &self.path else { return true };
        let Ok(bytes) = std::fs::read(path) else {
            return false;
        };
        let hash: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.last().ok && hash == self.runtime.load().config.hash
    }

    async fn try_reload(&self) -> Result<String, ConfigErrors> {
        let Some(path) = self.path.clone() else {
            return Err(one_error(
                None,
                "",
                "this instance was not started from a config file; there is nothing to reload",
            ));
        };
        let file = Some(path.clone());
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| one_error(file.clone(), "", &format!("loading stopped: {e}")))??;
        if config.file.cluster != self.runtime.load().config.file.cluster {
            // The etcd session, the member name and the leader's term belong to the process;
            // swapping them under running jobs and drains is not something a reload can do
            // atomically, so the file is refused rather than half applied.
            return Err(one_error(
                file,
                "cluster",
                "[cluster] cannot change on reload; the running settings stay — restart the instance (one at a time) to apply them",
            ));
        }
        let token = crate::config::admin_token::load_token(&config)?;
        let plan = self
            .listeners
            .prepare((self.specs)(&config))
            .await
            .map_err(|failures| ConfigErrors {
                file: file.clone(),
                errors: failures
                    .into_iter()
                    .map(|f| ConfigError {
                        key: f.config_key,
                        line: None,
                        message: format!("cannot listen on {}: {}", f.addr, f.source),
                    })
                    .collect(),
            })?;
        let shared = self.shared.clone();
        let runtime = tokio::task::spawn_blocking(move || Snapshot::build(config, &shared))
            .await
            .map_err(|e| one_error(file.clone(), "", &format!("building stopped: {e}")))??;
        let hash = runtime.config.hash.clone();
        self.runtime.store(Arc::new(runtime));
        self.shared.limits_changed();
        self.shared.config_swapped();
        self.listeners.commit(plan);
        self.admin_token.store(token.map(Arc::new));
        Ok(hash)
    }
}

fn one_error(file: Option<PathBuf>, key: &str, message: &str) -> ConfigErrors {
    ConfigErrors {
        file,
        errors: vec![ConfigError {
            key: key.to_string(),
            line: None,
            message: message.to_string(),
        }],
    }
}
