//! The load balancing module over a real socket: QPS's prioritize call answered with the same
//! object and the engines reordered from cached health.

mod engine_stub;

use bytes::Bytes;
use engine_stub::{health_json, runtime, EngineStub, TestPki};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use qlik_lb::balance::engine_health::EngineHealth;
use qlik_lb::balance::health::{probe_once, Prober};
use qlik_lb::balance::registry::HealthSample;
use qlik_lb::balance::Backend;
use qlik_lb::snapshot::{Shared, SharedSnapshot};
use qlik_lb::threads::workers::Workers;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);
const APP: &str = "3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../shared/qlik/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

struct Module {
    addr: SocketAddr,
    rt: SharedSnapshot,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Module {
    /// The module for pool `engines`, whose backends are `urls` (engine1, engine2, ...).
    async fn start(base_path: &str, urls: &[String], extra: &str) -> Module {
        let mut toml = format!(
            r#"
[lb_module]
listen = "127.0.0.1:0"
pool = "engines"
base_path = "{base_path}"

[[pool]]
name = "engines"
  [pool.health]
  check = "http"
  interval = "5s"
  rise = 1
  fall = 1
"#
        );
        for (i, u) in urls.iter().enumerate() {
            toml.push_str(&format!(
                "  [[pool.backend]]\n  id = \"engine{}\"\n  url = \"{u}\"\n{}\n",
                i + 1,
                extra.replace("ADDR", u.trim_start_matches("http://"))
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let (rt, shared) = runtime(&toml, dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(qlik_lb::lbmodule::serve(
            listener,
            None,
            rt.clone(),
            shared.clone(),
            Workers::start().unwrap(),
            shutdown.clone(),
        ));
        Module {
            addr,
            rt,
            shared,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// The three nodes of the fixtures.
    async fn fixture_site() -> Module {
        let urls: Vec<String> = (1..=3)
            .map(|i| format!("https://qs-node{i}.corp.example:4747"))
            .collect();
        Module::start("/", &urls, "").await
    }

    fn backend(&self, id: &str) -> Arc<Backend> {
        self.rt.load().pools["engines"].backend(id).unwrap().clone()
    }

    fn sample(&self, id: &str, cpu: f64, saturated: bool, docs: &[&str]) {
        let health = EngineHealth::parse(health_json(cpu, saturated, docs).as_bytes()).unwrap();
        self.backend(id).set_health(Some(HealthSample {
            health,
            taken: Instant::now(),
            taken_wall: SystemTime::now(),
        }));
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (u16, String, String) {
        timeout(LIMIT, async {
            let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "lb")
                .header("content-type", "application/json")
                .header("X-Qlik-User", "UserDirectory=CORP; UserId=anna")
                .body(Full::new(body.into()))
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, ctype, String::from_utf8(body.to_vec()).unwrap())
        })
        .await
        .expect("the module answers in time")
    }

    async fn prioritize(&self, body: impl Into<Bytes>) -> (u16, String) {
        let (status, ctype, body) = self.call("POST", "/loadbalancing/prioritize", body).await;
        assert_eq!(ctype, "application/json");
        (status, body)
    }

    async fn engines(&self, engines: &[&str]) -> Vec<String> {
        let body = serde_json::json!({ "AppName": APP, "QlikSenseEngines": engines }).to_string();
        let (status, text) = self.prioritize(body).await;
        assert_eq!(status, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(v["QlikSenseEngines"].clone()).unwrap()
    }

    fn metric(&self, line_start: &str) -> bool {
        self.shared
            .metrics
            .render()
            .lines()
            .any(|l| l.starts_with(line_start))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(LIMIT, self.task)
            .await
            .expect("serve stops")
            .unwrap();
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn the_fixture_request_gets_the_fixture_response() {
    let m = Module::fixture_site().await;
    m.sample("engine1", 60.0, false, &[]);
    m.sample("engine2", 10.0, false, &[]);
    m.sample("engine3", 30.0, false, &[]);
    let (status, body) = m.prioritize(fixture("prioritize-request.json")).await;
    assert_eq!(status, 200);
    assert_eq!(
        body.trim_end(),
        fixture("prioritize-response.json").trim_end()
    );
    assert!(m.metric(r#"qlb_lbmodule_requests_total{result="ok"} 1"#));
    assert!(m.metric("qlb_lbmodule_request_duration_seconds_count 1"));
    m.stop().await;
}

#[tokio::test]
async fn shutdown_closes_an_idle_keep_alive_connection_and_serve_returns() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = Module::fixture_site().await;
    let body = fixture("prioritize-request.json");
    let mut tcp = tokio::net::TcpStream::connect(m.addr).await.unwrap();
    let request = format!(
        "POST /loadbalancing/prioritize HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    timeout(LIMIT, async {
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("\"QlikSenseEngines\"") {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "closed before answering");
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the module answers in time");
    assert!(answer.starts_with(b"HTTP/1.1 200 "));
    // The connection is idle and kept alive: shutdown must close it, not the module's own idle
    // timeout (HEAD_TIMEOUT) and not the client.
    let before_idle_close = qlik_lb::listen_limits::HEAD_TIMEOUT / 2;
    timeout(before_idle_close, m.stop())
        .await
        .expect("shutdown reaches the idle connection");
    let mut rest = [0u8; 64];
    let n = timeout(before_idle_close, tcp.read(&mut rest))
        .await
        .expect("closed at shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0, "the module closes the idle connection at shutdown");
}

/// Sends `request` on a new connection, stays silent, and reads until the module closes it:
/// what came back and how long after the request went out.
async fn answer_to_a_stalled_body(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    timeout(
        qlik_lb::listen_limits::BODY_TIMEOUT + LIMIT,
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the module closes the connection")
    .unwrap();
    (String::from_utf8(answer).unwrap(), sent.elapsed())
}

#[tokio::test]
async fn a_declared_body_that_does_not_arrive_gets_408_json_and_the_connection_closes() {
    let deadline = qlik_lb::listen_limits::BODY_TIMEOUT;
    let m = Module::fixture_site().await;
    let head =
        "POST /loadbalancing/prioritize HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n";
    // 10 of 100 declared bytes; and a chunk of 10 whose last chunk never comes.
    let by_length = format!("{head}Content-Length: 100\r\n\r\n{{\"AppName\"");
    let chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\na\r\n{{\"AppName\"\r\n");
    let (a, b) = tokio::join!(
        answer_to_a_stalled_body(m.addr, by_length.as_bytes()),
        answer_to_a_stalled_body(m.addr, chunked.as_bytes()),
    );
    for (text, waited) in [a, b] {
        assert!(
            waited >= deadline - Duration::from_millis(250),
            "answered after {waited:?}, before the body deadline"
        );
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("did not arrive"),
            "{body}"
        );
    }
    assert!(m.metric(r#"qlb_lbmodule_requests_total{result="bad_request"} 2"#));
    m.stop().await;
}

#[tokio::test]
async fn everything_but_the_engine_order_comes_back_byte_for_byte() {
    let m = Module::fixture_site().await;
    m.sample("engine1", 70.0, false, &[]);
    m.sample("engine2", 40.0, false, &[]);
    m.sample("engine3", 10.0, false, &[]);
    let head = "{\"Extra\" : {\"b\": [1, 2.50, \"x\"], \"a\": null},\n \"AppName\":\"Sälj \\\"Q1\\\" 2024 \\u2013 日本 \\/ \" ,";
    let tail = ",\"n\": 1.0e2 }";
    let body = format!(
        "{head}\"QlikSenseEngines\":[\"wss://qs-node1.corp.example:4747\",\"wss://qs-node2.corp.example:4747\",\"wss://qs-node3.corp.example:4747\"]{tail}"
    );
    let (status, text) = m.prioritize(body.clone()).await;
    assert_eq!(status, 200);
    assert!(text.starts_with(head), "{text}");
    assert!(text.ends_with(tail), "{text}");
    let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
    let got: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["AppName"], sent["AppName"]);
    assert_eq!(got["Extra"], sent["Extra"]);
    let engines: Vec<String> = serde_json::from_value(got["QlikSenseEngines"].clone()).unwrap();
    assert_eq!(engines[0], "wss://qs-node3.corp.example:4747");
    let sent_engines: Vec<String> =
        serde_json::from_value(sent["QlikSenseEngines"].clone()).unwrap();
    assert_eq!(sorted(engines), sorted(sent_engines), "a permutation");
    m.stop().await;
}

#[tokio::test]
async fn qlikview_engines_are_echoed_under_their_key() {
    let m = Module::fixture_site().await;
    m.sample("engine1", 80.0, false, &[]);
    m.sample("engine2", 10.0, false, &[]);
    let (status, text) = m
        .prioritize(r#"{"AppName":"Sales","QlikViewEngines":["qs-node1.corp.example","qs-node2.corp.example"]}"#)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        text,
        r#"{"AppName":"Sales","QlikViewEngines":["qs-node2.corp.example", "qs-node1.corp.example"]}"#
    );
    m.stop().await;
}

#[tokio::test]
async fn unknown_engines_follow_the_known_up_ones_and_down_or_saturated_go_last() {
    let m = Module::fixture_site().await;
    m.sample("engine1", 5.0, true, &[]);
    m.sample("engine2", 5.0, false, &[]);
    m.sample("engine3", 40.0, false, &[]);
    m.backend("engine2")
        .record_check(Err("test: down".into()), 1, 1);
    let order = m
        .engines(&[
            "wss://unknown-a:4747",
            "wss://QS-NODE2.corp.example:4747",
            "qs-node1.corp.example",
            "https://qs-node3.corp.example:4747",
            "unknown-b",
            "qs-node3.corp.example:9999",
        ])
        .await;
    assert_eq!(
        order,
        [
            "https://qs-node3.corp.example:4747",
            "wss://unknown-a:4747",
            "unknown-b",
            "qs-node3.corp.example:9999",
            "qs-node1.corp.example",
            "wss://QS-NODE2.corp.example:4747",
        ]
    );
    m.stop().await;
}

#[tokio::test]
async fn the_warm_engine_wins_when_loads_are_close_but_not_when_far() {
    let m = Module::fixture_site().await;
    let list = ["qs-node1.corp.example:4747", "qs-node2.corp.example:4747"];
    m.sample("engine1", 10.0, false, &[]);
    m.sample("engine2", 25.0, false, &[APP]);
    assert_eq!(m.engines(&list).await[0], list[1], "warm and close");
    m.sample("engine2", 75.0, false, &[APP]);
    assert_eq!(m.engines(&list).await[0], list[0], "warm but much busier");
    m.stop().await;
}

#[tokio::test]
async fn repeated_calls_between_polls_spread() {
    let m = Module::fixture_site().await;
    let list = [
        "qs-node1.corp.example:4747",
        "qs-node2.corp.example:4747",
        "qs-node3.corp.example:4747",
    ];
    for id in ["engine1", "engine2", "engine3"] {
        m.sample(id, 30.0, false, &[]);
    }
    let mut firsts = std::collections::HashMap::new();
    for _ in 0..30 {
        *firsts.entry(m.engines(&list).await[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(
        firsts.len(),
        3,
        "equal engines all come first sometimes: {firsts:?}"
    );
    assert!(firsts.values().all(|&n| n <= 15), "{firsts:?}");

    // A lighter engine leads, but sessions sent since its sample count against it.
    m.sample("engine1", 20.0, false, &[]);
    m.sample("engine2", 40.0, false, &[]);
    m.sample("engine3", 90.0, false, &[]);
    let mut firsts = std::collections::HashMap::new();
    for _ in 0..60 {
        *firsts.entry(m.engines(&list).await[0].clone()).or_insert(0) += 1;
    }
    assert!(firsts[list[0]] > firsts[list[1]], "{firsts:?}");
    assert!(firsts[list[1]] > 0, "{firsts:?}");
    assert!(
        !firsts.contains_key(list[2]),
        "a hot engine never leads: {firsts:?}"
    );
    m.stop().await;
}

#[tokio::test]
async fn without_health_data_the_list_comes_back_unchanged() {
    let m = Module::fixture_site().await;
    let request = fixture("prioritize-request.json");
    let (status, body) = m.prioritize(request.clone()).await;
    assert_eq!((status, body), (200, request));
    assert!(m.metric(r#"qlb_lbmodule_requests_total{result="fallback"} 1"#));
    m.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_400_json_and_other_paths_404_json() {
    let m = Module::fixture_site().await;
    for bad in [
        "not json",
        "[\"wss://a:4747\"]",
        r#"{"AppName":"x"}"#,
        r#"{"AppName":"x","QlikSenseEngines":"a,b"}"#,
        r#"{"AppName":"x","QlikSenseEngines":["a",1]}"#,
    ] {
        let (status, body) = m.prioritize(bad).await;
        assert_eq!(status, 400, "{bad}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].is_string(), "{body}");
    }
    assert!(m.metric(r#"qlb_lbmodule_requests_total{result="bad_request"} 5"#));

    let huge = format!(
        r#"{{"AppName":"x","QlikSenseEngines":["{}"]}}"#,
        "a".repeat(70 * 1024)
    );
    let (status, body) = m.prioritize(huge).await;
    assert_eq!(status, 413);
    assert!(body.contains("65536"), "{body}");

    let (status, ctype, body) = m.call("POST", "/loadbalancing/other", "{}").await;
    assert_eq!((status, ctype.as_str()), (404, "application/json"));
    assert!(body.contains("error"));
    let (status, _, _) = m.call("GET", "/loadbalancing/prioritize", "").await;
    assert_eq!(status, 405);
    // The trailing slash form works too.
    let (status, _, body) = m
        .call(
            "POST",
            "/loadbalancing/prioritize/",
            fixture("prioritize-request.json"),
        )
        .await;
    assert_eq!((status, body), (200, fixture("prioritize-request.json")));
    m.stop().await;
}

#[tokio::test]
async fn base_path_and_live_engines_end_to_end() {
    let a = EngineStub::start(200, health_json(70.0, false, &[])).await;
    let b = EngineStub::start(200, health_json(15.0, false, &[])).await;
    let urls = [format!("http://{}", a.addr), format!("http://{}", b.addr)];
    let m = Module::start(
        "/qlb",
        &urls,
        "  engine_health = \"http://ADDR/engine/healthcheck\"",
    )
    .await;
    let snap = m.rt.load_full();
    let pool = &snap.pools["engines"];
    let prober = Prober::from_config(&snap.config);
    for backend in &pool.backends {
        timeout(
            LIMIT,
            probe_once(&prober, &pool.cfg.health, backend, &m.shared.metrics),
        )
        .await
        .unwrap()
        .unwrap();
    }
    let body = format!(
        r#"{{"AppName":"a","QlikSenseEngines":["wss://{}","wss://{}"]}}"#,
        a.addr, b.addr
    );
    let (status, _, text) = m.call("POST", "/qlb/loadbalancing/prioritize", body).await;
    assert_eq!(status, 200);
    assert_eq!(
        text,
        format!(
            r#"{{"AppName":"a","QlikSenseEngines":["wss://{}", "wss://{}"]}}"#,
            b.addr, a.addr
        )
    );
    let (status, _, _) = m.call("POST", "/loadbalancing/prioritize", "{}").await;
    assert_eq!(status, 404, "outside the base path");

    // The engine now reports itself saturated: it goes last.
    b.set(200, health_json(15.0, true, &[]));
    let backend = pool.backend("engine2").unwrap();
    probe_once(&prober, &pool.cfg.health, backend, &m.shared.metrics)
        .await
        .unwrap();
    let body = format!(r#"{{"QlikSenseEngines":["{}","{}"]}}"#, b.addr, a.addr);
    let (_, _, text) = m.call("POST", "/qlb/loadbalancing/prioritize", body).await;
    assert_eq!(
        text,
        format!(r#"{{"QlikSenseEngines":["{}", "{}"]}}"#, a.addr, b.addr)
    );
    m.stop().await;
}

#[tokio::test]
async fn serves_over_tls() {
    let pki = TestPki::generate("lb");
    let dir = tempfile::tempdir().unwrap();
    let (rt, shared) = runtime(
        r#"
[lb_module]
listen = "127.0.0.1:0"
pool = "engines"
[[pool]]
name = "engines"
  [[pool.backend]]
  id = "engine1"
  url = "https://qs-node1.corp.example:4747"
"#,
        dir.path(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(qlik_lb::lbmodule::serve(
        listener,
        Some(pki.server_config(false)),
        rt,
        shared,
        Workers::start().unwrap(),
        shutdown.clone(),
    ));
    let client = qlik_lb::tls::client_config_from(None, vec![pki.ca_der.clone()], true).unwrap();
    let request = fixture("prioritize-request.json");
    let (status, body) = timeout(LIMIT, async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the module");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post("/loadbalancing/prioritize")
            .header("host", "lb")
            .body(Full::new(Bytes::from(request.clone())))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    })
    .await
    .unwrap();
    assert_eq!((status, body), (200, request));
    shutdown.cancel();
    timeout(LIMIT, task).await.unwrap().unwrap();
}
