//! QPS-like session rules: a node issues `X-Qlik-Session[-<prefix>]` cookies and only knows the
//! sessions it issued, so a request that reaches the wrong node is sent to the login page.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use super::request::Request;

/// First path segments that are QPS's own paths, never a virtual proxy prefix.
const ROOT_SEGMENTS: &[&str] = &[
    "app",
    "hub",
    "qmc",
    "sense",
    "resources",
    "content",
    "extensions",
    "api",
    "qrs",
    "qps",
    "engine",
    "healthcheck",
    "dev-hub",
    "single",
    "translate",
    "internal_windows_authentication",
    "internal_forms_authentication",
    "__sim",
    "favicon.ico",
];

const LOGIN_SEGMENT: &str = "internal_forms_authentication";

/// The virtual proxy prefix of a path: its first segment, when that segment is a valid prefix
/// (lowercase `a-z 0-9 - . _ ~`) and not one of QPS's own paths.
pub fn virtual_proxy_prefix(path: &str) -> Option<&str> {
    let first = path.strip_prefix('/')?.split('/').next()?;
    let valid = !first.is_empty()
        && first != "."
        && first != ".."
        && first
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b));
    (valid && !ROOT_SEGMENTS.contains(&first)).then_some(first)
}

/// The path below the virtual proxy prefix (`/p/app/x` → `/app/x`).
pub fn path_below_prefix(path: &str) -> &str {
    match virtual_proxy_prefix(path) {
        Some(prefix) => {
            let rest = &path[1 + prefix.len()..];
            if rest.is_empty() {
                "/"
            } else {
                rest
            }
        }
        None => path,
    }
}

pub fn session_cookie_name(prefix: Option<&str>) -> String {
    match prefix {
        Some(prefix) => format!("X-Qlik-Session-{prefix}"),
        None => "X-Qlik-Session".to_string(),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

pub fn is_login_path(path: &str) -> bool {
    path_below_prefix(path).split('/').nth(1) == Some(LOGIN_SEGMENT)
}

/// What the node makes of a request's QPS session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCheck {
    /// A session this node issued.
    Known(String),
    /// A new session; the answer must carry `set_cookie`.
    Issued { id: String, set_cookie: String },
    /// A session this node never issued: redirect to the login page at `location`.
    Foreign { location: String },
}

impl SessionCheck {
    pub fn session_id(&self) -> Option<&str> {
        match self {
            SessionCheck::Known(id) | SessionCheck::Issued { id, .. } => Some(id),
            SessionCheck::Foreign { .. } => None,
        }
    }

    pub fn set_cookie(&self) -> Option<&str> {
        match self {
            SessionCheck::Issued { set_cookie, .. } => Some(set_cookie),
            _ => None,
        }
    }
}

/// Sessions a node remembers; past this the oldest are forgotten, as QPS forgets idle sessions,
/// so that a load run without cookies cannot grow a node without bound.
const MAX_SESSIONS: usize = 100_000;

#[derive(Debug, Default)]
struct Issued {
    ids: HashSet<String>,
    oldest_first: VecDeque<String>,
}

/// The sessions one node issued; QPS keeps them in its own memory only.
#[derive(Debug)]
pub struct SessionBook {
    issued: Mutex<Issued>,
    capacity: usize,
}

impl Default for SessionBook {
    fn default() -> SessionBook {
        SessionBook::with_capacity(MAX_SESSIONS)
    }
}

impl SessionBook {
    pub fn with_capacity(capacity: usize) -> SessionBook {
        SessionBook {
            issued: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    pub fn check(&self, request: &Request) -> SessionCheck {
        let path = request.path();
        let prefix = virtual_proxy_prefix(path);
        let name = session_cookie_name(prefix);
        match cookie_value(request, &name) {
            // The login page starts a new session whatever the client carried.
            Some(_) if is_login_path(path) => self.issue(&name),
            Some(value) if self.knows(value) => SessionCheck::Known(value.to_string()),
            Some(_) => {
                let base = prefix.map(|p| format!("/{p}")).unwrap_or_default();
                let target = uuid::Uuid::new_v4();
                SessionCheck::Foreign {
                    location: format!("{base}/{LOGIN_SEGMENT}/?targetId={target}"),
                }
            }
            None => self.issue(&name),
        }
    }

    pub fn knows(&self, id: &str) -> bool {
        self.issued().ids.contains(id)
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, Issued> {
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issue(&self, cookie_name: &str) -> SessionCheck {
        let id = uuid::Uuid::new_v4().to_string();
        let mut issued = self.issued();
        if issued.oldest_first.len() >= self.capacity {
            if let Some(oldest) = issued.oldest_first.pop_front() {
                issued.ids.remove(&oldest);
            }
        }
        issued.ids.insert(id.clone());
        issued.oldest_first.push_back(id.clone());
        drop(issued);
        SessionCheck::Issued {
            set_cookie: format!("{cookie_name}={id}; Path=/; HttpOnly"),
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_qps_rules() {
        assert_eq!(virtual_proxy_prefix("/sales/app/x"), Some("sales"));
        assert_eq!(virtual_proxy_prefix("/a-b.c_d~e/hub"), Some("a-b.c_d~e"));
        assert_eq!(virtual_proxy_prefix("/app/x"), None);
        assert_eq!(virtual_proxy_prefix("/hub/stream"), None);
        assert_eq!(virtual_proxy_prefix("/Sales/hub"), None);
        assert_eq!(virtual_proxy_prefix("/"), None);
        assert_eq!(path_below_prefix("/sales/app/x"), "/app/x");
        assert_eq!(path_below_prefix("/sales"), "/");
        assert_eq!(path_below_prefix("/hub"), "/hub");
        assert!(is_login_path("/internal_forms_authentication/"));
        assert!(is_login_path(
            "/sales/internal_forms_authentication/?targetId=1"
        ));
        assert!(!is_login_path("/hub"));
    }

    fn request_with_cookie(cookie: Option<&str>) -> Request {
        let cookie = cookie
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        Request::parse(format!("GET /hub HTTP/1.1\r\nHost: sim\r\n{cookie}\r\n").as_bytes())
            .unwrap()
    }

    #[test]
    fn the_oldest_sessions_are_forgotten_past_capacity() {
        let book = SessionBook::with_capacity(2);
        let ids: Vec<String> = (0..3)
            .map(|_| {
                book.check(&request_with_cookie(None))
                    .session_id()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(!book.knows(&ids[0]));
        assert!(book.knows(&ids[1]) && book.knows(&ids[2]));
        let cookie = format!("X-Qlik-Session={}", ids[2]);
        assert_eq!(
            book.check(&request_with_cookie(Some(&cookie))),
            SessionCheck::Known(ids[2].clone())
        );
        let forgotten = format!("X-Qlik-Session={}", ids[0]);
        assert!(matches!(
            book.check(&request_with_cookie(Some(&forgotten))),
            SessionCheck::Foreign { .. }
        ));
    }
}
