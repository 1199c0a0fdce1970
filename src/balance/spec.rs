//! The backends of a pool as the balancer uses them: the config's text (urls, weights) parsed
//! once when a config is loaded, so nothing downstream parses or assumes a valid url again.

use super::registry::BackendTarget;
use crate::config::{BackendConfig, BackendUrl, PoolConfig};

/// One backend of a pool, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    pub id: String,
    pub target: BackendTarget,
}

/// A config value that does not parse, with the key path it is under.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub key: String,
    pub message: String,
}

impl BackendSpec {
    /// A backend with plain values, as tests and tools describe one.
    pub fn new(id: &str, url: BackendUrl) -> BackendSpec {
        BackendSpec {
            id: id.to_string(),
            target: BackendTarget {
                url,
                weight: 1,
                engine_health: None,
            },
        }
    }

    fn parse(b: &BackendConfig, key: &str) -> Result<BackendSpec, SpecError> {
        let url = |text: &str, field: &str| {
            BackendUrl::parse(text).map_err(|message| SpecError {
                key: format!("{key}.{field}"),
                message,
            })
        };
        Ok(BackendSpec {
            id: b.id.clone(),
            target: BackendTarget {
                url: url(&b.url, "url")?,
                // A weight of 0 would divide by zero in every score; the config asks for >= 1.
                weight: b.weight.max(1),
                engine_health: match &b.engine_health {
                    Some(text) => Some(url(text, "engine_health")?),
                    None => None,
                },
            },
        })
    }
}

/// The pool's backends parsed, in config order; `pool_key` is the pool's key path
/// (`pool[0]`), for errors.
pub fn backend_specs(cfg: &PoolConfig, pool_key: &str) -> Result<Vec<BackendSpec>, Vec<SpecError>> {
    let mut specs = Vec::with_capacity(cfg.backend.len());
    let mut errors = Vec::new();
    for (i, b) in cfg.backend.iter().enumerate() {
        match BackendSpec::parse(b, &format!("{pool_key}.backend[{i}]")) {
            Ok(spec) => specs.push(spec),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}
