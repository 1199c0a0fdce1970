//! The admin listener: /metrics, /healthz, /readyz, /api/v1/*, and the status page.

pub mod auth;
pub mod page;
pub mod server;
pub mod status;

pub use server::{serve, AdminCtx, LicenseStatusJson};
