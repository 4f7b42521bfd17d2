//! The worker's training state and one local round. Everything here is
//! blocking (ONNX Runtime, file I/O): the session runs it on a blocking
//! thread so heartbeats and Kafka polling go on meanwhile.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::data::{BatchOptions, Batches, Dataset, Limits};
use common::engine::{Batch, Engine, EngineConfig, Manifest, OptimizerConfig};
use common::protocol::{
    GlobalModel, ModelPackage, RoundReport, RoundTiming, ShardAssignment, TrainingPlan, UpdateDelta,
};
use common::stats::gate::{GateDecision, LossGate};

use crate::artifacts;
use crate::config::WorkerEngineConfig;
use crate::rounds::{self, Base};
use crate::sample_cache::{ResolveError, SampleCache};

/// Samples per evaluation batch on the validation split.
const EVAL_BATCH: usize = 1000;

/// Who the worker is, for the messages a round produces.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The worker id.
    pub worker_id: String,
    /// This process's incarnation.
    pub incarnation: u64,
    /// The emulated slowdown factor.
    pub slowdown: f64,
}

/// A loaded model package: the engine, the validation split, the gate, the
/// plan, and the base the local parameters are measured against.
pub struct Trainer {
    engine: Engine,
    model: String,
    validation: Dataset,
    sample_shape: Vec<usize>,
    gate: LossGate,
    plan: TrainingPlan,
    base: Base,
    shuffle_seed: u64,
    rounds_done: u64,
    cache: SampleCache,
}

/// What one finished round produced, for the session to send.
#[derive(Debug)]
pub struct RoundOutcome {
    /// The round report; `update_bytes` and `round_secs` are filled in by the sender.
    pub report: RoundReport,
    /// The delta of a major round.
    pub update: Option<UpdateDelta>,
    /// Why the gate decided what it did (for the log).
    pub decision: Option<GateDecision>,
    /// When the round started (for `round_secs`).
    pub started: Instant,
}

/// Why a round did not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The shard from the network is unusable (counted as a rejection).
    #[error("bad shard {shard_id}: {reason}")]
    BadShard {
        /// The shard.
        shard_id: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A by-reference shard named samples the cache does not hold (the
    /// master is told, and sends the shard whole).
    #[error("shard {shard_id}: {missing} of its samples are not in the sample cache")]
    CacheMiss {
        /// The shard.
        shard_id: u64,
        /// How many samples were missing.
        missing: usize,
    },
    /// The round was aborted (stop, or a new package).
    #[error("round aborted")]
    Cancelled,
    /// Training or evaluation failed.
    #[error("round failed: {0:#}")]
    Failed(anyhow::Error),
}

impl Trainer {
    /// Checks and writes the package's artifacts under `artifacts_root`,
    /// loads the engine, sets the global parameters, decodes the validation
    /// split and builds the gate.
    pub fn from_package(
        package: ModelPackage,
        artifacts_root: &Path,
        engine_cfg: &WorkerEngineConfig,
        worker_id: &str,
        sample_cache_bytes: u64,
    ) -> anyhow::Result<Trainer> {
        let ModelPackage {
            model,
            files,
            global,
            plan,
            validation,
        } = package;
        anyhow::ensure!(plan.epochs >= 1, "plan: epochs must be at least 1");
        anyhow::ensure!(plan.batch_size >= 1, "plan: batch_size must be at least 1");
        let manifest = artifacts::check_package(&model, &files).context("artifact files")?;
        let mut files = files;
        artifacts::with_initial_parameters(&manifest, &mut files, &global.parameters);
        anyhow::ensure!(
            manifest.inputs.len() == 1,
            "model `{model}` has {} data inputs; the worker feeds exactly one",
            manifest.inputs.len()
        );
        let optimizer: OptimizerConfig = serde_json::from_str(&plan.optimizer_json)
            .context("plan: optimizer_json is not a valid optimizer")?;
        let gate = LossGate::new(plan.gate.clone()).context("plan: gate")?;
        let dir = artifacts::write_package(artifacts_root, &model, &files)?;
        drop(files);
        let config = EngineConfig {
            ort_library: engine_cfg.ort_library.clone(),
            intra_op_threads: engine_cfg.intra_op_threads,
            seed: plan.seed,
            optimizer,
        };
        let mut engine = Engine::load(&dir, &config)
            .with_context(|| format!("load the artifacts in {}", dir.display()))?;
        engine
            .set_parameters(&global.parameters)
            .with_context(|| format!("global version {}", global.version))?;
        let sample_shape = sample_shape(engine.manifest());
        let validation = decode_data(
            "validation split",
            &validation,
            engine.manifest(),
            &sample_shape,
        )
        .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!validation.is_empty(), "the validation split is empty");
        let shuffle_seed = plan.seed ^ fnv1a(worker_id.as_bytes());
        Ok(Trainer {
            base: Base {
                version: global.version,
                params: global.parameters,
            },
            engine,
            model,
            validation,
            sample_shape,
            gate,
            plan,
            shuffle_seed,
            rounds_done: 0,
            cache: SampleCache::new(sample_cache_bytes),
        })
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model's parameter count.
    pub fn parameter_count(&self) -> usize {
        self.base.params.len()
    }

    /// The global version the local model is based on.
    pub fn base_version(&self) -> u64 {
        self.base.version
    }

    /// Samples in the validation split.
    pub fn validation_len(&self) -> usize {
        self.validation.len()
    }

    /// The plan in force.
    pub fn plan(&self) -> &TrainingPlan {
        &self.plan
    }

    /// One local round: adopt `newer` (if given and newer than the base),
    /// train the plan's epochs over the shard, evaluate, gate, and idle to
    /// emulate the slowdown. Checks `cancel` between batches.
    pub fn run_round(
        &mut self,
        shard: ShardAssignment,
        arrived: Instant,
        newer: Option<GlobalModel>,
        who: &Identity,
        cancel: &AtomicBool,
    ) -> Result<RoundOutcome, RoundError> {
        let started = Instant::now();
        let queued = started.saturating_duration_since(arrived);
        let shard_id = shard.shard_id;
        let by_reference = shard.by_reference();
        let origin = format!("shard {shard_id}");
        let data = decode_data(
            &origin,
            &shard.data,
            self.engine.manifest(),
            &self.sample_shape,
        )
        .map_err(|reason| RoundError::BadShard { shard_id, reason })?;
        drop(shard.data);
        let data = if by_reference {
            self.cache
                .resolve(&origin, &shard.samples, &shard.fresh, data, shard.keep)
                .map_err(|e| match e {
                    ResolveError::Missing { missing, .. } => {
                        RoundError::CacheMiss { shard_id, missing }
                    }
                    ResolveError::Malformed(reason) => RoundError::BadShard { shard_id, reason },
                })?
        } else {
            data
        };
        tracing::debug!(
            shard = shard_id,
            samples = data.len(),
            cached = self.cache.len(),
            "shard ready"
        );
        if data.is_empty() {
            return Err(RoundError::BadShard {
                shard_id,
                reason: "no samples".into(),
            });
        }
        if let Some(global) = newer.filter(|g| g.version > self.base.version) {
            self.adopt(&global).map_err(RoundError::Failed)?;
        }

        let compute_start = Instant::now();
        let prepare = compute_start - started;
        let start_params = self.engine.parameters().to_vec();
        if let Err(e) = self.train(&data, cancel) {
            if matches!(e, RoundError::Cancelled) {
                return Err(e);
            }
            // A diverged step leaves the model where the round started, with
            // a fresh optimizer: the round is reported as minor.
            tracing::warn!("training failed, round {} rolled back: {e}", shard.round);
            self.engine
                .set_parameters(&start_params)
                .map_err(|e| RoundError::Failed(e.into()))?;
            self.engine.reset_optimizer();
        }
        let (loss, accuracy) = self.evaluate().map_err(RoundError::Failed)?;
        let compute = compute_start.elapsed();

        let (major, decision) = self.judge(loss)?;
        let idle = rounds::emulated_idle(compute, who.slowdown);
        let timing = RoundTiming {
            queued_secs: queued.as_secs_f64(),
            prepare_secs: prepare.as_secs_f64(),
            compute_secs: compute.as_secs_f64(),
            idle_secs: idle.as_secs_f64(),
        };
        let update = if major {
            let delta = rounds::delta(self.engine.parameters(), &self.base);
            rounds::mark_published(self.engine.parameters(), &mut self.base);
            Some(UpdateDelta {
                worker_id: who.worker_id.clone(),
                incarnation: who.incarnation,
                round: shard.round,
                base_version: self.base.version,
                samples: data.len() as u64,
                validation_loss: loss,
                timing,
                delta,
            })
        } else {
            None
        };

        if !idle.is_zero() {
            tracing::info!(
                "{}",
                rounds::slowdown_statement(who.slowdown, compute, idle)
            );
            sleep_unless(idle, cancel)?;
        }
        self.rounds_done += 1;
        let report = RoundReport {
            worker_id: who.worker_id.clone(),
            incarnation: who.incarnation,
            round: shard.round,
            shard_id,
            samples: data.len() as u64,
            epochs: self.plan.epochs,
            compute_secs: compute.as_secs_f64(),
            emulated_idle_secs: idle.as_secs_f64(),
            round_secs: 0.0,
            validation_loss: loss,
            validation_accuracy: accuracy,
            major,
            statistic: decision.as_ref().and_then(|d| d.z.or(d.t)),
            threshold: decision.as_ref().map(|d| d.threshold).unwrap_or(0.0),
            base_version: self.base.version,
            update_bytes: 0,
            timing,
            upload_secs: 0.0,
        };
        Ok(RoundOutcome {
            report,
            update,
            decision,
            started,
        })
    }

    /// Adopts a global model at a round boundary (see [`rounds::adopt`]).
    fn adopt(&mut self, global: &GlobalModel) -> anyhow::Result<()> {
        let mut local = self.engine.parameters().to_vec();
        let from = self.base.version;
        rounds::adopt(
            &mut local,
            &mut self.base,
            global.version,
            &global.parameters,
        )?;
        self.engine.set_parameters(&local)?;
        tracing::info!("adopted global version {} (was {from})", global.version);
        Ok(())
    }

    /// The plan's epochs over `data`, shuffled per epoch from the seed.
    fn train(&mut self, data: &Dataset, cancel: &AtomicBool) -> Result<(), RoundError> {
        let options = BatchOptions::shuffled(self.plan.batch_size as usize, self.shuffle_seed);
        let (mut features, mut labels) = (Vec::new(), Vec::new());
        for e in 0..u64::from(self.plan.epochs) {
            let epoch = self.rounds_done * u64::from(self.plan.epochs) + e;
            let mut batches =
                Batches::over(data, options, epoch).map_err(|e| RoundError::Failed(e.into()))?;
            while batches.next_into(&mut features, &mut labels).is_some() {
                if cancel.load(Ordering::Relaxed) {
                    return Err(RoundError::Cancelled);
                }
                self.engine
                    .train_step(&Batch::new(&features, &labels))
                    .map_err(|e| RoundError::Failed(e.into()))?;
            }
        }
        Ok(())
    }

    /// Mean loss and accuracy over the validation split.
    fn evaluate(&mut self) -> anyhow::Result<(f64, f64)> {
        let (mut loss_sum, mut correct, mut counted) = (0f64, 0usize, 0usize);
        for b in Batches::over(&self.validation, BatchOptions::sequential(EVAL_BATCH), 0)? {
            let e = self
                .engine
                .evaluate(&Batch::new(b.features(), b.labels()))
                .context("evaluate on the validation split")?;
            loss_sum += f64::from(e.loss) * e.counted as f64;
            correct += e.correct;
            counted += e.counted;
        }
        anyhow::ensure!(counted > 0, "the validation split has no labelled samples");
        Ok((loss_sum / counted as f64, correct as f64 / counted as f64))
    }

    /// Major or minor: the gate decides when the plan gates updates,
    /// otherwise every round is major (the gate still reports its statistic).
    fn judge(&mut self, loss: f64) -> Result<(bool, Option<GateDecision>), RoundError> {
        match self.gate.observe(loss) {
            Ok(d) => Ok((!self.plan.gate_updates || d.major, Some(d))),
            Err(e) if self.plan.gate_updates => Err(RoundError::Failed(e.into())),
            Err(_) => Ok((true, None)),
        }
    }
}

/// The per-sample input shape of the model's (single) data input.
fn sample_shape(manifest: &Manifest) -> Vec<usize> {
    manifest
        .inputs
        .first()
        .map(|i| {
            i.shape
                .iter()
                .skip(1)
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes wire bytes and fits them to the model's input: same values per
/// sample (reshaped when only the shape differs), labels within the classes.
pub fn decode_data(
    origin: &str,
    bytes: &[u8],
    manifest: &Manifest,
    sample_shape: &[usize],
) -> Result<Dataset, String> {
    let ds = Dataset::from_bytes(origin, bytes, &Limits::default()).map_err(|e| e.to_string())?;
    let want: usize = sample_shape.iter().product();
    if ds.sample_len() != want {
        return Err(format!(
            "{origin}: samples have {} values (shape {:?}), the model `{}` takes {want} (shape {sample_shape:?})",
            ds.sample_len(),
            ds.sample_shape(),
            manifest.model
        ));
    }
    if ds.num_classes() > manifest.num_classes {
        return Err(format!(
            "{origin}: {} classes, the model `{}` has {}",
            ds.num_classes(),
            manifest.model,
            manifest.num_classes
        ));
    }
    if ds.sample_shape() == sample_shape {
        return Ok(ds);
    }
    ds.reshape(sample_shape.to_vec()).map_err(|e| e.to_string())
}

/// Sleeps `total`, in short slices, returning early (as cancelled) when `cancel` is set.
fn sleep_unless(total: Duration, cancel: &AtomicBool) -> Result<(), RoundError> {
    let end = Instant::now() + total;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(RoundError::Cancelled);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// FNV-1a, to give each worker its own shuffling stream from the plan's seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
