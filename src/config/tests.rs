use super::*;
use std::path::Path;

fn errors(src: &str) -> Vec<ConfigError> {
    Config::parse(src, Path::new("."))
        .expect_err("should fail")
        .errors
}

const MINIMAL: &str = r#"
[[frontend]]
name = "public"
listen = "127.0.0.1:8080"
pool = "proxies"

[[pool]]
name = "proxies"
  [[pool.backend]]
  id = "node1"
  url = "http://127.0.0.1:9001"
"#;

#[test]
fn minimal_config_loads_with_defaults() {
    let cfg = Config::parse(MINIMAL, Path::new(".")).expect("valid");
    let fe = &cfg.file.frontend[0];
    assert_eq!(fe.max_header_bytes, 65536);
    assert_eq!(fe.header_timeout.get().as_secs(), 10);
    assert_eq!(cfg.file.pool[0].sticky.cookie, "QLB_ROUTE");
    assert_eq!(cfg.file.pool[0].balance, Balance::LeastLoaded);
    assert_eq!(cfg.hash.len(), 64);
}

#[test]
fn unknown_key_names_line_and_nearest_key() {
    let src = MINIMAL.replace("listen = \"127.0.0.1:8080\"", "listn = \"127.0.0.1:8080\"");
    let errs = errors(&src);
    let e = errs
        .iter()
        .find(|e| e.message.contains("listn"))
        .expect("unknown key reported");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("did you mean `listen`"), "{e}");
    assert_eq!(e.key, "frontend[0].listn");
}

#[test]
fn every_unknown_key_is_reported_in_one_run() {
    let src = MINIMAL
        .replace("name = \"public\"", "name = \"public\"\nbogus = 1")
        .replace("id = \"node1\"", "id = \"node1\"\n  wieght = 2");
    let errs = errors(&src);
    assert!(
        errs.iter().any(|e| e.message.contains("`bogus`")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.message.contains("did you mean `weight`")),
        "{errs:?}"
    );
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let src = MINIMAL.replace(
        "url = \"http://127.0.0.1:9001\"",
        "url = \"http://127.0.0.1:9001\"\n  weight = \"heavy\"",
    );
    let errs = errors(&src);
    let e = &errs[0];
    assert_eq!(e.key, "pool[0].backend[0].weight", "{e}");
    assert_eq!(e.line, Some(12), "{e}");
}

#[test]
fn bad_duration_is_explained() {
    let src = MINIMAL.replace(
        "pool = \"proxies\"",
        "pool = \"proxies\"\nheader_timeout = \"10\"",
    );
    let errs = errors(&src);
    assert_eq!(errs[0].key, "frontend[0].header_timeout");
    assert!(errs[0].message.contains("\"30s\""), "{}", errs[0]);
}

#[test]
fn bad_enum_lists_the_choices() {
    let src = MINIMAL.replace(
        "name = \"proxies\"",
        "name = \"proxies\"\nbalance = \"random\"",
    );
    let errs = errors(&src);
    assert!(errs[0].message.contains("least-loaded"), "{}", errs[0]);
    assert_eq!(errs[0].key, "pool[0].balance");
}

#[test]
fn semantic_errors_name_key_and_line() {
    let src = MINIMAL
        .replace("pool = \"proxies\"", "pool = \"proxys\"")
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"")
        .replace("url = \"http://127.0.0.1:9001\"", "url = \"ftp://x\"");
    let errs = errors(&src);
    let pool = errs
        .iter()
        .find(|e| e.key == "frontend[0].pool")
        .expect("pool error");
    assert!(pool.message.contains("did you mean `proxies`"), "{pool}");
    assert_eq!(pool.line, Some(5));
    let listen = errs
        .iter()
        .find(|e| e.key == "frontend[0].listen")
        .expect("listen error");
    assert_eq!(listen.line, Some(4));
    let url = errs
        .iter()
        .find(|e| e.key == "pool[0].backend[0].url")
        .expect("url error");
    assert_eq!(url.line, Some(11));
    assert!(url.message.contains("http://"), "{url}");
}

#[test]
fn duplicate_backend_ids_and_zero_weight() {
    let src = format!(
        "{MINIMAL}  weight = 0\n  [[pool.backend]]\n  id = \"node1\"\n  url = \"http://127.0.0.1:9002\"\n"
    );
    let errs = errors(&src);
    assert!(
        errs.iter()
            .any(|e| e.key == "pool[0].backend[1].id" && e.message.contains("twice")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.key == "pool[0].backend[0].weight"),
        "{errs:?}"
    );
}

#[test]
fn same_site_none_with_secure_never_is_refused() {
    let src = format!("{MINIMAL}  [pool.sticky]\n  secure = \"never\"\n");
    let errs = errors(&src);
    assert!(
        errs.iter().any(|e| e.key == "pool[0].sticky.secure"),
        "{errs:?}"
    );
}

#[test]
fn missing_file_is_reported() {
    let src = MINIMAL.replace(
        "pool = \"proxies\"",
        "pool = \"proxies\"\ntls = { cert = \"nope.pem\", key = \"nope-key.pem\" }",
    );
    let cfg = Config::parse(&src, Path::new(".")).expect("missing files are not parse errors");
    let missing = &cfg.missing_files;
    assert!(
        missing
            .iter()
            .any(|e| e.key == "frontend[0].tls.cert" && e.line == Some(6)),
        "{missing:?}"
    );
    assert!(
        missing.iter().any(|e| e.key == "frontend[0].tls.key"),
        "{missing:?}"
    );
}

#[test]
fn bad_schedule_and_timezone_name_their_keys() {
    let src = r#"
[qlik_certs]
cert = "Cargo.toml"
key = "Cargo.toml"
ca = "Cargo.toml"
[qrs]
url = "https://qrs.example:4242"
[license.monitor]
schedule = "every blue moon"
[license.release]
timezone = "Mars/Olympus"
"#;
    let errs = Config::parse(src, Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect_err("fails")
        .errors;
    let s = errs
        .iter()
        .find(|e| e.key == "license.monitor.schedule")
        .expect("schedule error");
    assert_eq!(s.line, Some(9));
    assert!(
        errs.iter()
            .any(|e| e.key == "license.release.timezone" && e.line == Some(11)),
        "{errs:?}"
    );
}

#[test]
fn syntax_error_has_a_line() {
    let errs = errors("[[frontend]]\nname = \"x\nlisten = 1\n");
    assert!(errs[0].message.starts_with("not valid TOML"), "{}", errs[0]);
    assert_eq!(errs[0].line, Some(2));
}

#[test]
fn cluster_defaults_and_bad_values_name_their_keys() {
    let ok = format!("{MINIMAL}\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n");
    let cfg = Config::parse(&ok, Path::new(".")).expect("valid");
    let c = cfg.file.cluster.as_ref().expect("[cluster]");
    assert_eq!(c.prefix, "/qlik-lb/");
    assert_eq!(c.lease_ttl.get().as_secs(), 10);
    assert!(c.share_learned_sessions);
    assert!(!c.name.is_empty(), "the host name by default");

    let bad = format!(
        "{MINIMAL}\n[cluster]\netcd = [\"127.0.0.1:2379\"]\nname = \"a/b\"\nprefix = \"/qlik-lb\"\nlease_ttl = \"1s\"\ntls = {{ cert = \"c.pem\" }}\n"
    );
    let errs = errors(&bad);
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "cluster.etcd",
        "cluster.name",
        "cluster.prefix",
        "cluster.lease_ttl",
        "cluster.tls",
    ] {
        assert!(keys.contains(&key), "{key} missing in {errs:?}");
    }
    assert!(errs.iter().all(|e| e.line.is_some()), "{errs:?}");
}
