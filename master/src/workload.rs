//! What the master trains: the dataset and its split, the artifact files it
//! ships, and the evaluation of the global model on the held-out test set.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::data::{BatchOptions, Batches, Dataset, Limits, Shard, Split, SplitSpec};
use common::engine::{Batch, Engine, EngineConfig};
use common::protocol::ArtifactFile;

use crate::config::MasterConfig;

/// The dataset, split into a training pool, the workers' validation pool and
/// the master's test set.
pub struct Workload {
    dataset: Dataset,
    /// Every sample as bytes, once (shards are then copies of rows).
    byte_form: Option<common::data::wire::ByteForm>,
    split: Split,
    seed: u64,
    validation_per_worker: usize,
}

/// Loss and accuracy of the global model on the test set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestResult {
    /// Mean loss.
    pub loss: f64,
    /// Fraction correct.
    pub accuracy: f64,
}

impl Workload {
    /// Loads and splits the dataset named in `cfg`.
    pub fn load(cfg: &MasterConfig) -> anyhow::Result<Self> {
        let d = &cfg.dataset;
        let mut dataset = d
            .source
            .load(&cfg.data_dir, &Limits::default())
            .with_context(|| {
                format!(
                    "load dataset (paths are relative to data_dir `{}`; run examples/prepare_data.sh for mnist_5k)",
                    cfg.data_dir.display()
                )
            })?;
        if let Some(max) = d.scale_max {
            dataset.scale_to_unit(max).context("scale dataset")?;
        }
        let n = dataset.len();
        anyhow::ensure!(
            d.test_samples + d.validation_samples < n,
            "dataset has {n} samples: not enough for {} test + {} validation samples and a training pool",
            d.test_samples,
            d.validation_samples
        );
        let spec = SplitSpec::Counts {
            train: n - d.test_samples - d.validation_samples,
            validation: d.validation_samples,
            test: d.test_samples,
        };
        let split = Split::stratified(dataset.labels(), spec, d.seed).context("split dataset")?;
        Ok(Self {
            byte_form: dataset.byte_form(),
            dataset,
            split,
            seed: d.seed,
            validation_per_worker: d.validation_per_worker,
        })
    }

    /// Samples in the training pool.
    pub fn train_len(&self) -> usize {
        self.split.train.len()
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.dataset.sample_len()
    }

    /// Samples in the test set.
    pub fn test_len(&self) -> usize {
        self.split.test.len()
    }

    /// Wire bytes of training-pool samples at `positions` (positions in the pool).
    pub fn shard_bytes(&self, positions: &[u32]) -> anyhow::Result<Vec<u8>> {
        let pool = self.split.train.indices();
        let indices = positions
            .iter()
            .map(|&p| {
                pool.get(p as usize)
                    .copied()
                    .ok_or_else(|| anyhow::anyhow!("shard position {p} outside the training pool"))
            })
            .collect::<anyhow::Result<Vec<usize>>>()?;
        Ok(self
            .dataset
            .shard_to_bytes_with(&Shard::new(indices), self.byte_form.as_ref())?)
    }

    /// The fixed validation split of `worker`: the same worker id always gets
    /// the same samples, so a restarted worker's gate history stays comparable.
    pub fn validation_bytes(&self, worker: &str) -> anyhow::Result<Vec<u8>> {
        let mut h = DefaultHasher::new();
        worker.hash(&mut h);
        let seed = self.seed ^ h.finish();
        let shard = self
            .split
            .validation
            .shuffled(seed)
            .slice(0, self.validation_per_worker)?;
        Ok(self.dataset.shard_to_bytes(&shard)?)
    }

    /// Evaluates `engine`'s current parameters on the test set.
    pub fn evaluate(&self, engine: &mut Engine, batch_size: usize) -> anyhow::Result<TestResult> {
        let batches = Batches::new(
            &self.dataset,
            &self.split.test,
            BatchOptions::sequential(batch_size),
            0,
        )?;
        let (mut loss_sum, mut correct, mut counted) = (0.0f64, 0usize, 0usize);
        for b in batches {
            let e = engine.evaluate(&Batch::new(b.features(), b.labels()))?;
            loss_sum += f64::from(e.loss) * e.counted as f64;
            correct += e.correct;
            counted += e.counted;
        }
        anyhow::ensure!(counted > 0, "empty test set");
        Ok(TestResult {
            loss: loss_sum / counted as f64,
            accuracy: correct as f64 / counted as f64,
        })
    }
}

/// The files of an artifact folder that workers need (manifest and graphs;
/// the initial parameters travel as the package's global), read once.
pub fn artifact_files(dir: &Path) -> anyhow::Result<(String, Vec<ArtifactFile>)> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "read {} (build the artifacts with examples/build_artifacts.sh)",
            manifest_path.display()
        )
    })?;
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("parse {}", manifest_path.display()))?;
    // The initial parameters stay home: the package's global carries the
    // parameters (the worker writes the file from it), which saves a
    // model's worth of bytes on every package.
    let mut names = vec!["manifest.json".to_string()];
    for key in ["training_graph", "eval_graph"] {
        let name = manifest
            .get(key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow::anyhow!("{}: missing `{key}`", manifest_path.display()))?;
        names.push(name.to_string());
    }
    let mut files = Vec::new();
    for name in names {
        let path: PathBuf = dir.join(&name);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        files.push(ArtifactFile { name, bytes });
    }
    let model = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok((model, files))
}

/// The master's own engine, used only to evaluate the global model.
pub fn evaluation_engine(cfg: &MasterConfig) -> anyhow::Result<Engine> {
    let engine_cfg = EngineConfig {
        ort_library: cfg.model.ort_library.clone(),
        intra_op_threads: cfg.model.intra_op_threads,
        seed: cfg.training.seed,
        optimizer: cfg.training.optimizer.clone(),
    };
    Engine::load(&cfg.model.artifacts, &engine_cfg)
        .with_context(|| format!("load model from {}", cfg.model.artifacts.display()))
}
