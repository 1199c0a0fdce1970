//! A simulated Qlik Sense site: engine/QPS nodes, QIX WebSockets, and a QRS over mutual TLS.
pub mod certs;
pub mod cli;
pub mod qrs;
