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
    /// Pins the run to join (`HERMES_RUN_ID` sets it too). `null` (the
    /// default): the run id comes from the master's run announcement on the
    /// agents channel, so one master config names the run for every worker.
    pub run_id: Option<String>,
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
    /// MiB of decoded training samples the worker keeps between shards, so
    /// that the master sends each sample once rather than every round
    /// (stated in the registration; the master never asks for more). 0
    /// turns the cache off: every shard then comes whole.
    pub sample_cache_mb: u64,
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
            run_id: None,
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
            sample_cache_mb: 256,
        }
    }
}

impl WorkerConfig {
    /// The working directory: `work_dir`, else `data/worker/<worker_id>`
    /// (the id sanitized to a plain file name).
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| common::config::default_worker_dir(&self.worker_id))
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
        if let Some(run) = &self.run_id {
            common::agents::check_run_id(run)
                .map_err(|e| anyhow::anyhow!("run_id `{}`: {e}", run.escape_debug()))?;
        }
        Ok(())
    }

    /// This configuration for one run a master offered: `overrides`, then
    /// `per_agent` (JSON objects) deep-merged in, `run_id` set. Fields that
    /// are the device's own (who it is, where the broker and its files are)
    /// cannot be changed by a master; an offer that tries is declined.
    pub fn for_offer(
        &self,
        run_id: &str,
        overrides: &str,
        per_agent: Option<&str>,
    ) -> anyhow::Result<WorkerConfig> {
        common::agents::check_run_id(run_id)
            .map_err(|e| anyhow::anyhow!("run id `{}`: {e}", run_id.escape_debug()))?;
        let mut value = serde_json::to_value(self)?;
        for (what, text) in [
            ("overrides", Some(overrides)),
            ("per-agent overrides", per_agent),
        ] {
            let Some(text) = text else { continue };
            let patch: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| anyhow::anyhow!("the offer's {what} are not JSON: {e}"))?;
            anyhow::ensure!(
                patch.is_object(),
                "the offer's {what} are not a JSON object"
            );
            for field in OWN_FIELDS {
                let pointer = format!("/{}", field.replace('.', "/"));
                anyhow::ensure!(
                    patch.pointer(&pointer).is_none(),
                    "the offer's {what} set `{field}`, which only the device's own config may set"
                );
            }
            common::config::deep_merge(&mut value, &patch);
        }
        let mut cfg: WorkerConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            anyhow::anyhow!("the offer's overrides: field `{}`: {}", e.path(), e.inner())
        })?;
        cfg.run_id = Some(run_id.to_string());
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("the offer's overrides: {e:#}"))?;
        Ok(cfg)
    }
}

/// Fields a master's offer may not change (dotted paths).
const OWN_FIELDS: [&str; 5] = [
    "worker_id",
    "run_id",
    "kafka",
    "work_dir",
    "engine.ort_library",
];

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
    fn an_offer_sets_the_run_and_merges_overrides() {
        let base = WorkerConfig::default();
        let cfg = base
            .for_offer(
                "exp-2",
                r#"{"slowdown": 2.0, "logging": {"level": "debug"}}"#,
                Some(r#"{"heartbeat_secs": 1}"#),
            )
            .expect("accepted");
        assert_eq!(cfg.run_id.as_deref(), Some("exp-2"));
        assert_eq!(cfg.slowdown, 2.0);
        assert_eq!(cfg.logging.level, "debug");
        assert_eq!(cfg.heartbeat_secs, 1);
        assert_eq!(cfg.kafka, base.kafka);
    }

    #[test]
    fn an_offer_cannot_change_the_devices_own_fields_or_break_the_config() {
        let base = WorkerConfig::default();
        for (overrides, needle) in [
            (r#"{"worker_id": "evil"}"#, "`worker_id`"),
            (r#"{"kafka": {"brokers": "x:1"}}"#, "`kafka`"),
            (
                r#"{"engine": {"ort_library": "/tmp/x.so"}}"#,
                "`engine.ort_library`",
            ),
            (r#"{"slowdown": 0.5}"#, "slowdown"),
            (r#"{"no_such_field": 1}"#, "no_such_field"),
            (r#"[1]"#, "not a JSON object"),
            ("{", "not JSON"),
        ] {
            let err = base
                .for_offer("r", overrides, None)
                .expect_err(overrides)
                .to_string();
            assert!(err.contains(needle), "{overrides}: {err}");
        }
        assert!(base.for_offer("_agents", "{}", None).is_err());
    }

    #[test]
    fn unknown_engine_field_is_rejected() {
        let err = serde_json::from_str::<WorkerConfig>(r#"{"engine": {"optimizer": {}}}"#)
            .expect_err("rejected");
        assert!(err.to_string().contains("optimizer"), "{err}");
    }
}
