//! License release against a QRS that misbehaves: it must never cost anyone a license.

mod license_support;

use license_support::*;
use qlik_lb::control::audit;
use qlik_lb::control::release::{DecisionKind, Outcome};
use qlik_lb::control::LicenseType;
use qlik_lb::sim::qrs::SimUser;
use std::collections::BTreeSet;
use std::process::ExitCode;
use tokio::time::timeout;

#[tokio::test]
async fn a_qrs_that_ignores_the_filter_releases_only_rows_older_than_the_cutoff() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let old = give(
            &site.qrs,
            SimUser::new("LAB", "old"),
            LicenseType::Professional,
            days_ago(31),
        );
        let recent = give(
            &site.qrs,
            SimUser::new("LAB", "recent"),
            LicenseType::Professional,
            days_ago(2),
        );
        let boundary = give(
            &site.qrs,
            SimUser::new("LAB", "edge"),
            LicenseType::Analyzer,
            days_ago(29),
        );
        site.qrs.set_ignore_filter(true);
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(site.deleted_ids(), vec![old]);
        assert!(site.qrs.allocation(&recent).is_some() && site.qrs.allocation(&boundary).is_some());
        assert_eq!(report.decisions.len(), 1);
        assert_eq!(report.summary.outcome, Outcome::Ok);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_500_on_one_delete_leaves_the_others_released_and_the_error_audited() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let ids: Vec<String> = (0..4)
            .map(|i| {
                let kind = if i < 2 {
                    LicenseType::Professional
                } else {
                    LicenseType::Analyzer
                };
                give(
                    &site.qrs,
                    SimUser::new("LAB", &format!("u{i}")),
                    kind,
                    days_ago(40),
                )
            })
            .collect();
        site.qrs.fail_deletes_of(&[&ids[1]]);
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(
            site.deleted_ids().len(),
            4,
            "the run goes on after the failed row, into the next type"
        );
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(site.qrs.allocation(id).is_some(), i == 1, "{id}");
        }
        let lines = audit::read_all(&site.audit_path()).unwrap();
        let failed = lines.iter().find(|l| l.allocation_id == ids[1]).unwrap();
        assert_eq!(failed.decision, "error");
        assert!(failed.reason.contains("500"), "{}", failed.reason);
        assert_eq!(lines.iter().filter(|l| l.decision == "released").count(), 3);
        assert_eq!(report.summary.outcome, Outcome::RowErrors);
        assert_eq!(report.exit_code(), 1);
        assert!(site
            .metrics
            .render()
            .contains(r#"qlb_job_runs_total{job="license_release",result="error"} 1"#));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn qrs_down_fails_the_run_cleanly_and_the_next_run_retries() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let id = give(
            &site.qrs,
            SimUser::new("LAB", "old"),
            LicenseType::Professional,
            days_ago(40),
        );
        site.qrs.stop().await;
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(report.summary.outcome, Outcome::Stopped);
        let reason = report.summary.stop_reason.clone().unwrap();
        assert!(
            reason.contains("cannot connect")
                && reason.contains("/qrs/license/professionalaccesstype/full"),
            "{reason}"
        );
        assert!(report.decisions.is_empty());
        assert_eq!(report.exit_code(), 1);

        site.qrs.restart().await.unwrap();
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(report.summary.outcome, Outcome::Ok);
        assert_eq!(site.deleted_ids(), vec![id]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn garbage_json_is_a_clear_error_and_nothing_is_released() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        give(
            &site.qrs,
            SimUser::new("LAB", "old"),
            LicenseType::Professional,
            days_ago(40),
        );
        site.qrs.set_garbage_json(true);
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(report.summary.outcome, Outcome::Stopped);
        let reason = report.summary.stop_reason.unwrap();
        assert!(
            reason.contains("not the expected JSON")
                && reason.contains("GET /qrs/license/professionalaccesstype/full"),
            "{reason}"
        );
        assert_eq!(site.qrs.method_count("DELETE"), 0);
        assert_eq!(site.qrs.allocations().len(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn more_candidates_than_the_cap_releases_nothing_and_says_why() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let mut ids = BTreeSet::new();
        for i in 0..3 {
            ids.insert(give(
                &site.qrs,
                SimUser::new("LAB", &format!("p{i}")),
                LicenseType::Professional,
                days_ago(40),
            ));
            ids.insert(give(
                &site.qrs,
                SimUser::new("LAB", &format!("a{i}")),
                LicenseType::Analyzer,
                days_ago(40),
            ));
        }
        let mut cfg = site.release_config();
        // Each type alone is within the cap; both together are not.
        cfg.max_releases_per_run = 5;
        let report = site.release(&cfg, now(), false).await;
        assert_eq!(site.qrs.method_count("DELETE"), 0);
        assert_eq!(report.summary.outcome, Outcome::Stopped);
        let reason = report.summary.stop_reason.clone().unwrap();
        assert!(
            reason.contains("cap exceeded") && reason.contains("6") && reason.contains("5"),
            "{reason}"
        );
        assert!(report
            .decisions
            .iter()
            .all(|d| d.decision == DecisionKind::Error && d.reason == "cap exceeded"));
        let audited: BTreeSet<String> = audit::read_all(&site.audit_path())
            .unwrap()
            .into_iter()
            .map(|l| l.allocation_id)
            .collect();
        assert_eq!(audited, ids);

        cfg.max_releases_per_run = 6;
        let report = site.release(&cfg, now(), false).await;
        assert_eq!(report.summary.counts.get("released"), Some(&6));
    })
    .await
    .unwrap();
}

/// `license release --once` exit codes: 0 clean, 1 stopped or row errors, 2 unusable config.
#[test]
fn release_once_exit_codes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let site = rt.block_on(site(empty()));
    rt.block_on(async {
        give(
            &site.qrs,
            SimUser::new("LAB", "old"),
            LicenseType::Professional,
            days_ago(400),
        )
    });
    let code = |dry_run: bool| {
        let path = site.config_path.clone();
        std::thread::spawn(move || qlik_lb::control::cli::release_once(&path, dry_run))
            .join()
            .unwrap()
    };
    assert_eq!(code(true), ExitCode::SUCCESS);
    assert_eq!(
        site.qrs.method_count("DELETE"),
        0,
        "--dry-run releases nothing"
    );
    assert_eq!(code(false), ExitCode::SUCCESS);
    assert_eq!(site.qrs.method_count("DELETE"), 1);

    rt.block_on(site.qrs.stop());
    assert_eq!(code(false), ExitCode::from(1));

    std::fs::write(
        &site.config_path,
        "[license.release]\nschedule = \"sometimes\"\n",
    )
    .unwrap();
    assert_eq!(code(false), ExitCode::from(2));
}
