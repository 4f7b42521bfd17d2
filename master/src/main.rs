//! `master` — the hermes-rs parameter server.
//!
//! `master --conf conf/master.json` runs training; `master deploy ...` bootstraps
//! remote workers over SSH. This file only wires things together.

use master::{config, deploy, run};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "master",
    version,
    about = "hermes-rs master (parameter server)"
)]
struct Cli {
    /// Master configuration file.
    #[arg(long, default_value = "conf/master.json", global = true)]
    conf: std::path::PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run training (the default when no subcommand is given).
    Run,
    /// Bootstrap, inspect and stop remote workers over SSH.
    Deploy(deploy::DeployArgs),
}

fn main() -> std::process::ExitCode {
    match dispatch() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("master: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Deploy(args)) => deploy::run(args),
        Some(Command::Run) | None => {
            let cfg: config::MasterConfig = common::config::load(&cli.conf)?;
            cfg.validate()
                .with_context(|| format!("{}: invalid configuration", cli.conf.display()))?;
            let runtime = tokio::runtime::Runtime::new().context("start tokio runtime")?;
            runtime.block_on(run::run(cfg))
        }
    }
}
