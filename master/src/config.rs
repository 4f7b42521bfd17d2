//! The master's configuration (`conf/master.json`, then `HERMES_*` overrides).

use serde::{Deserialize, Serialize};

use common::config::{KafkaConfig, LoggingConfig};

/// Everything the master reads at start-up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// Names the run: topics are `<kafka.topic_prefix>.<run_id>.*` and workers
    /// must use the same value.
    pub run_id: String,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Console log level.
    pub logging: LoggingConfig,
    /// Workers that must register before training starts.
    pub min_workers: usize,
    /// Seconds to wait for `min_workers` registrations before giving up.
    pub registration_timeout_secs: u64,
    /// Folder for run outputs, centralized logs and status files.
    pub data_dir: std::path::PathBuf,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            run_id: "demo".into(),
            kafka: KafkaConfig::default(),
            logging: LoggingConfig::default(),
            min_workers: 1,
            registration_timeout_secs: 120,
            data_dir: "data".into(),
        }
    }
}

impl MasterConfig {
    /// Checks values the types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.run_id.trim().is_empty(), "run_id must not be empty");
        anyhow::ensure!(self.min_workers >= 1, "min_workers must be at least 1");
        Ok(())
    }
}
