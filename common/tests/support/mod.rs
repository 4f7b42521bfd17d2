//! Shared helpers of the integration tests: a real Kafka broker on loopback,
//! started by the project's own script when it is not running yet.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::config::KafkaConfig;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Brokers of a running broker: `HERMES_TEST_BROKERS`, else the one that
/// `deploy/kafka/start.sh` starts (idempotently) on 127.0.0.1:9092.
pub fn brokers() -> String {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS
        .get_or_init(|| {
            if let Ok(b) = std::env::var("HERMES_TEST_BROKERS") {
                return b;
            }
            let script = workspace_root().join("deploy/kafka/start.sh");
            let status = Command::new("bash")
                .arg(&script)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(status.success(), "{} failed", script.display());
            "127.0.0.1:9092".to_string()
        })
        .clone()
}

/// A Kafka config for tests against the real broker.
pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        brokers: brokers(),
        connect_timeout_secs: 30,
        ..KafkaConfig::default()
    }
}

/// A run id no other test uses.
pub fn unique_run(name: &str) -> String {
    format!("test-{name}-{}", uuid::Uuid::new_v4().simple())
}
