//! `promtool check metrics` finds nothing in `/metrics` of the demo (simulated site, every role
//! on) after a proxied request, a WebSocket, a refused request, a load balancing module call and
//! a license monitor run (PRODUCT.md §5.1).
//! promtool comes with the Debian package `prometheus`; `.ci/run` installs it.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use support::{raw, within};

fn promtool_check(exposition: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed; this test needs it. Install it with \
             `sudo apt-get install -y --no-install-recommends prometheus` (Debian/Ubuntu), \
             or put promtool from https://prometheus.io/download/ on the PATH"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn promtool_finds_nothing_in_the_metrics_after_traffic() {
    let demo = support::start_demo().await;
    let text = within(60, async {
        let ws = support::demo_traffic(&demo).await;
        let admin = demo.instance.admin_addr().unwrap();
        loop {
            let text = raw::get(admin, "/metrics", &[]).await.text();
            // The monitor's run at start against the simulated QRS, and a health poll.
            let ready = text.contains(r#"qlb_job_runs_total{job="license_monitor",result="ok"} 1"#)
                && text.contains("qlb_license_entitled{")
                && text.contains("qlb_engine_cpu_percent{");
            if ready {
                drop(ws);
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    demo.shutdown().await;
    let (ok, problems) = promtool_check(&text);
    assert!(
        ok && problems.trim().is_empty(),
        "promtool check metrics:\n{problems}"
    );
}
