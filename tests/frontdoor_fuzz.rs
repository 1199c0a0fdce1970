//! The §3.1 invariant as a property over generated request streams (`fuzz_cases`): whatever a
//! client sends, every byte the backend receives parses, under the strict reference parser,
//! into exactly the requests the client got backend answers for (matched by `X-Seen`, in
//! order), with no `strip_request_headers` field in any spelling, no bare LF, and none of what
//! the table removes (`Upgrade` other than a valid WebSocket handshake's `websocket`,
//! `HTTP2-Settings`, `Expect` on a request with a body).
//!
//! One front door and one recording backend serve the whole run; each case is a new client
//! connection. `PROPTEST_CASES` sets the number of cases (64 when unset). With
//! `FRONTDOOR_FUZZ_SURVEY=1` the run does not stop at the first failing case: it counts the
//! violations by kind, keeps the shortest input of each, and fails at the end with the list.

mod fuzz_cases;
mod support;

use fuzz_cases::{case, Case, STRIP};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use support::door::{Door, Sent};
use support::strict::Request;

const DEFAULT_CASES: u32 = 64;

fn lossy(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

/// A violation of the invariant: `(kind, details)`.
type Violation = (String, String);

/// Survey mode: per kind of violation, how many cases, and the shortest input with its details.
type Survey = BTreeMap<String, (usize, Vec<u8>, String)>;

fn check_request(r: &Request) -> Result<(), Violation> {
    let head = lossy(&r.head);
    for name in STRIP {
        if r.has(name) {
            return Err((format!("{name} reached the backend"), head));
        }
    }
    let bare_lf = r
        .head
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || r.head[i - 1] != b'\r'));
    if bare_lf {
        return Err(("bare LF in a forwarded head".into(), head));
    }
    if r.has("http2-settings") {
        return Err(("HTTP2-Settings forwarded".into(), head));
    }
    // The proxy answers `100 Continue` itself: a backend never sees an expectation for a body.
    if r.has("expect") && (r.chunked || r.has("content-length")) {
        return Err(("Expect forwarded with a body".into(), head));
    }
    let conn_upgrade = r.all("connection").iter().any(|v| {
        v.split(|b| *b == b',').any(|t| {
            String::from_utf8_lossy(t)
                .trim()
                .eq_ignore_ascii_case("upgrade")
        })
    });
    if let Some(up) = r.header("upgrade") {
        let handshake = r.method == b"GET"
            && r.minor == 1
            && r.body.is_empty()
            && !r.chunked
            && conn_upgrade
            && r.has("sec-websocket-key")
            && r.header("sec-websocket-version") == Some(b"13");
        if !up.eq_ignore_ascii_case(b"websocket") || r.all("upgrade").len() > 1 || !handshake {
            return Err((
                "Upgrade forwarded outside a WebSocket handshake".into(),
                head,
            ));
        }
    } else if conn_upgrade {
        return Err(("Connection: upgrade without Upgrade".into(), head));
    }
    Ok(())
}

fn check(sent: &Sent) -> Result<(), Violation> {
    if let Some((conn, e, all)) = sent.backend.errors.first() {
        // The connection may be a pooled one: show what this case sent on it, from the
        // refused point if that is earlier (bytes an earlier case left unfinished).
        let this_case = sent
            .backend
            .bytes
            .iter()
            .find(|(c, _)| c == conn)
            .map_or(0, |(_, b)| b.len());
        let from = (all.len() - this_case).min(e.at);
        let earlier = all.len() - this_case - from;
        return Err((
            format!("backend could not parse: {}", e.why),
            format!(
                "backend conn {conn} received {} ({earlier} bytes of it from before this case; refused at byte {})",
                lossy(&all[from..]),
                e.at - from
            ),
        ));
    }
    let parsed: Vec<usize> = sent.backend.requests.iter().map(|s| s.seq).collect();
    let answered = sent.seen();
    if parsed != answered {
        let lines: Vec<String> = sent
            .backend
            .requests
            .iter()
            .map(|s| format!("#{} {}", s.seq, s.req.line_text()))
            .collect();
        return Err((
            "backend requests differ from the client's answers".into(),
            format!("backend parsed {lines:?}, client got answers for {answered:?}"),
        ));
    }
    for s in &sent.backend.requests {
        check_request(&s.req)?;
    }
    Ok(())
}

async fn run(door: &Door, c: &Case) -> Result<(), Violation> {
    let parts = c.parts();
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    let sent = door
        .send_parts_within(&parts, usize::MAX, Duration::from_secs(3))
        .await;
    check(&sent)
}

fn config() -> Config {
    // `Config::default()` reads PROPTEST_CASES (and the other PROPTEST_* variables).
    let mut cfg = Config {
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        cfg.cases = DEFAULT_CASES;
    }
    cfg
}

#[test]
fn the_backend_reads_exactly_the_requests_the_client_was_answered_for() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // A 1 s response timeout: a request the proxy wrongly holds (waiting for a backend `100`)
    // costs the run one second, not five.
    let door = rt.block_on(Door::start_edited("header_timeout = \"2s\"", "", |cfg| {
        cfg.replace("response_timeout = \"5s\"", "response_timeout = \"1s\"")
    }));
    let cfg = config();
    let started = std::time::Instant::now();
    let survey = std::env::var_os("FRONTDOOR_FUZZ_SURVEY").is_some();
    // kind -> (count, shortest input, details)
    let seen: Mutex<Survey> = Mutex::default();
    let mut runner = TestRunner::new(cfg.clone());
    let result = runner.run(&case(), |c| {
        let outcome = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), run(&door, &c))
                .await
                .unwrap_or_else(|_| Err(("case hung".into(), String::new())))
        });
        match outcome {
            Ok(()) => Ok(()),
            Err((kind, details)) if survey => {
                let bytes = c.bytes();
                let mut all = seen.lock().unwrap();
                let e = all
                    .entry(kind)
                    .or_insert((0, bytes.clone(), details.clone()));
                e.0 += 1;
                if bytes.len() < e.1.len() {
                    (e.1, e.2) = (bytes, details);
                }
                Ok(())
            }
            Err((kind, details)) => Err(TestCaseError::fail(format!(
                "{kind}\n  {details}\n  sent: {}",
                lossy(&c.bytes())
            ))),
        }
    });
    eprintln!(
        "frontdoor_fuzz: {} cases in {:.1}s",
        cfg.cases,
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, minimal)) => panic!(
            "§3.1 invariant violated; minimal case:\n{minimal:#?}\nsent: {}\n{why}",
            lossy(&minimal.bytes())
        ),
        Err(e) => panic!("{e}"),
    }
    let all = seen.into_inner().unwrap();
    if !all.is_empty() {
        let list: Vec<String> = all
            .iter()
            .map(|(kind, (n, bytes, details))| {
                format!(
                    "{n:>6} × {kind}\n         shortest: {}\n         {details}",
                    lossy(bytes)
                )
            })
            .collect();
        panic!("§3.1 invariant violated:\n{}", list.join("\n"));
    }
}
