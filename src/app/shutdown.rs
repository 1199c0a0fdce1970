//! The shutdown contract, in order.

use crate::proxy::Lifecycle;
use crate::snapshot::SharedSnapshot;
use std::time::Duration;
use tracing::info;

/// The shutdown contract: stop accepting (and close idle keep-alive connections); wait for
/// in-flight requests and open tunnels; after `grace` close the tunnels; then give requests still
/// running up to the longest response timeout to end.
pub(super) async fn shutdown_in_order(
    lifecycle: &Lifecycle,
    grace: Duration,
    runtime: &SharedSnapshot,
) {
    lifecycle.begin_shutdown();
    lifecycle.tracker.close();
    if tokio::time::timeout(grace, lifecycle.tracker.wait())
        .await
        .is_ok()
    {
        return;
    }
    info!("shutdown grace of {grace:?} over: closing open WebSocket tunnels");
    lifecycle.close_tunnels.cancel();
    let longest_response = runtime
        .load()
        .config
        .file
        .pool
        .iter()
        .map(|p| p.response_timeout.get())
        .max()
        .unwrap_or_default();
    let _ = tokio::time::timeout(
        longest_response.max(Duration::from_secs(5)),
        lifecycle.tracker.wait(),
    )
    .await;
}
