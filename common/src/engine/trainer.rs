//! The training engine: a loaded model, its parameters as one flat `f32`
//! buffer, and an optimizer applied in Rust.

use std::ops::Range;
use std::path::Path;

use ndarray::{ArrayViewD, IxDyn};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch::Batch;
use super::config::EngineConfig;
use super::error::{EngineError, Result};
use super::manifest::Manifest;
use super::model::{self, Model};
use super::optimizer::{Optimizer, OptimizerConfig};

/// The result of evaluating one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean loss over the samples whose label is not -1.
    pub loss: f32,
    /// `correct / counted` (0 when nothing was counted).
    pub accuracy: f32,
    /// Samples whose logits' arg-max equals the label.
    pub correct: usize,
    /// Samples with a label other than -1.
    pub counted: usize,
}

/// Trains one model from lowered ONNX Runtime training artifacts.
///
/// ```no_run
/// # fn main() -> Result<(), common::engine::EngineError> {
/// use common::engine::{Batch, Engine, EngineConfig};
/// let mut engine = Engine::load("examples/artifacts/mlp".as_ref(), &EngineConfig::default())?;
/// let (x, y) = (vec![0.0f32; 64 * 784], vec![3i64; 64]);
/// let loss = engine.train_step(&Batch::new(&x, &y))?;
/// let eval = engine.evaluate(&Batch::new(&x, &y))?;
/// println!("loss {loss}, accuracy {}", eval.accuracy);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Engine {
    model: Model,
    /// All parameters, flat, in manifest order.
    params: Vec<f32>,
    /// Each parameter's range in `params` (manifest order).
    ranges: Vec<Range<usize>>,
    optimizer: Optimizer,
    seed: u64,
}

impl Engine {
    /// Loads the artifact folder `dir` (with its `manifest.json`), starting
    /// from the folder's initial parameters and `config.optimizer`.
    pub fn load(dir: &Path, config: &EngineConfig) -> Result<Engine> {
        let model = Model::load(dir, config)?;
        let params = model.initial_parameters().to_vec();
        let ranges = model
            .manifest()
            .parameters
            .iter()
            .map(|p| p.range())
            .collect();
        let optimizer = Optimizer::new(config.optimizer.clone(), params.len())?;
        Ok(Engine {
            model,
            params,
            ranges,
            optimizer,
            seed: config.seed,
        })
    }

    /// The manifest of the loaded artifacts.
    pub fn manifest(&self) -> &Manifest {
        self.model.manifest()
    }

    /// The artifact folder.
    pub fn dir(&self) -> &Path {
        self.model.dir()
    }

    /// The optimizer (its configuration and step count).
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// Replaces the optimizer (fresh state).
    pub fn set_optimizer(&mut self, config: OptimizerConfig) -> Result<()> {
        self.optimizer = Optimizer::new(config, self.params.len())?;
        Ok(())
    }

    /// Changes the learning rate, keeping the optimizer's state.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        self.optimizer.set_learning_rate(lr)
    }

    /// Forgets the optimizer's state (moments, momentum, step count).
    pub fn reset_optimizer(&mut self) {
        self.optimizer.reset();
    }

    /// One training step: gradients of the loss on `batch`, then one
    /// optimizer update. Returns the loss before the update.
    ///
    /// On any error — bad batch, non-finite loss — the parameters and the
    /// optimizer state are left unchanged.
    pub fn train_step(&mut self, batch: &Batch) -> Result<f32> {
        batch.validate(self.model.manifest())?;
        let Engine {
            model,
            params,
            ranges,
            optimizer,
            ..
        } = self;
        let run = model.run_training(batch, params)?;
        let loss = run.loss()?;
        if !loss.is_finite() {
            return Err(EngineError::Diverged { loss });
        }
        // Read (and size-check) every gradient before touching any parameter.
        let grads = ranges
            .iter()
            .enumerate()
            .map(|(j, r)| run.gradient(j, r.len()))
            .collect::<Result<Vec<&[f32]>>>()?;
        let step = optimizer.begin_step();
        for (r, g) in ranges.iter().zip(grads) {
            optimizer.update(&step, r.start, &mut params[r.clone()], g);
        }
        Ok(loss)
    }

    /// Loss and flat gradient (manifest order) on `batch`, without updating
    /// anything; for parity checks and for callers that aggregate gradients.
    pub fn gradients(&mut self, batch: &Batch) -> Result<(f32, Vec<f32>)> {
        batch.validate(self.model.manifest())?;
        let Engine {
            model,
            params,
            ranges,
            ..
        } = self;
        let run = model.run_training(batch, params)?;
        let loss = run.loss()?;
        let mut flat = vec![0.0f32; params.len()];
        for (j, r) in ranges.iter().enumerate() {
            flat[r.clone()].copy_from_slice(run.gradient(j, r.len())?);
        }
        Ok((loss, flat))
    }

    /// Loss and accuracy on `batch` with the eval graph. Samples labelled -1
    /// are ignored by both.
    pub fn evaluate(&mut self, batch: &Batch) -> Result<Evaluation> {
        Ok(self.evaluate_with_logits(batch)?.0)
    }

    /// As [`Engine::evaluate`], also returning the logits (`[batch, classes]`, flat).
    pub fn evaluate_with_logits(&mut self, batch: &Batch) -> Result<(Evaluation, Vec<f32>)> {
        batch.validate(self.model.manifest())?;
        let classes = self.model.manifest().num_classes;
        let Engine { model, params, .. } = self;
        let (outputs, loss_pos, logits_pos) = model.run_eval(batch, params)?;
        let loss = model::scalar(&outputs, loss_pos, "eval loss")?;
        let (_, logits) = outputs[logits_pos]
            .try_extract_tensor::<f32>()
            .map_err(|e| EngineError::runtime("reading the logits", e))?;
        if logits.len() != batch.len() * classes {
            return Err(EngineError::Runtime {
                context: "reading the logits".into(),
                message: format!(
                    "{} values for {} samples x {classes} classes",
                    logits.len(),
                    batch.len()
                ),
            });
        }
        let (mut correct, mut counted) = (0usize, 0usize);
        for (row, &label) in logits.chunks_exact(classes).zip(batch.labels()) {
            if label < 0 {
                continue;
            }
            counted += 1;
            if usize::try_from(label).ok() == Some(argmax(row)) {
                correct += 1;
            }
        }
        let accuracy = if counted == 0 {
            0.0
        } else {
            correct as f32 / counted as f32
        };
        let eval = Evaluation {
            loss,
            accuracy,
            correct,
            counted,
        };
        Ok((eval, logits.to_vec()))
    }

    /// All parameters as one flat buffer (manifest order).
    pub fn parameters(&self) -> &[f32] {
        &self.params
    }

    /// Replaces all parameters; the length must match and every value be
    /// finite. The optimizer state is kept (call
    /// [`Engine::reset_optimizer`] to drop it).
    pub fn set_parameters(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.params.len() {
            return Err(EngineError::ParametersInvalid {
                reason: format!(
                    "{} values given, the model has {} parameters",
                    values.len(),
                    self.params.len()
                ),
            });
        }
        if let Some(i) = super::batch::first_non_finite(values) {
            return Err(EngineError::ParametersInvalid {
                reason: format!("value {} at index {i} is not finite", values[i]),
            });
        }
        self.params.copy_from_slice(values);
        Ok(())
    }

    /// Back to the artifacts' initial parameters, with a fresh optimizer state.
    pub fn reset_parameters(&mut self) {
        self.params.copy_from_slice(self.model.initial_parameters());
        self.optimizer.reset();
    }

    /// One parameter as an `ndarray` view, by name.
    pub fn parameter(&self, name: &str) -> Option<ArrayViewD<'_, f32>> {
        let spec = self.manifest().parameter(name)?;
        ArrayViewD::from_shape(IxDyn(&spec.dims()), &self.params[spec.range()]).ok()
    }

    /// Every parameter as `(name, view)`, in manifest order.
    pub fn named_parameters(&self) -> Vec<(&str, ArrayViewD<'_, f32>)> {
        self.manifest()
            .parameters
            .iter()
            .filter_map(|spec| {
                ArrayViewD::from_shape(IxDyn(&spec.dims()), &self.params[spec.range()])
                    .ok()
                    .map(|view| (spec.name.as_str(), view))
            })
            .collect()
    }

    /// A permutation of `0..n` for epoch `epoch`, fixed by the configured
    /// seed: the same seed and epoch always give the same order.
    pub fn epoch_order(&self, epoch: u64, n: usize) -> Vec<usize> {
        epoch_order(self.seed, epoch, n)
    }
}

/// A permutation of `0..n` determined by `seed` and `epoch` (ChaCha8).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Index of the largest value (the first on ties; NaN never wins).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_can_move_to_a_training_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Engine>();
    }

    #[test]
    fn argmax_takes_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.0, 2.0]), 2);
        assert_eq!(argmax(&[5.0]), 0);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(7, 0, 100);
        assert_eq!(a, epoch_order(7, 0, 100));
        assert_ne!(a, epoch_order(7, 1, 100));
        assert_ne!(a, epoch_order(8, 0, 100));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
