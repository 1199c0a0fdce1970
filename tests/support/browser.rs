//! Headless Chromium driven over the DevTools protocol (a WebSocket, so no driver crate): each
//! browser context is a fresh profile with its own cookie jar; pages are read back by evaluating
//! JavaScript in them. The process is started with a temporary profile folder and killed by PID.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// One tab in one profile.
pub struct Tab {
    pub context: String,
    session: String,
}

fn chromium_path() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

impl Browser {
    /// Starts headless Chromium; fails with how to install it when it is missing.
    pub async fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile folder");
        let child = Command::new(chromium_path())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                // The HTTPS test's front door serves a self-signed certificate.
                "--ignore-certificate-errors",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): the browser tests need Chromium \
                     (Debian: apt-get install chromium; .ci/run installs it)",
                    chromium_path()
                )
            });
        // Chromium writes its DevTools port and browser path here once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not open DevTools in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("DevTools WebSocket");
        Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        }
    }

    /// Sends one command (to a tab when `session` is set) and returns its result.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("DevTools send");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no DevTools answer to {method} in 30 s"))
                .expect("DevTools open")
                .expect("DevTools frame");
            let Message::Text(text) = frame else { continue };
            let answer: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if answer["id"] == json!(id) {
                if let Some(error) = answer.get("error") {
                    panic!("{method} failed: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    /// A tab in a fresh profile (its own cookies).
    pub async fn new_profile(&mut self) -> Tab {
        let context = self
            .call(None, "Target.createBrowserContext", json!({}))
            .await["browserContextId"]
            .as_str()
            .expect("context id")
            .to_string();
        self.new_tab(&context).await
    }

    /// Another tab in the profile `context`.
    pub async fn new_tab(&mut self, context: &str) -> Tab {
        let target = self
            .call(
                None,
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context }),
            )
            .await["targetId"]
            .as_str()
            .expect("target id")
            .to_string();
        let session = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .await["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Tab {
            context: context.to_string(),
            session,
        }
    }

    pub async fn navigate(&mut self, tab: &Tab, url: &str) {
        let result = self
            .call(Some(&tab.session), "Page.navigate", json!({ "url": url }))
            .await;
        assert!(
            result.get("errorText").is_none(),
            "navigating to {url}: {result}"
        );
    }

    /// The value of a JavaScript expression in the tab.
    pub async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let result = self
            .call(
                Some(&tab.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it gives a string `done` accepts; returns it.
    pub async fn wait_for_text(
        &mut self,
        tab: &Tab,
        expression: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = self.eval(tab, expression).await;
            if let Some(text) = value.as_str() {
                if done(text) {
                    return text.to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{expression}` never became ready; last: {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the element `id` once it is set (not empty, not the "…" placeholder).
    pub async fn text_of(&mut self, tab: &Tab, id: &str) -> String {
        let expression = format!("(document.getElementById('{id}') || {{}}).textContent || ''");
        self.wait_for_text(tab, &expression, |t| !t.is_empty() && t != "…")
            .await
    }

    /// The cookies of the profile `context`, as (name, value).
    pub async fn cookies(&mut self, context: &str) -> Vec<(String, String)> {
        let result = self
            .call(
                None,
                "Storage.getCookies",
                json!({ "browserContextId": context }),
            )
            .await;
        result["cookies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_string(),
                    c["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
