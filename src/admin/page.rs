//! The HTML status page: one self-contained file (inline CSS and JS, no external assets) that
//! renders `/api/v1/status` and refreshes itself every few seconds.

pub const STATUS_PAGE: &str = include_str!("status.html");
