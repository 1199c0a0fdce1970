//! The admin listener: /metrics, /healthz, /readyz, /api/v1/*, and the status page.

pub mod server;

pub use server::{serve, AdminCtx};
