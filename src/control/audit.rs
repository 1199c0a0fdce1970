//! The release audit log: one JSON line per decision, appended, flushed and synced to disk before
//! the run goes on — so after a crash the log shows every DELETE that may have been sent.
//! The open log also holds an exclusive lock, so two release runs (in one process or two) never overlap.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub time: String,
    pub run_id: String,
    pub license_type: String,
    pub allocation_id: String,
    /// `DIR\userid`, or empty when the QRS gave no user.
    pub user: String,
    pub last_used: String,
    pub days_unused: Option<i64>,
    pub decision: String,
    pub reason: String,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit log {path} is locked: another license release run is in progress")]
    Busy { path: String },
}

pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    /// Opens (creating folders and file) for appending and takes the run lock, without waiting.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let io = |source| AuditError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; the lock goes away with the descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.kind() == std::io::ErrorKind::WouldBlock {
                AuditError::Busy {
                    path: path.display().to_string(),
                }
            } else {
                io(err)
            });
        }
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line and waits until it is on disk.
    pub fn append(&mut self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).expect("audit records always serialize");
        line.push(b'\n');
        let io = |source| AuditError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.flush().map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// Reads every record back (for tests and tooling); a line that is not a record is an error.
pub fn read_all(path: &Path) -> Result<Vec<AuditRecord>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}
