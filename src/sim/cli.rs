//! `qlik-lb sim`: the simulator alone.

use std::path::PathBuf;
use std::process::ExitCode;

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

pub fn run(args: SimArgs) -> ExitCode {
    let _ = args;
    eprintln!("qlik-lb sim: not wired yet");
    ExitCode::from(2)
}
