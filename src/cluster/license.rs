//! The leader publishes its license snapshot (`<prefix>license/snapshot`) and last release run
//! (`<prefix>license/release`); followers show those in their status instead of their own. No
//! lease: the site's last known license state outlives the leader that read it.

use super::connect::call;
use super::Core;
use crate::control::LicenseStatus;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(super) fn spawn(core: Arc<Core>, status: Arc<LicenseStatus>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut local = status.changes();
        let mut leading = core.leading.subscribe();
        let mut published = core.license.subscribe();
        loop {
            let is_leader = *leading.borrow_and_update();
            local.borrow_and_update();
            let leaders = published.borrow_and_update().clone();
            if is_leader {
                status.show_leaders(None);
                publish(&core, &status).await;
            } else {
                status.show_leaders(Some(follower_view(&leaders)));
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                r = leading.changed() => if r.is_err() { return },
                r = local.changed() => if r.is_err() { return },
                r = published.changed() => if r.is_err() { return },
            }
        }
    });
}

/// The status a follower shows: the leader's parts, null where the leader published none.
fn follower_view(parts: &BTreeMap<String, Value>) -> Value {
    let snapshot = parts.get("snapshot").cloned().unwrap_or(Value::Null);
    json!({
        "license": snapshot.get("license").cloned().unwrap_or(Value::Null),
        "license_error": snapshot.get("license_error").cloned().unwrap_or(Value::Null),
        "release": parts.get("release").cloned().unwrap_or(Value::Null),
    })
}

/// Writes this leader's own results; a part it has none of yet keeps the previous leader's.
async fn publish(core: &Core, status: &LicenseStatus) {
    let Some(live) = core.live() else { return };
    let mut client = live.client;
    let own = status.local_json();
    let snapshot = json!({"license": own["license"], "license_error": own["license_error"]});
    let parts = [
        (
            "snapshot",
            (!own["license"].is_null() || !own["license_error"].is_null()).then_some(snapshot),
        ),
        (
            "release",
            Some(own["release"].clone()).filter(|r| !r.is_null()),
        ),
    ];
    for (part, value) in parts {
        let Some(value) = value else { continue };
        let put = client.put(core.keys.license(part), value.to_string(), None);
        if let Err(e) = call("put license status", put).await {
            tracing::warn!(error = %e, "cluster: the license status was not published");
        }
    }
}
