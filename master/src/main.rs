//! `master` — the hermes-rs parameter server.
//!
//! `master --conf conf/master.json` runs training; `master deploy ...` bootstraps
//! remote workers over SSH. This file only wires things together.

use master::{bench, config, deploy, run, testbed};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "master",
    version,
    about = "hermes-rs master (parameter server)"
)]
struct Cli {
    /// The master's configuration file (default `conf/master.json`).
    /// `testbed` takes its profile with its own `--conf`; `deploy` reads the
    /// inventory (`--cluster`), `bench` the profile (`--profile`).
    #[arg(long)]
    conf: Option<std::path::PathBuf>,
    /// Start the run anew even if its folder holds the checkpoint of an
    /// unfinished run (the old folder is moved aside, never overwritten).
    /// Without it, an unfinished run with a checkpoint is resumed.
    #[arg(long)]
    fresh: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run training (the default when no subcommand is given).
    Run {
        /// The master's configuration file (default `conf/master.json`).
        #[arg(long)]
        conf: Option<std::path::PathBuf>,
    },
    /// Bootstrap, inspect and stop remote workers over SSH.
    Deploy(deploy::DeployArgs),
    /// Emulated edge testbed: namespaces, shaped links, CPU/memory caps, traces.
    Testbed(testbed::TestbedArgs),
    /// Run every policy on a testbed profile and compare them.
    Bench(bench::BenchArgs),
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
        Some(Command::Testbed(args)) => {
            common::logging::init("info", "testbed", None);
            let conf = args
                .conf
                .clone()
                .unwrap_or_else(|| "conf/testbed.json".into());
            testbed::run(args, &conf)
        }
        Some(Command::Bench(args)) => {
            common::logging::init("info", "bench", None);
            bench::run(args)
        }
        Some(Command::Run { conf }) => run_master(conf.or(cli.conf), cli.fresh),
        None => run_master(cli.conf, cli.fresh),
    }
}

fn run_master(
    conf: Option<std::path::PathBuf>,
    fresh: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let conf = conf.unwrap_or_else(|| "conf/master.json".into());
    let cfg: config::MasterConfig = common::config::load(&conf)?;
    cfg.validate()
        .with_context(|| format!("{}: invalid configuration", conf.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    runtime.block_on(run::run(cfg, fresh))
}
