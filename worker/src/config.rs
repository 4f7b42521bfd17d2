//! The worker's configuration (`conf/worker.json`, then `HERMES_*` overrides).

use serde::{Deserialize, Serialize};

use common::config::{KafkaConfig, LoggingConfig};

/// Everything a worker reads at start-up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// This worker's id, unique in the run (`--id` or `HERMES_WORKER_ID` override it).
    pub worker_id: String,
    /// The run to join; must match the master's `run_id`.
    pub run_id: String,
    /// Kafka connection (`--brokers` or `HERMES_KAFKA__BROKERS` override the brokers).
    pub kafka: KafkaConfig,
    /// Console log level.
    pub logging: LoggingConfig,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u64,
    /// Seconds between registration attempts until the master answers.
    pub register_retry_secs: u64,
    /// Seconds to wait for the master before giving up (0 = forever).
    pub master_wait_secs: u64,
    /// Emulated compute slowdown: after each compute step the worker idles
    /// `(slowdown - 1) ×` the time it measured, so 3.0 makes it look three
    /// times slower. 1.0 = real speed. Stated in every report.
    pub slowdown: f64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: "worker-1".into(),
            run_id: "demo".into(),
            kafka: KafkaConfig::default(),
            logging: LoggingConfig::default(),
            heartbeat_secs: 2,
            register_retry_secs: 2,
            master_wait_secs: 0,
            slowdown: 1.0,
        }
    }
}

impl WorkerConfig {
    /// Checks values the types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.worker_id.trim().is_empty(),
            "worker_id must not be empty"
        );
        anyhow::ensure!(
            self.worker_id.len() <= 128,
            "worker_id is longer than 128 characters"
        );
        anyhow::ensure!(
            self.slowdown.is_finite() && self.slowdown >= 1.0,
            "slowdown must be a finite number ≥ 1.0, got {}",
            self.slowdown
        );
        anyhow::ensure!(self.heartbeat_secs > 0, "heartbeat_secs must be > 0");
        Ok(())
    }
}
