//! The worker's configuration (`conf/worker.json`, then `HERMES_*` overrides).

use std::path::PathBuf;

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
    /// Once registered: seconds without any message from the master (it
    /// says it is alive every few seconds) before the worker gives up and
    /// exits non-zero (0 = wait forever). Until then it keeps its state and
    /// carries on when the master, or a restarted one, speaks again.
    pub master_timeout_secs: u64,
    /// Emulated compute slowdown: after each compute step the worker idles
    /// `(slowdown - 1) ×` the time it measured, so 3.0 makes it look three
    /// times slower. 1.0 = real speed. Stated in every report.
    pub slowdown: f64,
    /// How this worker's device is emulated, in words (set by `master
    /// testbed`: namespace, link rates, caps); `null` = a real device. Sent
    /// in the registration and stated in the run summary.
    pub emulation: Option<String>,
    /// Where the worker keeps what the master ships (artifacts land in
    /// `<work_dir>/artifacts/<model>/`). Default: `data/worker/<worker_id>`.
    pub work_dir: Option<PathBuf>,
    /// ONNX Runtime settings. The optimizer, the seed and every other
    /// training setting come from the master's training plan.
    pub engine: WorkerEngineConfig,
    /// Forward this worker's log events (info and above) to the master's
    /// centralized log over the logs topic.
    pub log_forwarding: bool,
}

/// The worker's share of the engine settings: where ONNX Runtime lives and
/// how many threads it may use. The optimizer and seed are the master's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerEngineConfig {
    /// Path of `libonnxruntime.so`; when absent `ORT_DYLIB_PATH`, else
    /// `deploy/ort/lib/libonnxruntime.so` next to or above the executable.
    pub ort_library: Option<PathBuf>,
    /// Threads ONNX Runtime may use inside one operator (0 = its choice).
    /// Workers sharing a machine want 1.
    pub intra_op_threads: usize,
}

impl Default for WorkerEngineConfig {
    fn default() -> Self {
        Self {
            ort_library: None,
            intra_op_threads: 1,
        }
    }
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
            master_timeout_secs: 300,
            slowdown: 1.0,
            emulation: None,
            work_dir: None,
            engine: WorkerEngineConfig::default(),
            log_forwarding: true,
        }
    }
}

impl WorkerConfig {
    /// The working directory: `work_dir`, else `data/worker/<worker_id>`
    /// (the id sanitized to a plain file name).
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| {
            let id: String = self
                .worker_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            // `.` and `..` are not names.
            let id = if id.chars().all(|c| c == '.') {
                format!("_{id}")
            } else {
                id
            };
            PathBuf::from("data/worker").join(id)
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_worker_json_names_every_field_and_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/worker.json");
        let cfg: WorkerConfig =
            common::config::load_with_env(&path, Vec::new()).expect("conf/worker.json loads");
        cfg.validate().expect("valid");
        let text = std::fs::read_to_string(&path).expect("read");
        let file: serde_json::Value = serde_json::from_str(&text).expect("json");
        let full = serde_json::to_value(WorkerConfig::default()).expect("serialize");
        for key in full.as_object().expect("object").keys() {
            assert!(file.get(key).is_some(), "conf/worker.json lacks `{key}`");
        }
    }

    #[test]
    fn default_work_dir_uses_a_safe_id() {
        let cfg = WorkerConfig {
            worker_id: "../edge 1".into(),
            ..WorkerConfig::default()
        };
        assert_eq!(cfg.work_dir(), PathBuf::from("data/worker/.._edge_1"));
        let dots = WorkerConfig {
            worker_id: "..".into(),
            ..WorkerConfig::default()
        };
        assert_eq!(dots.work_dir(), PathBuf::from("data/worker/_.."));
    }

    #[test]
    fn unknown_engine_field_is_rejected() {
        let err = serde_json::from_str::<WorkerConfig>(r#"{"engine": {"optimizer": {}}}"#)
            .expect_err("rejected");
        assert!(err.to_string().contains("optimizer"), "{err}");
    }
}
