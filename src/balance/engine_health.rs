//! The Qlik engine health check JSON (`/engine/healthcheck`), parsed leniently: every documented
//! field, the old `comitted` spelling, fractional CPU, a missing `totalPhysical`, unknown fields.

use serde::{Deserialize, Serialize};

/// The engine reports memory in MiB; metrics and the status document speak bytes.
pub const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineHealth {
    pub version: String,
    pub started: String,
    pub mem: Mem,
    pub cpu: Cpu,
    pub session: Counts,
    pub apps: Apps,
    pub users: Counts,
    pub saturated: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mem {
    #[serde(alias = "comitted")]
    pub committed: f64,
    pub allocated: f64,
    pub free: f64,
    #[serde(rename = "totalPhysical")]
    pub total_physical: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub total: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub active: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Apps {
    pub active_docs: Vec<String>,
    pub in_memory_docs: Vec<String>,
    pub loaded_docs: Vec<String>,
    pub calls: u64,
    pub selections: u64,
}

impl EngineHealth {
    pub fn parse(body: &[u8]) -> Result<EngineHealth, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("engine health is not JSON: {e}"))?;
        if !value.is_object() {
            return Err("engine health is not a JSON object".into());
        }
        serde_json::from_value(value)
            .map_err(|e| format!("engine health has a field of the wrong type: {e}"))
    }

    /// Share of physical memory in use, 0.0..=1.0, when the sample allows telling.
    pub fn memory_used_fraction(&self) -> Option<f64> {
        let total = self.mem.total_physical.filter(|t| *t > 0.0)?;
        Some(((total - self.mem.free) / total).clamp(0.0, 1.0))
    }

    /// Whether the engine holds the app in memory (warm).
    pub fn has_app(&self, app: &str) -> bool {
        self.apps.in_memory_docs.iter().any(|d| d == app)
            || self.apps.loaded_docs.iter().any(|d| d == app)
    }
}
