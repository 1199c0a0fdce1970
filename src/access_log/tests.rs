use super::writer::Sink;
use super::*;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::time::Instant;

fn entry(request: bool) -> Entry {
    let raw = Bytes::from_static(b"GET /a\"b?x=1 HTTP/1.1");
    Entry {
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        request_id: RequestId::next(),
        client: "10.0.0.7:51234".parse().unwrap(),
        names: Arc::new(ConnNames {
            frontend: "public".into(),
            pool: "proxies".into(),
        }),
        tls: true,
        request: request.then(|| RequestLine {
            method: raw.slice(0..3),
            target: raw.slice(4..12),
            line: raw,
            user_agent: Some(Bytes::from_static(b"curl/8")),
            referer: None,
        }),
        status: 200,
        bytes_in: 78,
        bytes_out: 312,
        ttfb: Duration::from_micros(1204),
        duration: Duration::from_micros(3871),
        backend: None,
        sticky: Sticky::Miss,
        websocket: false,
        tunnel: None,
    }
}

#[test]
fn a_json_line_carries_every_field() {
    let mut out = Vec::new();
    let e = entry(true);
    format::json(&e, &mut format::Rfc3339::new(), &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["request_id"], e.request_id.to_string());
    assert_eq!(v["client_ip"], "10.0.0.7");
    assert_eq!(v["client_port"], 51234);
    assert_eq!(v["frontend"], "public");
    assert_eq!(v["tls"], true);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["target"], "/a\"b?x=1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 78);
    assert_eq!(v["bytes_out"], 312);
    assert_eq!(v["ttfb_ms"], 1.204);
    assert_eq!(v["duration_ms"], 3.871);
    assert_eq!(v["pool"], "proxies");
    assert_eq!(v["backend"], serde_json::Value::Null);
    assert_eq!(v["sticky"], "miss");
    assert_eq!(v["user_agent"], "curl/8");
    assert_eq!(v["websocket"], false);
    assert!(v.get("tunnel_ms").is_none());
    assert_eq!(v.as_object().unwrap().len(), 18);
}

#[test]
fn a_refused_head_logs_nulls_for_what_was_never_read() {
    let mut out = Vec::new();
    format::json(&entry(false), &mut format::Rfc3339::new(), &mut out);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in ["method", "target", "user_agent", "backend"] {
        assert_eq!(v[key], serde_json::Value::Null, "{key}");
    }
}

#[test]
fn a_combined_line_is_the_standard_one_then_the_extra_fields() {
    let mut out = Vec::new();
    let mut e = entry(true);
    e.tunnel = Some(Duration::from_millis(2500));
    e.websocket = true;
    e.status = 101;
    format::combined(&e, &mut out);
    let line = String::from_utf8(out).unwrap();
    assert_eq!(
        line,
        format!(
            "10.0.0.7 - - [14/Nov/2023:22:13:20 +0000] \"GET /a\\\"b?x=1 HTTP/1.1\" 101 312 \"-\" \"curl/8\" \
             request_id={} client_port=51234 frontend=\"public\" tls=true bytes_in=78 ttfb_ms=1.204 \
             duration_ms=3.871 pool=\"proxies\" backend=- sticky=miss websocket=true tunnel_ms=2500\n",
            e.request_id
        )
    );
}

#[test]
fn request_ids_are_unique_and_share_the_process_prefix() {
    let (a, b) = (RequestId::next().to_string(), RequestId::next().to_string());
    assert_ne!(a, b);
    assert_eq!(a.split('-').next(), b.split('-').next());
}

/// A pipe whose buffer is full and that nobody reads: the writer blocks on its first write.
fn stalled_pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors, each owned by one File from here on.
    let (reader, writer) = unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK), 0);
        (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
    };
    let mut w = &writer;
    let chunk = [b'x'; 4096];
    while std::io::Write::write(&mut w, &chunk).is_ok() {}
    super::writer::set_blocking(&writer).unwrap();
    (reader, writer)
}

#[test]
fn a_stalled_writer_never_blocks_logging_and_counts_what_it_drops() {
    let (_reader, writer) = stalled_pipe();
    let dropped = IntCounter::new("dropped", "test").unwrap();
    let sink = Sink::File {
        path: "/nonexistent/stalled".into(),
        file: writer,
    };
    let log = AccessLog::start(sink, AccessLogFormat::Json, 2, dropped.clone()).unwrap();
    let started = Instant::now();
    const LINES: u64 = 2_000;
    for _ in 0..LINES {
        log.log(entry(true));
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // Every line is either queued or counted as dropped. Queued: two in the queue, and those the
    // writer took into its batch before its first write blocked (how many depends on how the
    // threads interleave, but a batch is written at 64 KiB, and a JSON line is over 100 bytes).
    let queued = log.queued.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped.get() + queued, LINES, "dropped {}", dropped.get());
    let mut one = Vec::new();
    format::json(&entry(true), &mut format::Rfc3339::new(), &mut one);
    assert!(one.len() > 100, "{}", String::from_utf8_lossy(&one));
    let most_held = 2 + (64 * 1024 / 100) + 1;
    assert!(
        dropped.get() >= LINES - most_held,
        "a queue of two drops the rest: dropped {}",
        dropped.get()
    );
}
