//! Logs to stderr with `tracing`: level from `--log-level` or `RUST_LOG`, text or JSON.

use tracing_subscriber::EnvFilter;

pub fn init(level: Option<&str>, json: bool) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
