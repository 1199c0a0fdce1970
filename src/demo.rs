//! `qlik-lb demo`: a simulated Qlik site with qlik-lb in front of it, in one process.

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

pub fn run(args: DemoArgs) -> ExitCode {
    let _ = args;
    eprintln!("qlik-lb demo: the simulated site is coming in the simulator work");
    ExitCode::from(2)
}
