//! The docker-compose setup, read from the files (Docker does not run here): the compose file
//! parses, every command is one the real CLI accepts, every path exists, every port lines up with
//! the config qlik-lb runs, and the Grafana dashboard queries only metrics the crate defines.

use qlik_lb::config::Config;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// `qlik-lb <sub> --help` of the real binary.
fn help(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_qlik-lb"))
        .args([sub, "--help"])
        .output()
        .expect("run qlik-lb");
    assert!(out.status.success(), "qlik-lb {sub} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Every `--flag` of a compose command must be one the subcommand documents.
fn assert_cli_accepts(command: &[String]) {
    let text = help(&command[0]);
    for flag in command.iter().filter(|a| a.starts_with("--")) {
        assert!(
            text.contains(flag.as_str()),
            "`qlik-lb {}` has no {flag}",
            command[0]
        );
    }
}

fn flag<'a>(command: &'a [String], name: &str) -> &'a str {
    let i = command
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} in {command:?}"));
    &command[i + 1]
}

/// The compose config with the simulator's certificate folder swapped for a local one.
fn compose_config(cert_dir: &Path) -> Config {
    let text =
        read("config/compose.toml").replace("\"/certs/", &format!("\"{}/", cert_dir.display()));
    Config::parse(&text, &repo().join("config"))
        .unwrap_or_else(|e| panic!("config/compose.toml:\n{e}"))
}

fn port_of(listen: &str) -> u16 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn compose_services_match_the_cli_the_files_and_the_config() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    for name in ["sim", "qlik-lb", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name}");
    }

    let sim = strings(&doc["services"]["sim"]["command"]);
    assert_eq!(sim[0], "sim");
    assert_cli_accepts(&sim);
    let nodes: u16 = flag(&sim, "--nodes").parse().unwrap();
    let base: u16 = flag(&sim, "--base-port").parse().unwrap();
    assert_eq!(flag(&sim, "--bind"), "0.0.0.0");
    let cert_dir = flag(&sim, "--cert-dir").to_string();

    let lb = strings(&doc["services"]["qlik-lb"]["command"]);
    assert_eq!(lb[0], "run");
    assert_cli_accepts(&lb);
    let config_in_container = flag(&lb, "--config").to_string();

    // Every host path mounted exists in the repo; the config mount is the file `run` reads;
    // both services share the certificate folder the simulator writes.
    let mut mounted_config = None;
    let mut cert_mounts = 0;
    for (name, svc) in services {
        let Some(vols) = svc.get("volumes") else {
            continue;
        };
        for v in strings(vols) {
            let mut parts = v.split(':');
            let (host, inside) = (parts.next().unwrap(), parts.next().unwrap());
            if let Some(rel) = host.strip_prefix("./") {
                assert!(repo().join(rel).exists(), "{name:?} mounts missing {host}");
                if inside == config_in_container {
                    mounted_config = Some(rel.to_string());
                }
            } else {
                assert!(
                    doc["volumes"].get(host).is_some(),
                    "named volume {host} declared"
                );
            }
            if inside == cert_dir {
                cert_mounts += 1;
            }
        }
    }
    assert_eq!(mounted_config.as_deref(), Some("config/compose.toml"));
    assert_eq!(
        cert_mounts, 4,
        "sim, qlik-lb and the cluster's lb-a and lb-b share {cert_dir}"
    );

    // The config is valid once the certificates are there, and it points at the simulator.
    let certs = tempfile::tempdir().unwrap();
    for f in ["root.pem", "client.pem", "client_key.pem"] {
        std::fs::write(certs.path().join(f), "placeholder").unwrap();
    }
    let cfg = compose_config(certs.path()).file;
    let sim_ports: BTreeSet<String> = (base..base + nodes)
        .map(|p| format!("http://sim:{p}"))
        .collect();
    for pool in &cfg.pool {
        let urls: BTreeSet<String> = pool.backend.iter().map(|b| b.url.clone()).collect();
        assert_eq!(
            urls, sim_ports,
            "pool {} covers every simulated node",
            pool.name
        );
    }
    assert_eq!(
        cfg.qrs.as_ref().unwrap().url,
        format!("https://sim:{}", base + nodes)
    );
    let release = cfg.license.as_ref().unwrap().release.as_ref().unwrap();
    assert!(
        release.enabled && release.dry_run,
        "license release runs in dry run"
    );
    assert!(
        cfg.license
            .as_ref()
            .unwrap()
            .monitor
            .as_ref()
            .unwrap()
            .enabled
    );

    // Published ports are the listeners of the config.
    let published: BTreeSet<u16> = strings(&doc["services"]["qlik-lb"]["ports"])
        .iter()
        .map(|p| {
            let (outside, inside) = p.split_once(':').unwrap();
            assert_eq!(outside, inside);
            inside.parse().unwrap()
        })
        .collect();
    let admin_port = port_of(&cfg.admin.as_ref().unwrap().listen);
    let listening: BTreeSet<u16> = [
        port_of(&cfg.frontend[0].listen),
        port_of(&cfg.lb_module.as_ref().unwrap().listen),
        admin_port,
    ]
    .into();
    assert_eq!(published, listening);

    // Prometheus scrapes the admin listener by service name.
    let prom: Value = serde_yaml::from_str(&read("config/prometheus.yml")).unwrap();
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(
        strings(&job["static_configs"][0]["targets"]),
        vec![format!("qlik-lb:{admin_port}")]
    );
    let prom_cmd = strings(&doc["services"]["prometheus"]["command"]);
    assert!(prom_cmd.contains(&"--config.file=/etc/prometheus/prometheus.yml".to_string()));

    // Grafana's datasource points at the prometheus service; its dashboards folder is mounted.
    let ds: Value = serde_yaml::from_str(&read(
        "config/grafana/provisioning/datasources/prometheus.yml",
    ))
    .unwrap();
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
    let provider: Value =
        serde_yaml::from_str(&read("config/grafana/provisioning/dashboards/qlik-lb.yml")).unwrap();
    let dash_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(strings(&doc["services"]["grafana"]["volumes"])
        .contains(&format!("./config/grafana/dashboards:{dash_path}:ro")));
}

#[test]
fn dockerfile_builds_the_binary_and_runs_it_on_debian_slim() {
    let text = read("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "two stages");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS build"));
    assert!(froms[1].starts_with("FROM debian:") && froms[1].contains("-slim"));
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
    assert!(text.contains("cargo build --release --locked --bin qlik-lb"));
    assert!(text.contains("COPY --from=build /src/target/release/qlik-lb /usr/local/bin/qlik-lb"));
    assert!(text.contains(r#"ENTRYPOINT ["qlik-lb"]"#));
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}

/// Metric names a PromQL expression uses, histogram series mapped to their metric.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("qlb_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_string());
        i = end;
    }
    out
}

#[test]
fn dashboard_queries_only_defined_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("config/grafana/dashboards/qlik-lb.json")).expect("JSON");
    let defined = read("src/metrics.rs");
    let mut used = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} queries a qlik-lb metric");
            used.extend(names);
        }
    }
    for name in &used {
        assert!(
            defined.contains(&format!("\"{name}\"")),
            "{name} is not in src/metrics.rs"
        );
    }
    for wanted in [
        "qlb_http_requests_total",
        "qlb_http_request_duration_seconds",
        "qlb_websocket_tunnels_active",
        "qlb_engine_cpu_percent",
        "qlb_engine_memory_committed_bytes",
        "qlb_sticky_decisions_total",
        "qlb_license_used",
        "qlb_license_release_decisions_total",
    ] {
        assert!(used.contains(wanted), "the dashboard shows {wanted}");
    }
}

#[test]
fn the_compose_cluster_is_two_instances_over_the_etcd_service() {
    let doc = compose();
    let etcd = strings(&doc["services"]["etcd"]["command"]);
    assert!(etcd.contains(&"--listen-client-urls=http://0.0.0.0:2379".to_string()));
    let single = read("config/compose.toml");
    let cluster = read("config/compose-cluster.toml");
    let (head, section) = cluster
        .split_once("\n[cluster]\n")
        .expect("compose-cluster.toml has [cluster]");
    // Same config as the single instance, below its two comment lines, plus [cluster].
    let body = |t: &str| t.lines().skip(2).collect::<Vec<_>>().join("\n");
    assert_eq!(body(head).trim_end(), body(&single).trim_end());
    assert!(
        section.contains("etcd = [\"http://etcd:2379\"]"),
        "{section}"
    );
    for (name, admin) in [("lb-a", "9190:9090"), ("lb-b", "9290:9090")] {
        let svc = &doc["services"][name];
        assert_eq!(
            svc["hostname"].as_str(),
            Some(name),
            "the cluster name is the host name"
        );
        let cmd = strings(&svc["command"]);
        assert_cli_accepts(&cmd);
        let inside = flag(&cmd, "--config");
        let mounts = strings(&svc["volumes"]);
        assert!(
            mounts
                .iter()
                .any(|m| m.starts_with("./config/compose-cluster.toml:") && m.contains(inside)),
            "{name} runs the cluster config: {mounts:?}"
        );
        assert!(
            strings(&svc["ports"]).contains(&admin.to_string()),
            "{name}"
        );
    }
    let certs = tempfile::tempdir().unwrap();
    for f in ["root.pem", "client.pem", "client_key.pem"] {
        std::fs::write(certs.path().join(f), "placeholder").unwrap();
    }
    let text = cluster.replace("\"/certs/", &format!("\"{}/", certs.path().display()));
    let cfg = Config::parse(&text, &repo().join("config"))
        .unwrap_or_else(|e| panic!("config/compose-cluster.toml:\n{e}"));
    let c = cfg.file.cluster.expect("[cluster]");
    assert_eq!(c.etcd, ["http://etcd:2379"]);
}
