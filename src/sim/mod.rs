//! A simulated Qlik Sense site: engine/QPS nodes, QIX WebSockets, and a QRS over mutual TLS.

pub mod certs;
pub mod cli;
mod conn;
pub mod control;
pub mod engine;
pub mod node;
mod pages;
pub mod qix;
pub mod qps;
pub mod qrs;
pub mod request;
mod response;
mod serve;
pub mod site;
