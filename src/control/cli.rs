//! `qlik-lb license monitor|release --once`.

use std::path::Path;
use std::process::ExitCode;

pub fn monitor_once(config: &Path) -> ExitCode {
    let _ = config;
    eprintln!("qlik-lb license monitor: not wired yet");
    ExitCode::from(2)
}

pub fn release_once(config: &Path, dry_run: bool) -> ExitCode {
    let _ = (config, dry_run);
    eprintln!("qlik-lb license release: not wired yet");
    ExitCode::from(2)
}
