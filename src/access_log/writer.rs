//! The writer thread: takes lines off the queue in batches, formats them, and writes each batch
//! with one `write` (whole lines only, so two writers appending to one file never split a line).

use super::format;
use super::Entry;
use crate::config::AccessLogFormat;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use tracing::warn;

/// A batch is written out at this size even if more lines are waiting.
const BATCH_BYTES: usize = 64 * 1024;

/// How long the writer waits for more lines after writing a batch before it blocks.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

// Lines travel by value: the bounded queue's slots are allocated once, so a line costs no
// allocation of its own on the request path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
    Line(Entry),
    /// Nothing to write: wakes the writer to honour a reopen now.
    Reopen,
}

pub(super) enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Sink {
    pub(super) fn stderr() -> Sink {
        Sink::Stderr
    }

    pub(super) fn file(path: PathBuf) -> io::Result<Sink> {
        let file = open_append(&path)?;
        Ok(Sink::File { path, file })
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open_append(path) {
                Ok(f) => *file = f,
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot reopen the access log; writing to the old file")
                }
            }
        }
    }
}

/// Opens for appending, creating the file and its folder. A FIFO without a reader is refused
/// rather than waited on.
fn open_append(path: &PathBuf) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    set_blocking(&file)?;
    Ok(file)
}

pub(super) fn set_blocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns; only the O_NONBLOCK flag changes.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(super) fn spawn(
    rx: Receiver<Msg>,
    mut sink: Sink,
    format: AccessLogFormat,
    reopen: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("qlb-access-log".into())
        .spawn(move || {
            let mut batch = Batch {
                out: Vec::with_capacity(BATCH_BYTES),
                lines: 0,
                failing: false,
                done,
            };
            let mut clock = format::Rfc3339::new();
            let mut next = rx.recv().ok();
            while let Some(msg) = next {
                if reopen.swap(false, Ordering::AcqRel) {
                    batch.flush(&mut sink);
                    sink.reopen();
                }
                if let Msg::Line(entry) = msg {
                    match format {
                        AccessLogFormat::Json => format::json(&entry, &mut clock, &mut batch.out),
                        AccessLogFormat::Combined => format::combined(&entry, &mut batch.out),
                    }
                    batch.lines += 1;
                }
                if batch.out.len() >= BATCH_BYTES {
                    batch.flush(&mut sink);
                }
                next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Disconnected) => None,
                    Err(TryRecvError::Empty) => {
                        batch.flush(&mut sink);
                        // Linger before blocking: under load the queue refills meanwhile, so a
                        // request never finds the writer parked and never pays its wake-up (a
                        // futex call and a context switch) per line.
                        std::thread::sleep(LINGER);
                        match rx.try_recv() {
                            Ok(m) => Some(m),
                            Err(TryRecvError::Empty) => rx.recv().ok(),
                            Err(TryRecvError::Disconnected) => None,
                        }
                    }
                };
            }
            batch.flush(&mut sink);
        })
        .map(|_| ())
}

/// Formatted lines waiting for one write.
struct Batch {
    out: Vec<u8>,
    lines: u64,
    /// A failing file is reported once until it works again.
    failing: bool,
    done: Arc<AtomicU64>,
}

impl Batch {
    fn flush(&mut self, sink: &mut Sink) {
        if self.out.is_empty() {
            return;
        }
        match sink.write(&self.out) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(error = %e, "cannot write the access log; lines are lost until it works again");
            }
            Err(_) => {}
        }
        self.out.clear();
        self.done
            .fetch_add(std::mem::take(&mut self.lines), Ordering::Release);
    }
}
