//! The sticky decision on plain values: a pool built in code, request heads as bytes.

use super::*;
use crate::balance::testing::{pool, pool_with_secret};
use crate::config::{Balance, WhenAllDown};
use crate::proxy::request_head::parse_request;
use bytes::Bytes;

fn head(cookie: Option<&str>) -> Head {
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    parse_request(Bytes::from(format!(
        "GET /hub HTTP/1.1\r\nHost: lb.example\r\n{cookie}\r\n"
    )))
    .expect("a valid head")
}

fn pinned_to(p: &Pool, id: &str) -> Head {
    head(Some(&format!("QLB_ROUTE={}", p.codec.encode(id))))
}

fn id(r: &Route) -> &str {
    &r.backend.id
}

#[test]
fn our_cookie_routes_to_its_backend_without_a_new_cookie() {
    let p = pool(&["n1", "n2", "n3"], &[], |_| {});
    for target in ["n1", "n2", "n3"] {
        let r = route(&p, &pinned_to(&p, target), None).expect("routed");
        assert_eq!((id(&r), r.outcome), (target, Outcome::Hit));
        assert!(!r.sets_cookie() && !r.invalid_cookie && !r.all_down);
    }
}

#[test]
fn a_user_without_a_pin_is_balanced_and_pinned() {
    let p = pool(&["n1", "n2"], &[], |c| c.balance = Balance::RoundRobin);
    let first = route(&p, &head(None), None).expect("routed");
    let second = route(&p, &head(None), None).expect("routed");
    assert_eq!(first.outcome, Outcome::Miss);
    assert!(first.sets_cookie());
    assert_ne!(id(&first), id(&second), "round-robin takes turns");
}

#[test]
fn a_draining_backend_keeps_its_users_and_takes_no_new_ones() {
    let p = pool(&["n1", "n2"], &[], |_| {});
    p.backend("n1").unwrap().set_draining(true);
    let r = route(&p, &pinned_to(&p, "n1"), None).expect("routed");
    assert_eq!((id(&r), r.outcome), ("n1", Outcome::Hit));
    for _ in 0..20 {
        assert_eq!(id(&route(&p, &head(None), None).unwrap()), "n2");
    }
}

#[test]
fn a_user_pinned_to_a_down_or_ejected_backend_is_reassigned_and_pinned_again() {
    let p = pool(&["n1", "n2", "n3"], &[], |_| {});
    p.backend("n1").unwrap().set_up(false);
    p.backend("n2").unwrap().eject();
    for pinned in ["n1", "n2"] {
        let r = route(&p, &pinned_to(&p, pinned), None).expect("routed");
        assert_eq!((id(&r), r.outcome), ("n3", Outcome::Reassigned));
        assert!(r.sets_cookie() && !r.invalid_cookie);
    }
}

#[test]
fn a_cookie_we_cannot_accept_is_flagged_and_the_user_balanced() {
    let secret = b"0123456789abcdef0123";
    let p = pool_with_secret(&["n1", "n2"], &[], Some(secret), |_| {});
    let forged = pool_with_secret(&["n1", "n2"], &[], Some(b"another-secret-of-20"), |_| {});
    let unknown = pool(&["n9"], &[], |_| {});
    for cookie in [
        "QLB_ROUTE=garbage".to_string(),
        format!("QLB_ROUTE={}", forged.codec.encode("n1")),
        format!("QLB_ROUTE={}", unknown.codec.encode("n9")),
        format!("QLB_ROUTE={}", p.codec.encode("n1")).replace("QLB_ROUTE=", "QLB_ROUTE=x"),
    ] {
        let r = route(&p, &head(Some(&cookie)), None).expect("routed");
        assert!(r.invalid_cookie, "{cookie}");
        assert_eq!(r.outcome, Outcome::Miss, "{cookie}");
    }
    let good = route(&p, &pinned_to(&p, "n2"), None).unwrap();
    assert_eq!((id(&good), good.invalid_cookie), ("n2", false));
}

#[test]
fn a_learned_qlik_session_routes_to_the_node_that_issued_it() {
    let p = pool(&["n1", "n2", "n3"], &[], |_| {});
    p.learned.learn("f00d", "n2");
    let r = route(&p, &head(Some("X-Qlik-Session-HTTP=f00d")), None).expect("routed");
    assert_eq!((id(&r), r.outcome), ("n2", Outcome::Learned));
    assert!(
        r.sets_cookie(),
        "the user is pinned with our cookie from here on"
    );

    let r = route(&p, &head(Some("X-Qlik-Session=beef")), None).unwrap();
    assert_eq!(r.outcome, Outcome::Miss, "an unknown session is balanced");

    let off = pool(&["n1", "n2", "n3"], &[], |c| {
        c.sticky.learn_qlik_session = false
    });
    off.learned.learn("f00d", "n2");
    let r = route(&off, &head(Some("X-Qlik-Session-HTTP=f00d")), None).unwrap();
    assert_eq!(r.outcome, Outcome::Miss, "learning is off for this pool");
}

#[test]
fn our_cookie_wins_over_a_learned_session() {
    let p = pool(&["n1", "n2"], &[], |_| {});
    p.learned.learn("f00d", "n2");
    let cookie = format!("X-Qlik-Session=f00d; QLB_ROUTE={}", p.codec.encode("n1"));
    let r = route(&p, &head(Some(&cookie)), None).unwrap();
    assert_eq!((id(&r), r.outcome), ("n1", Outcome::Hit));
}

#[test]
fn the_retry_after_a_refused_connect_skips_that_backend_by_the_pools_own_policy() {
    // least-conn with weights: n3 carries more but has four times the weight.
    let p = pool(&["n1", "n2", "n3"], &[1, 1, 4], |c| {
        c.balance = Balance::LeastConn
    });
    let leases: Vec<_> = ["n2", "n3"]
        .iter()
        .flat_map(|b| (0..4).map(move |_| *b))
        .map(|b| p.backend(b).unwrap().inflight_lease())
        .collect();
    let refused = p.backend("n1").unwrap().clone();
    for _ in 0..20 {
        let r = route(&p, &pinned_to(&p, "n1"), Some(&refused)).expect("routed");
        assert_eq!((id(&r), r.outcome), ("n3", Outcome::Reassigned));
    }
    drop(leases);
}

#[test]
fn the_retry_follows_when_all_down() {
    for (rule, expect) in [
        (WhenAllDown::Reject, None),
        (WhenAllDown::TryAnyway, Some("n2")),
    ] {
        let p = pool(&["n1", "n2"], &[], |c| c.when_all_down = rule);
        p.backend("n2").unwrap().set_up(false);
        let refused = p.backend("n1").unwrap().clone();
        let r = route(&p, &head(None), Some(&refused));
        assert_eq!(r.as_ref().map(id), expect, "{rule:?}");
        if let Some(r) = r {
            assert!(r.all_down, "a pick among down backends says so");
        }
    }
    let single = pool(&["n1"], &[], |c| c.when_all_down = WhenAllDown::TryAnyway);
    let refused = single.backend("n1").unwrap().clone();
    assert!(
        route(&single, &head(None), Some(&refused)).is_none(),
        "no other backend to try: 503"
    );
}
