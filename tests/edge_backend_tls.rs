//! §3.2 Backend TLS: https:// backends are verified against `[pool.tls] ca` (default
//! `[qlik_certs] ca`) with the url's host or `server_name` as the name; a failed verification is a
//! failed connect (502, ejection) and no request reaches the backend.

mod engine_stub;
mod support;

use engine_stub::{EngineStub, TestPki};
use qlik_lb::app::Instance;
use std::path::Path;
use support::{eventually, metric_reaches, raw, start_in, within};

/// A front door over one https backend, with `pool_tls` under `[pool.tls]` and `extra` sections.
fn config(backend: &EngineStub, pool_tls: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[frontend]]
name = "public"
listen = "127.0.0.1:0"
pool = "proxies"

[[pool]]
name = "proxies"
connect_timeout = "2s"
response_timeout = "5s"
  [pool.tls]
{pool_tls}
  [pool.health]
  # A TCP check opens no TLS session: only proxied requests reach the TLS handshake.
  check = "tcp"
  interval = "1h"
  [[pool.backend]]
  id = "b1"
  url = "https://{addr}"
{extra}
"#,
        addr = backend.addr
    )
}

async fn https_backend(pki: &TestPki, require_client: bool) -> EngineStub {
    EngineStub::start_tls(
        200,
        "from the backend",
        Some(pki.server_config(require_client)),
    )
    .await
}

async fn front_door(toml: &str, dir: &Path) -> Instance {
    start_in(toml, dir).await
}

/// A GET through the front door: the status the client got.
async fn get_status(lb: &Instance) -> u16 {
    let front = lb.frontend_addr("public").unwrap();
    within(10, raw::get(front, "/", &[])).await.status
}

/// The backend saw a TLS handshake it lost (the balancer's alert), and no request at all.
async fn refused_before_any_request(lb: &Instance, backend: &EngineStub) {
    assert_eq!(get_status(lb).await, 502);
    eventually(5, || {
        backend
            .handshake_errors()
            .iter()
            .any(|e| e.contains("alert"))
    })
    .await;
    assert_eq!(backend.hits(), 0, "no request was decoded by the backend");
    metric_reaches(
        lb,
        r#"qlb_backend_ejections_total{backend="b1",pool="proxies"}"#,
        1.0,
        5,
    )
    .await;
}

#[tokio::test]
async fn a_backend_signed_by_the_configured_ca_is_reached() {
    let site = TestPki::generate("site");
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    let backend = https_backend(&site, false).await;
    let lb = front_door(&config(&backend, "  ca = \"root.pem\"", ""), dir.path()).await;
    assert_eq!(get_status(&lb).await, 200);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn the_ca_defaults_to_the_qlik_certs_ca() {
    let site = TestPki::generate("site");
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    let backend = https_backend(&site, false).await;
    let qlik_certs =
        "[qlik_certs]\ncert = \"client.pem\"\nkey = \"client_key.pem\"\nca = \"root.pem\"\n";
    let lb = front_door(&config(&backend, "", qlik_certs), dir.path()).await;
    assert_eq!(get_status(&lb).await, 200);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn a_backend_signed_by_another_ca_gets_no_request_and_is_ejected() {
    let site = TestPki::generate("site");
    let stranger = TestPki::generate("stranger");
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    let backend = https_backend(&stranger, false).await;
    let lb = front_door(&config(&backend, "  ca = \"root.pem\"", ""), dir.path()).await;
    refused_before_any_request(&lb, &backend).await;
}

#[tokio::test]
async fn a_certificate_for_another_name_gets_no_request() {
    let site = TestPki::generate("site");
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    let backend = https_backend(&site, false).await;
    let pool_tls = "  ca = \"root.pem\"\n  server_name = \"qs-node9.corp.example\"";
    let lb = front_door(&config(&backend, pool_tls, ""), dir.path()).await;
    refused_before_any_request(&lb, &backend).await;
}

#[tokio::test]
async fn server_name_replaces_the_url_host() {
    // The url names 127.0.0.1; the certificate also carries `localhost`, which is asked for.
    let site = TestPki::generate("site");
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    let backend = https_backend(&site, false).await;
    let pool_tls = "  ca = \"root.pem\"\n  server_name = \"localhost\"";
    let lb = front_door(&config(&backend, pool_tls, ""), dir.path()).await;
    assert_eq!(get_status(&lb).await, 200);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn verify_false_reaches_a_backend_of_any_ca() {
    let stranger = TestPki::generate("stranger");
    let dir = tempfile::tempdir().unwrap();
    let backend = https_backend(&stranger, false).await;
    let lb = front_door(&config(&backend, "  verify = false", ""), dir.path()).await;
    assert_eq!(get_status(&lb).await, 200);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let site = TestPki::generate("site");
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    let backend = https_backend(&site, true).await;
    let pool_tls = "  ca = \"root.pem\"\n  cert = \"client.pem\"\n  key = \"client_key.pem\"";
    let lb = front_door(&config(&backend, pool_tls, ""), dir.path()).await;
    assert_eq!(get_status(&lb).await, 200);
    assert_eq!(backend.hits(), 1);
}

#[test]
fn a_client_certificate_without_its_key_is_refused_with_its_key_path() {
    let toml = r#"
[[frontend]]
name = "public"
listen = "127.0.0.1:0"
pool = "proxies"

[[pool]]
name = "proxies"
  [pool.tls]
  cert = "client.pem"
  [[pool.backend]]
  id = "b1"
  url = "https://127.0.0.1:1"
"#;
    let err = qlik_lb::config::Config::parse(toml, Path::new(".")).expect_err("refused");
    assert!(
        err.errors.iter().any(|e| e.key == "pool[0].tls.key"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reload_that_turns_verification_on_reuses_no_unverified_connection() {
    let site = TestPki::generate("site");
    let stranger = TestPki::generate("stranger");
    let dir = tempfile::tempdir().unwrap();
    site.write_client_files(dir.path());
    let backend = https_backend(&stranger, false).await;
    let file = dir.path().join("qlik-lb.toml");
    std::fs::write(&file, config(&backend, "  verify = false", "")).unwrap();
    let lb = Instance::start(qlik_lb::config::Config::load(&file).unwrap())
        .await
        .unwrap();
    // One client connection throughout: its requests run on one worker, whose idle pool holds
    // the backend connection of the first answer.
    let front = lb.frontend_addr("public").unwrap();
    // The first health round (a TCP connect) runs at start; the next is an hour away.
    eventually(5, || backend.accepted() == 1).await;
    let mut client = tokio::net::TcpStream::connect(front).await.unwrap();
    let mut buf = Vec::new();
    let get = b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n";
    assert_eq!(
        within(10, raw::exchange(&mut client, &mut buf, get))
            .await
            .status,
        200
    );
    assert_eq!(
        within(10, raw::exchange(&mut client, &mut buf, get))
            .await
            .status,
        200
    );
    assert_eq!(
        backend.accepted(),
        2,
        "the second request reused the pooled connection"
    );

    std::fs::write(&file, config(&backend, "  ca = \"root.pem\"", "")).unwrap();
    assert!(lb.reload(qlik_lb::reload::Trigger::Api).await.ok);
    assert_eq!(
        within(10, raw::exchange(&mut client, &mut buf, get))
            .await
            .status,
        502
    );
    assert_eq!(
        backend.hits(),
        2,
        "the connection nobody verified was not reused"
    );
}
