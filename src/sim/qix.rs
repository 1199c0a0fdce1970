//! QIX JSON-RPC over a WebSocket, as an engine answers enigma.js.
//!
//! Answers are written as text with the key layout Qlik's engine uses (`jsonrpc`, `id`, then
//! `result` or `error`, then `change`), and never set `delta`.

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::engine::{EngineSession, ENGINE_VERSION};

const GLOBAL_HANDLE: i64 = -1;
const DOC_HANDLE: i64 = 1;

/// Apps every simulated node lists, as if present on the shared disk (the fixtures' app ids).
pub const DEFAULT_APPS: &[&str] = &[
    "3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11",
    "9a8b7c6d-0000-4000-8000-000000000001",
];

/// The WebSocket path id that opens a session with no app.
pub const ENGINE_DATA: &str = "engineData";

pub const ON_CONNECTED: &str =
    r#"{"jsonrpc":"2.0","method":"OnConnected","params":{"qSessionState":"SESSION_CREATED"}}"#;

/// The app id of a QIX WebSocket path below any prefix: `/app/<id>[/identity/..][/ttl/..]`.
pub fn app_of_path(path_below_prefix: &str) -> Option<&str> {
    let rest = path_below_prefix.strip_prefix("/app/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

#[derive(Serialize)]
struct RpcError<'a> {
    code: i64,
    parameter: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct QixObject<'a> {
    #[serde(rename = "qType")]
    q_type: &'static str,
    #[serde(rename = "qHandle")]
    q_handle: i64,
    #[serde(rename = "qGenericId")]
    q_generic_id: &'a str,
}

#[derive(Serialize)]
struct Return<T: Serialize> {
    #[serde(rename = "qReturn")]
    q_return: T,
}

#[derive(Serialize)]
struct DocListEntry<'a> {
    #[serde(rename = "qDocName")]
    q_doc_name: &'a str,
    #[serde(rename = "qDocId")]
    q_doc_id: &'a str,
    #[serde(rename = "qTitle")]
    q_title: &'a str,
    #[serde(rename = "qConnectedUsers")]
    q_connected_users: u64,
}

#[derive(Serialize)]
struct DocList<'a> {
    #[serde(rename = "qDocList")]
    q_doc_list: Vec<DocListEntry<'a>>,
}

enum Outcome {
    Result {
        json: String,
        change: Option<i64>,
    },
    Error {
        code: i64,
        parameter: String,
        message: &'static str,
    },
}

fn result(value: impl Serialize) -> Outcome {
    Outcome::Result {
        json: to_json(&value),
        change: None,
    }
}

fn to_json(value: &impl Serialize) -> String {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn reply_text(id: &Value, outcome: Outcome) -> String {
    let id = to_json(id);
    match outcome {
        Outcome::Result { json, change: None } => {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{json}}}"#)
        }
        Outcome::Result {
            json,
            change: Some(handle),
        } => {
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{json},"change":[{handle}]}}"#)
        }
        Outcome::Error {
            code,
            parameter,
            message,
        } => {
            let error = to_json(&RpcError {
                code,
                parameter: &parameter,
                message,
            });
            format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
        }
    }
}

/// One engine session's JSON-RPC state.
pub struct QixSession {
    node_id: String,
    engine_session: EngineSession,
    /// Apps the node can list besides those it has loaded.
    catalog: Vec<String>,
}

impl QixSession {
    pub fn new(node_id: &str, engine_session: EngineSession, catalog: Vec<String>) -> QixSession {
        QixSession {
            node_id: node_id.to_string(),
            engine_session,
            catalog,
        }
    }

    /// How long the engine takes to answer now (its CPU, sessions and saturation).
    pub fn answer_delay(&self) -> std::time::Duration {
        self.engine_session.answer_delay()
    }

    /// The answer to one client message; `None` for notifications (no `id`).
    pub fn answer(&mut self, text: &str) -> Option<String> {
        let request: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                let parameter = format!("not JSON: {e}");
                let error = Outcome::Error {
                    code: -32700,
                    parameter,
                    message: "Parse error",
                };
                return Some(reply_text(&Value::Null, error));
            }
        };
        self.engine_session.count_call();
        let id = request.get("id")?.clone();
        let method = request.get("method").and_then(Value::as_str).unwrap_or("");
        let handle = request
            .get("handle")
            .and_then(Value::as_i64)
            .unwrap_or(GLOBAL_HANDLE);
        let first_param = request.get("params").and_then(|p| match p {
            Value::Array(items) => items.first().cloned(),
            Value::Object(fields) => fields.values().next().cloned(),
            _ => None,
        });
        Some(reply_text(&id, self.dispatch(method, handle, first_param)))
    }

    fn dispatch(&mut self, method: &str, handle: i64, first_param: Option<Value>) -> Outcome {
        let param = first_param.as_ref().and_then(Value::as_str).unwrap_or("");
        match (handle, method) {
            (GLOBAL_HANDLE, "EngineVersion") => {
                result(serde_json::json!({"qVersion": {"qComponentVersion": ENGINE_VERSION}}))
            }
            (GLOBAL_HANDLE, "ProductVersion") => result(Return {
                q_return: ENGINE_VERSION,
            }),
            (GLOBAL_HANDLE, "GetActiveDoc") => match self.engine_session.doc() {
                Some(doc) => result(Return {
                    q_return: doc_object(doc),
                }),
                None => app_invalid(),
            },
            (GLOBAL_HANDLE, "OpenDoc") => self.open_doc(param),
            (GLOBAL_HANDLE, "GetDocList") => result(DocList {
                q_doc_list: self.doc_list(),
            }),
            (DOC_HANDLE, "Evaluate") if self.engine_session.doc().is_some() => {
                // The one answer that differs from a real engine: it names the node, so a client
                // can see where it landed.
                result(Return {
                    q_return: self.node_id.as_str(),
                })
            }
            _ => Outcome::Error {
                code: -32601,
                parameter: method.to_string(),
                message: "Method not found",
            },
        }
    }

    fn open_doc(&mut self, app: &str) -> Outcome {
        if app.is_empty() {
            return Outcome::Error {
                code: 1003,
                parameter: String::new(),
                message: "App not found",
            };
        }
        if self.engine_session.doc().is_some() {
            return Outcome::Error {
                code: 1002,
                parameter: app.to_string(),
                message: "App already open",
            };
        }
        self.engine_session.open_doc(app);
        Outcome::Result {
            json: to_json(&Return {
                q_return: doc_object(app),
            }),
            change: Some(DOC_HANDLE),
        }
    }

    fn doc_list(&self) -> Vec<DocListEntry<'_>> {
        let mut names: Vec<&str> = self.catalog.iter().map(String::as_str).collect();
        if let Some(doc) = self.engine_session.doc() {
            if !names.contains(&doc) {
                names.push(doc);
            }
        }
        names
            .into_iter()
            .map(|name| DocListEntry {
                q_doc_name: name,
                q_doc_id: name,
                q_title: name,
                q_connected_users: 0,
            })
            .collect()
    }
}

fn doc_object(app: &str) -> QixObject<'_> {
    QixObject {
        q_type: "Doc",
        q_handle: DOC_HANDLE,
        q_generic_id: app,
    }
}

fn app_invalid() -> Outcome {
    Outcome::Error {
        code: 1007,
        parameter: String::new(),
        message: "App invalid",
    }
}

/// Runs one QIX session until the client closes or the node stops.
pub async fn serve<S>(mut ws: WebSocketStream<S>, mut session: QixSession, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws.send(Message::text(ON_CONNECTED)).await.is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            // Pings are answered by the WebSocket layer; binary frames mean nothing to QIX.
            Some(Ok(_)) => continue,
        };
        if let Some(reply) = session.answer(text.as_str()) {
            // Users feel a busy engine: the answer waits as long as this engine's load says.
            let delay = session.answer_delay();
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return;
                }
                _ = tokio::time::sleep(delay) => {}
            }
            if ws.send(Message::text(reply)).await.is_err() {
                return;
            }
        }
    }
}
