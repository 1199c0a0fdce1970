//! `qlik-lb license monitor|release --once`.

use super::monitor::run_monitor;
use super::qrs_client::QrsClient;
use super::release::ReleaseRun;
use crate::config::{Config, ReleaseConfig};
use crate::metrics::Metrics;
use chrono::Utc;
use std::path::Path;
use std::process::ExitCode;

/// Exit 2: the config cannot be used (unreadable, invalid, missing sections or certificates).
fn setup(config_path: &Path) -> Result<(Config, QrsClient, tokio::runtime::Runtime), ExitCode> {
    let config = Config::load(config_path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    let client = QrsClient::from_config(&config).map_err(|e| {
        eprintln!("{}: {e}", config_path.display());
        ExitCode::from(2)
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(2)
        })?;
    Ok((config, client, runtime))
}

pub fn monitor_once(config_path: &Path) -> ExitCode {
    let (_, client, runtime) = match setup(config_path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match runtime.block_on(run_monitor(&client, &Metrics::new())) {
        Ok(snapshot) => {
            print!("{}", snapshot.table());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("license monitor failed: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn release_once(config_path: &Path, dry_run: bool) -> ExitCode {
    let (config, client, runtime) = match setup(config_path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(release) = config.file.license_release() else {
        eprintln!(
            "{}: the config has no [license.release] section",
            config_path.display()
        );
        return ExitCode::from(2);
    };
    let report = runtime.block_on(release_run(
        &config,
        release,
        &client,
        dry_run || release.dry_run,
    ));
    for d in &report.decisions {
        println!(
            "{:<40} {:<12} {:>5} {:<14} {}",
            if d.user.is_empty() {
                "(no user)"
            } else {
                &d.user
            },
            d.license_type.as_str(),
            d.days_unused
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            d.decision.as_str(),
            d.reason
        );
    }
    let counts: Vec<String> = report
        .summary
        .counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "run {}{}: {}",
        report.summary.run_id,
        if report.summary.dry_run {
            " (dry run)"
        } else {
            ""
        },
        if counts.is_empty() {
            "nothing to release".into()
        } else {
            counts.join(", ")
        }
    );
    if let Some(reason) = &report.summary.stop_reason {
        eprintln!("license release stopped: {reason}");
    }
    ExitCode::from(report.exit_code())
}

async fn release_run(
    config: &Config,
    release: &ReleaseConfig,
    client: &QrsClient,
    dry_run: bool,
) -> super::release::ReleaseReport {
    let audit_path = config.resolve(&release.audit_log);
    ReleaseRun {
        client,
        config: release,
        audit_path: &audit_path,
        metrics: &Metrics::new(),
        now: Utc::now(),
        dry_run,
        // An operator's one-off run answers to the operator, not to a cluster's leader.
        fence: &super::leadership::NoFence,
    }
    .run()
    .await
}
