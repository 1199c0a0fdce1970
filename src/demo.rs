//! `qlik-lb demo`: a simulated 3-node Qlik Sense site with qlik-lb in front of it, all in one
//! process on 127.0.0.1, with every role on (license release in dry run). Needs no file and no
//! network; the generated certificates and the audit log live in a temporary folder.

use crate::app::{wait_for_stop_signal, Instance, StartError};
use crate::config::{Config, ConfigErrors};
use crate::sim::site::{SimSite, SiteError};
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Front door address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub frontdoor: String,
    /// Load balancing module address.
    #[arg(long = "lb-module", default_value = "127.0.0.1:8187")]
    pub lb_module: String,
    /// Admin listener address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create a temporary folder: {0}")]
    TempDir(std::io::Error),
    #[error("the simulated site did not start: {0}")]
    Site(#[from] SiteError),
    #[error("the demo config is invalid: {0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Start(#[from] StartError),
}

/// The app every simulated node has, so the README can name it.
pub const DEMO_APP: &str = "3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11";

pub struct Demo {
    pub site: SimSite,
    pub instance: Instance,
    pub config_text: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    pub async fn start(args: &DemoArgs) -> Result<Demo, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix("qlik-lb-demo-")
            .tempdir()
            .map_err(DemoError::TempDir)?;
        let cert_dir = dir.path().join("certs");
        let site = SimSite::start(3, IpAddr::from([127, 0, 0, 1]), None, None, &cert_dir).await?;
        let config_text = demo_config(&site, args, dir.path());
        let config = Config::parse(&config_text, dir.path())?;
        let instance = Instance::start(config).await?;
        Ok(Demo {
            site,
            instance,
            config_text,
            _dir: dir,
        })
    }

    pub async fn shutdown(self) {
        self.instance.shutdown().await;
        self.site.shutdown().await;
    }

    fn banner(&self) -> String {
        let fd = self
            .instance
            .frontend_addr("public")
            .map(|a| a.to_string())
            .unwrap_or_default();
        let admin = self
            .instance
            .admin
            .map(|a| a.to_string())
            .unwrap_or_default();
        let lb = self
            .instance
            .lb_module
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut nodes = String::new();
        for n in &self.site.nodes {
            nodes.push_str(&format!(
                "                {}  {}   (control: POST {}/__sim/control)\n",
                n.id(),
                n.url(),
                n.url()
            ));
        }
        let first_node = self.site.nodes.first().map(|n| n.url()).unwrap_or_default();
        let engines: Vec<String> = self
            .site
            .nodes
            .iter()
            .map(|n| format!("\"wss://{}\"", n.addr()))
            .collect();
        format!(
            "\nqlik-lb demo: a simulated 3-node Qlik Sense site with qlik-lb in front of it\n\n\
             front door    http://{fd}/hub         sticky cookie QLB_ROUTE, WebSocket at ws://{fd}/app/{DEMO_APP}\n\
             LB module     http://{lb}/loadbalancing/prioritize\n\
             admin         http://{admin}/         status page; also /metrics, /api/v1/status, /readyz\n\
             QRS           {}   mutual TLS; license monitor and release (dry run) jobs run at start\n\
             nodes\n{nodes}\n\
             In a browser:\n\
             \x20 open http://{fd}/hub       the hub names the node that served you; open an app from it\n\
             \x20 open http://{admin}/          the status page: node load, license usage, the release dry run\n\n\
             Try:\n\
             \x20 curl -si -c /tmp/qlb.jar -b /tmp/qlb.jar http://{fd}/hub     # twice: same node, cookie set once\n\
             \x20 curl -s http://{lb}/loadbalancing/prioritize -d '{{\"AppName\":\"{DEMO_APP}\",\"QlikSenseEngines\":[{}]}}'\n\
             \x20 curl -s -X POST {first_node}/__sim/control -d '{{\"cpu\":95}}'    # node1 gets no new users\n\
             \x20 curl -s http://{admin}/api/v1/status\n\n\
             Ctrl-C stops everything.\n",
            self.site.qrs.url(),
            engines.join(","),
        )
    }
}

/// The config the demo runs: every role on, pointing at the simulated site.
fn demo_config(site: &SimSite, args: &DemoArgs, dir: &Path) -> String {
    let certs = site.cert_dir.display();
    let mut proxies = String::new();
    let mut engines = String::new();
    for n in &site.nodes {
        let addr = n.addr();
        proxies.push_str(&format!(
            "  [[pool.backend]]\n  id = \"{id}\"\n  url = \"http://{addr}\"\n  engine_health = \"http://{addr}/engine/healthcheck\"\n",
            id = n.id()
        ));
        engines.push_str(&format!(
            "  [[pool.backend]]\n  id = \"{id}\"\n  url = \"http://{addr}\"\n",
            id = n.id().replace("node", "engine")
        ));
    }
    format!(
        r#"# Generated by `qlik-lb demo`.
[admin]
listen = "{admin}"
shutdown_grace = "5s"

[[frontend]]
name = "public"
listen = "{frontdoor}"
pool = "proxies"

[lb_module]
listen = "{lb}"
pool = "engines"

[[pool]]
name = "proxies"
balance = "least-loaded"
  [pool.sticky]
  # Plain http on 127.0.0.1: Lax without Secure, so curl and browsers keep the cookie.
  same_site = "Lax"
  [pool.health]
  check = "http"
  path = "/engine/healthcheck"
  interval = "2s"
  timeout = "1s"
{proxies}
[[pool]]
name = "engines"
balance = "least-loaded"
  [pool.health]
  check = "qix"
  interval = "2s"
  timeout = "1s"
{engines}
[qlik_certs]
cert = "{certs}/client.pem"
key = "{certs}/client_key.pem"
ca = "{certs}/root.pem"

[qrs]
url = "{qrs}"
user = "INTERNAL\\sa_api"
timeout = "10s"

[license.monitor]
schedule = "every 5 minutes"

[license.release]
dry_run = true
schedule = "every 1 hours"
audit_log = "{audit}"
  [license.release.never]
  users = ["INTERNAL\\sa_repository", "INTERNAL\\sa_api"]
  tags = ["License do not release"]
  custom_properties = [{{ name = "LicenseManage", value = "do-not-release" }}]
  user_directories = ["INTERNAL"]
"#,
        admin = args.admin,
        frontdoor = args.frontdoor,
        lb = args.lb_module,
        qrs = site.qrs.url(),
        audit = dir.join("license-release.jsonl").display(),
    )
}

pub fn run(args: DemoArgs) -> ExitCode {
    let rt = match crate::app::instance_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qlik-lb demo: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let demo = match Demo::start(&args).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("qlik-lb demo: {e}");
                if matches!(e, DemoError::Start(StartError::Bind { .. })) {
                    eprintln!("(another program holds the port: pick others with --frontdoor, --lb-module, --admin)");
                }
                return ExitCode::from(1);
            }
        };
        println!("{}", demo.banner());
        wait_for_stop_signal().await;
        println!("stopping...");
        demo.shutdown().await;
        ExitCode::SUCCESS
    })
}
