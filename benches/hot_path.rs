//! Per-request work of the front door, measured in isolation: the sticky cookie codec, the
//! routing decision, the request head parse and the upstream head rewrite. Short measurement
//! windows keep the whole run near a minute; compare runs on one machine, not across machines.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use qlik_lb::balance::cookie::CookieCodec;
use qlik_lb::balance::Pool;
use qlik_lb::config::Config;
use qlik_lb::metrics::Metrics;
use qlik_lb::proxy::request_head::parse_request;
use qlik_lb::proxy::rewrite::{upstream_request, RequestRewrite};
use qlik_lb::proxy::route::route;
use qlik_lb::snapshot::{Shared, Snapshot};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A browser request for a Qlik sheet as it reaches the front door: ~1.5 KiB, the sticky cookie
/// among the QPS session cookies and analytics cookies, xrfkey in the query.
fn qlik_head(route_cookie: Option<&str>) -> Bytes {
    let sticky = route_cookie
        .map(|c| format!("QLB_ROUTE={c}; "))
        .unwrap_or_default();
    let text = format!(
        "GET /sense/app/3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11/sheet/aDtBzN/state/analysis?xrfkey=0123456789abcdef&qlik-csrf-token=Zm9vYmFyYmF6 HTTP/1.1\r\n\
Host: qlik.corp.example\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Windows\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-User: ?1\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://qlik.corp.example/hub/stream/aaec8d41-5201-43ab-809f-3063750dfafd\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
X-Qlik-Xrfkey: 0123456789abcdef\r\n\
X-Forwarded-For: 10.20.30.40\r\n\
Cookie: {sticky}X-Qlik-Session=7a1b4c2d-9e8f-4a3b-b2c1-0d9e8f7a6b5c; X-Qlik-Session-HTTP=1f2e3d4c-5b6a-4798-8a9b-c0d1e2f3a4b5; X-Qlik-Session-hdr=5c6b7a8d-9e0f-4a1b-9c2d-3e4f5a6b7c8d; _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; AMCV_0123456789ABCDEF%40AdobeOrg=-1124106680%7CMCIDTS%7C19700%7CMCMID%7C12345678901234567890123456789012345678; lang=en-GB\r\n\
\r\n"
    );
    Bytes::from(text)
}

/// A pool of two plain-HTTP backends with the given sticky settings, built the way a running
/// instance builds it.
fn pool(signed: bool) -> Arc<Pool> {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_line = if signed {
        std::fs::write(dir.path().join("sticky.key"), SECRET).expect("write secret");
        "secret_file = \"sticky.key\""
    } else {
        ""
    };
    let toml = format!(
        r#"
[[frontend]]
name = "public"
listen = "127.0.0.1:0"
pool = "proxies"

[[pool]]
name = "proxies"
balance = "least-conn"
  [pool.sticky]
  {secret_line}
  [[pool.backend]]
  id = "b1"
  url = "http://127.0.0.1:9101"
  [[pool.backend]]
  id = "b2"
  url = "http://127.0.0.1:9102"
"#
    );
    let cfg = Config::parse(&toml, dir.path()).expect("bench config is valid");
    let shared = Shared::new(Arc::new(Metrics::new()));
    let runtime = Snapshot::build(cfg, &shared).expect("bench runtime builds");
    runtime.pools["proxies"].clone()
}

fn cookie_codec(c: &mut Criterion) {
    let unsigned = CookieCodec::new("proxies", None);
    let signed = CookieCodec::new("proxies", Some(SECRET));
    let signed_value = signed.encode("node1");
    let mut g = c.benchmark_group("cookie");
    g.bench_function("encode_unsigned", |b| {
        b.iter(|| unsigned.encode(black_box("node1")))
    });
    g.bench_function("decode_unsigned", |b| {
        b.iter(|| unsigned.decode(black_box("node1")) == qlik_lb::balance::cookie::Decoded::Invalid)
    });
    g.bench_function("encode_signed", |b| {
        b.iter(|| signed.encode(black_box("node1")))
    });
    g.bench_function("decode_signed", |b| {
        b.iter(|| {
            signed.decode(black_box(signed_value.as_str()))
                == qlik_lb::balance::cookie::Decoded::Invalid
        })
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let unsigned = pool(false);
    let signed = pool(true);
    let with_cookie = parse_request(qlik_head(Some("b1"))).expect("head parses");
    let signed_cookie = signed.codec.encode("b1");
    let with_signed_cookie = parse_request(qlik_head(Some(&signed_cookie))).expect("head parses");
    let without = parse_request(qlik_head(None)).expect("head parses");
    assert_eq!(
        route(&unsigned, &with_cookie, None).map(|r| r.backend.id.clone()),
        Some("b1".to_string()),
        "the cookie must pin b1, or the bench measures the wrong path"
    );
    assert_eq!(
        route(&signed, &with_signed_cookie, None).map(|r| r.backend.id.clone()),
        Some("b1".to_string())
    );
    let mut g = c.benchmark_group("route");
    g.bench_function("sticky_hit_unsigned", |b| {
        b.iter(|| route(&unsigned, black_box(&with_cookie), None).is_some())
    });
    g.bench_function("sticky_hit_signed", |b| {
        b.iter(|| route(&signed, black_box(&with_signed_cookie), None).is_some())
    });
    g.bench_function("no_cookie_select", |b| {
        b.iter(|| route(&unsigned, black_box(&without), None).is_some())
    });
    g.finish();
}

fn head_parse_and_rewrite(c: &mut Criterion) {
    let raw = qlik_head(Some("b1"));
    assert!(
        (1300..1800).contains(&raw.len()),
        "bench head is {} bytes",
        raw.len()
    );
    let head = parse_request(raw.clone()).expect("head parses");
    let strip: Vec<String> = qlik_lb::config::types::default_strip_request_headers()
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let rw = RequestRewrite {
        strip: &strip,
        sticky_cookie: "QLB_ROUTE",
        client_ip: "10.1.2.3",
        client_tls: true,
    };
    let mut out = BytesMut::new();
    upstream_request(&head, &rw, &mut out);
    assert!(
        !out.windows(9).any(|w| w == b"QLB_ROUTE"),
        "cookie stripped"
    );

    let mut g = c.benchmark_group("head");
    g.throughput(criterion::Throughput::Bytes(raw.len() as u64));
    g.bench_function("parse_request_qlik_1_5k", |b| {
        b.iter(|| parse_request(black_box(raw.clone())).is_ok())
    });
    g.bench_function("upstream_request_qlik_1_5k", |b| {
        b.iter(|| {
            out.clear();
            upstream_request(black_box(&head), &rw, &mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group! {
    name = hot_path;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(40);
    targets = cookie_codec, routing, head_parse_and_rewrite
}
criterion_main!(hot_path);
