//! `worker` — a hermes-rs edge worker. Reads `conf/worker.json` unless
//! `--conf` says otherwise; this file only wires things together.

mod artifacts;
mod config;
mod logs;
mod rounds;
mod session;
mod trainer;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "worker", version, about = "hermes-rs worker")]
struct Cli {
    /// Worker configuration file.
    #[arg(long, default_value = "conf/worker.json")]
    conf: PathBuf,
    /// Worker id (overrides the config file and HERMES_WORKER_ID).
    #[arg(long)]
    id: Option<String>,
    /// Kafka bootstrap brokers (overrides the config file and HERMES_KAFKA__BROKERS).
    #[arg(long)]
    brokers: Option<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("worker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let mut cfg: config::WorkerConfig = common::config::load(&cli.conf)?;
    if let Some(id) = cli.id {
        cfg.worker_id = id;
    }
    if let Some(brokers) = cli.brokers {
        cfg.kafka.brokers = brokers;
    }
    cfg.validate()
        .with_context(|| format!("{}: invalid configuration", cli.conf.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    let result = runtime.block_on(session::run(cfg));
    // A round still on its blocking thread was told to stop; do not wait long for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}
