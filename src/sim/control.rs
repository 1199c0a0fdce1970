//! The control API of a simulated node, on the node's own port.
//!
//! - `GET /__sim/control` returns the node's state:
//!   `{"id":"node1","cpu":5.0,"memory_free_mb":26000.0,"memory_total_mb":32768.0,"saturated":null,
//!     "saturated_reported":false,"latency_ms":0,"fail":false,"accepting":true,"open_websockets":0,
//!     "qix_answer_ms":2.1}` — `qix_answer_ms` is what the engine's load makes a QIX answer take now
//!   (`engine::answer_time`; `latency_ms` comes on top).
//! - `POST /__sim/control` with a JSON object holding any subset of
//!   `cpu` (percent, 0–100), `memory_free_mb`, `memory_total_mb`, `saturated` (`true`/`false` to
//!   force, `null` to derive it from CPU and memory as Qlik does), `latency_ms` (added before every
//!   other answer), `fail` (every other answer is a 500), `accepting` (`false` closes the listening
//!   socket so new connections are refused; `true` listens again on the same address).
//!   The whole change is checked first and applied only if all of it is valid; the answer is the
//!   new state (200), or 400 naming the bad field with nothing changed.
//!
//! The control API itself is never delayed nor failed, so a test can always undo what it set.
//! With `accepting:false` only already open connections reach the node.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::engine::Knobs;
use super::node::NodeInner;
use super::request::Request;
use super::response::Response;

pub const CONTROL_PATH: &str = "/__sim/control";

/// Large enough for any sensible test, small enough that a typo does not hang a node for hours.
const MAX_LATENCY_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlChange {
    pub cpu: Option<f64>,
    pub memory_free_mb: Option<f64>,
    pub memory_total_mb: Option<f64>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub saturated: Option<Option<bool>>,
    pub latency_ms: Option<u64>,
    pub fail: Option<bool>,
    pub accepting: Option<bool>,
}

/// Tells `"saturated": null` (derive it) from a missing field (leave it).
fn present_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ControlError {
    #[error("control body is not a valid change: {0}")]
    Json(String),
    #[error("{field} must be {rule}, got {value}")]
    OutOfRange {
        field: &'static str,
        rule: &'static str,
        value: f64,
    },
}

impl ControlChange {
    pub fn parse(body: &[u8]) -> Result<ControlChange, ControlError> {
        serde_json::from_slice(body).map_err(|e| ControlError::Json(e.to_string()))
    }

    /// The knobs after this change, or why it cannot apply.
    pub fn applied_to(&self, current: &Knobs) -> Result<Knobs, ControlError> {
        let mut next = current.clone();
        if let Some(cpu) = self.cpu {
            check(
                cpu.is_finite() && (0.0..=100.0).contains(&cpu),
                "cpu",
                "a percentage 0-100",
                cpu,
            )?;
            next.cpu = cpu;
        }
        if let Some(total) = self.memory_total_mb {
            check(
                total.is_finite() && total > 0.0,
                "memory_total_mb",
                "positive",
                total,
            )?;
            next.memory_total_mb = total;
        }
        if let Some(free) = self.memory_free_mb {
            check(
                free.is_finite() && free >= 0.0,
                "memory_free_mb",
                "zero or more",
                free,
            )?;
            next.memory_free_mb = free;
        }
        check(
            next.memory_free_mb <= next.memory_total_mb,
            "memory_free_mb",
            "at most memory_total_mb",
            next.memory_free_mb,
        )?;
        if let Some(saturated) = self.saturated {
            next.saturated = saturated;
        }
        if let Some(latency_ms) = self.latency_ms {
            check(
                latency_ms <= MAX_LATENCY_MS,
                "latency_ms",
                "at most 600000",
                latency_ms as f64,
            )?;
            next.latency = Duration::from_millis(latency_ms);
        }
        if let Some(fail) = self.fail {
            next.fail = fail;
        }
        Ok(next)
    }
}

fn check(
    ok: bool,
    field: &'static str,
    rule: &'static str,
    value: f64,
) -> Result<(), ControlError> {
    if ok {
        Ok(())
    } else {
        Err(ControlError::OutOfRange { field, rule, value })
    }
}

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub id: String,
    pub cpu: f64,
    pub memory_free_mb: f64,
    pub memory_total_mb: f64,
    pub saturated: Option<bool>,
    pub saturated_reported: bool,
    pub latency_ms: u64,
    pub fail: bool,
    pub accepting: bool,
    pub open_websockets: u64,
    pub qix_answer_ms: f64,
}

pub(crate) fn status(node: &NodeInner) -> NodeStatus {
    let knobs = node.engine.knobs();
    NodeStatus {
        id: node.id.clone(),
        cpu: knobs.cpu,
        memory_free_mb: knobs.memory_free_mb,
        memory_total_mb: knobs.memory_total_mb,
        saturated: knobs.saturated,
        saturated_reported: knobs.reported_saturated(),
        latency_ms: u64::try_from(knobs.latency.as_millis()).unwrap_or(u64::MAX),
        fail: knobs.fail,
        accepting: node.accept.is_accepting(),
        open_websockets: node.engine.open_sessions(),
        qix_answer_ms: node.engine.answer_delay().as_secs_f64() * 1000.0,
    }
}

fn status_response(node: &NodeInner) -> Response {
    Response::json(200, serde_json::to_vec(&status(node)).unwrap_or_default())
}

fn error_response(status: u16, message: &str) -> Response {
    Response::json(
        status,
        serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default(),
    )
}

pub(crate) async fn handle(node: &NodeInner, request: &Request) -> Response {
    match request.method() {
        "GET" | "HEAD" => status_response(node),
        "POST" => {
            if request.body_len > request.body.len() as u64 {
                return error_response(413, "control body too large");
            }
            match apply(node, &request.body).await {
                Ok(()) => status_response(node),
                Err(message) => error_response(400, &message),
            }
        }
        _ => error_response(405, "use GET or POST").header("Allow", "GET, HEAD, POST"),
    }
}

/// Checks the whole change, then applies it; the listener switch goes first because it is the
/// only part that can fail once checked.
async fn apply(node: &NodeInner, body: &[u8]) -> Result<(), String> {
    let change = ControlChange::parse(body).map_err(|e| e.to_string())?;
    let next = change
        .applied_to(&node.engine.knobs())
        .map_err(|e| e.to_string())?;
    if let Some(accepting) = change.accepting {
        node.accept
            .set(accepting)
            .await
            .map_err(|e| e.to_string())?;
    }
    node.engine.update_knobs(|knobs| *knobs = next);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_field_changes_nothing() {
        let current = Knobs::default();
        let change = ControlChange::parse(br#"{"cpu":50,"memory_free_mb":99999999}"#).unwrap();
        let err = change.applied_to(&current).unwrap_err();
        assert!(err.to_string().contains("memory_free_mb"), "{err}");
        assert!(ControlChange::parse(br#"{"cpu":50,"cpuu":1}"#)
            .unwrap_err()
            .to_string()
            .contains("cpuu"));
        assert!(ControlChange::parse(br#"{"cpu":101}"#)
            .unwrap()
            .applied_to(&current)
            .is_err());
    }

    #[test]
    fn saturated_null_means_derived() {
        let forced = ControlChange::parse(br#"{"saturated":true}"#).unwrap();
        assert_eq!(forced.saturated, Some(Some(true)));
        let derived = ControlChange::parse(br#"{"saturated":null}"#).unwrap();
        assert_eq!(derived.saturated, Some(None));
        assert_eq!(ControlChange::parse(b"{}").unwrap().saturated, None);
        let knobs = ControlChange::parse(br#"{"cpu":95}"#)
            .unwrap()
            .applied_to(&Knobs::default())
            .unwrap();
        assert!(knobs.reported_saturated());
    }
}
