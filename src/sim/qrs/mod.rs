//! The simulated Qlik Repository Service: the license and user endpoints over mutual TLS, with
//! the xrfkey check, the `filter` language and Qlik's quarantine rule. Tests drive it through
//! `QrsHandle`: change the population, read the allocations, count requests, and switch on
//! hostile behaviour (ignore the filter, fail DELETEs, answer garbage, stop listening).

pub mod filter;
pub mod model;
mod routes;
pub mod seed;
mod server;

pub use model::{iso, Population, SimAllocation, SimUser};

use super::certs::SimCerts;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;

/// One request as the simulated QRS received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The decoded query string.
    pub query: String,
    pub qlik_user: Option<String>,
    pub xrfkey_header: Option<String>,
}

/// Called with the allocation id when a DELETE arrives, before it is answered.
pub type DeleteHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
struct Hostile {
    ignore_filter: bool,
    fail_delete: HashSet<String>,
    garbage_json: bool,
    failing_gets: usize,
}

struct State {
    population: Mutex<Population>,
    hostile: Mutex<Hostile>,
    requests: Mutex<Vec<RequestRecord>>,
    now: Mutex<Option<DateTime<Utc>>>,
    overview: Mutex<Option<Value>>,
    delete_hook: Mutex<Option<DeleteHook>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test hook must not take the whole simulator down with a poisoned lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn now(&self) -> DateTime<Utc> {
        lock(&self.now).unwrap_or_else(Utc::now)
    }
}

#[derive(Clone)]
pub struct QrsHandle {
    state: Arc<State>,
    server: Arc<server::Server>,
}

/// Serves the QRS on `listener` with the server certificate of `certs`, requiring a client
/// certificate signed by its CA.
pub async fn start(listener: TcpListener, certs: &SimCerts, population: Population) -> QrsHandle {
    let tls = certs
        .server_config()
        .expect("generated simulator certificates always make a valid server config");
    let state = Arc::new(State {
        population: Mutex::new(population),
        hostile: Mutex::new(Hostile::default()),
        requests: Mutex::new(Vec::new()),
        now: Mutex::new(None),
        overview: Mutex::new(None),
        delete_hook: Mutex::new(None),
    });
    let server = server::Server::start(listener, tls, state.clone());
    QrsHandle { state, server }
}

impl QrsHandle {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `https://127.0.0.1:<port>`, for `[qrs] url`.
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr)
    }

    /// Changes the population in place (add or replace users and allocations).
    pub fn update<R>(&self, f: impl FnOnce(&mut Population) -> R) -> R {
        f(&mut lock(&self.state.population))
    }

    pub fn population(&self) -> Population {
        lock(&self.state.population).clone()
    }

    pub fn allocations(&self) -> Vec<SimAllocation> {
        lock(&self.state.population).allocations.clone()
    }

    pub fn allocation(&self, id: &str) -> Option<SimAllocation> {
        lock(&self.state.population)
            .allocations
            .iter()
            .find(|a| a.id == id)
            .cloned()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.state.requests).clone()
    }

    /// How many requests had this method and (decoded, query-less) path.
    pub fn request_count(&self, method: &str, path: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
            .count()
    }

    /// How many requests had this method, whatever the path.
    pub fn method_count(&self, method: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method))
            .count()
    }

    /// Fixes the simulator's clock (quarantine rule, "used" counts); `None` follows the wall clock.
    pub fn set_now(&self, now: Option<DateTime<Utc>>) {
        *lock(&self.state.now) = now;
    }

    /// Serves this JSON for `accesstypeoverview` instead of computing it.
    pub fn serve_overview(&self, overview: Option<Value>) {
        *lock(&self.state.overview) = overview;
    }

    pub fn on_delete(&self, hook: Option<DeleteHook>) {
        *lock(&self.state.delete_hook) = hook;
    }

    /// Hostile: answer every list as if no filter had been given.
    pub fn set_ignore_filter(&self, on: bool) {
        lock(&self.state.hostile).ignore_filter = on;
    }

    /// Hostile: answer 500 to DELETEs of these allocation ids.
    pub fn fail_deletes_of(&self, ids: &[&str]) {
        lock(&self.state.hostile).fail_delete = ids.iter().map(|s| s.to_string()).collect();
    }

    /// Hostile: answer every successful GET with a body that is not JSON.
    pub fn set_garbage_json(&self, on: bool) {
        lock(&self.state.hostile).garbage_json = on;
    }

    /// Hostile: answer the next `n` GETs with 503, as a busy repository does.
    pub fn fail_next_gets(&self, n: usize) {
        lock(&self.state.hostile).failing_gets = n;
    }

    /// Stops listening and drops open connections: clients get "connection refused".
    pub async fn stop(&self) {
        self.server.stop().await;
    }

    /// Listens again on the same address after `stop`.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.server.restart(self.state.clone()).await
    }
}
