//! What sets a reload off besides the API: SIGHUP, and the config file changing on disk; and
//! SIGUSR1, which only reopens the access log (logrotate renames the file, then signals).
//!
//! The watcher looks at the file's folder, not the file: editors and config management tools
//! often save by writing a new file and renaming it over the old one, which a watch on the old
//! file's inode would never see.

use super::{Reloader, Trigger};
use crate::snapshot::SharedSnapshot;
use notify::{EventKind, RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Quiet time after the last change notice before reloading: one save is several events.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot install the SIGUSR1 handler: {0}")]
    Reopen(std::io::Error),
    #[error("cannot watch {path} for changes: {source}")]
    Notify { path: String, source: notify::Error },
}

/// Reloads on every SIGHUP until `stop`.
pub fn reload_on_sighup(
    reloader: Arc<Reloader>,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                _ = stop.cancelled() => return,
            }
            info!("SIGHUP: reloading the config");
            reloader.reload(Trigger::Signal).await;
        }
    });
    Ok(())
}

/// Reopens the serving access log file at its path on every SIGUSR1 until `stop`; no reload.
pub fn reopen_access_log_on_sigusr1(
    runtime: SharedSnapshot,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(WatchError::Reopen)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = usr1.recv() => if got.is_none() { return },
                _ = stop.cancelled() => return,
            }
            if let Some(log) = &runtime.load().access_log {
                info!("SIGUSR1: reopening the access log");
                log.reopen();
            }
        }
    });
    Ok(())
}

/// Reloads when the config file is written, replaced or renamed into place, debounced, until
/// `stop`. Does nothing for an instance not started from a file.
pub fn reload_on_file_change(
    reloader: Arc<Reloader>,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    let Some(path) = reloader.path().cloned() else {
        return Ok(());
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = tx.send(());
        }
    })
    .map_err(|source| WatchError::Notify {
        path: dir.display().to_string(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify {
            path: dir.display().to_string(),
            source,
        })?;
    tokio::spawn(async move {
        // The watcher stops when dropped; it lives as long as this task.
        let _watcher = watcher;
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = stop.cancelled() => return,
            }
            loop {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { return },
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    _ = stop.cancelled() => return,
                }
            }
            let Some(outcome) = reloader.reload_if_changed(Trigger::File).await else {
                continue;
            };
            info!(file = %path.display(), "config file changed");
            if !outcome.ok {
                warn!(file = %path.display(), "the changed config file was not applied");
            }
        }
    });
    Ok(())
}
