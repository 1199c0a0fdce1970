//! Frontend certificate files watched on disk. A changed pair is loaded into the serving
//! snapshot's resolver, so new handshakes get it and open connections and tunnels keep theirs.
//! Certificate and key are usually replaced one after the other: a pair that does not load is
//! tried again on the next change notice, and reported as a failed reload only when no further
//! change came within `SETTLE`; until then, and after, the old pair keeps serving.

use super::triggers::{WatchError, DEBOUNCE};
use super::{ReloadOutcome, Reloader, Trigger};
use crate::config::{ConfigError, ConfigErrors};
use crate::snapshot::Snapshot;
use crate::tls::frontend::load_pair;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How long a pair that does not load may wait for the rest of its replacement.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What a look at the certificate files found.
pub enum CertificateCheck {
    /// Every pair on disk is the one served.
    Unchanged,
    /// A pair did not load and `report` was false: the caller may wait for more changes.
    Pending,
    /// Changed pairs were swapped in, or a failure was reported.
    Reported(Arc<ReloadOutcome>),
}

impl Reloader {
    /// Loads each frontend pair whose files changed since it was loaded into the serving
    /// snapshot. A pair that fails keeps its old one; with `report` the failure is counted and
    /// kept like a failed reload, unless it is exactly `reported` (the same bad files as last time).
    pub async fn reload_certificates(
        &self,
        report: bool,
        reported: Option<&[ConfigError]>,
    ) -> CertificateCheck {
        let _one_at_a_time = self.serial.lock().await;
        let snapshot = self.runtime.load_full();
        let serving = snapshot.clone();
        let Ok((swapped, errors)) =
            tokio::task::spawn_blocking(move || swap_changed(&serving)).await
        else {
            return CertificateCheck::Unchanged;
        };
        if swapped > 0 {
            snapshot.publish_certificate_expiry(&self.shared.metrics);
        }
        let result = if !errors.is_empty() {
            if !report {
                return CertificateCheck::Pending;
            }
            if swapped == 0 && reported == Some(errors.as_slice()) {
                return CertificateCheck::Unchanged;
            }
            Err(ConfigErrors {
                file: self.path.clone(),
                errors,
            })
        } else if swapped > 0 {
            Ok(snapshot.config.hash.clone())
        } else {
            return CertificateCheck::Unchanged;
        };
        CertificateCheck::Reported(self.record(Trigger::Certificate, result))
    }
}

/// Swaps in every changed pair that loads; returns how many, and what did not load.
fn swap_changed(snapshot: &Snapshot) -> (usize, Vec<ConfigError>) {
    let mut swapped = 0;
    let mut errors = Vec::new();
    for (i, fe) in snapshot.frontends.iter().enumerate() {
        let Some(tls) = &fe.tls else { continue };
        let serving = tls.resolver.certs();
        let mut next = Vec::with_capacity(serving.len());
        let mut changed = false;
        for (j, cert) in serving.iter().enumerate() {
            if cert.is_current() {
                next.push(cert.clone());
                continue;
            }
            match load_pair(&cert.cert_path, &cert.key_path) {
                Ok(fresh) => {
                    info!(frontend = %fe.cfg.name, cert = %cert.cert_path.display(), names = ?fresh.names, "certificate replaced");
                    next.push(Arc::new(fresh));
                    changed = true;
                }
                Err(e) => {
                    let key = if serving.len() == 1 && fe_is_single(fe) {
                        format!("frontend[{i}].tls")
                    } else {
                        format!("frontend[{i}].tls.certs[{j}]")
                    };
                    errors.push(ConfigError {
                        key,
                        line: None,
                        message: format!("{e}; the previous certificate keeps serving"),
                    });
                    next.push(cert.clone());
                }
            }
        }
        if changed {
            tls.resolver.replace(next);
            swapped += 1;
        }
    }
    (swapped, errors)
}

fn fe_is_single(fe: &crate::snapshot::FrontendSnapshot) -> bool {
    fe.cfg.tls.as_ref().is_some_and(|t| t.certs.is_empty())
}

/// The folders holding the serving snapshot's certificate and key files.
fn watched_dirs(snapshot: &Snapshot) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for fe in &snapshot.frontends {
        let Some(tls) = &fe.tls else { continue };
        for cert in tls.resolver.certs().iter() {
            for file in [&cert.cert_path, &cert.key_path] {
                if let Some(dir) = file.parent() {
                    dirs.insert(if dir.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        dir.to_path_buf()
                    });
                }
            }
        }
    }
    dirs
}

/// Watches the folders of every frontend's certificate files (folders, as for the config file:
/// tools replace files by renaming) until `stop`, following the folders of each new config.
pub fn reload_on_certificate_change(
    reloader: Arc<Reloader>,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if !matches!(event.kind, EventKind::Access(_)) {
            let _ = tx.send(());
        }
    })
    .map_err(|source| WatchError::Notify {
        path: "certificate folders".into(),
        source,
    })?;
    let mut watcher = watcher;
    // Watching before this returns: a file replaced right after is not missed.
    let config_changes = reloader.shared.config_changes();
    let mut watching = BTreeSet::new();
    follow(
        &mut watcher,
        &mut watching,
        watched_dirs(&reloader.runtime.load()),
    );
    tokio::spawn(watch_loop(
        reloader,
        (watcher, watching),
        rx,
        config_changes,
        stop,
    ));
    Ok(())
}

async fn watch_loop(
    reloader: Arc<Reloader>,
    (mut watcher, mut watching): (notify::RecommendedWatcher, BTreeSet<PathBuf>),
    mut rx: UnboundedReceiver<()>,
    mut config_changes: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
) {
    // The failure reported last: the same bad file is not reported again at each notice.
    let mut last_reported: Option<Vec<ConfigError>> = None;
    loop {
        tokio::select! {
            got = rx.recv() => if got.is_none() { return },
            _ = config_changes.changed() => {
                follow(&mut watcher, &mut watching, watched_dirs(&reloader.runtime.load()));
                last_reported = None;
                continue;
            }
            _ = stop.cancelled() => return,
        }
        let mut report = false;
        loop {
            if !quiet_for(&mut rx, DEBOUNCE, &stop).await {
                return;
            }
            match reloader
                .reload_certificates(report, last_reported.as_deref())
                .await
            {
                CertificateCheck::Pending => {
                    // Half of a replacement, perhaps: wait for the other file a while.
                    match tokio::time::timeout(SETTLE, rx.recv()).await {
                        Ok(None) => return,
                        Ok(Some(())) => {}
                        Err(_) => report = true,
                    }
                }
                CertificateCheck::Reported(outcome) => {
                    last_reported = (!outcome.ok).then(|| outcome.errors.clone());
                    break;
                }
                CertificateCheck::Unchanged => break,
            }
        }
    }
}

/// Waits until no notice came for `quiet`; false when the watch is over.
async fn quiet_for(
    rx: &mut UnboundedReceiver<()>,
    quiet: Duration,
    stop: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            got = rx.recv() => if got.is_none() { return false },
            _ = tokio::time::sleep(quiet) => return true,
            _ = stop.cancelled() => return false,
        }
    }
}

/// Watches exactly `dirs` from now on.
fn follow(
    watcher: &mut notify::RecommendedWatcher,
    watching: &mut BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
) {
    for gone in watching.difference(&dirs) {
        let _ = watcher.unwatch(gone);
    }
    for new in dirs.difference(watching) {
        if let Err(e) = watcher.watch(new, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %new.display(), error = %e, "cannot watch certificate folder; replaced certificates are loaded at the next reload");
        }
    }
    *watching = dirs;
}
