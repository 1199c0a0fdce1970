//! The demo in a real browser (headless Chromium over the DevTools protocol): the hub names
//! the node that served it, the app page's own script opens the QIX WebSocket through the front
//! door and shows the engine node and `EngineVersion`, a profile keeps its node across reloads
//! with one `QLB_ROUTE` cookie, fresh profiles spread, and a saturated engine gets no new ones;
//! and the same pages over HTTPS and `wss` through a TLS front door (Chromium's own TLS stack
//! against the front door's).

mod support;

use qlik_lb::demo::{Demo, DEMO_APP};
use qlik_lb::sim::engine::ENGINE_VERSION;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::browser::{Browser, Tab};

async fn demo() -> Demo {
    support::start_demo().await
}

fn base(demo: &Demo) -> String {
    let addr = demo.instance.frontend_addr("public").expect("front door");
    format!("http://{addr}")
}

async fn hub_node(browser: &mut Browser, tab: &Tab, base: &str) -> String {
    // A marker on the old document tells a finished navigation from the page before it.
    browser.eval(tab, "window.__old = true").await;
    browser.navigate(tab, &format!("{base}/hub")).await;
    browser
        .wait_for_text(
            tab,
            "window.__old ? '' : ((document.getElementById('node') || {}).textContent || '')",
            |t| !t.is_empty(),
        )
        .await
}

fn route_cookie(cookies: &[(String, String)]) -> Vec<String> {
    cookies
        .iter()
        .filter(|(n, _)| n == "QLB_ROUTE")
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_and_the_app_page_work_in_a_browser_and_a_profile_stays_on_its_node() {
    let demo = demo().await;
    let base = base(&demo);
    let mut browser = Browser::start().await;
    let tab = browser.new_profile().await;

    let node = hub_node(&mut browser, &tab, &base).await;
    let ids: Vec<String> = demo.site.nodes.iter().map(|n| n.id().to_string()).collect();
    assert!(
        ids.contains(&node),
        "the hub names a node of the site: {node}"
    );
    let pin = route_cookie(&browser.cookies(&tab.context).await);
    assert_eq!(pin.len(), 1, "one QLB_ROUTE cookie");

    for _ in 0..3 {
        assert_eq!(
            hub_node(&mut browser, &tab, &base).await,
            node,
            "a reload stays"
        );
    }
    assert_eq!(
        route_cookie(&browser.cookies(&tab.context).await),
        pin,
        "the cookie was set once and kept"
    );

    browser
        .navigate(&tab, &format!("{base}/sense/app/{DEMO_APP}"))
        .await;
    assert_eq!(browser.text_of(&tab, "page-node").await, node);
    assert_eq!(
        browser.text_of(&tab, "engine-node").await,
        node,
        "the page's own QIX WebSocket landed on the same node"
    );
    assert_eq!(
        browser.text_of(&tab, "engine-version").await,
        ENGINE_VERSION
    );
    browser
        .wait_for_text(&tab, "document.getElementById('state').textContent", |t| {
            t == "app open"
        })
        .await;
    let served = demo
        .site
        .nodes
        .iter()
        .find(|n| n.id() == node)
        .expect("that node");
    assert!(
        served.open_websockets() >= 1,
        "the engine holds the page's session"
    );
    demo.shutdown().await;
}

async fn profiles_per_node(
    browser: &mut Browser,
    base: &str,
    profiles: usize,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..profiles {
        let tab = browser.new_profile().await;
        *counts
            .entry(hub_node(browser, &tab, base).await)
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_profiles_spread_and_a_saturated_engine_gets_none() {
    let demo = demo().await;
    let base = base(&demo);
    let mut browser = Browser::start().await;

    let spread = profiles_per_node(&mut browser, &base, 12).await;
    assert!(
        spread.len() >= 2,
        "twelve fresh profiles all on one node: {spread:?}"
    );

    let busy = &demo.site.nodes[0];
    busy.set_saturated(true);
    let backend = demo
        .instance
        .shared
        .registry
        .get("proxies", busy.id())
        .expect("the node's backend");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !backend.health().is_some_and(|s| s.health.saturated) {
        assert!(
            Instant::now() < deadline,
            "the health check never saw the saturation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = profiles_per_node(&mut browser, &base, 12).await;
    assert_eq!(
        after.get(busy.id()),
        None,
        "a saturated engine got new profiles: {after:?}"
    );
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_license_bars_and_the_release_decisions() {
    let demo = demo().await;
    let admin = demo.instance.admin_addr().expect("admin listener");
    let mut browser = Browser::start().await;
    let tab = browser.new_profile().await;
    browser.navigate(&tab, &format!("http://{admin}/")).await;

    let bars = browser
        .wait_for_text(
            &tab,
            "String(document.querySelectorAll('#license .lic .stack .used').length)",
            |n| n == "2",
        )
        .await;
    assert_eq!(bars, "2", "a usage bar for professional and analyzer");
    let professional = browser.text_of(&tab, "license").await;
    assert!(professional.contains("Professional") && professional.contains("allocated"));

    // The demo's release job runs at start as a dry run against the simulated QRS.
    let verdicts = browser
        .wait_for_text(
            &tab,
            "Array.from(document.querySelectorAll('#decisions .verdict')).map(e => e.textContent).join(',')",
            |t| !t.is_empty(),
        )
        .await;
    assert!(
        verdicts.contains("would release"),
        "who would lose a license: {verdicts}"
    );
    assert!(
        !verdicts.contains("released"),
        "a dry run releases nothing: {verdicts}"
    );
    let release = browser.text_of(&tab, "release").await;
    assert!(release.contains("Dry run"), "{release}");
    let reasons = browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#decisions tr')).slice(1).map(r => r.cells[3].textContent).join('|')",
        )
        .await;
    assert!(
        reasons
            .as_str()
            .is_some_and(|r| r.split('|').all(|why| !why.is_empty())),
        "every decision says why: {reasons}"
    );
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_page_works_over_https_and_wss_through_a_tls_front_door() {
    let demo = demo().await;
    let cert = support::edge::self_signed();
    let nodes: Vec<(&str, String)> = demo
        .site
        .nodes
        .iter()
        .map(|n| (n.id(), n.addr().to_string()))
        .collect();
    let lb = support::start(&support::frontdoor_config(&nodes, "", &cert.frontend_tls())).await;
    let port = lb.frontend_addr("public").expect("front door").port();
    let base = format!("https://localhost:{port}");
    let mut browser = Browser::start().await;
    let tab = browser.new_profile().await;

    let node = hub_node(&mut browser, &tab, &base).await;
    browser
        .navigate(&tab, &format!("{base}/sense/app/{DEMO_APP}"))
        .await;
    assert_eq!(browser.eval(&tab, "location.protocol").await, "https:");
    assert_eq!(browser.text_of(&tab, "page-node").await, node);
    assert_eq!(
        browser.text_of(&tab, "engine-node").await,
        node,
        "the page's own wss socket landed on the node that served the page"
    );
    assert_eq!(
        browser.text_of(&tab, "engine-version").await,
        ENGINE_VERSION
    );
    // The page asks again every 3 s over the same socket: a second answer means the TLS tunnel
    // carried traffic after lying idle.
    let first = browser.text_of(&tab, "refreshed").await;
    browser
        .wait_for_text(
            &tab,
            "document.getElementById('refreshed').textContent",
            |t| !t.is_empty() && t != first,
        )
        .await;
    assert_eq!(browser.text_of(&tab, "state").await, "app open");
    lb.shutdown().await;
    demo.shutdown().await;
}
