//! A simulated QRS over real mutual TLS on 127.0.0.1:0, with a config pointing at it.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use qlik_lb::config::{Config, ReleaseConfig};
use qlik_lb::control::qrs_client::{QrsClient, RetryPolicy};
use qlik_lb::control::release::{ReleaseReport, ReleaseRun};
use qlik_lb::control::LicenseType;
use qlik_lb::metrics::Metrics;
use qlik_lb::sim::certs::SimCerts;
use qlik_lb::sim::qrs::{self, Population, QrsHandle, SimAllocation, SimUser};
use std::path::PathBuf;
use std::time::Duration;

pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Site {
    pub qrs: QrsHandle,
    pub certs: SimCerts,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub config_path: PathBuf,
    pub metrics: Metrics,
}

/// The fixed "now" of the release tests: Friday 2026-11-20 10:00 UTC.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
}

pub fn days_ago(days: i64) -> DateTime<Utc> {
    now() - chrono::Duration::days(days)
}

/// Everything off but release; no never-release rules; dry run off; threshold 30 days.
pub const BASE_CONFIG: &str = r#"
[qlik_certs]
cert = "certs/client.pem"
key = "certs/client_key.pem"
ca = "certs/root.pem"
verify_server = true

[qrs]
url = "QRS_URL"
user = "INTERNAL\\sa_api"
timeout = "5s"

[license.monitor]
enabled = true
schedule = "every 6 hours"

[license.release]
enabled = true
dry_run = false
timezone = "UTC"
audit_log = "var/audit.jsonl"
max_releases_per_run = 200
  [license.release.professional]
  threshold_days = 30
  [license.release.analyzer]
  threshold_days = 30
"#;

pub async fn site(population: Population) -> Site {
    let certs = SimCerts::generate().expect("certificates");
    let dir = tempfile::tempdir().expect("temp dir");
    certs
        .write_to(&dir.path().join("certs"))
        .expect("write certs");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let qrs = qrs::start(listener, &certs, population).await;
    qrs.set_now(Some(now()));
    let text = BASE_CONFIG.replace("QRS_URL", &qrs.url());
    let config_path = dir.path().join("qlik-lb.toml");
    std::fs::write(&config_path, &text).unwrap();
    let config = Config::load(&config_path).unwrap_or_else(|e| panic!("test config: {e}"));
    Site {
        qrs,
        certs,
        dir,
        config,
        config_path,
        metrics: Metrics::new(),
    }
}

impl Site {
    pub fn client(&self) -> QrsClient {
        QrsClient::from_config(&self.config)
            .expect("client")
            .with_retry(RetryPolicy {
                attempts: 3,
                first_delay: Duration::from_millis(20),
            })
    }

    pub fn release_config(&self) -> ReleaseConfig {
        self.config
            .file
            .license
            .as_ref()
            .unwrap()
            .release
            .clone()
            .unwrap()
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("var/audit.jsonl")
    }

    pub async fn release(
        &self,
        config: &ReleaseConfig,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> ReleaseReport {
        self.release_fenced(config, now, dry_run, &qlik_lb::control::NoFence)
            .await
    }

    /// A release run whose leadership is proven by `fence` before each DELETE.
    pub async fn release_fenced(
        &self,
        config: &ReleaseConfig,
        now: DateTime<Utc>,
        dry_run: bool,
        fence: &dyn qlik_lb::control::Fence,
    ) -> ReleaseReport {
        let client = self.client();
        let audit = self.audit_path();
        let run = ReleaseRun {
            client: &client,
            config,
            audit_path: &audit,
            metrics: &self.metrics,
            now,
            dry_run,
            fence,
        };
        tokio::time::timeout(TEST_TIMEOUT, run.run())
            .await
            .expect("release run timed out")
    }

    /// Allocation ids the sim received a DELETE for, in order.
    pub fn deleted_ids(&self) -> Vec<String> {
        self.qrs
            .requests()
            .into_iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.path.rsplit('/').next().unwrap().to_string())
            .collect()
    }
}

/// Adds a user holding one allocation of `kind` last used at `last_used`; answers the allocation id.
pub fn give(qrs: &QrsHandle, user: SimUser, kind: LicenseType, last_used: DateTime<Utc>) -> String {
    let alloc = SimAllocation::new(kind, &user, last_used);
    let id = alloc.id.clone();
    qrs.update(|p| {
        p.users.push(user);
        p.allocations.push(alloc);
    });
    id
}

pub fn empty() -> Population {
    Population::empty(100)
}
