//! The license monitor against the simulated QRS: gauges match the QRS's overview, a failed run
//! keeps the last good values, and the scheduled jobs run inside the process.

mod license_support;

use license_support::*;
use qlik_lb::config::Config;
use qlik_lb::control::jobs::{spawn_jobs, ConfigFeed};
use qlik_lb::control::monitor::run_monitor;
use qlik_lb::control::{LicenseStatus, LicenseType};
use qlik_lb::metrics::Metrics;
use qlik_lb::sim::qrs::SimUser;
use serde_json::Value;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/qlik/fixtures/accesstypeoverview.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The value of one sample line of the exposition, e.g. `qlb_license_entitled{license_type="analyzer"}`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
        .parse()
        .unwrap()
}

fn assert_gauges_match(text: &str, fx: &Value) {
    for (label, key) in [
        ("professional", "professionalAccess"),
        ("analyzer", "analyzerAccess"),
    ] {
        for (metric, field) in [
            ("entitled", "total"),
            ("allocated", "allocated"),
            ("used", "used"),
            ("available", "available"),
            ("quarantined", "quarantined"),
            ("excess", "excess"),
        ] {
            let series = format!("qlb_license_{metric}{{license_type=\"{label}\"}}");
            assert_eq!(
                sample(text, &series),
                fx[key][field].as_f64().unwrap(),
                "{series}"
            );
        }
    }
    for (kind, field) in [
        ("allocated", "allocatedMinutes"),
        ("used", "usedMinutes"),
        ("unavailable", "unavailableMinutes"),
    ] {
        let series = format!("qlb_license_analyzer_capacity_seconds{{kind=\"{kind}\"}}");
        assert_eq!(
            sample(text, &series),
            fx["analyzerTimeAccess"][field].as_f64().unwrap() * 60.0,
            "{series}: Qlik's minutes exported as seconds"
        );
    }
    assert_eq!(
        sample(text, "qlb_license_tokens{kind=\"total\"}"),
        fx["totalTokens"].as_f64().unwrap()
    );
    assert_eq!(
        sample(text, "qlb_license_tokens{kind=\"available\"}"),
        fx["availableTokens"].as_f64().unwrap()
    );
}

#[tokio::test]
async fn gauges_match_the_fixture_and_survive_a_failed_run() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let fx = fixture();
        site.qrs.serve_overview(Some(fx.clone()));
        let metrics = Metrics::new();
        let snapshot = run_monitor(&site.client(), &metrics).await.unwrap();
        assert_eq!(snapshot.professional.available, 20);
        assert_eq!(snapshot.analyzer.allocated, 4);
        let text = metrics.render();
        assert_gauges_match(&text, &fx);
        assert_eq!(
            sample(
                &text,
                "qlb_job_runs_total{job=\"license_monitor\",result=\"ok\"}"
            ),
            1.0
        );
        assert!(
            sample(
                &text,
                "qlb_job_last_success_timestamp_seconds{job=\"license_monitor\"}"
            ) > 1.7e9
        );

        site.qrs.set_garbage_json(true);
        let err = run_monitor(&site.client(), &metrics).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("GET /qrs/license/accesstypeoverview"),
            "{err}"
        );
        site.qrs.stop().await;
        run_monitor(&site.client(), &metrics).await.unwrap_err();
        let text = metrics.render();
        assert_gauges_match(&text, &fx);
        assert_eq!(
            sample(
                &text,
                "qlb_job_runs_total{job=\"license_monitor\",result=\"error\"}"
            ),
            2.0
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gauges_follow_the_allocations() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        for i in 0..3 {
            give(
                &site.qrs,
                SimUser::new("LAB", &format!("p{i}")),
                LicenseType::Professional,
                days_ago(i),
            );
        }
        give(
            &site.qrs,
            SimUser::new("LAB", "a"),
            LicenseType::Analyzer,
            days_ago(10),
        );
        let metrics = Metrics::new();
        let s = run_monitor(&site.client(), &metrics).await.unwrap();
        assert_eq!(
            (
                s.professional.allocated,
                s.professional.available,
                s.professional.used
            ),
            (3, 97, 1)
        );
        assert_eq!((s.analyzer.allocated, s.analyzer.available), (1, 99));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn jobs_run_at_start_fill_the_status_and_stop_on_shutdown() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        site.qrs.serve_overview(Some(fixture()));
        let old = give(
            &site.qrs,
            SimUser::new("LAB", "old"),
            LicenseType::Professional,
            chrono::Utc::now() - chrono::Duration::days(90),
        );
        // The job uses the wall clock; so does the simulator here.
        site.qrs.set_now(None);
        let mut config: Config = site.config.clone();
        config
            .file
            .license
            .as_mut()
            .unwrap()
            .release
            .as_mut()
            .unwrap()
            .dry_run = true;
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(LicenseStatus::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let jobs = spawn_jobs(
            ConfigFeed::fixed(Arc::new(config)),
            metrics.clone(),
            status.clone(),
            shutdown.clone(),
        );
        assert_eq!(jobs.len(), 2);

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let v = status.view();
            if v.license.is_some() && v.last_release.is_some() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobs did not run at start: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let v = status.view();
        assert_eq!(v.license.unwrap().professional.total, 25);
        let release = v.last_release.unwrap();
        assert!(release.dry_run);
        assert_eq!(release.counts.get("would_release"), Some(&1));
        assert!(site.qrs.allocation(&old).is_some());
        let json = serde_json::to_value(status.view()).unwrap();
        assert_eq!(json["last_release"]["outcome"], "ok");

        shutdown.cancel();
        for job in jobs {
            timeout(Duration::from_secs(5), job)
                .await
                .expect("job stops on shutdown")
                .unwrap();
        }
    })
    .await
    .unwrap();
}

#[test]
fn monitor_once_prints_and_exits_by_outcome() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let site = rt.block_on(site(empty()));
    let path = site.config_path.clone();
    let run = move || {
        let path = path.clone();
        std::thread::spawn(move || qlik_lb::control::cli::monitor_once(&path))
            .join()
            .unwrap()
    };
    assert_eq!(run(), ExitCode::SUCCESS);
    assert_eq!(
        site.qrs
            .request_count("GET", "/qrs/license/accesstypeoverview"),
        1
    );
    rt.block_on(site.qrs.stop());
    assert_eq!(run(), ExitCode::from(1));
}
