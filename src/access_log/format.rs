//! The two line formats. JSON: one object per line with the fields of §3.3 in that order.
//! Combined: the Apache/NGINX combined format, then the remaining fields as `key=value`:
//!
//! ```text
//! 10.0.0.7 - - [01/Dec/2026:10:15:02 +0000] "GET /hub HTTP/1.1" 200 5120 "-" "Mozilla/5.0" request_id=5f3a9c21-1b client_port=51234 frontend="public" tls=true bytes_in=412 ttfb_ms=1.204 duration_ms=3.871 pool="proxies" backend="node1" sticky=miss websocket=false
//! ```
//!
//! The size field is `bytes_out` (head included); `-` stands for an unknown value; names are
//! JSON strings; `tunnel_ms` is appended for WebSocket lines.

use super::Entry;
use chrono::{DateTime, Utc};
use std::io::Write;
use std::time::Duration;

fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec never fails");
}

fn json_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => json_str(out, &String::from_utf8_lossy(b)),
        None => out.extend_from_slice(b"null"),
    }
}

/// RFC 3339 UTC with milliseconds. The text up to the second changes once a second while a
/// busy log writes thousands of lines in it, so it is formatted once per second and reused.
pub(super) struct Rfc3339 {
    second: i64,
    text: String,
}

impl Rfc3339 {
    pub(super) fn new() -> Rfc3339 {
        Rfc3339 {
            second: i64::MIN,
            text: String::new(),
        }
    }

    fn write(&mut self, time: std::time::SystemTime, out: &mut Vec<u8>) {
        let time: DateTime<Utc> = time.into();
        let second = time.timestamp();
        if second != self.second {
            self.second = second;
            self.text = time.format("%Y-%m-%dT%H:%M:%S").to_string();
        }
        out.extend_from_slice(self.text.as_bytes());
        let _ = write!(out, ".{:03}Z", time.timestamp_subsec_millis());
    }
}

pub(super) fn json(e: &Entry, clock: &mut Rfc3339, out: &mut Vec<u8>) {
    let req = e.request.as_ref();
    out.extend_from_slice(b"{\"time\":\"");
    clock.write(e.time, out);
    let _ = write!(
        out,
        "\",\"request_id\":\"{}\",\"client_ip\":\"{}\",\"client_port\":{},\"frontend\":",
        e.request_id,
        e.client.ip(),
        e.client.port(),
    );
    json_str(out, &e.names.frontend);
    let _ = write!(out, ",\"tls\":{},\"method\":", e.tls);
    json_bytes(out, req.map(|r| &r.method[..]));
    out.extend_from_slice(b",\"target\":");
    json_bytes(out, req.map(|r| &r.target[..]));
    let _ = write!(
        out,
        ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"ttfb_ms\":{},\"duration_ms\":{},\"pool\":",
        e.status,
        e.bytes_in,
        e.bytes_out,
        millis(e.ttfb),
        millis(e.duration),
    );
    json_str(out, &e.names.pool);
    out.extend_from_slice(b",\"backend\":");
    json_bytes(out, e.backend.as_ref().map(|b| b.id.as_bytes()));
    let _ = write!(out, ",\"sticky\":\"{}\",\"user_agent\":", e.sticky.as_str());
    json_bytes(out, req.and_then(|r| r.user_agent.as_deref()));
    let _ = write!(out, ",\"websocket\":{}", e.websocket);
    if let Some(t) = e.tunnel {
        let _ = write!(out, ",\"tunnel_ms\":{}", millis(t));
    }
    out.extend_from_slice(b"}\n");
}

/// A quoted field of the combined format: `"` and `\` escaped, bytes outside printable ASCII
/// as `\xHH` (as NGINX does); `"-"` when absent.
fn quoted(out: &mut Vec<u8>, b: Option<&[u8]>) {
    out.push(b'"');
    match b {
        None => out.push(b'-'),
        Some(b) => {
            for &c in b {
                match c {
                    b'"' | b'\\' => out.extend_from_slice(&[b'\\', c]),
                    0x20..=0x7e => out.push(c),
                    _ => {
                        let _ = write!(out, "\\x{c:02X}");
                    }
                }
            }
        }
    }
    out.push(b'"');
}

pub(super) fn combined(e: &Entry, out: &mut Vec<u8>) {
    let time: DateTime<Utc> = e.time.into();
    let req = e.request.as_ref();
    let _ = write!(
        out,
        "{} - - [{}] ",
        e.client.ip(),
        time.format("%d/%b/%Y:%H:%M:%S +0000")
    );
    quoted(out, req.map(|r| &r.line[..]));
    let _ = write!(out, " {} {} ", e.status, e.bytes_out);
    quoted(out, req.and_then(|r| r.referer.as_deref()));
    out.push(b' ');
    quoted(out, req.and_then(|r| r.user_agent.as_deref()));
    let _ = write!(
        out,
        " request_id={} client_port={} frontend=",
        e.request_id,
        e.client.port()
    );
    json_str(out, &e.names.frontend);
    let _ = write!(
        out,
        " tls={} bytes_in={} ttfb_ms={} duration_ms={} pool=",
        e.tls,
        e.bytes_in,
        millis(e.ttfb),
        millis(e.duration)
    );
    json_str(out, &e.names.pool);
    out.extend_from_slice(b" backend=");
    match &e.backend {
        Some(b) => json_str(out, &b.id),
        None => out.push(b'-'),
    }
    let _ = write!(
        out,
        " sticky={} websocket={}",
        e.sticky.as_str(),
        e.websocket
    );
    if let Some(t) = e.tunnel {
        let _ = write!(out, " tunnel_ms={}", millis(t));
    }
    out.push(b'\n');
}
