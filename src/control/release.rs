//! One license release run (the contract's steps 1–9): find allocations unused since the cutoff,
//! re-check them ourselves, skip quarantined rows, apply the never-release rules, enforce the
//! per-run cap, then release one by one with every decision on disk before the next DELETE.

use super::audit::{AuditLog, AuditRecord};
use super::leadership::Fence;
use super::qrs_client::QrsClient;
use super::qrs_model::{AllocationRow, LicenseType};
use super::rules::protecting_rule;
use crate::config::ReleaseConfig;
use crate::metrics::Metrics;
use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use hyper::StatusCode;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const JOB: &str = "license_release";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Released,
    WouldRelease,
    AlreadyGone,
    Protected,
    Quarantined,
    Error,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Released => "released",
            DecisionKind::WouldRelease => "would_release",
            DecisionKind::AlreadyGone => "already_gone",
            DecisionKind::Protected => "protected",
            DecisionKind::Quarantined => "quarantined",
            DecisionKind::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub license_type: LicenseType,
    pub allocation_id: String,
    pub user: String,
    pub last_used: String,
    pub days_unused: Option<i64>,
    pub decision: DecisionKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every row decided without error.
    Ok,
    /// The run finished, but some rows ended in `error`.
    RowErrors,
    /// The run stopped early (QRS unreachable, unusable answer, cap exceeded, run lock held).
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseSummary {
    pub run_id: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub stop_reason: Option<String>,
    /// Decisions by kind (`released`, `protected`, ...).
    pub counts: BTreeMap<&'static str, u64>,
    /// What an admin reads before turning `dry_run` off: the decisions, licenses lost (or that
    /// would be) and errors first, then the rest, at most `SHOWN_DECISIONS` (`counts` has all).
    pub decisions: Vec<Decision>,
}

/// Decisions a summary carries for the status page; the audit log has every one.
pub const SHOWN_DECISIONS: usize = 200;

/// Where a decision is listed on the status page: what costs a user a license first.
fn shown_rank(kind: DecisionKind) -> u8 {
    match kind {
        DecisionKind::Released | DecisionKind::WouldRelease => 0,
        DecisionKind::Error => 1,
        DecisionKind::Quarantined | DecisionKind::AlreadyGone => 2,
        DecisionKind::Protected => 3,
    }
}

#[derive(Debug, Clone)]
pub struct ReleaseReport {
    pub summary: ReleaseSummary,
    pub decisions: Vec<Decision>,
}

impl ReleaseReport {
    /// `license release --once`: 0 when every row was decided without error, else 1.
    pub fn exit_code(&self) -> u8 {
        match self.summary.outcome {
            Outcome::Ok => 0,
            Outcome::RowErrors | Outcome::Stopped => 1,
        }
    }
}

/// The end (23:59:59.999) of the calendar day `days` before `now`'s day in `tz`, in UTC.
pub fn cutoff(now: DateTime<Utc>, tz: Tz, days: u32) -> DateTime<Utc> {
    let day = now.with_timezone(&tz).date_naive() - Duration::days(i64::from(days));
    start_of_day(tz, day + Duration::days(1)) - Duration::milliseconds(1)
}

/// The first instant of a local day; a day whose midnight falls in a DST gap starts at 01:00.
fn start_of_day(tz: Tz, day: chrono::NaiveDate) -> DateTime<Utc> {
    (0..3)
        .find_map(|h| {
            let t = NaiveTime::from_hms_opt(h, 0, 0)?;
            tz.from_local_datetime(&day.and_time(t)).earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN)))
}

pub struct ReleaseRun<'a> {
    pub client: &'a QrsClient,
    pub config: &'a ReleaseConfig,
    /// `audit_log` already resolved against the config file's folder.
    pub audit_path: &'a Path,
    pub metrics: &'a Metrics,
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    /// Proves before each DELETE that this instance still leads (`NoFence` when alone).
    pub fence: &'a dyn Fence,
}

/// The decision reason and stop reason once the fence no longer holds.
pub const LEADERSHIP_LOST: &str = "leadership lost";

/// An allocation that passed every check and will be released (or would be, in a dry run).
struct Candidate {
    decision: Decision,
}

impl ReleaseRun<'_> {
    pub async fn run(&self) -> ReleaseReport {
        let run_id = uuid::Uuid::new_v4().to_string();
        let mut report = ReleaseReport {
            summary: ReleaseSummary {
                run_id,
                started: Utc::now(),
                finished: Utc::now(),
                dry_run: self.dry_run,
                outcome: Outcome::Ok,
                stop_reason: None,
                counts: BTreeMap::new(),
                decisions: Vec::new(),
            },
            decisions: Vec::new(),
        };
        let stop = self.execute(&mut report).await.err();
        self.finish(&mut report, stop);
        report
    }

    fn finish(&self, report: &mut ReleaseReport, stop: Option<String>) {
        let s = &mut report.summary;
        s.finished = Utc::now();
        for d in &report.decisions {
            *s.counts.entry(d.decision.as_str()).or_default() += 1;
        }
        let mut shown: Vec<&Decision> = report.decisions.iter().collect();
        shown.sort_by_key(|d| shown_rank(d.decision));
        s.decisions = shown.into_iter().take(SHOWN_DECISIONS).cloned().collect();
        s.outcome = if let Some(reason) = stop {
            tracing::error!(run_id = %s.run_id, %reason, "license release run stopped");
            s.stop_reason = Some(reason);
            Outcome::Stopped
        } else if report
            .decisions
            .iter()
            .any(|d| d.decision == DecisionKind::Error)
        {
            Outcome::RowErrors
        } else {
            Outcome::Ok
        };
        let result = if s.outcome == Outcome::Ok {
            "ok"
        } else {
            "error"
        };
        self.metrics
            .job_runs_total
            .with_label_values(&[JOB, result])
            .inc();
        if s.outcome == Outcome::Ok {
            self.metrics
                .job_last_success_timestamp_seconds
                .with_label_values(&[JOB])
                .set(s.finished.timestamp_millis() as f64 / 1000.0);
        }
    }

    async fn execute(&self, report: &mut ReleaseReport) -> Result<(), String> {
        let mut audit = AuditLog::open(self.audit_path).map_err(|e| e.to_string())?;
        let tz: Tz = *self
            .config
            .timezone
            .value()
            .map_err(|e| format!("license.release.timezone: {e}"))?;

        let mut settled = Vec::new();
        let mut candidates = Vec::new();
        for kind in LicenseType::ALL {
            let type_config = match kind {
                LicenseType::Professional => &self.config.professional,
                LicenseType::Analyzer => &self.config.analyzer,
            };
            if !type_config.enabled {
                continue;
            }
            let cutoff = cutoff(self.now, tz, type_config.threshold_days);
            self.select(kind, cutoff, &mut settled, &mut candidates)
                .await?;
        }

        let cap = self.config.max_releases_per_run;
        let cap_reason = (candidates.len() > cap).then(|| {
            format!(
                "cap exceeded: {} allocations to release, max_releases_per_run = {cap}; nothing released",
                candidates.len()
            )
        });
        for d in settled {
            self.record(&mut audit, report, d)?;
        }
        let mut leadership_lost = false;
        for Candidate { mut decision } in candidates {
            if !self.dry_run && cap_reason.is_none() && !leadership_lost {
                leadership_lost = !self.fence.still_leading().await;
            }
            if leadership_lost {
                // Another instance may lead now: this one sends nothing more.
                decision.decision = DecisionKind::Error;
                decision.reason = LEADERSHIP_LOST.into();
                self.record(&mut audit, report, decision)?;
                continue;
            }
            if cap_reason.is_some() {
                decision.decision = DecisionKind::Error;
                decision.reason = "cap exceeded".into();
                self.record(&mut audit, report, decision)?;
                continue;
            }
            if self.dry_run {
                decision.decision = DecisionKind::WouldRelease;
                decision.reason = "dry run".into();
            } else {
                let (kind, reason) = match self
                    .client
                    .delete_allocation(decision.license_type, &decision.allocation_id)
                    .await
                {
                    Ok(StatusCode::NO_CONTENT) => (
                        DecisionKind::Released,
                        "unused since the cutoff".to_string(),
                    ),
                    Ok(StatusCode::NOT_FOUND) => (
                        DecisionKind::AlreadyGone,
                        "the QRS no longer has it (404)".into(),
                    ),
                    Ok(status) => (DecisionKind::Error, format!("DELETE answered {status}")),
                    Err(e) => (DecisionKind::Error, e.to_string()),
                };
                decision.decision = kind;
                decision.reason = reason;
            }
            self.record(&mut audit, report, decision)?;
        }
        match cap_reason {
            Some(reason) => Err(reason),
            None if leadership_lost => Err(LEADERSHIP_LOST.into()),
            None => Ok(()),
        }
    }

    /// Steps 1–5 for one license type: fetch, re-check, quarantine, users, never-release rules.
    async fn select(
        &self,
        kind: LicenseType,
        cutoff: DateTime<Utc>,
        settled: &mut Vec<Decision>,
        candidates: &mut Vec<Candidate>,
    ) -> Result<(), String> {
        let filter = format!("lastUsed le '{}'", cutoff.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        let rows = self
            .client
            .allocations(kind, Some(&filter))
            .await
            .map_err(|e| e.to_string())?;

        let mut waiting: Vec<(AllocationRow, Decision)> = Vec::new();
        let mut beyond_cutoff = 0;
        for row in rows {
            let mut d = Decision {
                license_type: kind,
                allocation_id: row.id.clone(),
                user: row_user(&row),
                last_used: row.last_used.clone(),
                days_unused: None,
                decision: DecisionKind::Error,
                reason: String::new(),
            };
            let Ok(last_used) = DateTime::parse_from_rfc3339(&row.last_used) else {
                d.reason = format!("lastUsed `{}` is not a date", row.last_used);
                settled.push(d);
                continue;
            };
            let last_used = last_used.with_timezone(&Utc);
            if last_used > cutoff {
                beyond_cutoff += 1;
                continue;
            }
            d.days_unused = Some((self.now - last_used).num_days());
            if row.quarantined {
                d.decision = DecisionKind::Quarantined;
                d.reason = format!(
                    "quarantined until {}",
                    row.quarantine_end.as_deref().unwrap_or("unknown")
                );
                settled.push(d);
            } else if row.user.is_none() {
                d.reason = "the allocation names no user".into();
                settled.push(d);
            } else {
                waiting.push((row, d));
            }
        }
        if beyond_cutoff > 0 {
            tracing::warn!(
                license_type = kind.as_str(),
                rows = beyond_cutoff,
                "the QRS returned allocations used after the cutoff; they are kept"
            );
        }

        let ids: Vec<String> = waiting
            .iter()
            .filter_map(|(row, _)| row.user.as_ref().map(|u| u.id.clone()))
            .collect();
        let users = self.client.users(&ids).await.map_err(|e| e.to_string())?;
        let by_id: HashMap<String, _> = users
            .into_iter()
            .map(|u| (u.id.to_lowercase(), u))
            .collect();
        for (row, mut d) in waiting {
            let user_id = row
                .user
                .as_ref()
                .map(|u| u.id.to_lowercase())
                .unwrap_or_default();
            match by_id.get(&user_id) {
                None => {
                    d.reason = format!("user {user_id} not found in the QRS");
                    settled.push(d);
                }
                Some(user) => match protecting_rule(user, &self.config.never) {
                    Some(protection) => {
                        d.decision = DecisionKind::Protected;
                        d.reason = protection.reason();
                        settled.push(d);
                    }
                    None => candidates.push(Candidate { decision: d }),
                },
            }
        }
        Ok(())
    }

    fn record(
        &self,
        audit: &mut AuditLog,
        report: &mut ReleaseReport,
        d: Decision,
    ) -> Result<(), String> {
        self.metrics
            .license_release_decisions_total
            .with_label_values(&[d.license_type.as_str(), d.decision.as_str()])
            .inc();
        let line = AuditRecord {
            time: Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            run_id: report.summary.run_id.clone(),
            license_type: d.license_type.as_str().to_string(),
            allocation_id: d.allocation_id.clone(),
            user: d.user.clone(),
            last_used: d.last_used.clone(),
            days_unused: d.days_unused,
            decision: d.decision.as_str().to_string(),
            reason: d.reason.clone(),
            dry_run: self.dry_run,
        };
        report.decisions.push(d);
        // Without the line on disk, no further DELETE may be sent.
        audit.append(&line).map_err(|e| e.to_string())
    }
}

fn row_user(row: &AllocationRow) -> String {
    match (&row.user, &row.deleted_user_directory, &row.deleted_user_id) {
        (Some(u), _, _) => format!("{}\\{}", u.user_directory, u.user_id),
        (None, Some(dir), Some(id)) if !id.is_empty() => format!("{dir}\\{id}"),
        _ => String::new(),
    }
}
