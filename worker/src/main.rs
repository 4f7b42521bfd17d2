//! `worker` — a hermes-rs edge worker. Reads `conf/worker.json` unless
//! `--conf` says otherwise; serves one run, or run after run with
//! `--agent`. This file only wires things together.

mod agent;
mod artifacts;
mod config;
mod logs;
mod rounds;
mod sample_cache;
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
    /// Stay up and serve run after run: announce this worker on the agents
    /// channel and join each run a master opens for it (what `master deploy
    /// up` starts). Without it the worker serves one run and exits.
    #[arg(long)]
    agent: bool,
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
    let mode = if cli.agent {
        agent::Mode::Agent
    } else {
        agent::Mode::Once
    };
    let result = runtime.block_on(async {
        // One log channel for the process; each run's forwarder takes it in turn.
        let logs = if cfg.log_forwarding || cli.agent {
            let (tx, rx) = tokio::sync::mpsc::channel(logs::CHANNEL_CAPACITY);
            common::logging::init(&cfg.logging.level, &cfg.worker_id, Some(tx));
            Some(std::sync::Arc::new(tokio::sync::Mutex::new(rx)))
        } else {
            common::logging::init(&cfg.logging.level, &cfg.worker_id, None);
            None
        };
        agent::serve(cfg, mode, logs).await
    });
    // A round still on its blocking thread was told to stop; do not wait long for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}
