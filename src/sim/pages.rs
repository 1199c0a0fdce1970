//! What a simulated QPS node shows a browser (`Accept: text/html`): a hub page that names the
//! node and links the apps, and an app page whose own script opens the QIX WebSocket through
//! whatever front door served the page and shows where the engine session landed.
//! No external assets: the demo works offline.

use super::engine::ENGINE_VERSION;
use super::qix::DEFAULT_APPS;
use super::request::Request;
use super::response::Response;

/// Whether the client is a browser asking for a page (JSON clients keep their JSON answers).
pub fn wants_html(request: &Request) -> bool {
    request
        .header_str("accept")
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The page for `below_prefix` (the path under any virtual proxy prefix), if it is one.
pub fn page(node_id: &str, prefix: Option<&str>, below_prefix: &str) -> Option<Response> {
    let base = prefix.map(|p| format!("/{p}")).unwrap_or_default();
    if below_prefix == "/hub" || below_prefix.starts_with("/hub/") {
        return Some(html(hub(node_id, &base)));
    }
    let app = below_prefix
        .strip_prefix("/sense/app/")?
        .split('/')
        .next()?;
    if app.is_empty() || !app.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    Some(html(app_page(node_id, &base, app)))
}

fn html(body: String) -> Response {
    Response::new(200)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
        .body(body.into_bytes())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}\
header{background:#009845;color:#fff;padding:12px 24px;font-size:20px}\
main{padding:24px}.card{background:#fff;border-radius:4px;padding:16px 20px;margin:0 16px 16px 0;\
display:inline-block;min-width:260px;box-shadow:0 1px 3px rgba(0,0,0,.2)}\
a{color:#006580}dt{color:#666;font-size:13px}dd{margin:0 0 10px 0;font-size:18px}";

fn hub(node_id: &str, base: &str) -> String {
    let apps: String = DEFAULT_APPS
        .iter()
        .enumerate()
        .map(|(i, app)| {
            format!(
                "<div class=\"card\"><a class=\"app\" href=\"{base}/sense/app/{app}\">App {n}</a>\
                 <div><small>{app}</small></div></div>",
                n = i + 1
            )
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hub - {node_id}</title>\
         <style>{STYLE}</style></head><body><header>Qlik Sense hub (simulated)</header><main>\
         <p>Served by node <strong id=\"node\">{node_id}</strong>.</p>\
         <h2>Apps</h2>{apps}</main></body></html>"
    )
}

fn app_page(node_id: &str, base: &str, app: &str) -> String {
    // The script speaks QIX as enigma.js does: OpenDoc on the global handle, then Evaluate on
    // the doc handle every few seconds over the same socket; the simulated engine's Evaluate
    // answers its node id.
    let script = format!(
        r#"(function(){{
var proto = location.protocol === "https:" ? "wss://" : "ws://";
var ws = new WebSocket(proto + location.host + "{base}/app/{app}");
var nextId = 1, pending = {{}};
function call(handle, method, params, done) {{
  var id = nextId++; pending[id] = done;
  ws.send(JSON.stringify({{jsonrpc: "2.0", id: id, handle: handle, method: method, params: params}}));
}}
function show(id, text) {{ document.getElementById(id).textContent = text; }}
function evaluate(doc) {{
  call(doc, "Evaluate", ["=1"], function (r) {{
    if (r.result) {{ show("engine-node", r.result.qReturn); show("refreshed", new Date().toISOString()); }}
  }});
}}
ws.onmessage = function (event) {{
  var m = JSON.parse(event.data);
  if (m.method === "OnConnected") {{
    show("state", "connected");
    call(-1, "EngineVersion", [], function (r) {{
      if (r.result) show("engine-version", r.result.qVersion.qComponentVersion);
    }});
    call(-1, "OpenDoc", ["{app}"], function (r) {{
      if (!r.result) {{ show("state", "OpenDoc failed: " + JSON.stringify(r.error)); return; }}
      var doc = r.result.qReturn.qHandle;
      show("state", "app open");
      evaluate(doc);
      setInterval(function () {{ evaluate(doc); }}, 3000);
    }});
    return;
  }}
  if (m.id && pending[m.id]) {{ var done = pending[m.id]; delete pending[m.id]; done(m); }}
}};
ws.onclose = function () {{ show("state", "closed"); }};
ws.onerror = function () {{ show("state", "error"); }};
}})();"#
    );
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>App {app}</title>\
         <style>{STYLE}</style></head><body><header>Qlik Sense app (simulated)</header><main>\
         <div class=\"card\"><dl><dt>App</dt><dd id=\"app\">{app}</dd>\
         <dt>Page served by node</dt><dd id=\"page-node\">{node_id}</dd>\
         <dt>Engine session on node</dt><dd id=\"engine-node\">…</dd>\
         <dt>EngineVersion</dt><dd id=\"engine-version\">…</dd>\
         <dt>QIX WebSocket</dt><dd id=\"state\">connecting</dd>\
         <dt>Last Evaluate</dt><dd id=\"refreshed\">…</dd></dl>\
         <p><a href=\"{base}/hub\">Back to the hub</a></p></div>\
         <p><small>Engine {ENGINE_VERSION} simulated; each answer takes as long as the engine's \
         load says.</small></p></main><script>{script}</script></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: Response) -> String {
        String::from_utf8(r.body).unwrap()
    }

    #[test]
    fn the_hub_names_the_node_and_links_every_app_under_the_prefix() {
        let page = body(page("node2", Some("sales"), "/hub").unwrap());
        assert!(page.contains("<strong id=\"node\">node2</strong>"));
        for app in DEFAULT_APPS {
            assert!(page.contains(&format!("href=\"/sales/sense/app/{app}\"")));
        }
    }

    #[test]
    fn the_app_page_opens_its_socket_on_the_same_origin() {
        let app = DEFAULT_APPS[0];
        let page = body(page("node1", None, &format!("/sense/app/{app}/sheet/x")).unwrap());
        assert!(page.contains(&format!("location.host + \"/app/{app}\"")));
        assert!(page.contains("\"OpenDoc\", [\"") && page.contains("\"Evaluate\""));
    }

    #[test]
    fn other_paths_and_odd_app_ids_are_not_pages() {
        assert!(page("n", None, "/qrs/about").is_none());
        assert!(page("n", None, "/sense/app/<script>").is_none());
        assert!(page("n", None, "/sense/app/").is_none());
    }
}
