//! The master's configuration (`conf/master.json`, then `HERMES_*` overrides).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use common::config::{KafkaConfig, LoggingConfig};
use common::data::DatasetSource;
use common::engine::OptimizerConfig;
use common::stats::GateConfig;

use crate::aggregation::AggregationConfig;
use crate::allocation::AllocationConfig;
use crate::policy::PolicyConfig;

/// Everything the master reads at start-up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MasterConfig {
    /// Names the run: topics are `<kafka.topic_prefix>.<run_id>.*`. Workers
    /// started as agents (and one-shot workers without a pinned `run_id`)
    /// learn it from the master's run announcement. Outputs go to
    /// `<data_dir>/runs/<run_id>/`. Letters, digits, `.`, `_`, `-`; not
    /// starting with `_`.
    pub run_id: String,
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Console log level.
    pub logging: LoggingConfig,
    /// Workers that must register before training starts.
    pub min_workers: usize,
    /// Seconds to wait for `min_workers` registrations before giving up.
    pub registration_timeout_secs: u64,
    /// A worker whose heartbeats stop for this many seconds is marked gone and
    /// its outstanding shard goes back to the pool.
    pub heartbeat_timeout_secs: u64,
    /// Seconds between the master's "alive" messages on the control topic
    /// (workers give up after their `master_timeout_secs` without any word).
    pub alive_secs: u64,
    /// Folder for run outputs, centralized logs and status files.
    pub data_dir: PathBuf,
    /// The dataset and how it is split.
    pub dataset: DatasetConfig,
    /// The model (training artifacts) and the engine evaluating it.
    pub model: ModelConfig,
    /// How workers train locally.
    pub training: TrainingConfig,
    /// The workers' loss gate (Hermes).
    pub gate: GateConfig,
    /// Dynamic dataset allocation.
    pub allocation: AllocationConfig,
    /// Aggregation weights and the staleness bound.
    pub aggregation: AggregationConfig,
    /// The synchronization policy: `hermes`, `bsp`, `asp` or `ssp`.
    pub policy: PolicyConfig,
    /// When the run ends.
    pub stop: StopConfig,
    /// Which long-lived workers (agents) the run is opened to, and what
    /// their configuration should change for it.
    pub agents: AgentsConfig,
    /// How new global versions reach the workers: `targeted` (the newest
    /// version goes to a worker with its next shard, on its own topic, so a
    /// slow link never carries a superseded version), `broadcast` (every
    /// version on the shared model topic, read by every worker), or `auto`
    /// (default: broadcast under BSP, where every worker needs every
    /// version, targeted otherwise).
    pub model_delivery: ModelDelivery,
    /// Prefetch (default true): under policies without a barrier (Hermes,
    /// ASP), a worker holds its next shard (with the newest global at the
    /// time) while it trains on the current one, so a round never waits for
    /// a transfer that could have started earlier. BSP and SSP keep one
    /// shard at a time (their next round waits for the others anyway).
    pub prefetch: bool,
    /// Send each training sample to a worker once and refer to it in later
    /// shards (the worker caches it, within the `sample_cache_mb` it
    /// states): after the first pass a shard is a list of positions, not
    /// the samples again. `false`: every shard goes whole.
    pub cache_samples: bool,
}

/// See [`MasterConfig::model_delivery`].
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelDelivery {
    /// `broadcast` under BSP (every worker trains from every version, so
    /// one copy on the model topic serves them all), `targeted` under the
    /// other policies (a busy or slow worker skips superseded versions).
    #[default]
    Auto,
    /// The newest version with each shard, to that worker only.
    Targeted,
    /// Every version to every worker on the model topic.
    Broadcast,
}

impl ModelDelivery {
    /// The delivery in force under `policy` (`auto` resolved).
    pub fn under(self, policy: &str) -> ModelDelivery {
        match self {
            ModelDelivery::Auto if policy == "bsp" => ModelDelivery::Broadcast,
            ModelDelivery::Auto => ModelDelivery::Targeted,
            other => other,
        }
    }
}

/// The run's offer to agents (`worker --agent`, see `common::agents`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Announce the run on the agents channel (idle agents join it).
    pub announce: bool,
    /// Agent ids invited; empty = any idle agent.
    pub invite: Vec<String>,
    /// Worker configuration fields every joining agent takes for this run
    /// (deep-merged into its own `worker.json`; e.g. `{"slowdown": 2.0}`).
    /// `worker_id`, `run_id`, `kafka`, `work_dir` and `engine.ort_library`
    /// stay the agent's own: an offer that sets them is declined.
    pub overrides: serde_json::Value,
    /// Per-agent fields on top of `overrides`: agent id → JSON object.
    pub per_agent: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            announce: true,
            invite: Vec::new(),
            overrides: serde_json::Value::Object(Default::default()),
            per_agent: Default::default(),
        }
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            run_id: "demo".into(),
            kafka: KafkaConfig::default(),
            logging: LoggingConfig::default(),
            min_workers: 1,
            registration_timeout_secs: 120,
            heartbeat_timeout_secs: 15,
            alive_secs: 5,
            data_dir: "data".into(),
            dataset: DatasetConfig::default(),
            model: ModelConfig::default(),
            training: TrainingConfig::default(),
            gate: GateConfig::default(),
            allocation: AllocationConfig::default(),
            aggregation: AggregationConfig::default(),
            policy: PolicyConfig::default(),
            stop: StopConfig::default(),
            agents: AgentsConfig::default(),
            model_delivery: ModelDelivery::default(),
            prefetch: true,
            cache_samples: true,
        }
    }
}

/// The dataset, its preprocessing and its split.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// Where the samples come from (paths relative to `data_dir`).
    pub source: DatasetSource,
    /// Divide every feature by this value (255 for 8-bit pixels); `null` keeps them.
    pub scale_max: Option<f32>,
    /// Samples held out for the master's test evaluation.
    pub test_samples: usize,
    /// Samples set aside as the pool of the workers' fixed validation splits.
    pub validation_samples: usize,
    /// Size of each worker's validation split, drawn from the pool by worker id.
    pub validation_per_worker: usize,
    /// Seed of the split.
    pub seed: u64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            source: DatasetSource::mnist_5k("mnist/mnist_5k.csv.gz"),
            scale_max: Some(255.0),
            test_samples: 1000,
            validation_samples: 500,
            validation_per_worker: 250,
            seed: 7,
        }
    }
}

/// The model as lowered training artifacts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Folder with `manifest.json` and the lowered graphs (made by
    /// `examples/build_artifacts.sh` or the artifact tool).
    pub artifacts: PathBuf,
    /// `libonnxruntime.so` for the master's evaluation; see the worker's
    /// `engine.ort_library` for the lookup order when absent.
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads for evaluation (0 = ONNX Runtime decides).
    pub intra_op_threads: usize,
    /// Batch size of the test evaluation.
    pub eval_batch_size: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            artifacts: "examples/artifacts/mlp".into(),
            ort_library: None,
            intra_op_threads: 1,
            eval_batch_size: 500,
        }
    }
}

/// Local training on the workers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Local epochs over the shard per round.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// The optimizer (`{"kind": "sgd", "lr": 0.05, "momentum": 0.9}` or `{"kind": "adamw", ...}`).
    pub optimizer: OptimizerConfig,
    /// Seed of the workers' shuffling.
    pub seed: u64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 1,
            batch_size: 32,
            optimizer: OptimizerConfig::default(),
            seed: 42,
        }
    }
}

/// Stop criteria; the first one met ends the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StopConfig {
    /// Stop when the global model's test accuracy reaches this (0..1).
    pub target_accuracy: Option<f64>,
    /// Stop after this many versions without a new best test loss.
    pub patience_versions: Option<u64>,
    /// Stop after this many global versions.
    pub max_versions: u64,
    /// Stop after this many seconds of training.
    pub max_wall_secs: u64,
    /// A run with no new global version for this many seconds (while the
    /// broker is reachable) cannot make progress: it stops with a non-zero
    /// exit and says why. 0 = never.
    pub no_progress_secs: u64,
}

impl Default for StopConfig {
    fn default() -> Self {
        Self {
            target_accuracy: Some(0.9),
            patience_versions: None,
            max_versions: 1_000_000,
            max_wall_secs: 600,
            no_progress_secs: 120,
        }
    }
}

impl MasterConfig {
    /// Checks values the types cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        common::agents::check_run_id(&self.run_id)
            .map_err(|e| anyhow::anyhow!("run_id `{}`: {e}", self.run_id.escape_debug()))?;
        anyhow::ensure!(
            self.agents.overrides.is_object(),
            "agents.overrides must be a JSON object"
        );
        for (id, o) in &self.agents.per_agent {
            anyhow::ensure!(o.is_object(), "agents.per_agent.{id} must be a JSON object");
        }
        anyhow::ensure!(self.min_workers >= 1, "min_workers must be at least 1");
        anyhow::ensure!(
            self.heartbeat_timeout_secs > 0,
            "heartbeat_timeout_secs must be > 0"
        );
        anyhow::ensure!(self.alive_secs > 0, "alive_secs must be > 0");
        anyhow::ensure!(
            self.training.epochs >= 1,
            "training.epochs must be at least 1"
        );
        anyhow::ensure!(
            self.training.batch_size >= 1,
            "training.batch_size must be at least 1"
        );
        anyhow::ensure!(
            self.model.eval_batch_size >= 1,
            "model.eval_batch_size must be at least 1"
        );
        anyhow::ensure!(
            self.dataset.validation_per_worker >= 1
                && self.dataset.validation_per_worker <= self.dataset.validation_samples,
            "dataset.validation_per_worker must be between 1 and dataset.validation_samples"
        );
        if let Some(t) = self.stop.target_accuracy {
            anyhow::ensure!(
                (0.0..=1.0).contains(&t),
                "stop.target_accuracy must be in [0, 1], got {t}"
            );
        }
        self.training
            .optimizer
            .validate()
            .map_err(|e| anyhow::anyhow!("training.optimizer: {e}"))?;
        self.gate
            .validate()
            .map_err(|e| anyhow::anyhow!("gate: {e}"))?;
        self.allocation
            .validate()
            .map_err(|e| anyhow::anyhow!("allocation: {e}"))?;
        self.aggregation
            .validate()
            .map_err(|e| anyhow::anyhow!("aggregation: {e}"))?;
        Ok(())
    }
}
