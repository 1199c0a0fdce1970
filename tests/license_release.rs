//! License release against the simulated QRS over mutual TLS: never-release rules, status
//! rules, the cutoff at the day boundary, quarantined rows, dry run, real DELETEs, the audit log.

mod license_support;

use chrono::{DateTime, Duration, TimeZone, Utc};
use license_support::*;
use qlik_lb::config::{CustomPropertyRule, FlagRule, ReleaseConfig};
use qlik_lb::control::audit::{self, AuditLog};
use qlik_lb::control::release::{cutoff, DecisionKind, Outcome};
use qlik_lb::control::LicenseType;
use qlik_lb::sim::qrs::SimUser;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::time::timeout;

fn decision_of(
    report: &qlik_lb::control::release::ReleaseReport,
    id: &str,
) -> (DecisionKind, String) {
    let d = report
        .decisions
        .iter()
        .find(|d| d.allocation_id == id)
        .unwrap_or_else(|| panic!("no decision for {id}: {:#?}", report.decisions));
    (d.decision, d.reason.clone())
}

fn user(dir: &str, id: &str, f: impl FnOnce(&mut SimUser)) -> SimUser {
    let mut u = SimUser::new(dir, id);
    f(&mut u);
    u
}

#[tokio::test]
async fn each_never_release_rule_alone_and_first_match_order() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let old = days_ago(60);
        let by_user = give(
            &site.qrs,
            user("Corp", "Boss", |_| {}),
            LicenseType::Professional,
            old,
        );
        let by_tag = give(
            &site.qrs,
            user("LAB", "t", |u| {
                u.tags = vec!["license DO NOT release".into()]
            }),
            LicenseType::Professional,
            old,
        );
        let by_prop = give(
            &site.qrs,
            user("LAB", "p", |u| {
                u.custom_properties = vec![("licensemanage".into(), "Do-Not-Release".into())]
            }),
            LicenseType::Analyzer,
            old,
        );
        let other_value = give(
            &site.qrs,
            user("LAB", "q", |u| {
                u.custom_properties = vec![("LicenseManage".into(), "auto".into())]
            }),
            LicenseType::Analyzer,
            old,
        );
        let by_dir = give(
            &site.qrs,
            user("internal", "svc", |_| {}),
            LicenseType::Analyzer,
            old,
        );
        // Matches every rule: `users` comes first.
        let all = give(
            &site.qrs,
            user("INTERNAL", "sa_api", |u| {
                u.tags = vec!["License do not release".into()];
                u.custom_properties = vec![("LicenseManage".into(), "do-not-release".into())];
            }),
            LicenseType::Professional,
            old,
        );
        // Tag and property: `tags` comes before `custom_properties`.
        let tag_and_prop = give(
            &site.qrs,
            user("LAB", "tp", |u| {
                u.tags = vec!["License do not release".into()];
                u.custom_properties = vec![("LicenseManage".into(), "do-not-release".into())];
            }),
            LicenseType::Professional,
            old,
        );
        // Property and directory: `custom_properties` before `user_directories`.
        let prop_and_dir = give(
            &site.qrs,
            user("INTERNAL", "pd", |u| {
                u.custom_properties = vec![("LicenseManage".into(), "do-not-release".into())];
            }),
            LicenseType::Professional,
            old,
        );
        let free = give(
            &site.qrs,
            user("LAB", "free", |_| {}),
            LicenseType::Professional,
            old,
        );

        let mut cfg = site.release_config();
        cfg.never.users = vec!["CORP\\boss".into(), "internal\\SA_API".into()];
        cfg.never.tags = vec!["License do not release".into()];
        cfg.never.custom_properties = vec![CustomPropertyRule {
            name: "LicenseManage".into(),
            value: "do-not-release".into(),
        }];
        cfg.never.user_directories = vec!["INTERNAL".into()];
        let report = site.release(&cfg, now(), false).await;

        let protected = |id: &str, rule: &str| {
            assert_eq!(
                decision_of(&report, id),
                (DecisionKind::Protected, rule.to_string()),
                "{rule}"
            )
        };
        protected(&by_user, "users");
        protected(&by_tag, "tags");
        protected(&by_prop, "custom_properties");
        protected(&by_dir, "user_directories");
        protected(&all, "users");
        protected(&tag_and_prop, "tags");
        protected(&prop_and_dir, "custom_properties");
        assert_eq!(decision_of(&report, &other_value).0, DecisionKind::Released);
        assert_eq!(decision_of(&report, &free).0, DecisionKind::Released);
        assert_eq!(
            site.deleted_ids().into_iter().collect::<BTreeSet<_>>(),
            BTreeSet::from([other_value, free])
        );
        assert_eq!(report.summary.outcome, Outcome::Ok);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn status_rules_yes_no_ignore() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let old = days_ago(45);
        let inactive = give(
            &site.qrs,
            user("LAB", "inactive", |u| u.inactive = true),
            LicenseType::Professional,
            old,
        );
        let blocked = give(
            &site.qrs,
            user("LAB", "blocked", |u| u.blacklisted = true),
            LicenseType::Professional,
            old,
        );
        let removed = give(
            &site.qrs,
            user("LAB", "removed", |u| u.removed_externally = true),
            LicenseType::Analyzer,
            old,
        );
        let plain = give(
            &site.qrs,
            user("LAB", "plain", |_| {}),
            LicenseType::Analyzer,
            old,
        );
        let base = site.release_config();

        type Setter = fn(&mut ReleaseConfig, FlagRule);
        let rules: [(&str, &String, Setter); 3] = [
            ("inactive", &inactive, |c, r| c.never.inactive = r),
            ("blocked", &blocked, |c, r| c.never.blocked = r),
            ("removed_externally", &removed, |c, r| {
                c.never.removed_externally = r
            }),
        ];
        for (name, flagged, set) in rules {
            // yes: protects the flagged user only.
            let mut cfg = base.clone();
            set(&mut cfg, FlagRule::Yes);
            let report = site.release(&cfg, now(), true).await;
            assert_eq!(
                decision_of(&report, flagged),
                (DecisionKind::Protected, name.to_string()),
                "{name}=yes"
            );
            assert_eq!(
                decision_of(&report, &plain).0,
                DecisionKind::WouldRelease,
                "{name}=yes"
            );
            // no: protects everyone whose flag is false.
            set(&mut cfg, FlagRule::No);
            let report = site.release(&cfg, now(), true).await;
            assert_eq!(
                decision_of(&report, flagged).0,
                DecisionKind::WouldRelease,
                "{name}=no"
            );
            assert_eq!(
                decision_of(&report, &plain),
                (DecisionKind::Protected, name.to_string()),
                "{name}=no"
            );
            // ignore: the flag plays no part.
            set(&mut cfg, FlagRule::Ignore);
            let report = site.release(&cfg, now(), true).await;
            assert_eq!(
                decision_of(&report, flagged).0,
                DecisionKind::WouldRelease,
                "{name}=ignore"
            );
            assert_eq!(
                decision_of(&report, &plain).0,
                DecisionKind::WouldRelease,
                "{name}=ignore"
            );
        }
        assert_eq!(site.qrs.method_count("DELETE"), 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_user_record_without_tags_is_protected_and_not_deleted() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let old = days_ago(60);
        let untagged = give(
            &site.qrs,
            user("LAB", "untagged", |u| {
                u.omitted_fields = vec!["tags".into()]
            }),
            LicenseType::Professional,
            old,
        );
        // An empty list is an answer: this one goes.
        let empty_tags = give(
            &site.qrs,
            user("LAB", "emptytags", |_| {}),
            LicenseType::Professional,
            old,
        );
        let mut cfg = site.release_config();
        cfg.never.tags = vec!["License do not release".into()];
        let report = site.release(&cfg, now(), false).await;

        assert_eq!(
            decision_of(&report, &untagged),
            (DecisionKind::Protected, "missing tags".to_string())
        );
        assert_eq!(decision_of(&report, &empty_tags).0, DecisionKind::Released);
        assert_eq!(site.deleted_ids(), vec![empty_tags]);
        assert!(site.qrs.allocation(&untagged).is_some());
        let lines = audit::read_all(&site.audit_path()).unwrap();
        let line = lines.iter().find(|l| l.allocation_id == untagged).unwrap();
        assert_eq!(
            (
                line.decision.as_str(),
                line.reason.as_str(),
                line.user.as_str()
            ),
            ("protected", "missing tags", "LAB\\untagged")
        );
        assert_eq!(report.summary.outcome, Outcome::Ok);

        // Without a tags rule nothing reads the field, and the same record is released.
        cfg.never.tags.clear();
        let report = site.release(&cfg, now(), false).await;
        assert_eq!(decision_of(&report, &untagged).0, DecisionKind::Released);
        assert!(site.qrs.allocation(&untagged).is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_field_a_configured_rule_reads_protects_when_missing() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let old = days_ago(60);
        let mut missing = Vec::new();
        for field in [
            "tags",
            "customProperties",
            "inactive",
            "blacklisted",
            "removedExternally",
        ] {
            let id = give(
                &site.qrs,
                user("LAB", field, |u| u.omitted_fields = vec![field.into()]),
                LicenseType::Analyzer,
                old,
            );
            missing.push((field, id));
        }
        let complete = give(
            &site.qrs,
            user("LAB", "complete", |_| {}),
            LicenseType::Analyzer,
            old,
        );
        let mut cfg = site.release_config();
        cfg.never.tags = vec!["keep".into()];
        cfg.never.custom_properties = vec![CustomPropertyRule {
            name: "LicenseManage".into(),
            value: "do-not-release".into(),
        }];
        cfg.never.inactive = FlagRule::Yes;
        cfg.never.blocked = FlagRule::Yes;
        cfg.never.removed_externally = FlagRule::Yes;
        let report = site.release(&cfg, now(), false).await;

        for (field, id) in &missing {
            assert_eq!(
                decision_of(&report, id),
                (DecisionKind::Protected, format!("missing {field}")),
                "{field}"
            );
        }
        assert_eq!(site.deleted_ids(), vec![complete]);
    })
    .await
    .unwrap();
}

#[test]
fn cutoff_is_the_end_of_the_local_day() {
    let now = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    assert_eq!(
        cutoff(now, chrono_tz::UTC, 30),
        utc("2026-10-21T23:59:59.999Z")
    );
    // Stockholm is UTC+1 in November and in late October after the clock change (25 Oct).
    assert_eq!(
        cutoff(now, chrono_tz::Europe::Stockholm, 30),
        utc("2026-10-21T23:59:59.999+02:00")
    );
    // Auckland (UTC+13) is at 23:00 on 20 Nov: 30 days back is 21 Oct, ending 11 hours before UTC's.
    assert_eq!(
        cutoff(now, chrono_tz::Pacific::Auckland, 30),
        utc("2026-10-21T23:59:59.999+13:00")
    );
    // One hour later Auckland is on 21 Nov, and the cutoff moves a whole day.
    let later = now + Duration::hours(1);
    assert_eq!(
        cutoff(later, chrono_tz::Pacific::Auckland, 30),
        utc("2026-10-22T23:59:59.999+13:00")
    );
    // Los Angeles is on 20 Nov 02:00; 21 Oct is still daylight time (UTC-7).
    assert_eq!(
        cutoff(now, chrono_tz::America::Los_Angeles, 30),
        utc("2026-10-21T23:59:59.999-07:00")
    );
}

#[tokio::test]
async fn cutoff_day_boundary_in_three_time_zones() {
    timeout(TEST_TIMEOUT, async {
        for (tz, boundary) in [
            ("UTC", "2026-10-21T23:59:59.999Z"),
            ("Europe/Stockholm", "2026-10-21T23:59:59.999+02:00"),
            ("Pacific/Auckland", "2026-10-21T23:59:59.999+13:00"),
        ] {
            let site = site(empty()).await;
            let edge = DateTime::parse_from_rfc3339(boundary)
                .unwrap()
                .with_timezone(&Utc);
            let at = give(
                &site.qrs,
                SimUser::new("LAB", "at"),
                LicenseType::Professional,
                edge,
            );
            let before = give(
                &site.qrs,
                SimUser::new("LAB", "before"),
                LicenseType::Analyzer,
                edge - Duration::milliseconds(1),
            );
            let after = give(
                &site.qrs,
                SimUser::new("LAB", "after"),
                LicenseType::Professional,
                edge + Duration::milliseconds(1),
            );
            let after_an = give(
                &site.qrs,
                SimUser::new("LAB", "after2"),
                LicenseType::Analyzer,
                edge + Duration::milliseconds(1),
            );
            let mut cfg = site.release_config();
            cfg.timezone = tz.into();
            let report = site.release(&cfg, now(), false).await;
            assert_eq!(
                site.deleted_ids().into_iter().collect::<BTreeSet<_>>(),
                BTreeSet::from([at.clone(), before.clone()]),
                "{tz}"
            );
            assert!(
                report
                    .decisions
                    .iter()
                    .all(|d| d.allocation_id != after && d.allocation_id != after_an),
                "{tz}"
            );
            let sent: Vec<_> = site
                .qrs
                .requests()
                .into_iter()
                .filter(|r| r.path.ends_with("/full") && r.path.contains("license"))
                .collect();
            assert!(
                sent.iter().all(|r| r.query.contains(&format!(
                    "filter=lastUsed le '{}'",
                    edge.format("%Y-%m-%dT%H:%M:%S%.3fZ")
                ))),
                "{tz}: {sent:?}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn quarantined_rows_are_skipped_and_recorded() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let q = give(
            &site.qrs,
            SimUser::new("LAB", "asmith"),
            LicenseType::Professional,
            days_ago(40),
        );
        site.qrs.update(|p| {
            let users = p.users.clone();
            let row = p.allocations.iter_mut().find(|a| a.id == q).unwrap();
            row.quarantine(users.first());
        });
        let free = give(
            &site.qrs,
            SimUser::new("LAB", "free"),
            LicenseType::Professional,
            days_ago(40),
        );
        let report = site.release(&site.release_config(), now(), false).await;
        let (kind, reason) = decision_of(&report, &q);
        assert_eq!(kind, DecisionKind::Quarantined);
        assert!(reason.starts_with("quarantined until"), "{reason}");
        assert_eq!(
            report
                .decisions
                .iter()
                .find(|d| d.allocation_id == q)
                .unwrap()
                .user,
            "LAB\\asmith"
        );
        assert_eq!(site.deleted_ids(), vec![free]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dry_run_sends_no_delete_and_real_run_sends_exactly_the_expected_ones() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let mut expected = BTreeSet::new();
        for i in 0..6 {
            let kind = if i % 2 == 0 { LicenseType::Professional } else { LicenseType::Analyzer };
            expected.insert(give(&site.qrs, SimUser::new("SALES", &format!("old{i}")), kind, days_ago(31 + i)));
            give(&site.qrs, SimUser::new("SALES", &format!("recent{i}")), kind, days_ago(29 - i));
        }
        let protected = give(&site.qrs, user("SALES", "keep", |u| u.tags = vec!["VIP".into()]), LicenseType::Analyzer, days_ago(90));
        let mut cfg = site.release_config();
        cfg.never.tags = vec!["vip".into()];

        let dry = site.release(&cfg, now(), true).await;
        assert_eq!(site.qrs.method_count("DELETE"), 0, "a dry run sends no DELETE");
        assert_eq!(dry.summary.counts.get("would_release"), Some(&6));
        assert_eq!(dry.summary.counts.get("protected"), Some(&1));
        assert_eq!(site.qrs.allocations().len(), 13);

        let real = site.release(&cfg, now(), false).await;
        let deleted = site.deleted_ids();
        assert_eq!(deleted.len(), 6, "one DELETE per candidate, none repeated");
        assert_eq!(deleted.iter().cloned().collect::<BTreeSet<_>>(), expected);
        // Professional before analyzer.
        let kinds: Vec<_> = site.qrs.requests().into_iter().filter(|r| r.method == "DELETE").map(|r| r.path).collect();
        let first_analyzer = kinds.iter().position(|p| p.contains("analyzer")).unwrap();
        assert!(kinds[..first_analyzer].iter().all(|p| p.contains("professional")));
        assert!(kinds[first_analyzer..].iter().all(|p| p.contains("analyzer")));
        assert_eq!(real.summary.counts.get("released"), Some(&6));
        assert_eq!(real.summary.outcome, Outcome::Ok);
        assert_eq!(real.exit_code(), 0);
        assert!(site.qrs.allocation(&protected).is_some());
        assert_eq!(site.qrs.allocations().len(), 7);
        let m = site.metrics.render();
        assert!(m.contains(r#"qlb_license_release_decisions_total{decision="released",license_type="professional"} 3"#), "{m}");
        assert!(m.contains(r#"qlb_license_release_decisions_total{decision="would_release",license_type="analyzer"} 3"#), "{m}");
        assert!(m.contains(r#"qlb_job_runs_total{job="license_release",result="ok"} 2"#), "{m}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn audit_log_has_one_line_per_decision_with_every_field() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let released = give(
            &site.qrs,
            SimUser::new("LAB", "gone"),
            LicenseType::Professional,
            days_ago(40),
        );
        let kept = give(
            &site.qrs,
            user("LAB", "kept", |u| u.tags = vec!["Keep".into()]),
            LicenseType::Analyzer,
            days_ago(50),
        );
        let mut cfg = site.release_config();
        cfg.never.tags = vec!["keep".into()];
        let report = site.release(&cfg, now(), false).await;

        let lines = audit::read_all(&site.audit_path()).unwrap();
        assert_eq!(lines.len(), report.decisions.len());
        assert_eq!(lines.len(), 2);
        let raw = std::fs::read_to_string(site.audit_path()).unwrap();
        for line in raw.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            for field in [
                "time",
                "run_id",
                "license_type",
                "allocation_id",
                "user",
                "last_used",
                "days_unused",
                "decision",
                "reason",
                "dry_run",
            ] {
                assert!(v.get(field).is_some(), "{field} missing in {line}");
            }
        }
        let r = lines.iter().find(|l| l.allocation_id == released).unwrap();
        assert_eq!(
            (
                r.license_type.as_str(),
                r.user.as_str(),
                r.decision.as_str(),
                r.days_unused,
                r.dry_run
            ),
            ("professional", "LAB\\gone", "released", Some(40), false)
        );
        assert_eq!(r.run_id, report.summary.run_id);
        assert_eq!(r.last_used, qlik_lb::sim::qrs::iso(days_ago(40)));
        let k = lines.iter().find(|l| l.allocation_id == kept).unwrap();
        assert_eq!(
            (k.decision.as_str(), k.reason.as_str()),
            ("protected", "tags")
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn each_delete_is_on_disk_before_the_next_is_sent() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        for i in 0..5 {
            give(
                &site.qrs,
                SimUser::new("LAB", &format!("u{i}")),
                LicenseType::Professional,
                days_ago(40 + i),
            );
        }
        let audit_path = site.audit_path();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (seen2, failures2) = (seen.clone(), failures.clone());
        site.qrs.on_delete(Some(Arc::new(move |id: &str| {
            // Every DELETE sent before this one must already have its audit line on disk.
            let on_disk: BTreeSet<String> = audit::read_all(&audit_path)
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.allocation_id)
                .collect();
            let mut seen = seen2.lock().unwrap();
            for earlier in seen.iter() {
                if !on_disk.contains(earlier) {
                    failures2
                        .lock()
                        .unwrap()
                        .push(format!("{earlier} not audited before DELETE {id}"));
                }
            }
            seen.push(id.to_string());
        })));
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(report.summary.counts.get("released"), Some(&5));
        assert_eq!(seen.lock().unwrap().len(), 5);
        assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn two_runs_never_overlap() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        give(
            &site.qrs,
            SimUser::new("LAB", "x"),
            LicenseType::Professional,
            days_ago(40),
        );
        let held = AuditLog::open(&site.audit_path()).unwrap();
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(report.summary.outcome, Outcome::Stopped);
        assert!(
            report
                .summary
                .stop_reason
                .as_deref()
                .unwrap()
                .contains("another license release run"),
            "{:?}",
            report.summary.stop_reason
        );
        assert_eq!(site.qrs.requests().len(), 0);
        drop(held);
        let report = site.release(&site.release_config(), now(), false).await;
        assert_eq!(report.summary.counts.get("released"), Some(&1));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn users_are_fetched_in_batches() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        for i in 0..120 {
            give(
                &site.qrs,
                SimUser::new("LAB", &format!("u{i}")),
                LicenseType::Analyzer,
                days_ago(40),
            );
        }
        let report = site.release(&site.release_config(), now(), true).await;
        assert_eq!(report.summary.counts.get("would_release"), Some(&120));
        assert_eq!(
            site.qrs.request_count("GET", "/qrs/user/full"),
            3,
            "50 users per call"
        );
        assert_eq!(
            site.qrs.method_count("GET"),
            5,
            "two license lists and three user batches, nothing else"
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_run_over_a_realistic_site_keeps_every_rule() {
    timeout(TEST_TIMEOUT, async {
        let pop = qlik_lb::sim::qrs::seed::seeded(42, 400, now());
        let site = site(pop.clone()).await;
        let mut cfg = site.release_config();
        cfg.max_releases_per_run = 1000;
        cfg.never.tags = vec![qlik_lb::sim::qrs::seed::DO_NOT_RELEASE_TAG.into()];
        cfg.never.custom_properties = vec![CustomPropertyRule {
            name: "LicenseManage".into(),
            value: "do-not-release".into(),
        }];
        cfg.never.user_directories = vec!["INTERNAL".into()];
        cfg.never.inactive = FlagRule::Yes;
        let report = site.release(&cfg, now(), false).await;
        assert_eq!(report.summary.outcome, Outcome::Ok, "{:?}", report.summary);
        let cut = cutoff(now(), chrono_tz::UTC, 30);
        let released: BTreeSet<String> = site.deleted_ids().into_iter().collect();
        assert!(released.len() > 50, "{}", released.len());
        for a in &pop.allocations {
            let user = a.user.as_deref().and_then(|id| pop.user(id));
            let keep = a.last_used > cut
                || a.quarantined
                || user.is_none_or(|u| {
                    u.inactive
                        || u.user_directory == "INTERNAL"
                        || u.tags
                            .iter()
                            .any(|t| t == qlik_lb::sim::qrs::seed::DO_NOT_RELEASE_TAG)
                        || u.custom_properties
                            .iter()
                            .any(|(n, v)| n == "LicenseManage" && v == "do-not-release")
                });
            assert_eq!(released.contains(&a.id), !keep, "{a:?} {user:?}");
        }
    })
    .await
    .unwrap();
}

/// A fence that holds for the first `holds` checks only.
struct LapsingFence {
    holds: std::sync::atomic::AtomicUsize,
}

impl qlik_lb::control::Fence for LapsingFence {
    fn still_leading(&self) -> qlik_lb::control::leadership::FenceCheck<'_> {
        let left = self.holds.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.holds
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
        }
        Box::pin(std::future::ready(left > 0))
    }
}

#[tokio::test]
async fn a_run_whose_leadership_lapses_sends_no_further_delete_and_records_why() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        for i in 0..5 {
            give(
                &site.qrs,
                SimUser::new("SALES", &format!("old{i}")),
                LicenseType::Professional,
                days_ago(40),
            );
        }
        let fence = LapsingFence { holds: 2.into() };
        let report = site
            .release_fenced(&site.release_config(), now(), false, &fence)
            .await;
        assert_eq!(
            site.qrs.method_count("DELETE"),
            2,
            "no DELETE once the fence fails"
        );
        assert_eq!(report.summary.outcome, Outcome::Stopped);
        assert_eq!(
            report.summary.stop_reason.as_deref(),
            Some("leadership lost")
        );
        assert_eq!(report.summary.counts.get("released"), Some(&2));
        assert_eq!(report.summary.counts.get("error"), Some(&3));
        let lines = audit::read_all(&site.audit_path()).unwrap();
        assert_eq!(lines.len(), 5, "every candidate has its audit line");
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.reason == "leadership lost")
                .count(),
            3
        );
        let m = site.metrics.render();
        assert!(
            m.contains(r#"qlb_job_runs_total{job="license_release",result="error"} 1"#),
            "{m}"
        );

        // A dry run asks no fence: it sends nothing.
        let never = LapsingFence { holds: 0.into() };
        let dry = site
            .release_fenced(&site.release_config(), now(), true, &never)
            .await;
        assert_eq!(dry.summary.outcome, Outcome::Ok);
    })
    .await
    .unwrap();
}
