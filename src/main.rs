//! The `qlik-lb` command line: parses arguments and hands over to the library.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "qlik-lb", version, about = "A load balancer for Qlik Sense sites")]
struct Cli {
    /// Log level or filter (e.g. info, debug, qlik_lb=trace); default from RUST_LOG, else info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(short, long, default_value = "config/qlik-lb.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated 3-node Qlik site with qlik-lb in front of it, all on 127.0.0.1.
    Demo(qlik_lb::demo::DemoArgs),
    /// Run every role the config file sets up.
    Run(ConfigArg),
    /// Validate a config file: prints `ok` or every error; touches no network.
    Check(ConfigArg),
    /// Run the Qlik simulator alone.
    Sim(qlik_lb::sim::cli::SimArgs),
    /// One-off license jobs.
    License {
        #[command(subcommand)]
        job: LicenseJob,
    },
}

#[derive(Subcommand)]
enum LicenseJob {
    /// One license monitor run; prints the usage table.
    Monitor {
        #[command(flatten)]
        config: ConfigArg,
        /// Run once and exit (the only mode from the command line).
        #[arg(long, required = true)]
        once: bool,
    },
    /// One license release run; prints one line per allocation considered.
    Release {
        #[command(flatten)]
        config: ConfigArg,
        /// Run once and exit (the only mode from the command line).
        #[arg(long, required = true)]
        once: bool,
        /// Decide and report, release nothing, whatever the file says.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    qlik_lb::logging::init(cli.log_level.as_deref(), matches!(cli.log_format, LogFormat::Json));
    match cli.command {
        Command::Check(c) => qlik_lb::app::check(&c.config),
        Command::Run(c) => qlik_lb::app::run_from_file(&c.config),
        Command::Demo(args) => qlik_lb::demo::run(args),
        Command::Sim(args) => qlik_lb::sim::cli::run(args),
        Command::License { job } => match job {
            LicenseJob::Monitor { config, .. } => qlik_lb::control::cli::monitor_once(&config.config),
            LicenseJob::Release { config, dry_run, .. } => {
                qlik_lb::control::cli::release_once(&config.config, dry_run)
            }
        },
    }
}
