//! The testbed's Kafka broker: the project's broker script with the bridge
//! address as its host, so nodes in namespaces and the master on the host
//! reach the same listener (and, for hybrid runs, an extra listener for real
//! devices).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::profile::BrokerConfig;
use super::state::BrokerState;

/// The broker scripts, found from the current folder (the repository root).
fn script(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new("deploy/kafka").join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: run `master testbed` from the hermes-rs repository root",
        path.display()
    );
    Ok(path)
}

/// Starts (or reuses) the broker of testbed `name` on `gateway`.
pub fn start(name: &str, cfg: &BrokerConfig, gateway: Ipv4Addr) -> anyhow::Result<BrokerState> {
    let state_dir = std::env::current_dir()
        .context("current folder")?
        .join(".cache/kafka-testbed")
        .join(name);
    let mut env = vec![
        ("KAFKA_HOST".to_string(), gateway.to_string()),
        ("KAFKA_PORT".to_string(), cfg.port.to_string()),
        (
            "KAFKA_CONTROLLER_PORT".to_string(),
            cfg.controller_port.to_string(),
        ),
        (
            "KAFKA_STATE_DIR".to_string(),
            state_dir.display().to_string(),
        ),
    ];
    if let Some(ext) = &cfg.external {
        env.push(("KAFKA_EXTERNAL_LISTENER".into(), ext.bind.clone()));
        env.push(("KAFKA_EXTERNAL_ADVERTISED".into(), ext.advertised.clone()));
    }
    let state = BrokerState {
        state_dir,
        bootstrap: format!("{gateway}:{}", cfg.port),
        external: cfg.external.as_ref().map(|e| e.advertised.clone()),
        env,
    };
    let out = Command::new("bash")
        .arg(script("start.sh")?)
        .envs(state.env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("run deploy/kafka/start.sh")?;
    anyhow::ensure!(
        out.status.success(),
        "the testbed broker did not start: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(state)
}

/// Stops the testbed's broker (idempotent).
pub fn stop(state: &BrokerState) -> anyhow::Result<()> {
    let out = Command::new("bash")
        .arg(script("stop.sh")?)
        .envs(state.env.iter().map(|(k, v)| (k, v)))
        .env("KAFKA_STOP_TIMEOUT", "20")
        .output()
        .context("run deploy/kafka/stop.sh")?;
    anyhow::ensure!(
        out.status.success(),
        "stopping the testbed broker failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
