//! Answers the proxy makes itself: short HTML or JSON by `Accept`, with a request id that also
//! appears in the log line, so an administrator can match a user's screenshot to the log.

use super::head::Head;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    BadRequest,
    MethodNotAllowed,
    ExpectationFailed,
    HeaderTooLarge,
    HeaderTimeout,
    NoBackend,
    BadGateway,
    GatewayTimeout,
}

impl ProxyError {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            ProxyError::BadRequest => (400, "Bad Request"),
            ProxyError::MethodNotAllowed => (405, "Method Not Allowed"),
            ProxyError::HeaderTimeout => (408, "Request Timeout"),
            ProxyError::ExpectationFailed => (417, "Expectation Failed"),
            ProxyError::HeaderTooLarge => (431, "Request Header Fields Too Large"),
            ProxyError::BadGateway => (502, "Bad Gateway"),
            ProxyError::NoBackend => (503, "Service Unavailable"),
            ProxyError::GatewayTimeout => (504, "Gateway Timeout"),
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            ProxyError::BadRequest => "The request could not be understood.",
            ProxyError::MethodNotAllowed => "This method is not forwarded.",
            ProxyError::ExpectationFailed => "Only the 100-continue expectation is supported.",
            ProxyError::HeaderTimeout => "The request headers did not arrive in time.",
            ProxyError::HeaderTooLarge => "The request headers are too large.",
            ProxyError::BadGateway => "The Qlik Sense node could not be reached.",
            ProxyError::NoBackend => {
                "No Qlik Sense node is available right now. Please retry shortly."
            }
            ProxyError::GatewayTimeout => "The Qlik Sense node did not answer in time.",
        }
    }
}

/// A process-unique request id as text (the access log's `request_id`).
pub fn request_id() -> String {
    crate::access_log::RequestId::next().to_string()
}

fn wants_json(head: Option<&Head>) -> bool {
    head.and_then(|h| h.first("accept"))
        .is_some_and(|a| a.windows(4).any(|w| w.eq_ignore_ascii_case(b"json")))
}

/// The full response bytes; the connection is closed after it unless `keep_alive`. `hsts`: the
/// frontend's `Strict-Transport-Security` value, sent on every answer of a TLS frontend.
pub fn error_response(
    err: ProxyError,
    head: Option<&Head>,
    id: &str,
    keep_alive: bool,
    hsts: Option<&str>,
) -> Vec<u8> {
    let (code, reason) = err.status();
    let text = err.explanation();
    let (ctype, body) = if wants_json(head) {
        (
            "application/json",
            serde_json::json!({"status": code, "error": reason, "message": text, "request_id": id})
                .to_string(),
        )
    } else {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><html><head><title>{code} {reason}</title></head><body><h1>{code} {reason}</h1><p>{text}</p><p><small>qlik-lb request id {id}</small></p></body></html>\n"
            ),
        )
    };
    let extra = match err {
        ProxyError::NoBackend => "Retry-After: 5\r\n",
        ProxyError::MethodNotAllowed => "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\n",
        _ => "",
    };
    let conn = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let hsts = hsts
        .map(|v| format!("Strict-Transport-Security: {v}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Request-Id: {id}\r\n{extra}{hsts}{conn}\r\n{body}",
        body.len()
    )
    .into_bytes()
}
