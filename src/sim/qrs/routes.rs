//! The QRS endpoints the license jobs use, with the QRS's checks: the xrfkey must appear as
//! both the `xrfkey` query parameter and the `X-Qlik-Xrfkey` header (16 characters), else 403.

use super::filter::Filter;
use super::model::quarantine_period;
use super::{lock, RequestRecord, State};
use crate::control::LicenseType;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

type Reply = Response<Full<Bytes>>;

pub(super) async fn handle(state: &State, req: Request<Incoming>) -> Reply {
    let path = percent_decode(req.uri().path());
    let query = parse_query(req.uri().query().unwrap_or(""));
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    lock(&state.requests).push(RequestRecord {
        method: req.method().to_string(),
        path: path.clone(),
        query: query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&"),
        qlik_user: header("x-qlik-user"),
        xrfkey_header: header("x-qlik-xrfkey"),
    });

    let key = query.iter().find(|(k, _)| k.eq_ignore_ascii_case("xrfkey"));
    match (key, header("x-qlik-xrfkey")) {
        (Some((_, q)), Some(h)) if q.len() == 16 && *q == h => {}
        _ => {
            return text(
                StatusCode::FORBIDDEN,
                "XSRF prevention check failed. Possible XSRF discovered.",
            )
        }
    }
    let filter = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("filter"))
        .map(|(_, v)| v.as_str());

    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    if method == Method::GET {
        let mut hostile = lock(&state.hostile);
        if hostile.failing_gets > 0 {
            hostile.failing_gets -= 1;
            return text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        }
    }
    match (method, segs.as_slice()) {
        (Method::GET, ["qrs", "license", "accesstypeoverview"]) => {
            let overview = lock(&state.overview).clone();
            let body = overview.unwrap_or_else(|| lock(&state.population).overview(state.now()));
            json(state, &body)
        }
        (Method::GET, ["qrs", "license", table, "full"]) => match license_type(table) {
            Some(kind) => {
                let pop = lock(&state.population);
                let rows: Vec<Value> = pop
                    .allocations
                    .iter()
                    .filter(|a| a.kind == kind)
                    .map(|a| a.to_json(&pop.users))
                    .collect();
                drop(pop);
                list(state, rows, filter)
            }
            None => not_found(),
        },
        (Method::GET, ["qrs", "user", "full"]) => {
            let rows: Vec<Value> = lock(&state.population)
                .users
                .iter()
                .map(|u| u.to_json())
                .collect();
            list(state, rows, filter)
        }
        (Method::GET, ["qrs", "user", id]) => {
            let user = lock(&state.population).user(id).map(|u| u.to_json());
            match user {
                Some(u) => json(state, &u),
                None => not_found(),
            }
        }
        (Method::DELETE, ["qrs", "license", table, id]) => match license_type(table) {
            Some(kind) => delete(state, kind, id),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn license_type(table: &str) -> Option<LicenseType> {
    match table {
        "professionalaccesstype" => Some(LicenseType::Professional),
        "analyzeraccesstype" => Some(LicenseType::Analyzer),
        _ => None,
    }
}

fn delete(state: &State, kind: LicenseType, id: &str) -> Reply {
    let hook = lock(&state.delete_hook).clone();
    if let Some(hook) = hook {
        hook(id);
    }
    if lock(&state.hostile)
        .fail_delete
        .iter()
        .any(|f| f.eq_ignore_ascii_case(id))
    {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulated repository failure",
        );
    }
    let now = state.now();
    let mut pop = lock(&state.population);
    let Some(at) = pop
        .allocations
        .iter()
        .position(|a| a.kind == kind && a.id.eq_ignore_ascii_case(id))
    else {
        return not_found();
    };
    let row = &pop.allocations[at];
    if row.quarantined {
        // Already waiting out its quarantine; deleting again changes nothing.
    } else if now - row.last_used < quarantine_period() {
        let user = row.user.as_deref().and_then(|u| pop.user(u)).cloned();
        pop.allocations[at].quarantine(user.as_ref());
    } else {
        pop.allocations.remove(at);
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::new(Bytes::new()))
        .expect("static response parts are valid")
}

fn list(state: &State, rows: Vec<Value>, filter: Option<&str>) -> Reply {
    let ignore = lock(&state.hostile).ignore_filter;
    let rows = match filter {
        Some(text) if !ignore => {
            let parsed = match Filter::parse(text) {
                Ok(f) => f,
                Err(e) => return text_reply(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let mut kept = Vec::new();
            for row in rows {
                match parsed.matches(&row) {
                    Ok(true) => kept.push(row),
                    Ok(false) => {}
                    Err(e) => return text_reply(StatusCode::BAD_REQUEST, e.to_string()),
                }
            }
            kept
        }
        _ => rows,
    };
    json(state, &Value::Array(rows))
}

fn json(state: &State, body: &Value) -> Reply {
    let bytes = if lock(&state.hostile).garbage_json {
        Bytes::from_static(b"{\"id\": \"6b1c8f0e-1d55, <html>Service Unavailable")
    } else {
        Bytes::from(body.to_string())
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(bytes))
        .expect("static response parts are valid")
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    text_reply(status, body.to_string())
}

fn text_reply(status: StatusCode, body: String) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn not_found() -> Reply {
    text(StatusCode::NOT_FOUND, "Not found")
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
