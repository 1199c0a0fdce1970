//! `qlik-lb check` as an administrator runs it: the reference config passes, a broken copy lists
//! every error with its key and line and exits 1.

use std::process::Command;

fn qlik_lb(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qlik-lb"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run qlik-lb");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_reference_config_checks_ok() {
    for args in [
        &["check", "config/qlik-lb.toml"][..],
        &["check", "--config", "config/qlik-lb.toml"],
    ] {
        let (code, text) = qlik_lb(args);
        assert_eq!(code, 0, "{text}");
        assert_eq!(text.lines().last(), Some("ok"), "{text}");
    }
}

#[test]
fn a_broken_copy_prints_every_error_and_exits_1() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/qlik-lb.toml"))
            .unwrap();
    let broken = reference
        .replace(
            "listen = \"0.0.0.0:443\"",
            "listen = \"0.0.0.0:443\"\nlisten_port = 443",
        )
        .replace(
            "pool = \"proxies\"                    # the",
            "pool = \"proxys\"                    # the",
        )
        .replace("rise = 2 ", "rise = 0 ")
        .replace(
            "schedule = \"every 6 hours\"",
            "schedule = \"every full moon\"",
        )
        .replace("timezone = \"UTC\"", "timezone = \"Europe/Atlantis\"");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let (code, text) = qlik_lb(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(!text.lines().any(|l| l == "ok"), "{text}");
    for expected in [
        "frontend[0].listen_port: unknown key `listen_port`; did you mean `listen`?",
        "frontend[0].pool: no [[pool]] is named `proxys`; did you mean `proxies`?",
        "pool[0].health.rise: must be at least 1",
        "license.monitor.schedule:",
        "license.release.timezone:",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("missing {expected:?} in:\n{text}"));
        assert!(line.contains("line "), "every error names its line: {line}");
    }
}

#[test]
fn an_unreadable_file_is_a_clear_error() {
    let (code, text) = qlik_lb(&["check", "no/such/file.toml"]);
    assert_eq!(code, 1);
    assert!(text.contains("cannot read the config file"), "{text}");
}

#[test]
fn unverified_backend_tls_checks_ok_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unverified.toml");
    std::fs::write(
        &path,
        r#"
[[frontend]]
name = "public"
listen = "127.0.0.1:8443"
pool = "proxies"

[[pool]]
name = "proxies"
  [pool.tls]
  verify = false
  [[pool.backend]]
  id = "node1"
  url = "https://qs-node1.corp.example:443"
"#,
    )
    .unwrap();
    let (code, text) = qlik_lb(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("warning: ")
            && l.contains("pool[0].tls.verify")
            && l.contains("not verified")),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("ok"), "{text}");
}

/// Every ```toml block of the README is a config `check` accepts (files it names may be absent);
/// a block showing one section alone is checked under a loopback admin listener.
#[test]
fn every_config_in_the_readme_checks_ok() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty(), "the README shows a config");
    for (i, block) in blocks.iter().enumerate() {
        let path = dir.path().join(format!("readme-{i}.toml"));
        let whole = block.contains("[[frontend]]") || block.contains("[admin]");
        let text = if whole {
            block.to_string()
        } else {
            format!("[admin]\nlisten = \"127.0.0.1:9090\"\n\n{block}")
        };
        std::fs::write(&path, text).unwrap();
        let (code, text) = qlik_lb(&["check", path.to_str().unwrap()]);
        assert_eq!(code, 0, "README block {i}:\n{block}\n{text}");
        for line in text.lines().filter(|l| l.starts_with("warning: ")) {
            assert!(line.contains("does not exist"), "README block {i}: {line}");
        }
    }
}

#[test]
fn the_reference_cluster_section_uncommented_checks_ok_and_bad_values_name_their_keys() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/qlik-lb.toml"))
            .unwrap();
    let on = reference
        .replace("# [cluster]", "[cluster]")
        .replace("# etcd = [", "etcd = [");
    assert!(
        on.contains("\n[cluster]"),
        "the reference documents [cluster]"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, &on).unwrap();
    let (code, text) = qlik_lb(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");

    let bad = on.replace(
        "etcd = [\"http://127.0.0.1:2379\"]",
        "etcd = [\"127.0.0.1:2379\"]\nlease_ttl = \"1s\"\nprefix = \"qlik\"",
    );
    std::fs::write(&path, bad).unwrap();
    let (code, text) = qlik_lb(&["check", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    for key in ["cluster.etcd:", "cluster.lease_ttl:", "cluster.prefix:"] {
        assert!(text.contains(key), "{key} in {text}");
    }
}
