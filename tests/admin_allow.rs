//! Admin exposure (PRODUCT.md §5): `[admin] allow` answers 403 (JSON, with a request id) to
//! every route for peers outside it; `check` and `run` refuse an admin listener that is not
//! loopback unless `token_file` or `allow` is set.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use support::edge::connect_from;
use support::{frontdoor_config, raw, start, within};

async fn request_from(source: &str, admin: SocketAddr, request: &str) -> raw::Reply {
    let mut s = connect_from(source, admin).await;
    let mut buf = Vec::new();
    raw::exchange(&mut s, &mut buf, request.as_bytes()).await
}

#[tokio::test]
async fn peers_outside_allow_get_403_on_every_route() {
    let node = support::backend::TestBackend::start("node1").await;
    let cfg = frontdoor_config(&[("node1", node.addr_string())], "", "").replace(
        "shutdown_grace = \"2s\"",
        "shutdown_grace = \"2s\"\nallow = [\"127.0.0.1/32\"]",
    );
    let lb = start(&cfg).await;
    let admin = lb.admin_addr().unwrap();
    within(20, async {
        let ok = request_from(
            "127.0.0.1",
            admin,
            "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(ok.status, 200);
        for request in [
            "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n",
            "GET /api/v1/status HTTP/1.1\r\nHost: admin\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: admin\r\n\r\n",
            "POST /api/v1/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n",
            "POST /api/v1/pools/proxies/backends/node1/drain HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n",
            "GET /no/such/route HTTP/1.1\r\nHost: admin\r\n\r\n",
        ] {
            let refused = request_from("127.0.0.2", admin, request).await;
            assert_eq!(refused.status, 403, "{request}");
            let body = refused.json();
            assert!(body["error"].as_str().unwrap().contains("allow"), "{body}");
            assert_eq!(
                body["request_id"].as_str(),
                refused.header("x-request-id"),
                "{body}"
            );
        }
        // The drain from 127.0.0.2 was not acted on.
        let status = request_from(
            "127.0.0.1",
            admin,
            "GET /api/v1/status HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await
        .json();
        assert_eq!(
            status["pools"][0]["backends"][0]["draining"], false,
            "{status}"
        );
    })
    .await;
}

fn qlik_lb(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qlik-lb"))
        .args(args)
        .output()
        .expect("run qlik-lb");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_and_run_refuse_an_open_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qlik-lb.toml");
    let cfg = frontdoor_config(&[("node1", "127.0.0.1:9".into())], "", "").replace(
        "listen = \"127.0.0.1:0\"\nshutdown_grace",
        "listen = \"0.0.0.0:0\"\nshutdown_grace",
    );
    assert!(cfg.contains("0.0.0.0:0"));
    std::fs::write(&path, &cfg).unwrap();
    let file = path.to_str().unwrap();
    let (code, text) = qlik_lb(&["check", "--config", file]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("line 3: admin.listen: `0.0.0.0:0` is not a loopback address"),
        "{text}"
    );
    let (code, text) = qlik_lb(&["run", "--config", file]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("admin.listen"), "{text}");

    for fix in ["allow = [\"10.0.0.0/8\"]", "token_file = \"admin.token\""] {
        std::fs::write(dir.path().join("admin.token"), "a-token-of-some-length\n").unwrap();
        std::fs::write(
            &path,
            cfg.replace("[admin]\n", &format!("[admin]\n{fix}\n")),
        )
        .unwrap();
        let (code, text) = qlik_lb(&["check", "--config", file]);
        assert_eq!(code, 0, "{fix}: {text}");
        assert_eq!(text.lines().last(), Some("ok"), "{text}");
    }
}
