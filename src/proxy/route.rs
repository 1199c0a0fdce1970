//! The sticky decision for one request, in the contract's order: our cookie, then a learned
//! `X-Qlik-Session*` value, then the balancer (which pins the user with a new cookie).

use super::head::Head;
use super::rewrite::{is_qlik_session_cookie, request_cookies};
use crate::balance::cookie::Decoded;
use crate::balance::select::{select, Selected};
use crate::balance::{Backend, Outcome, Pool};
use std::sync::Arc;

pub struct Route {
    pub backend: Arc<Backend>,
    pub outcome: Outcome,
    /// The cookie carried something we could not accept (bad signature, unknown id).
    pub invalid_cookie: bool,
    /// Every backend is down and `try-anyway` chose this one.
    pub all_down: bool,
}

impl Route {
    /// Whether the response must pin the user with a new cookie.
    pub fn sets_cookie(&self) -> bool {
        self.outcome != Outcome::Hit
    }
}

/// Decides where a request goes; `None` means no backend can take it (503).
pub fn route(pool: &Pool, head: &Head, exclude: Option<&Arc<Backend>>) -> Option<Route> {
    let cookie_name = pool.cfg.sticky.cookie.as_bytes();
    let mut invalid_cookie = false;
    let mut pinned_elsewhere = false;
    let mut qlik_sessions: Vec<&[u8]> = Vec::new();
    let learn = pool.cfg.sticky.learn_qlik_session;
    for (name, value) in request_cookies(head) {
        if name == cookie_name {
            let decoded = std::str::from_utf8(value)
                .map(|v| pool.codec.decode(v))
                .unwrap_or(Decoded::Invalid);
            match decoded {
                Decoded::Id(id) => match pool.backend(id) {
                    // Draining keeps its pinned users; only a dead or ejected node loses them.
                    Some(b) if b.is_available() && !is_excluded(b, exclude) => {
                        return Some(Route {
                            backend: b.clone(),
                            outcome: Outcome::Hit,
                            invalid_cookie,
                            all_down: false,
                        })
                    }
                    Some(_) => pinned_elsewhere = true,
                    None => invalid_cookie = true,
                },
                Decoded::Invalid => invalid_cookie = true,
            }
        } else if learn && is_qlik_session_cookie(name) {
            qlik_sessions.push(value);
        }
    }
    for value in qlik_sessions {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        if let Some(id) = pool.learned.lookup(text) {
            if let Some(b) = pool.backend(&id) {
                if b.is_available() && !is_excluded(b, exclude) {
                    return Some(Route {
                        backend: b.clone(),
                        outcome: Outcome::Learned,
                        invalid_cookie,
                        all_down: false,
                    });
                }
            }
        }
    }
    let outcome = if pinned_elsewhere {
        Outcome::Reassigned
    } else {
        Outcome::Miss
    };
    let (backend, all_down) = match select(pool, exclude) {
        Selected::Backend(b) => (b.clone(), false),
        Selected::AllDown(b) => (b.clone(), true),
        Selected::None => return None,
    };
    Some(Route {
        backend,
        outcome,
        invalid_cookie,
        all_down,
    })
}

fn is_excluded(b: &Arc<Backend>, exclude: Option<&Arc<Backend>>) -> bool {
    exclude.is_some_and(|x| Arc::ptr_eq(x, b))
}

#[cfg(test)]
mod tests;
