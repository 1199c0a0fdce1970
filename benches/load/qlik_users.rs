//! Users of a Qlik site, for the "Qlik site at work" scenario (`benches/load/site.sh`): each
//! opens the hub through a proxy, keeps the cookies it got (the proxy's sticky cookie and the
//! node's `X-Qlik-Session`), opens an app's QIX WebSocket through the same proxy with them, sends
//! `OpenDoc`, then `Evaluate` every few seconds for its session, and closes. The simulated engine
//! answers `Evaluate` with its node id, so each user knows where it landed; answer times are
//! what the engine's load made them (`sim::engine::answer_time`).
//!
//! Midway (`--change-at`) the first node's engine goes to 95 % CPU and the second's becomes
//! saturated, through the simulator's control API. Writes one JSON report: who started where
//! after the change, QIX answer times, broken sessions, and open sessions per node over time.
//!
//! Every address is given on the command line (127.0.0.1 in the harness); the run ends after
//! the last user's session, bounded by `--arrive-secs + --session-secs`.

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The proxy's front door, host:port.
    #[arg(long)]
    proxy: SocketAddr,
    /// The simulated nodes' own addresses (for the control API), node1 first.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<SocketAddr>,
    #[arg(long, default_value_t = 4000)]
    users: usize,
    /// Users arrive evenly over this many seconds.
    #[arg(long, default_value_t = 120.0)]
    arrive_secs: f64,
    /// How long each user keeps its app open.
    #[arg(long, default_value_t = 30.0)]
    session_secs: f64,
    #[arg(long, default_value_t = 5.0)]
    evaluate_secs: f64,
    /// When node1 goes to 95 % CPU and node2 becomes saturated.
    #[arg(long, default_value_t = 12.0)]
    change_at: f64,
    #[arg(long, default_value = "3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11")]
    app: String,
    /// Name of the proxy in the report.
    #[arg(long)]
    label: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Default)]
struct UserResult {
    arrived: f64,
    node: Option<String>,
    broken: Option<String>,
    /// (seconds since start when sent, answer time in microseconds)
    answers: Vec<(f64, u64)>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.nodes.len() >= 3, "--nodes needs the three simulated nodes");
    let node_ids = reset_nodes(&args.nodes).await;
    let start = Instant::now();
    let series = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_sessions(
        args.nodes.clone(),
        node_ids.clone(),
        start,
        series.clone(),
    ));
    let changer = {
        let nodes = args.nodes.clone();
        let at = start + Duration::from_secs_f64(args.change_at);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            control(nodes[0], r#"{"cpu":95}"#).await;
            control(nodes[1], r#"{"saturated":true}"#).await;
        })
    };
    let mut users = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let args = args.clone();
        let arrive = args.arrive_secs * i as f64 / args.users as f64;
        users.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + Duration::from_secs_f64(arrive)).await;
            let mut result = UserResult {
                arrived: arrive,
                ..Default::default()
            };
            if let Err(why) = user(&args, start, &mut result).await {
                result.broken = Some(why);
            }
            result
        }));
    }
    let last_arrival = start + Duration::from_secs_f64(args.arrive_secs);
    tokio::time::sleep_until(last_arrival).await;
    let at_last_arrival = open_sessions(&args.nodes, &node_ids).await;
    let mut results = Vec::with_capacity(users.len());
    for u in users {
        results.push(u.await.expect("user task"));
    }
    sampler.abort();
    changer.abort();
    let series = series.lock().expect("series").clone();
    let report = report(&args, &node_ids, &results, at_last_arrival, series);
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report).expect("JSON"))
        .expect("write the report");
    println!("{}", serde_json::to_string(&report["summary"]).expect("JSON"));
}

/// One user: hub, then the app's QIX session for `session_secs`.
async fn user(args: &Args, start: Instant, result: &mut UserResult) -> Result<(), String> {
    let cookies = hub(args.proxy).await?;
    let mut request = format!("ws://{}/app/{}", args.proxy, args.app)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if !cookies.is_empty() {
        let header = cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        request
            .headers_mut()
            .insert("cookie", header.parse().map_err(|_| "cookie header")?);
    }
    let tcp = TcpStream::connect(args.proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let rpc = |ws_id: u64, method: &str, handle: i64, params: Value| {
        json!({"jsonrpc": "2.0", "id": ws_id, "method": method, "handle": handle, "params": params})
            .to_string()
    };
    expect_answer(&mut ws, None).await?; // OnConnected
    ws.send(Message::text(rpc(1, "OpenDoc", -1, json!([args.app]))))
        .await
        .map_err(|e| format!("send: {e}"))?;
    expect_answer(&mut ws, Some(1)).await?;
    let ends = Instant::now() + Duration::from_secs_f64(args.session_secs);
    let mut id = 2;
    loop {
        let sent = Instant::now();
        ws.send(Message::text(rpc(id, "Evaluate", 1, json!(["=1"]))))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let answer = expect_answer(&mut ws, Some(id)).await?;
        let took = sent.elapsed();
        let node = answer["result"]["qReturn"]
            .as_str()
            .ok_or_else(|| format!("Evaluate answered {answer}"))?;
        match &result.node {
            None => result.node = Some(node.to_string()),
            Some(first) if first != node => {
                return Err(format!("moved from {first} to {node} mid-session"))
            }
            _ => {}
        }
        result.answers.push((
            sent.duration_since(start).as_secs_f64(),
            took.as_micros() as u64,
        ));
        id += 1;
        let wake = sent + Duration::from_secs_f64(args.evaluate_secs);
        if wake >= ends {
            break;
        }
        tokio::time::sleep_until(wake).await;
    }
    let _ = ws.close(None).await;
    Ok(())
}

async fn expect_answer<S>(ws: &mut S, id: Option<u64>) -> Result<Value, String>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no answer in 30 s".to_string())?
            .ok_or("closed by the proxy or engine")?
            .map_err(|e| format!("read: {e}"))?;
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
        match id {
            None => return Ok(value),
            Some(id) if value["id"] == json!(id) => {
                if value.get("error").is_some() {
                    return Err(format!("QIX error: {value}"));
                }
                return Ok(value);
            }
            Some(_) => continue,
        }
    }
}

/// `GET /hub` as a JSON client; the cookies every `Set-Cookie` of the answer set.
async fn hub(proxy: SocketAddr) -> Result<Vec<(String, String)>, String> {
    let (status, head) = http(
        proxy,
        "GET /hub HTTP/1.1\r\nHost: qlik.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
    )
    .await?;
    if status != 200 {
        return Err(format!("hub answered {status}"));
    }
    Ok(head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.trim().split(';').next()?.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

/// One request on its own connection: the status and the head as text.
async fn http(addr: SocketAddr, request: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
        .await
        .map_err(|_| format!("{addr}: no answer in 30 s"))?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: not HTTP: {text:.80}"))?;
    Ok((status, text))
}

async fn control(node: SocketAddr, body: &str) -> Value {
    let request = if body.is_empty() {
        "GET /__sim/control HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n".to_string()
    } else {
        format!(
            "POST /__sim/control HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, text) = http(node, &request).await.expect("control API");
    assert_eq!(status, 200, "control API: {text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).expect("control JSON")
}

/// Every node back to an idle engine; their ids, in order.
async fn reset_nodes(nodes: &[SocketAddr]) -> Vec<String> {
    let mut ids = Vec::new();
    for &n in nodes {
        let state = control(n, r#"{"cpu":5,"saturated":null,"memory_free_mb":26000}"#).await;
        ids.push(state["id"].as_str().expect("node id").to_string());
    }
    ids
}

async fn open_sessions(nodes: &[SocketAddr], ids: &[String]) -> BTreeMap<String, u64> {
    let mut open = BTreeMap::new();
    for (n, id) in nodes.iter().zip(ids) {
        let state = control(*n, "").await;
        open.insert(id.clone(), state["open_websockets"].as_u64().unwrap_or(0));
    }
    open
}

async fn sample_sessions(
    nodes: Vec<SocketAddr>,
    ids: Vec<String>,
    start: Instant,
    series: Arc<Mutex<Vec<Value>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let t = start.elapsed().as_secs_f64();
        let open = open_sessions(&nodes, &ids).await;
        series
            .lock()
            .expect("series")
            .push(json!({"t": (t * 10.0).round() / 10.0, "open": open}));
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn times(results: &[UserResult], keep: impl Fn(&UserResult) -> bool) -> Value {
    let mut micros: Vec<u64> = results
        .iter()
        .filter(|u| keep(u))
        .flat_map(|u| u.answers.iter().map(|(_, us)| *us))
        .collect();
    micros.sort_unstable();
    json!({"answers": micros.len(), "p50_ms": percentile(&micros, 0.5), "p99_ms": percentile(&micros, 0.99)})
}

fn report(
    args: &Args,
    ids: &[String],
    results: &[UserResult],
    at_last_arrival: BTreeMap<String, u64>,
    series: Vec<Value>,
) -> Value {
    let bad = [ids[0].as_str(), ids[1].as_str()];
    let after: Vec<&UserResult> = results
        .iter()
        .filter(|u| u.arrived > args.change_at)
        .collect();
    let on_bad = after
        .iter()
        .filter(|u| u.node.as_deref().is_some_and(|n| bad.contains(&n)))
        .count();
    let broken: Vec<&str> = results.iter().filter_map(|u| u.broken.as_deref()).collect();
    let mut started_on: BTreeMap<String, u64> = BTreeMap::new();
    for u in results {
        *started_on
            .entry(u.node.clone().unwrap_or_else(|| "none".into()))
            .or_default() += 1;
    }
    let change_at = args.change_at;
    json!({
        "summary": {
            "proxy": args.label,
            "users": results.len(),
            "users_after_change": after.len(),
            "after_change_on_busy_or_saturated": on_bad,
            "after_change_on_busy_or_saturated_share": if after.is_empty() { 0.0 } else { on_bad as f64 / after.len() as f64 },
            "sessions_broken": broken.len(),
            "qix_all": times(results, |_| true),
            "qix_users_after_change": times(results, |u| u.arrived > change_at),
            "open_sessions_at_last_arrival": at_last_arrival,
            "users_started_on": started_on,
        },
        "busy_node": ids[0],
        "saturated_node": ids[1],
        "config": {
            "users": args.users, "arrive_secs": args.arrive_secs, "session_secs": args.session_secs,
            "evaluate_secs": args.evaluate_secs, "change_at": args.change_at,
        },
        "broken_examples": broken.iter().take(10).collect::<Vec<_>>(),
        "series": series,
    })
}
