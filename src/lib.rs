//! qlik-lb: a load balancer for Qlik Sense sites.
//!
//! - `proxy`: the front door (sticky HTTP/1.1 + WebSocket reverse proxy, TLS).
//! - `balance`: backends' live state, selection, health checks.
//! - `lbmodule`: the Qlik "load balancing module" endpoint.
//! - `control`: the QRS client and the license monitor and release jobs.
//! - `admin`: metrics, health, status API and page, drain, reload.
//! - `listen_limits`: deadlines, connection cap and accept back-off of the admin and LB module
//!   listeners.
//! - `sim`: a simulated Qlik site for the demo, the tests and the benchmarks.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod conn_limit;
pub mod control;
pub mod demo;
pub mod lbmodule;
pub mod listen_limits;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod sim;
pub mod snapshot;
pub mod threads;
pub mod tls;
