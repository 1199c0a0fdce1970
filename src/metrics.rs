//! Every metric name of the product, with its help text, in one place. Labels come only from
//! bounded sets: pool, backend id, frontend name, and fixed words.
//!
//! Each running instance owns its own `Metrics` (and prometheus registry), so two instances in
//! one process — the demo, or tests — never mix their numbers.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub backend_up: IntGaugeVec,
    pub backend_draining: IntGaugeVec,
    pub backend_inflight_requests: IntGaugeVec,
    pub backend_health_checks_total: IntCounterVec,
    pub backend_ejections_total: IntCounterVec,
    pub websocket_tunnels_active: IntGaugeVec,
    pub websocket_tunnels_total: IntCounterVec,
    pub websocket_bytes_total: IntCounterVec,
    pub sticky_decisions_total: IntCounterVec,
    pub client_errors_total: IntCounterVec,
    pub engine_cpu_percent: GaugeVec,
    pub engine_memory_committed_bytes: GaugeVec,
    pub engine_memory_free_bytes: GaugeVec,
    pub engine_sessions_active: IntGaugeVec,
    pub engine_users_active: IntGaugeVec,
    pub engine_saturated: IntGaugeVec,
    pub lbmodule_requests_total: IntCounterVec,
    pub lbmodule_request_duration_seconds: Histogram,
    pub config_reloads_total: IntCounterVec,
    pub config_last_reload_success_timestamp_seconds: Gauge,
    pub license_entitled: IntGaugeVec,
    pub license_allocated: IntGaugeVec,
    pub license_used: IntGaugeVec,
    pub license_available: IntGaugeVec,
    pub license_quarantined: IntGaugeVec,
    pub license_excess: IntGaugeVec,
    pub license_analyzer_capacity_seconds: IntGaugeVec,
    pub license_tokens: GaugeVec,
    pub license_release_decisions_total: IntCounterVec,
    pub job_runs_total: IntCounterVec,
    pub job_last_success_timestamp_seconds: GaugeVec,
    pub tls_certificate_expiry_timestamp_seconds: GaugeVec,
    pub access_log_dropped_total: IntCounter,
    pub build_info: IntGauge,
    pub cluster: ClusterGauges,
}

/// `qlb_cluster_*`: this instance's view of the cluster (all 0 without `[cluster]`).
#[derive(Clone)]
pub struct ClusterGauges {
    pub connected: IntGauge,
    pub leader: IntGauge,
    pub members: IntGauge,
}

impl ClusterGauges {
    fn new(r: &Registry) -> ClusterGauges {
        let g = |name: &str, help: &str| {
            let m = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        };
        ClusterGauges {
            connected: g(
                "qlb_cluster_connected",
                "1 while this instance holds a live session with etcd.",
            ),
            leader: g(
                "qlb_cluster_leader",
                "1 while this instance is the cluster leader (runs the license jobs).",
            ),
            members: g(
                "qlb_cluster_members",
                "Instances this one sees in the cluster, itself included.",
            ),
        }
    }
}

const POOL_BACKEND: &[&str] = &["pool", "backend"];

/// Latency buckets from 100 µs to 2 minutes: a proxy hop is sub-millisecond, a Qlik app open can take a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        }
        fn igauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        }
        fn fgauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
            let m = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(m.clone())).expect("unique metric");
            m
        }
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "qlb_http_request_duration_seconds",
                "Time from request head received to backend response headers.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            POOL_BACKEND,
        )
        .expect("valid metric");
        r.register(Box::new(http_request_duration_seconds.clone()))
            .expect("unique metric");
        let lbmodule_request_duration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "qlb_lbmodule_request_duration_seconds",
                "Time to answer a load balancing module prioritize call.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(lbmodule_request_duration_seconds.clone()))
            .expect("unique metric");
        let config_last_reload_success_timestamp_seconds = Gauge::new(
            "qlb_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load or reload that succeeded.",
        )
        .expect("valid metric");
        r.register(Box::new(
            config_last_reload_success_timestamp_seconds.clone(),
        ))
        .expect("unique metric");
        let build_info = IntGauge::with_opts(
            Opts::new("qlb_build_info", "Always 1; the version is in the label.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        build_info.set(1);
        r.register(Box::new(build_info.clone()))
            .expect("unique metric");
        let access_log_dropped_total = IntCounter::new(
            "qlb_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )
        .expect("valid metric");
        r.register(Box::new(access_log_dropped_total.clone()))
            .expect("unique metric");
        let lic = &["license_type"];
        Metrics {
            http_requests_total: counter(
                r,
                "qlb_http_requests_total",
                "HTTP requests answered, by status class.",
                &["frontend", "pool", "backend", "code"],
            ),
            http_request_duration_seconds,
            backend_up: igauge(
                r,
                "qlb_backend_up",
                "1 when the backend is up by its health checks.",
                POOL_BACKEND,
            ),
            backend_draining: igauge(
                r,
                "qlb_backend_draining",
                "1 when the backend is draining (no new users).",
                POOL_BACKEND,
            ),
            backend_inflight_requests: igauge(
                r,
                "qlb_backend_inflight_requests",
                "HTTP requests being forwarded to the backend now.",
                POOL_BACKEND,
            ),
            backend_health_checks_total: counter(
                r,
                "qlb_backend_health_checks_total",
                "Active health checks, by result.",
                &["pool", "backend", "result"],
            ),
            backend_ejections_total: counter(
                r,
                "qlb_backend_ejections_total",
                "Passive ejections after connect failures or resets.",
                POOL_BACKEND,
            ),
            websocket_tunnels_active: igauge(
                r,
                "qlb_websocket_tunnels_active",
                "WebSocket tunnels open now.",
                POOL_BACKEND,
            ),
            websocket_tunnels_total: counter(
                r,
                "qlb_websocket_tunnels_total",
                "WebSocket tunnels opened.",
                POOL_BACKEND,
            ),
            websocket_bytes_total: counter(
                r,
                "qlb_websocket_bytes_total",
                "Bytes spliced through WebSocket tunnels.",
                &["pool", "backend", "direction"],
            ),
            sticky_decisions_total: counter(
                r,
                "qlb_sticky_decisions_total",
                "Routing decisions: hit, learned, miss, reassigned, invalid.",
                &["pool", "outcome"],
            ),
            client_errors_total: counter(
                r,
                "qlb_client_errors_total",
                "Client connections and requests refused before routing, by kind (bad_request, header_too_large, header_timeout, tls, send_timeout, proxy_protocol, per_ip_limit).",
                &["frontend", "kind"],
            ),
            engine_cpu_percent: fgauge(
                r,
                "qlb_engine_cpu_percent",
                "Engine CPU % from its health check.",
                POOL_BACKEND,
            ),
            engine_memory_committed_bytes: fgauge(
                r,
                "qlb_engine_memory_committed_bytes",
                "Engine committed memory.",
                POOL_BACKEND,
            ),
            engine_memory_free_bytes: fgauge(
                r,
                "qlb_engine_memory_free_bytes",
                "Free physical memory on the engine's machine.",
                POOL_BACKEND,
            ),
            engine_sessions_active: igauge(
                r,
                "qlb_engine_sessions_active",
                "Active engine sessions.",
                POOL_BACKEND,
            ),
            engine_users_active: igauge(
                r,
                "qlb_engine_users_active",
                "Active engine users.",
                POOL_BACKEND,
            ),
            engine_saturated: igauge(
                r,
                "qlb_engine_saturated",
                "1 when the engine reports itself saturated.",
                POOL_BACKEND,
            ),
            lbmodule_requests_total: counter(
                r,
                "qlb_lbmodule_requests_total",
                "Load balancing module calls, by result.",
                &["result"],
            ),
            lbmodule_request_duration_seconds,
            config_reloads_total: counter(
                r,
                "qlb_config_reloads_total",
                "Config reloads, by result.",
                &["result"],
            ),
            config_last_reload_success_timestamp_seconds,
            license_entitled: igauge(
                r,
                "qlb_license_entitled",
                "User access licenses the license grants.",
                lic,
            ),
            license_allocated: igauge(
                r,
                "qlb_license_allocated",
                "Allocated user access licenses.",
                lic,
            ),
            license_used: igauge(r, "qlb_license_used", "Used user access licenses.", lic),
            license_available: igauge(
                r,
                "qlb_license_available",
                "Available user access licenses.",
                lic,
            ),
            license_quarantined: igauge(
                r,
                "qlb_license_quarantined",
                "Quarantined user access licenses.",
                lic,
            ),
            license_excess: igauge(
                r,
                "qlb_license_excess",
                "Allocations over the license.",
                lic,
            ),
            license_analyzer_capacity_seconds: igauge(
                r,
                "qlb_license_analyzer_capacity_seconds",
                "Analyzer capacity time (Qlik counts minutes; exported in seconds).",
                &["kind"],
            ),
            license_tokens: fgauge(
                r,
                "qlb_license_tokens",
                "License tokens (token-based licenses).",
                &["kind"],
            ),
            license_release_decisions_total: counter(
                r,
                "qlb_license_release_decisions_total",
                "License release decisions.",
                &["license_type", "decision"],
            ),
            job_runs_total: counter(
                r,
                "qlb_job_runs_total",
                "Control plane job runs, by result.",
                &["job", "result"],
            ),
            job_last_success_timestamp_seconds: fgauge(
                r,
                "qlb_job_last_success_timestamp_seconds",
                "Unix time of the job's last successful run.",
                &["job"],
            ),
            tls_certificate_expiry_timestamp_seconds: fgauge(
                r,
                "qlb_tls_certificate_expiry_timestamp_seconds",
                "Unix time the served certificate expires (its notAfter).",
                &["frontend", "name"],
            ),
            access_log_dropped_total,
            build_info,
            cluster: ClusterGauges::new(r),
            registry,
        }
    }

    /// Drops every `qlb_license_*` and `qlb_job_*` series: a follower exports none, so the
    /// site's license numbers come from the leader alone.
    pub fn clear_control_plane_series(&self) {
        for m in [
            &self.license_entitled,
            &self.license_allocated,
            &self.license_used,
            &self.license_available,
            &self.license_quarantined,
            &self.license_excess,
            &self.license_analyzer_capacity_seconds,
        ] {
            m.reset();
        }
        self.license_tokens.reset();
        self.license_release_decisions_total.reset();
        self.job_runs_total.reset();
        self.job_last_success_timestamp_seconds.reset();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The `code` label values of `qlb_http_requests_total`.
pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into `CODE_CLASSES` for a response code (anything out of range counts as 5xx).
pub fn code_class_index(status: u16) -> usize {
    match status {
        100..=599 => (status / 100) as usize - 1,
        _ => 4,
    }
}

/// Status class label for a response code: "1xx" .. "5xx".
pub fn code_class(status: u16) -> &'static str {
    CODE_CLASSES[code_class_index(status)]
}
