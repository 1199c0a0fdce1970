//! Site-wide drain: `<prefix>drain/<pool>/<backend>` exists while that backend is drained. No
//! lease: a drain outlives every instance and is cleared only by an undrain.

use super::connect::call;
use super::Cluster;

impl Cluster {
    /// Writes (drain) or deletes (undrain) the key. Err (etcd unreachable) means nothing changed
    /// anywhere; Ok means every instance's watch will apply it.
    pub async fn set_drain(&self, pool: &str, backend: &str, on: bool) -> Result<(), String> {
        let core = &self.core;
        let Some(live) = core.live() else {
            return Err("etcd is not reachable; the drain state was not changed".into());
        };
        let mut client = live.client;
        let key = core.keys.drain(pool, backend);
        let result = if on {
            let value = serde_json::json!({
                "by": core.cfg.name,
                "at": chrono::Utc::now().to_rfc3339(),
            })
            .to_string();
            call("put drain", client.put(key, value, None))
                .await
                .map(|_| ())
        } else {
            call("delete drain", client.delete(key, None))
                .await
                .map(|_| ())
        };
        result.map_err(|e| format!("{e}; the drain state was not changed"))
    }
}
