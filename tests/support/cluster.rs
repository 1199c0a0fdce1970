//! Several instances in one test process, each with its own config folder and ports, joined in
//! one cluster over a test etcd (`etcd.rs`).

use super::raw::{self, Reply};
use qlik_lb::app::Instance;
use qlik_lb::cluster::ClusterView;
use qlik_lb::config::Config;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpStream;

/// The `[cluster]` section for instance `name`; a short TTL so failovers take seconds.
pub fn cluster_section(endpoint: &str, name: &str) -> String {
    format!(
        "\n[cluster]\netcd = [\"{endpoint}\"]\nname = \"{name}\"\nprefix = \"/test/\"\nlease_ttl = \"2s\"\n"
    )
}

/// One instance of the cluster: its folder (config, audit log) and, while running, the instance.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub instance: Option<Instance>,
}

impl Node {
    /// Writes `text` as `<dir>/qlik-lb.toml` and starts an instance from it.
    pub async fn start(name: &str, dir: &Path, text: &str) -> Node {
        std::fs::create_dir_all(dir).expect("node folder");
        let mut node = Node {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            instance: None,
        };
        std::fs::write(node.config_path(), text).expect("write config");
        node.start_again().await;
        node
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("qlik-lb.toml")
    }

    pub async fn start_again(&mut self) {
        let config = Config::load(&self.config_path()).unwrap_or_else(|e| panic!("config: {e}"));
        self.instance = Some(Instance::start(config).await.expect("instance starts"));
    }

    pub async fn shutdown(&mut self) {
        if let Some(i) = self.instance.take() {
            i.shutdown().await;
        }
    }

    pub fn instance(&self) -> &Instance {
        self.instance.as_ref().expect("the node runs")
    }

    pub fn view(&self) -> ClusterView {
        self.instance()
            .cluster
            .as_ref()
            .expect("[cluster] is set")
            .view()
    }

    pub fn admin(&self) -> SocketAddr {
        self.instance().admin_addr().expect("admin listener")
    }

    pub async fn status(&self) -> serde_json::Value {
        raw::get(self.admin(), "/api/v1/status", &[]).await.json()
    }

    pub async fn post(&self, path: &str) -> Reply {
        let addr = self.admin();
        let mut s = TcpStream::connect(addr).await.expect("connect admin");
        let req =
            format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let mut buf = Vec::new();
        raw::exchange(&mut s, &mut buf, req.as_bytes()).await
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8(raw::get(self.admin(), "/metrics", &[]).await.body).expect("utf-8")
    }
}

/// The names of the running nodes that lead, each by its own view.
pub fn leaders(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.instance.is_some())
        .filter(|n| n.view().leader.as_deref() == Some(n.name.as_str()))
        .map(|n| n.name.clone())
        .collect()
}

/// Polls until `f` holds, checking every 20 ms; fails after `limit`.
pub async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
