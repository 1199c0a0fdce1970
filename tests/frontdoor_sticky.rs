//! Sticky routing through the front door over real sockets: the inserted cookie, its
//! attributes, invalid and unknown cookies, learned Qlik sessions, failover, draining, and
//! two instances sharing a secret.

mod support;

use support::backend::TestBackend;
use support::raw::{self, Reply};
use support::{frontdoor_config, metric, start, start_in, within};

async fn two_backends() -> (TestBackend, TestBackend) {
    (
        TestBackend::start("node1").await,
        TestBackend::start("node2").await,
    )
}

fn backends(a: &TestBackend, b: &TestBackend) -> Vec<(&'static str, String)> {
    vec![("node1", a.addr_string()), ("node2", b.addr_string())]
}

fn landed(r: &Reply) -> String {
    r.header("x-backend").expect("x-backend header").to_string()
}

#[tokio::test]
async fn first_request_is_pinned_and_later_requests_stay_without_new_cookie() {
    let (a, b) = two_backends().await;
    let lb = start(&frontdoor_config(&backends(&a, &b), "", "")).await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let first = raw::get(addr, "/hub", &[]).await;
        assert_eq!(first.status, 200);
        let set = first.all("set-cookie");
        let ours = set
            .iter()
            .find(|c| c.starts_with("QLB_ROUTE="))
            .expect("QLB_ROUTE set");
        assert!(ours.contains("; Path=/"), "{ours}");
        assert!(ours.contains("; HttpOnly"), "{ours}");
        assert!(ours.contains("; SameSite=None"), "{ours}");
        assert!(
            ours.contains("; Secure"),
            "SameSite=None forces Secure: {ours}"
        );
        let value = first.route_cookie().unwrap();
        let node = landed(&first);
        for _ in 0..20 {
            let next = raw::get(addr, "/hub", &[("Cookie", &format!("QLB_ROUTE={value}"))]).await;
            assert_eq!(landed(&next), node);
            assert!(next.route_cookie().is_none(), "no new Set-Cookie on a hit");
        }
        assert_eq!(
            metric(
                &lb,
                "qlb_sticky_decisions_total{outcome=\"hit\",pool=\"proxies\"}"
            )
            .await,
            20.0
        );
        assert_eq!(
            metric(
                &lb,
                "qlb_sticky_decisions_total{outcome=\"miss\",pool=\"proxies\"}"
            )
            .await,
            1.0
        );
    })
    .await;
}

/// The `Set-Cookie` line pinning a first request, from an instance with these sticky settings.
async fn pin_line(a: &TestBackend, b: &TestBackend, sticky: &str) -> String {
    let pool_extra = format!("  [pool.sticky]\n{sticky}");
    let lb = start(&frontdoor_config(&backends(a, b), &pool_extra, "")).await;
    let r = within(10, raw::get(lb.frontend_addr("public").unwrap(), "/", &[])).await;
    let line = r
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("QLB_ROUTE="));
    line.expect("QLB_ROUTE set").to_string()
}

#[tokio::test]
async fn cookie_attributes_follow_the_config() {
    let (a, b) = two_backends().await;
    let lax = pin_line(&a, &b, "  same_site = \"Lax\"\n  secure = \"never\"\n").await;
    assert!(
        lax.contains("SameSite=Lax") && !lax.contains("Secure"),
        "{lax}"
    );
    let strict = pin_line(&a, &b, "  same_site = \"Strict\"\n  secure = \"always\"\n").await;
    assert!(
        strict.contains("SameSite=Strict") && strict.contains("; Secure"),
        "{strict}"
    );
}

fn signed_pool(secret_file: &std::path::Path) -> String {
    format!(
        "  [pool.sticky]\n  secret_file = \"{}\"\n",
        secret_file.display()
    )
}

fn secret() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "0123456789abcdef0123456789abcdef").unwrap();
    f
}

#[tokio::test]
async fn tampered_signed_cookie_and_unknown_id_are_ignored_and_re_pinned() {
    let (a, b) = two_backends().await;
    let key = secret();
    let lb = start(&frontdoor_config(
        &backends(&a, &b),
        &signed_pool(key.path()),
        "",
    ))
    .await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let first = raw::get(addr, "/", &[]).await;
        let value = first.route_cookie().unwrap();
        let (id, tag) = value.split_once('.').expect("signed value has a tag");
        let other = if id == "node1" { "node2" } else { "node1" };
        // The other node's id with this node's tag: a forged pin.
        let forged = raw::get(
            addr,
            "/",
            &[("Cookie", &format!("QLB_ROUTE={other}.{tag}"))],
        )
        .await;
        assert!(forged.route_cookie().is_some(), "forged cookie is replaced");
        let unsigned = raw::get(addr, "/", &[("Cookie", &format!("QLB_ROUTE={other}"))]).await;
        assert!(
            unsigned.route_cookie().is_some(),
            "unsigned cookie is replaced"
        );
        let unknown = raw::get(
            addr,
            "/",
            &[("Cookie", "QLB_ROUTE=node9.AAAAAAAAAAAAAAAAAAAAAA")],
        )
        .await;
        assert!(unknown.route_cookie().is_some(), "unknown id is replaced");
        let fresh = unknown.route_cookie().unwrap();
        let again = raw::get(addr, "/", &[("Cookie", &format!("QLB_ROUTE={fresh}"))]).await;
        assert!(again.route_cookie().is_none(), "the new pin is valid");
        assert_eq!(
            metric(
                &lb,
                "qlb_sticky_decisions_total{outcome=\"invalid\",pool=\"proxies\"}"
            )
            .await,
            3.0
        );
    })
    .await;
    // Unsigned mode: an unknown id is invalid too.
    let lb = start(&frontdoor_config(&backends(&a, &b), "", "")).await;
    let addr = lb.frontend_addr("public").unwrap();
    let r = within(
        10,
        raw::get(addr, "/", &[("Cookie", "QLB_ROUTE=nosuchnode")]),
    )
    .await;
    assert!(r.route_cookie().is_some());
    assert_eq!(
        metric(
            &lb,
            "qlb_sticky_decisions_total{outcome=\"invalid\",pool=\"proxies\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn learned_qlik_session_routes_without_our_cookie() {
    let (a, b) = two_backends().await;
    let lb = start(&frontdoor_config(&backends(&a, &b), "", "")).await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let login = raw::get(addr, "/login?set_session=0f0e-guid-1234", &[]).await;
        let node = landed(&login);
        for _ in 0..10 {
            let r = raw::get(addr, "/hub", &[("Cookie", "X-Qlik-Session=0f0e-guid-1234")]).await;
            assert_eq!(landed(&r), node, "learned session routes to its node");
        }
        assert_eq!(
            metric(
                &lb,
                "qlb_sticky_decisions_total{outcome=\"learned\",pool=\"proxies\"}"
            )
            .await,
            10.0
        );
    })
    .await;
}

#[tokio::test]
async fn killed_backend_re_pins_the_user_to_a_live_one() {
    let (a, b) = two_backends().await;
    let lb = start(&frontdoor_config(&backends(&a, &b), "", "")).await;
    let addr = lb.frontend_addr("public").unwrap();
    within(10, async {
        let first = raw::get(addr, "/", &[]).await;
        let value = first.route_cookie().unwrap();
        let pinned = landed(&first);
        let (dead, live) = if pinned == "node1" {
            (&a, &b)
        } else {
            (&b, &a)
        };
        dead.kill();
        let next = raw::get(addr, "/", &[("Cookie", &format!("QLB_ROUTE={value}"))]).await;
        assert_eq!(next.status, 200, "retried on the live node");
        assert_eq!(landed(&next), live.id);
        assert_eq!(
            next.route_cookie().as_deref(),
            Some(live.id.as_str()),
            "re-pinned"
        );
        assert_eq!(
            metric(
                &lb,
                "qlb_sticky_decisions_total{outcome=\"reassigned\",pool=\"proxies\"}"
            )
            .await,
            1.0
        );
        assert_eq!(
            metric(
                &lb,
                &format!(
                    "qlb_backend_ejections_total{{backend=\"{}\",pool=\"proxies\"}}",
                    dead.id
                )
            )
            .await,
            1.0
        );
        // While ejected, the dead node's cookie is reassigned without trying it again.
        let later = raw::get(addr, "/", &[("Cookie", &format!("QLB_ROUTE={value}"))]).await;
        assert_eq!(landed(&later), live.id);
    })
    .await;
}

#[tokio::test]
async fn draining_backend_keeps_pinned_users_but_gets_no_new_ones() {
    let (a, b) = two_backends().await;
    let lb = start(&frontdoor_config(&backends(&a, &b), "", "")).await;
    let addr = lb.frontend_addr("public").unwrap();
    lb.shared
        .registry
        .get("proxies", "node1")
        .unwrap()
        .set_draining(true);
    within(10, async {
        for _ in 0..10 {
            let r = raw::get(addr, "/", &[]).await;
            assert_eq!(landed(&r), "node2", "no new users on a draining node");
        }
        let pinned = raw::get(addr, "/", &[("Cookie", "QLB_ROUTE=node1")]).await;
        assert_eq!(landed(&pinned), "node1", "pinned users stay");
        assert!(pinned.route_cookie().is_none());
    })
    .await;
}

#[tokio::test]
async fn two_instances_with_one_secret_route_a_cookie_alike() {
    let (a, b) = two_backends().await;
    let key = secret();
    let cfg = frontdoor_config(&backends(&a, &b), &signed_pool(key.path()), "");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let one = start_in(&cfg, dir).await;
    let two = start_in(&cfg, dir).await;
    within(10, async {
        for _ in 0..4 {
            let first = raw::get(one.frontend_addr("public").unwrap(), "/", &[]).await;
            let value = first.route_cookie().unwrap();
            let via_two = raw::get(
                two.frontend_addr("public").unwrap(),
                "/",
                &[("Cookie", &format!("QLB_ROUTE={value}"))],
            )
            .await;
            assert_eq!(landed(&via_two), landed(&first));
            assert!(
                via_two.route_cookie().is_none(),
                "the second instance accepts the first one's cookie"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn when_all_down_reject_answers_503_with_retry_after() {
    let (a, b) = two_backends().await;
    let lb = start(&frontdoor_config(
        &backends(&a, &b),
        "when_all_down = \"reject\"",
        "",
    ))
    .await;
    for id in ["node1", "node2"] {
        lb.shared.registry.get("proxies", id).unwrap().set_up(false);
    }
    let r = within(
        10,
        raw::get(
            lb.frontend_addr("public").unwrap(),
            "/",
            &[("Accept", "application/json")],
        ),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.json()["status"], 503);
    assert!(r.header("x-request-id").is_some());
}
