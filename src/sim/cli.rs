//! `qlik-lb sim`: the simulator alone.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::site::SimSite;

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Node i (1..N) listens on base-port + i - 1.
    #[arg(long)]
    pub base_port: u16,
    /// QRS port (default base-port + N).
    #[arg(long)]
    pub qrs_port: Option<u16>,
    /// Where root.pem, client.pem and client_key.pem are written.
    #[arg(long, default_value = "var/sim-certs")]
    pub cert_dir: PathBuf,
    /// Bind address.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
}

/// Starts the nodes, prints one line per node, and serves until Ctrl-C or SIGTERM.
pub fn run(args: SimArgs) -> ExitCode {
    let bind: IpAddr = match args.bind.parse() {
        Ok(bind) => bind,
        Err(_) => {
            eprintln!("qlik-lb sim: --bind {:?} is not an IP address", args.bind);
            return ExitCode::from(2);
        }
    };
    if args.nodes == 0 {
        eprintln!("qlik-lb sim: --nodes must be at least 1");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("qlik-lb sim: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(args, bind))
}

async fn serve(args: SimArgs, bind: IpAddr) -> ExitCode {
    let Some(default_qrs) = args.base_port.checked_add(args.nodes) else {
        eprintln!("qlik-lb sim: --base-port + --nodes is past the last port");
        return ExitCode::from(2);
    };
    let qrs_port = args.qrs_port.unwrap_or(default_qrs);
    let site = match SimSite::start(
        args.nodes,
        bind,
        Some(args.base_port),
        Some(qrs_port),
        &args.cert_dir,
    )
    .await
    {
        Ok(site) => site,
        Err(e) => {
            eprintln!("qlik-lb sim: {e}");
            return ExitCode::from(1);
        }
    };
    for node in &site.nodes {
        println!(
            "{} {}  (health {}/engine/healthcheck, control {}/__sim/control)",
            node.id(),
            node.url(),
            node.url(),
            node.url()
        );
    }
    println!(
        "qrs   {}  (mutual TLS; root.pem, client.pem, client_key.pem in {})",
        site.qrs.url(),
        site.cert_dir.display()
    );
    if let Err(e) = shutdown_signal().await {
        eprintln!("qlik-lb sim: cannot wait for a stop signal: {e}");
        return ExitCode::from(1);
    }
    site.shutdown().await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
