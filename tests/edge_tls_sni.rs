//! §3.2 Certificates: with several pairs, the one whose DNS names match the client's SNI is
//! served (a wildcard covers one label); no SNI or no match gets the first. The expiry gauge
//! carries each served certificate's notAfter.

mod support;

use support::backend::TestBackend;
use support::pki::{served, Leaf, TestCa};
use support::{frontdoor_config, metric, raw, start, within};

struct Pairs {
    dir: tempfile::TempDir,
}

impl Pairs {
    fn new() -> Pairs {
        Pairs {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes each leaf as `<i>.pem` / `<i>-key.pem` and returns the frontend's `tls = ...` line.
    fn frontend_tls(&self, leaves: &[&Leaf]) -> String {
        let mut pairs = Vec::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let cert = self.dir.path().join(format!("{i}.pem"));
            let key = self.dir.path().join(format!("{i}-key.pem"));
            leaf.write(&cert, &key);
            pairs.push(format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                cert.display(),
                key.display()
            ));
        }
        format!("tls = {{ certs = [ {} ] }}", pairs.join(", "))
    }
}

#[tokio::test]
async fn the_certificate_matching_the_sni_is_served_and_the_first_otherwise() {
    let ca = TestCa::new();
    let portal = ca.leaf(&["portal.example.test"], (2031, 5, 17));
    let hub = ca.leaf(&["*.hub.example.test", "hub.example.test"], (2032, 1, 2));
    let pairs = Pairs::new();
    let backend = TestBackend::start("b1").await;
    let lb = start(&frontdoor_config(
        &[("b1", backend.addr_string())],
        "",
        &pairs.frontend_tls(&[&portal, &hub]),
    ))
    .await;
    let front = lb.frontend_addr("public").unwrap();
    within(10, async {
        for (sni, expected, why) in [
            (Some("portal.example.test"), &portal, "exact name"),
            (Some("PORTAL.example.test"), &portal, "names ignore case"),
            (
                Some("hub.example.test"),
                &hub,
                "second certificate's second name",
            ),
            (Some("eu.hub.example.test"), &hub, "wildcard, one label"),
            (
                Some("a.eu.hub.example.test"),
                &portal,
                "a wildcard covers one label only",
            ),
            (
                Some("elsewhere.example.test"),
                &portal,
                "no match: the first",
            ),
            (None, &portal, "no SNI: the first"),
        ] {
            assert_eq!(served(front, sni).await, expected.der, "{why} ({sni:?})");
        }
        // The session carries HTTP: ALPN http/1.1 and a proxied answer.
        let mut s = support::pki::connect(front, Some("eu.hub.example.test")).await;
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut buf = Vec::new();
        let r = raw::exchange(
            &mut s,
            &mut buf,
            b"GET / HTTP/1.1\r\nHost: eu.hub.example.test\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 200);
    })
    .await;
}

#[tokio::test]
async fn the_expiry_gauge_is_each_certificates_not_after() {
    let ca = TestCa::new();
    let portal = ca.leaf(&["portal.example.test"], (2031, 5, 17));
    let hub = ca.leaf(&["*.hub.example.test"], (2032, 1, 2));
    let pairs = Pairs::new();
    let backend = TestBackend::start("b1").await;
    let lb = start(&frontdoor_config(
        &[("b1", backend.addr_string())],
        "",
        &pairs.frontend_tls(&[&portal, &hub]),
    ))
    .await;
    for (name, leaf) in [
        ("portal.example.test", &portal),
        ("*.hub.example.test", &hub),
    ] {
        let sample = format!(
            "qlb_tls_certificate_expiry_timestamp_seconds{{frontend=\"public\",name=\"{name}\"}}"
        );
        assert_eq!(metric(&lb, &sample).await, leaf.not_after as f64, "{name}");
    }
}

#[tokio::test]
async fn a_single_pair_serves_every_name() {
    let ca = TestCa::new();
    let only = ca.leaf(&["lb.example.test"], (2030, 1, 1));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("lb.pem"), dir.path().join("lb-key.pem"));
    only.write(&cert, &key);
    let backend = TestBackend::start("b1").await;
    let tls = support::edge::frontend_tls(&cert, &key);
    let lb = start(&frontdoor_config(
        &[("b1", backend.addr_string())],
        "",
        &tls,
    ))
    .await;
    let front = lb.frontend_addr("public").unwrap();
    within(10, async {
        assert_eq!(served(front, Some("other.example.test")).await, only.der);
        assert_eq!(served(front, None).await, only.der);
    })
    .await;
}

#[test]
fn both_shapes_at_once_are_refused() {
    let toml = r#"
[[frontend]]
name = "public"
listen = "127.0.0.1:0"
pool = "proxies"
tls = { cert = "a.pem", key = "a-key.pem", certs = [ { cert = "b.pem", key = "b-key.pem" } ] }

[[pool]]
name = "proxies"
  [[pool.backend]]
  id = "b1"
  url = "http://127.0.0.1:1"
"#;
    let err = qlik_lb::config::Config::parse(toml, std::path::Path::new(".")).expect_err("refused");
    assert!(
        err.errors.iter().any(|e| e.key == "frontend[0].tls"),
        "{err}"
    );
}
