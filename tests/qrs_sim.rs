//! The simulated QRS over real mutual TLS: client certificate, xrfkey, filters, the quarantine
//! rule, and payloads in exactly the shape of the recorded QRS answers.

mod license_support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use license_support::*;
use qlik_lb::control::LicenseType;
use qlik_lb::sim::qrs::{iso, seed, SimUser};
use rustls::pki_types::ServerName;
use serde_json::Value;
use std::collections::BTreeSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../shared/qlik/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// One request with the client certificate; answers (status, body).
async fn raw(site: &Site, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(site.qrs.addr())
        .await
        .unwrap();
    let connector = TlsConnector::from(site.certs.client_config().unwrap());
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const KEY: &str = "abcdefghijklmnop";

async fn get(site: &Site, path: &str, query: &str) -> (u16, String) {
    let target = if query.is_empty() {
        format!("{path}?xrfkey={KEY}")
    } else {
        format!("{path}?xrfkey={KEY}&{query}")
    };
    raw(site, "GET", &target, &[("X-Qlik-Xrfkey", KEY)]).await
}

fn enc(s: &str) -> String {
    qlik_lb::control::qrs_client::percent_encode(s)
}

#[tokio::test]
async fn handshake_without_client_certificate_fails() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let tcp = tokio::net::TcpStream::connect(site.qrs.addr()).await.unwrap();
        let connector = TlsConnector::from(site.certs.anonymous_client_config().unwrap());
        // With TLS 1.3 the server's refusal may only surface on the first read.
        let refused = match connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await {
            Err(_) => true,
            Ok(mut tls) => {
                let target = format!("GET /qrs/license/accesstypeoverview?xrfkey={KEY} HTTP/1.1\r\nHost: localhost\r\nX-Qlik-Xrfkey: {KEY}\r\n\r\n");
                let _ = tls.write_all(target.as_bytes()).await;
                let mut buf = Vec::new();
                match tls.read_to_end(&mut buf).await {
                    Err(_) => true,
                    Ok(_) => buf.is_empty(),
                }
            }
        };
        assert!(refused, "a client without a certificate must not get an answer");
        assert_eq!(site.qrs.requests().len(), 0);
        // The same server answers a client that has the certificate.
        assert_eq!(get(&site, "/qrs/license/accesstypeoverview", "").await.0, 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn xrfkey_missing_or_mismatched_is_forbidden() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let path = "/qrs/license/accesstypeoverview";
        let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
            (path.to_string(), vec![]),
            (path.to_string(), vec![("X-Qlik-Xrfkey", KEY)]),
            (format!("{path}?xrfkey={KEY}"), vec![]),
            (
                format!("{path}?xrfkey={KEY}"),
                vec![("X-Qlik-Xrfkey", "abcdefghijklmnoq")],
            ),
            (
                format!("{path}?xrfkey=short"),
                vec![("X-Qlik-Xrfkey", "short")],
            ),
        ];
        for (target, headers) in cases {
            let (status, _) = raw(&site, "GET", &target, &headers).await;
            assert_eq!(status, 403, "{target} {headers:?}");
        }
        let (status, body) = get(&site, path, "").await;
        assert_eq!(status, 200);
        serde_json::from_str::<Value>(&body).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn filter_boundary_is_exact() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let t = days_ago(30);
        let at = give(
            &site.qrs,
            SimUser::new("LAB", "at"),
            LicenseType::Professional,
            t,
        );
        let before = give(
            &site.qrs,
            SimUser::new("LAB", "before"),
            LicenseType::Professional,
            t - chrono::Duration::milliseconds(1),
        );
        let after = give(
            &site.qrs,
            SimUser::new("LAB", "after"),
            LicenseType::Professional,
            t + chrono::Duration::milliseconds(1),
        );
        let path = "/qrs/license/professionalaccesstype/full";
        let ids = |body: String| -> BTreeSet<String> {
            let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
            rows.iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect()
        };
        let set = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        for (op, expected) in [
            ("le", set(&[&at, &before])),
            ("lt", set(&[&before])),
            ("ge", set(&[&at, &after])),
            ("gt", set(&[&after])),
        ] {
            let filter = format!("lastUsed {op} '{}'", iso(t));
            let (status, body) = get(&site, path, &format!("filter={}", enc(&filter))).await;
            assert_eq!(status, 200, "{filter}: {body}");
            assert_eq!(ids(body), expected, "{filter}");
        }
        // Unquoted GUIDs, `or`, `and`, and case-insensitive string comparison.
        let filter = format!("id eq {} or id eq '{}'", at.to_uppercase(), before);
        let (_, body) = get(&site, path, &format!("filter={}", enc(&filter))).await;
        assert_eq!(ids(body), set(&[&at, &before]));
        let filter = format!("user.userId eq 'AFTER' and lastUsed gt '{}'", iso(t));
        let (_, body) = get(&site, path, &format!("filter={}", enc(&filter))).await;
        assert_eq!(ids(body), set(&[&after]));
        for bad in [
            "lastUsed le",
            "lastUsed xx '2026-01-01'",
            "id eq 'open",
            "(id eq 1",
        ] {
            let (status, _) = get(&site, path, &format!("filter={}", enc(bad))).await;
            assert_eq!(status, 400, "{bad}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn delete_quarantines_recent_rows_and_removes_old_ones() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let recent_used = days_ago(3);
        let recent = give(
            &site.qrs,
            SimUser::new("LAB", "recent"),
            LicenseType::Analyzer,
            recent_used,
        );
        let old = give(
            &site.qrs,
            SimUser::new("LAB", "old"),
            LicenseType::Analyzer,
            days_ago(30),
        );
        let client = site.client();

        assert_eq!(
            client
                .delete_allocation(LicenseType::Analyzer, &recent)
                .await
                .unwrap()
                .as_u16(),
            204
        );
        let row = site
            .qrs
            .allocation(&recent)
            .expect("a recently used row stays, quarantined");
        assert!(row.quarantined);
        assert_eq!(
            row.quarantine_end,
            Some(recent_used + chrono::Duration::days(7))
        );
        assert_eq!(row.user, None);
        assert_eq!(
            row.deleted_user,
            Some(("LAB".to_string(), "recent".to_string()))
        );

        assert_eq!(
            client
                .delete_allocation(LicenseType::Analyzer, &old)
                .await
                .unwrap()
                .as_u16(),
            204
        );
        assert!(site.qrs.allocation(&old).is_none(), "an old row is freed");

        assert_eq!(
            client
                .delete_allocation(LicenseType::Analyzer, &old)
                .await
                .unwrap()
                .as_u16(),
            404
        );
        assert_eq!(
            client
                .delete_allocation(LicenseType::Professional, &recent)
                .await
                .unwrap()
                .as_u16(),
            404,
            "an analyzer id is unknown to the professional table"
        );

        let rows = client
            .allocations(LicenseType::Analyzer, None)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].quarantined && rows[0].user.is_none());
        assert_eq!(rows[0].deleted_user_id.as_deref(), Some("recent"));
    })
    .await
    .unwrap();
}

/// Every key of `fixture` (recursively, first element of arrays) is in `actual`, and no other.
fn same_shape(fixture: &Value, actual: &Value, at: &str) {
    match (fixture, actual) {
        (Value::Object(f), Value::Object(a)) => {
            let fk: BTreeSet<_> = f.keys().collect();
            let ak: BTreeSet<_> = a.keys().collect();
            assert_eq!(fk, ak, "field names at {at}");
            for (k, v) in f {
                if !a[k].is_null() && !v.is_null() {
                    same_shape(v, &a[k], &format!("{at}.{k}"));
                }
            }
        }
        (Value::Array(f), Value::Array(a)) if !f.is_empty() && !a.is_empty() => {
            same_shape(&f[0], &a[0], &format!("{at}[0]"))
        }
        _ => {}
    }
}

#[tokio::test]
async fn payloads_have_every_field_of_the_fixtures() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let mut user = SimUser::new("LAB", "jdoe");
        user.tags.push("License do not release".into());
        user.custom_properties
            .push(("LicenseManage".into(), "do-not-release".into()));
        let user_guid = user.id.clone();
        give(&site.qrs, user, LicenseType::Professional, days_ago(40));
        let quarantined = give(
            &site.qrs,
            SimUser::new("LAB", "asmith"),
            LicenseType::Professional,
            days_ago(2),
        );
        site.client()
            .delete_allocation(LicenseType::Professional, &quarantined)
            .await
            .unwrap();

        let (_, body) = get(&site, "/qrs/license/accesstypeoverview", "").await;
        same_shape(
            &fixture("accesstypeoverview.json"),
            &serde_json::from_str(&body).unwrap(),
            "overview",
        );

        let fx = fixture("professionalaccesstype-full.json");
        let (_, body) = get(&site, "/qrs/license/professionalaccesstype/full", "").await;
        let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
        let plain = rows.iter().find(|r| !r["user"].is_null()).unwrap();
        let moved = rows.iter().find(|r| r["quarantined"] == true).unwrap();
        same_shape(&fx[0], plain, "allocation");
        same_shape(&fx[1], moved, "quarantined allocation");
        assert_eq!(moved["deletedUserId"], "asmith");

        let (status, body) = get(&site, &format!("/qrs/user/{user_guid}"), "").await;
        assert_eq!(status, 200);
        same_shape(
            &fixture("user.json"),
            &serde_json::from_str(&body).unwrap(),
            "user",
        );
        let filter = format!("id eq {user_guid}");
        let (_, body) = get(&site, "/qrs/user/full", &format!("filter={}", enc(&filter))).await;
        let users: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(users.len(), 1);
        same_shape(&fixture("user.json"), &users[0], "user/full");
        assert_eq!(
            get(&site, "/qrs/user/00000000-0000-0000-0000-000000000000", "")
                .await
                .0,
            404
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn seeded_population_is_realistic_and_deterministic() {
    let now = now();
    let pop = seed::seeded(7, 400, now);
    assert_eq!(pop, seed::seeded(7, 400, now));
    assert_ne!(pop, seed::seeded(8, 400, now));
    assert!(pop.users.len() >= 400);
    let dirs: BTreeSet<_> = pop
        .users
        .iter()
        .map(|u| u.user_directory.as_str())
        .collect();
    assert!(dirs.len() >= 4, "{dirs:?}");
    let count = |f: &dyn Fn(&SimUser) -> bool| pop.users.iter().filter(|u| f(u)).count();
    assert!(count(&|u| u.tags.iter().any(|t| t == seed::DO_NOT_RELEASE_TAG)) > 5);
    assert!(
        count(&|u| u
            .custom_properties
            .iter()
            .any(|(n, _)| n == seed::LICENSE_PROPERTY))
            > 5
    );
    assert!(
        count(&|u| u.inactive) > 0
            && count(&|u| u.blacklisted) > 0
            && count(&|u| u.removed_externally) > 0
    );
    assert!(pop.allocations.iter().filter(|a| a.quarantined).count() >= 3);
    let oldest = pop.allocations.iter().map(|a| a.last_used).min().unwrap();
    assert!(
        oldest > now - chrono::Duration::days(120) && oldest < now - chrono::Duration::days(90)
    );

    timeout(TEST_TIMEOUT, async {
        let site = site(pop.clone()).await;
        let overview = site.client().overview().await.unwrap();
        let prof = pop
            .allocations
            .iter()
            .filter(|a| a.kind == LicenseType::Professional);
        assert_eq!(
            overview.professional_access.allocated as usize,
            prof.clone().filter(|a| !a.quarantined).count()
        );
        assert_eq!(
            overview.professional_access.quarantined as usize,
            prof.filter(|a| a.quarantined).count()
        );
        let p = overview.professional_access;
        assert_eq!(p.total, p.allocated + p.quarantined + p.available);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn stopped_sim_refuses_connections_until_restarted() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        site.qrs.stop().await;
        let err = tokio::net::TcpStream::connect(site.qrs.addr())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        site.qrs.restart().await.unwrap();
        assert_eq!(
            get(&site, "/qrs/license/accesstypeoverview", "").await.0,
            200
        );
        // The client sends the security context from `[qrs] user` and a fresh key per call.
        site.client().overview().await.unwrap();
        let last = site.qrs.requests().pop().unwrap();
        assert_eq!(
            last.qlik_user.as_deref(),
            Some("UserDirectory=INTERNAL; UserId=sa_api")
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn client_sends_a_fresh_key_and_the_security_context_on_every_call() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let client = site.client();
        for _ in 0..3 {
            client.overview().await.unwrap();
        }
        let keys: BTreeSet<String> = site
            .qrs
            .requests()
            .iter()
            .map(|r| {
                assert_eq!(
                    r.qlik_user.as_deref(),
                    Some("UserDirectory=INTERNAL; UserId=sa_api")
                );
                let key = r.xrfkey_header.clone().unwrap();
                assert!(
                    key.len() == 16 && key.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{key}"
                );
                assert!(r.query.contains(&format!("xrfkey={key}")));
                key
            })
            .collect();
        assert_eq!(keys.len(), 3, "a new key per call");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gets_are_retried_on_5xx_and_a_final_failure_names_endpoint_and_status() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        let client = site.client(); // 3 attempts
        site.qrs.fail_next_gets(2);
        client.overview().await.expect("the third attempt succeeds");
        assert_eq!(
            site.qrs
                .request_count("GET", "/qrs/license/accesstypeoverview"),
            3
        );
        site.qrs.fail_next_gets(3);
        let err = client.overview().await.unwrap_err().to_string();
        assert!(
            err.contains("GET /qrs/license/accesstypeoverview") && err.contains("503"),
            "{err}"
        );
        assert_eq!(
            site.qrs
                .request_count("GET", "/qrs/license/accesstypeoverview"),
            6
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn verify_server_checks_the_qrs_certificate_against_ca() {
    timeout(TEST_TIMEOUT, async {
        let site = site(empty()).await;
        // A CA that did not sign the server certificate.
        let stranger = qlik_lb::sim::certs::SimCerts::generate().unwrap();
        let other_ca = site.dir.path().join("other-root.pem");
        std::fs::write(&other_ca, &stranger.ca.cert_pem).unwrap();
        let mut config = site.config.clone();
        let certs = config.file.qlik_certs.as_mut().unwrap();
        certs.ca = other_ca;
        certs.verify_server = true;
        let client = qlik_lb::control::qrs_client::QrsClient::from_config(&config).unwrap();
        let err = client.overview().await.unwrap_err().to_string();
        assert!(err.contains("TLS handshake"), "{err}");
        config.file.qlik_certs.as_mut().unwrap().verify_server = false;
        let client = qlik_lb::control::qrs_client::QrsClient::from_config(&config).unwrap();
        client
            .overview()
            .await
            .expect("verify_server = false accepts the QRS certificate");
    })
    .await
    .unwrap();
}
