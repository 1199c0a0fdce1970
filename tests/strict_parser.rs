//! The strict reference parser the §3.1 tests judge the front door with: what it accepts, how
//! it de-frames bodies, and every shape it must refuse.

mod support;

use support::strict::{parse_one, parse_stream, Tail};

fn ok(s: &[u8]) -> support::strict::Request {
    match parse_one(s) {
        Ok(Some(r)) => r,
        other => panic!(
            "{:?} should parse, got {other:?}",
            String::from_utf8_lossy(s)
        ),
    }
}

fn refused(s: &[u8]) -> String {
    match parse_one(s) {
        Err(e) => e.why,
        other => panic!(
            "{:?} should be refused, got {other:?}",
            String::from_utf8_lossy(s)
        ),
    }
}

#[test]
fn a_plain_request_keeps_its_line_and_fields() {
    let r = ok(b"GET /a?b=1 HTTP/1.1\r\nHost: a.example:8080\r\nX-A:  v 1 \t\r\n\r\n");
    assert_eq!(r.request_line, b"GET /a?b=1 HTTP/1.1");
    assert_eq!(r.method, b"GET");
    assert_eq!(r.target, b"/a?b=1");
    assert_eq!(r.minor, 1);
    assert_eq!(r.header("x-a"), Some(&b"v 1"[..]));
    assert_eq!(r.headers[0].0, b"Host", "names as sent");
    assert!(r.body.is_empty());
    assert_eq!(r.raw.len(), r.head.len());
}

#[test]
fn bodies_are_deframed_by_length_and_chunks() {
    let r = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET");
    assert_eq!(r.body, b"hello");
    assert_eq!(r.raw.len(), r.head.len() + 5);
    let c = ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5;a=b\r\nhello\r\n0A ; n = \"q \\\" s\" ;m\r\n0123456789\r\n000;x=1\r\n\r\n");
    assert!(c.chunked);
    assert_eq!(c.body, b"hello0123456789");
    assert_eq!(c.last_chunk.as_deref(), Some(&b"000;x=1"[..]));
    assert!(c.raw.ends_with(b"000;x=1\r\n\r\n"));
}

#[test]
fn a_stream_splits_into_requests_and_a_partial_tail() {
    let s = parse_stream(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET /3 HTTP/1.1\r\nHo",
    );
    assert_eq!(s.requests.len(), 2);
    assert_eq!(s.requests[1].body, b"ok");
    let first_two: usize = s.requests.iter().map(|r| r.raw.len()).sum();
    assert_eq!(s.tail, Tail::Partial(first_two));
    assert_eq!(
        parse_stream(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").tail,
        Tail::Clean
    );
    let bad = parse_stream(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\nHost: a\r\n\r\n");
    assert_eq!(bad.requests.len(), 1);
    match bad.tail {
        Tail::Error(e) => assert_eq!(e.at, 27 + 14, "{e:?}"),
        t => panic!("{t:?}"),
    }
}

#[test]
fn incomplete_input_is_partial_not_an_error() {
    let full = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\"\r\nhello\r\n0\r\n\r\n";
    for cut in 0..full.len() {
        assert!(
            matches!(parse_one(&full[..cut]), Ok(None)),
            "prefix of {cut} bytes: {:?}",
            parse_one(&full[..cut])
        );
    }
    assert!(parse_one(full).unwrap().is_some());
}

#[test]
fn the_head_is_refused_when_it_has_two_readings() {
    let cases: &[(&[u8], &str)] = &[
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\n\r\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\n", "bare LF"),
        (
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "empty line before",
        ),
        (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", "bare CR"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
            "obs-fold",
        ),
        (
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "whitespace before the colon",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n",
            "not a token",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n",
            "not allowed",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n",
            "without a colon",
        ),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "method"),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "request line"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"),
        (b"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n", "origin form"),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", "CONNECT"),
        (b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT"),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", "origin form"),
        (b"GET / HTTP/1.1\r\n\r\n", "without Host"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "more than one Host",
        ),
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", "empty host"),
        (
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "not allowed in a host",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n",
            "not allowed in a host",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: user@host\r\n\r\n",
            "not allowed in a host",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
            "not allowed in a host",
        ),
        (b"GET / HTTP/1.1\r\nHost: h:x\r\n\r\n", "port"),
        (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", "IP literal"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Content-Length\r\n\r\n",
            "Connection names content-length",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\n\r\n",
            "Connection names transfer-encoding",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: HOST\r\n\r\n",
            "Connection names host",
        ),
    ];
    for (c, why) in cases {
        let got = refused(c);
        assert!(
            got.contains(why),
            "{:?}: refused for {got:?}, not {why:?}",
            String::from_utf8_lossy(c)
        );
    }
    // The same heads without the defect parse (the list above fails for the stated reason).
    ok(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\nConnection: keep-alive, X-A\r\n\r\n");
    ok(b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    ok(b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn framing_is_refused_unless_it_is_one_length_or_one_chunked() {
    let bodies: &[&str] = &[
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: +5",
        "Content-Length: 5a",
        "Content-Length: -1",
        "Content-Length:",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked, chunked",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding:",
    ];
    for b in bodies {
        let why = refused(format!("POST / HTTP/1.1\r\nHost: a\r\n{b}\r\n\r\n").as_bytes());
        assert!(!why.is_empty());
    }
    refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 \r\n\r\nhello").body,
        b"hello"
    );
}

#[test]
fn bad_chunk_lines_and_trailers_are_refused() {
    let lines = support::strict::BAD_CHUNK_LINES;
    for l in lines {
        let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(l);
        req.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        refused(&req);
    }
    let why = refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Qlik-User: x\r\n\r\n");
    assert!(why.contains("trailer"), "{why}");
    refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    );
    // Partial but already wrong.
    assert!(
        parse_one(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz").is_err()
    );
    assert!(parse_one(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000000"
    )
    .is_err());
    ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000F\r\n123456789012345\r\n0\r\n\r\n");
}
