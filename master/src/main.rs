//! `master` — the hermes-rs parameter server.
//!
//! `master --conf conf/master.json` runs training; `master deploy ...` bootstraps
//! remote workers over SSH. This file only wires things together.

mod deploy;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "master", version, about = "hermes-rs master (parameter server)")]
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

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Deploy(args)) => deploy::run(args),
        Some(Command::Run) | None => Ok(std::process::ExitCode::SUCCESS),
    }
}
