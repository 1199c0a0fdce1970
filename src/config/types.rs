//! The TOML file as typed data, with every default of `config/qlik-lb.toml`.
//! Semantic checks live in `validate.rs`; this file only says what each key holds.

use super::cidr::Cidr;
use super::duration::Dur;
use super::parsed::Parsed;
use super::schedule::Schedule;
use chrono_tz::Tz;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub frontend: Vec<FrontendConfig>,
    #[serde(default)]
    pub lb_module: Option<LbModuleConfig>,
    #[serde(default)]
    pub pool: Vec<PoolConfig>,
    #[serde(default)]
    pub qlik_certs: Option<QlikCertsConfig>,
    #[serde(default)]
    pub qrs: Option<QrsConfig>,
    #[serde(default)]
    pub license: Option<LicenseConfig>,
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    pub cluster: Option<super::cluster::ClusterConfig>,
}

impl FileConfig {
    /// `[license.release]`, when present.
    pub fn license_release(&self) -> Option<&ReleaseConfig> {
        self.license.as_ref().and_then(|l| l.release.as_ref())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Peers allowed on the admin listener; `None` = any.
    #[serde(default)]
    pub allow: Option<Vec<Cidr>>,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Dur,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `tls = { cert, key }` or `tls = { certs = [ {cert, key}, ... ] }`; validation asks for exactly
/// one of the two shapes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FrontendTls {
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub certs: Vec<TlsFiles>,
}

impl FrontendTls {
    /// The certificate pairs in order (the first is served when no SNI matches), each with its
    /// key path relative to `tls`.
    pub fn pairs(&self) -> Vec<(String, TlsFiles)> {
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            return vec![(
                String::new(),
                TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                },
            )];
        }
        self.certs
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("certs[{i}]"), f.clone()))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    pub name: String,
    pub listen: String,
    pub pool: String,
    #[serde(default)]
    pub tls: Option<FrontendTls>,
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    #[serde(default = "default_keepalive_timeout")]
    pub keepalive_timeout: Dur,
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout: Dur,
    #[serde(default = "default_send_timeout")]
    pub send_timeout: Dur,
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_strip_request_headers")]
    pub strip_request_headers: Vec<String>,
    /// 0 = no limit.
    #[serde(default)]
    pub max_connections_per_ip: usize,
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Empty = any peer may send the PROXY header.
    #[serde(default)]
    pub proxy_protocol_from: Vec<Cidr>,
    /// TLS listeners: the `Strict-Transport-Security` value of every answer.
    #[serde(default)]
    pub hsts: Option<String>,
    /// Plain listeners: every request gets a 308 to https.
    #[serde(default)]
    pub redirect_https: bool,
    #[serde(default = "default_https_port")]
    pub https_port: u16,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A file (relative to the config folder) or `stderr`.
    #[serde(default = "default_access_log_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub format: AccessLogFormat,
}

impl AccessLogConfig {
    pub fn is_stderr(&self) -> bool {
        self.path.as_os_str() == "stderr"
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    #[default]
    Json,
    /// The Apache/NGINX combined format followed by the fields the JSON lines carry beyond it.
    Combined,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbModuleConfig {
    #[serde(default = "default_lb_module_listen")]
    pub listen: String,
    pub pool: String,
    #[serde(default = "default_base_path")]
    pub base_path: String,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    LeastLoaded,
    LeastConn,
    RoundRobin,
}

impl Balance {
    /// As written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::LeastLoaded => "least-loaded",
            Balance::LeastConn => "least-conn",
            Balance::RoundRobin => "round-robin",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WhenAllDown {
    TryAnyway,
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(default = "default_balance")]
    pub balance: Balance,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    #[serde(default = "default_when_all_down")]
    pub when_all_down: WhenAllDown,
    #[serde(default)]
    pub tls: PoolTlsConfig,
    #[serde(default)]
    pub sticky: StickyConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub backend: Vec<BackendConfig>,
}

impl PoolConfig {
    /// A pool with every default and no backends, as a file naming only the pool would give.
    pub fn named(name: &str) -> PoolConfig {
        PoolConfig {
            name: name.to_string(),
            balance: default_balance(),
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            when_all_down: default_when_all_down(),
            sticky: StickyConfig::default(),
            health: HealthConfig::default(),
            tls: PoolTlsConfig::default(),
            backend: Vec::new(),
        }
    }
}

/// `[pool.tls]`: how https:// backends are checked and what the balancer presents to them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolTlsConfig {
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Default: `[qlik_certs] ca` when that section is set, else the system roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Default: the host of each backend url.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl Default for PoolTlsConfig {
    fn default() -> Self {
        PoolTlsConfig {
            verify: true,
            ca: None,
            server_name: None,
            cert: None,
            key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecureMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    #[serde(default = "default_cookie")]
    pub cookie: String,
    #[serde(default = "default_secure")]
    pub secure: SecureMode,
    #[serde(default = "default_same_site")]
    pub same_site: SameSite,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_true")]
    pub learn_qlik_session: bool,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig {
            cookie: default_cookie(),
            secure: default_secure(),
            same_site: default_same_site(),
            secret_file: None,
            learn_qlik_session: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Http,
    Qix,
    Tcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_check")]
    pub check: CheckKind,
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check: default_check(),
            path: default_health_path(),
            interval: default_interval(),
            timeout: default_health_timeout(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub id: String,
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub engine_health: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QlikCertsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    #[serde(default)]
    pub verify_server: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrsConfig {
    pub url: String,
    #[serde(default = "default_qrs_user")]
    pub user: String,
    #[serde(default = "default_qrs_timeout")]
    pub timeout: Dur,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LicenseConfig {
    #[serde(default)]
    pub monitor: Option<MonitorConfig>,
    #[serde(default)]
    pub release: Option<ReleaseConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_monitor_schedule")]
    pub schedule: Parsed<Schedule>,
    #[serde(default = "default_true")]
    pub run_at_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_true")]
    pub dry_run: bool,
    #[serde(default = "default_release_schedule")]
    pub schedule: Parsed<Schedule>,
    #[serde(default = "default_true")]
    pub run_at_start: bool,
    #[serde(default = "default_timezone")]
    pub timezone: Parsed<Tz>,
    #[serde(default = "default_audit_log")]
    pub audit_log: PathBuf,
    #[serde(default = "default_max_releases")]
    pub max_releases_per_run: usize,
    #[serde(default)]
    pub professional: LicenseTypeConfig,
    #[serde(default)]
    pub analyzer: LicenseTypeConfig,
    #[serde(default)]
    pub never: NeverRelease,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseTypeConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_threshold_days")]
    pub threshold_days: u32,
}

impl Default for LicenseTypeConfig {
    fn default() -> Self {
        LicenseTypeConfig {
            enabled: true,
            threshold_days: default_threshold_days(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlagRule {
    #[default]
    Ignore,
    Yes,
    No,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CustomPropertyRule {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NeverRelease {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub custom_properties: Vec<CustomPropertyRule>,
    #[serde(default)]
    pub user_directories: Vec<String>,
    #[serde(default)]
    pub inactive: FlagRule,
    #[serde(default)]
    pub blocked: FlagRule,
    #[serde(default)]
    pub removed_externally: FlagRule,
}

fn default_true() -> bool {
    true
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_lb_module_listen() -> String {
    "0.0.0.0:8187".into()
}
fn default_base_path() -> String {
    "/".into()
}
fn default_shutdown_grace() -> Dur {
    Dur::secs(30)
}
fn default_header_timeout() -> Dur {
    Dur::secs(10)
}
fn default_keepalive_timeout() -> Dur {
    Dur::secs(300)
}
fn default_send_timeout() -> Dur {
    Dur::secs(60)
}
fn default_tunnel_idle_timeout() -> Dur {
    Dur::secs(3600)
}
fn default_max_header_bytes() -> usize {
    65536
}
fn default_max_connections() -> usize {
    100_000
}
pub fn default_strip_request_headers() -> Vec<String> {
    [
        "X-Qlik-User",
        "X-Qlik-Security",
        "X-Qlik-ProxySession",
        "X-Qlik-ProxyId",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn default_https_port() -> u16 {
    443
}
fn default_balance() -> Balance {
    Balance::LeastLoaded
}
fn default_connect_timeout() -> Dur {
    Dur::secs(3)
}
fn default_response_timeout() -> Dur {
    Dur::secs(120)
}
fn default_when_all_down() -> WhenAllDown {
    WhenAllDown::TryAnyway
}
fn default_cookie() -> String {
    "QLB_ROUTE".into()
}
fn default_secure() -> SecureMode {
    SecureMode::Auto
}
fn default_same_site() -> SameSite {
    SameSite::None
}
fn default_check() -> CheckKind {
    CheckKind::Http
}
fn default_health_path() -> String {
    "/".into()
}
fn default_interval() -> Dur {
    Dur::secs(5)
}
fn default_health_timeout() -> Dur {
    Dur::secs(2)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_weight() -> u32 {
    1
}
fn default_qrs_user() -> String {
    "INTERNAL\\sa_api".into()
}
fn default_qrs_timeout() -> Dur {
    Dur::secs(30)
}
fn default_monitor_schedule() -> Parsed<Schedule> {
    "every 6 hours".into()
}
fn default_release_schedule() -> Parsed<Schedule> {
    "every 24 hours".into()
}
fn default_timezone() -> Parsed<Tz> {
    "UTC".into()
}
fn default_access_log_path() -> PathBuf {
    "var/access.log".into()
}
fn default_audit_log() -> PathBuf {
    "var/license-release.jsonl".into()
}
fn default_max_releases() -> usize {
    200
}
fn default_threshold_days() -> u32 {
    30
}
