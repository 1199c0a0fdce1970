//! A reload reaches the license jobs of a running instance: `dry_run`, `enabled`, the schedule
//! and `[qrs]` of the next scheduled run are those of the file reloaded, with the simulated QRS
//! over real mutual TLS. The test's clock is paused, so a firing minutes away comes as soon as
//! everything else is idle; every wait below is a bounded poll in that clock.

mod license_support;

use license_support::*;
use qlik_lb::app::Instance;
use qlik_lb::config::Config;
use qlik_lb::control::release::ReleaseSummary;
use qlik_lb::control::LicenseType;
use qlik_lb::reload::Trigger;
use qlik_lb::sim::qrs::{self, QrsHandle, SimUser};
use std::time::Duration;

/// BASE_CONFIG with the monitor off, the release job on a schedule and not at start.
fn config_text(qrs_url: &str, enabled: bool, dry_run: bool, schedule: &str) -> String {
    BASE_CONFIG
        .replace("QRS_URL", qrs_url)
        .replace(
            "[license.monitor]\nenabled = true",
            "[license.monitor]\nenabled = false",
        )
        .replace(
            "[license.release]\nenabled = true\ndry_run = false",
            &format!(
                "[license.release]\nenabled = {enabled}\ndry_run = {dry_run}\n\
                 schedule = \"{schedule}\"\nrun_at_start = true"
            ),
        )
}

async fn start(site: &Site, text: &str) -> Instance {
    std::fs::write(&site.config_path, text).unwrap();
    let config = Config::load(&site.config_path).unwrap_or_else(|e| panic!("config: {e}"));
    Instance::start(config).await.expect("instance starts")
}

async fn reload(site: &Site, instance: &Instance, text: &str) {
    std::fs::write(&site.config_path, text).unwrap();
    let outcome = instance.reload(Trigger::Api).await;
    assert!(outcome.ok, "reload failed: {:?}", outcome.errors);
}

fn last_run(instance: &Instance) -> Option<ReleaseSummary> {
    instance.license_status.view().last_release
}

/// Polls (in the paused clock) until a release run other than `seen` has finished.
async fn next_run(instance: &Instance, seen: Option<&str>, within: Duration) -> ReleaseSummary {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(run) = last_run(instance) {
            if Some(run.run_id.as_str()) != seen {
                return run;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no release run within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn deletes(qrs: &QrsHandle) -> usize {
    qrs.requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count()
}

fn give_old(qrs: &QrsHandle, name: &str) -> String {
    give(
        qrs,
        SimUser::new("LAB", name),
        LicenseType::Professional,
        days_ago(40),
    )
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_reload_to_dry_run_makes_the_next_scheduled_run_a_dry_run() {
    let site = site(empty()).await;
    let url = site.qrs.url();
    let first_alloc = give_old(&site.qrs, "first");
    let instance = start(&site, &config_text(&url, true, false, "every 1 minutes")).await;
    // run_at_start is on: the start runs for real.
    let first = next_run(&instance, None, MINUTE).await;
    assert!(!first.dry_run);
    assert_eq!(first.counts.get("released"), Some(&1), "{first:?}");
    assert_eq!(deletes(&site.qrs), 1);
    assert!(site.qrs.allocation(&first_alloc).is_none());

    let kept = give_old(&site.qrs, "second");
    reload(
        &site,
        &instance,
        &config_text(&url, true, true, "every 1 minutes"),
    )
    .await;
    let second = next_run(&instance, Some(&first.run_id), 2 * MINUTE).await;
    assert!(second.dry_run, "{second:?}");
    assert_eq!(second.counts.get("would_release"), Some(&1), "{second:?}");
    assert_eq!(second.counts.get("released"), None, "{second:?}");
    assert_eq!(deletes(&site.qrs), 1, "a dry run sent a DELETE");
    assert!(site.qrs.allocation(&kept).is_some());
    instance.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_to_enabled_false_stops_the_schedule() {
    let site = site(empty()).await;
    let url = site.qrs.url();
    let instance = start(&site, &config_text(&url, true, true, "every 1 minutes")).await;
    let at_start = next_run(&instance, None, MINUTE).await;
    // A scheduled run too, so the schedule is known to be firing before the reload.
    let scheduled = next_run(&instance, Some(&at_start.run_id), 2 * MINUTE).await;
    let requests = site.qrs.requests().len();

    reload(
        &site,
        &instance,
        &config_text(&url, false, true, "every 1 minutes"),
    )
    .await;
    tokio::time::sleep(10 * MINUTE).await;
    let last = last_run(&instance).unwrap();
    assert_eq!(
        last.run_id, scheduled.run_id,
        "a disabled job ran: {last:?}"
    );
    assert_eq!(
        site.qrs.requests().len(),
        requests,
        "a disabled job called QRS"
    );
    instance.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_enabling_a_disabled_job_runs_it_on_schedule_not_at_once() {
    let site = site(empty()).await;
    let url = site.qrs.url();
    let instance = start(&site, &config_text(&url, false, true, "every 1 hours")).await;
    give_old(&site.qrs, "old");
    tokio::time::sleep(3 * 60 * MINUTE).await;
    assert!(last_run(&instance).is_none(), "a disabled job ran");
    assert!(site.qrs.requests().is_empty());

    reload(
        &site,
        &instance,
        &config_text(&url, true, true, "every 1 hours"),
    )
    .await;
    // The next whole hour (wall clock, UTC) is the first firing; run_at_start is not a reload's.
    let now = chrono::Utc::now();
    let to_firing = (qlik_lb::config::schedule::Schedule::EveryHours(1).next_after(now) - now)
        .to_std()
        .unwrap();
    let reloaded = tokio::time::Instant::now();
    if to_firing > Duration::from_secs(5) {
        tokio::time::sleep(to_firing - Duration::from_secs(2)).await;
        assert!(
            last_run(&instance).is_none(),
            "the job ran at reload, {to_firing:?} before its schedule"
        );
    }
    let run = next_run(&instance, None, to_firing + MINUTE).await;
    assert!(reloaded.elapsed() + Duration::from_secs(2) >= to_firing);
    assert!(run.dry_run);
    assert_eq!(run.counts.get("would_release"), Some(&1), "{run:?}");
    instance.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_to_another_qrs_url_sends_the_next_run_there() {
    let site = site(empty()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = qrs::start(listener, &site.certs, empty()).await;
    other.set_now(Some(now()));
    let instance = start(
        &site,
        &config_text(&site.qrs.url(), true, false, "every 1 minutes"),
    )
    .await;
    let first = next_run(&instance, None, MINUTE).await;
    let on_first = site.qrs.requests().len();
    assert!(on_first > 0, "the first run did not reach the first QRS");

    let there = give_old(&other, "elsewhere");
    reload(
        &site,
        &instance,
        &config_text(&other.url(), true, false, "every 1 minutes"),
    )
    .await;
    let second = next_run(&instance, Some(&first.run_id), 2 * MINUTE).await;
    assert_eq!(second.counts.get("released"), Some(&1), "{second:?}");
    assert_eq!(deletes(&other), 1);
    assert!(other.allocation(&there).is_none());
    assert_eq!(
        site.qrs.requests().len(),
        on_first,
        "the run after the reload still called the old QRS"
    );
    instance.shutdown().await;
}
