//! A mini-batch as the engine takes it: borrowed `f32` inputs plus `i64` labels.
//!
//! Nothing is copied: the slices are handed to ONNX Runtime as tensor views.
//! [`Batch::validate`] checks shape, labels and finiteness before every run,
//! so bad data becomes an [`EngineError`] instead of a crash or a silently
//! wrong gradient.

use ndarray::{ArrayView1, ArrayViewD};

use super::error::{EngineError, Result};
use super::manifest::Manifest;
use super::simd::avx2_dispatch;

/// One mini-batch: one flat `f32` slice per data input of the model (in
/// manifest order, row-major, batch dimension first) and one label per sample.
///
/// The batch size is `labels.len()`. A label of -1 marks a sample that the
/// loss and the accuracy ignore.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    inputs: Vec<&'a [f32]>,
    labels: &'a [i64],
}

impl<'a> Batch<'a> {
    /// A batch for a model with a single data input.
    pub fn new(features: &'a [f32], labels: &'a [i64]) -> Self {
        Batch {
            inputs: vec![features],
            labels,
        }
    }

    /// A batch for a model with several data inputs (manifest order).
    pub fn with_inputs(inputs: Vec<&'a [f32]>, labels: &'a [i64]) -> Self {
        Batch { inputs, labels }
    }

    /// A batch from `ndarray` views; the feature array must be in standard
    /// (row-major, contiguous) layout, its first axis being the batch.
    pub fn from_arrays(features: ArrayViewD<'a, f32>, labels: ArrayView1<'a, i64>) -> Result<Self> {
        let rows = features.shape().first().copied().unwrap_or(0);
        if rows != labels.len() {
            return Err(EngineError::BatchShape {
                input: "features".into(),
                reason: format!("{rows} rows but {} labels", labels.len()),
            });
        }
        let not_contiguous = |what: &str| EngineError::BatchShape {
            input: what.into(),
            reason: "array is not contiguous in standard layout".into(),
        };
        let features = features
            .to_slice()
            .ok_or_else(|| not_contiguous("features"))?;
        let labels = labels.to_slice().ok_or_else(|| not_contiguous("labels"))?;
        Ok(Batch::new(features, labels))
    }

    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels.
    pub fn labels(&self) -> &'a [i64] {
        self.labels
    }

    /// The data inputs, in manifest order.
    pub fn inputs(&self) -> &[&'a [f32]] {
        &self.inputs
    }

    /// Checks the batch against the model: input count and lengths, labels in
    /// `-1..num_classes`, all values finite.
    pub fn validate(&self, manifest: &Manifest) -> Result<()> {
        let n = self.labels.len();
        if n == 0 {
            return Err(EngineError::EmptyBatch);
        }
        if self.inputs.len() != manifest.inputs.len() {
            return Err(EngineError::BatchShape {
                input: manifest.label.name.clone(),
                reason: format!(
                    "the model takes {} data input(s), the batch has {}",
                    manifest.inputs.len(),
                    self.inputs.len()
                ),
            });
        }
        for (spec, data) in manifest.inputs.iter().zip(&self.inputs) {
            let per_sample = spec.per_sample_len();
            if data.len() != n * per_sample {
                return Err(EngineError::BatchShape {
                    input: spec.name.clone(),
                    reason: format!(
                        "{} labels need {} values ({n} x {per_sample} for shape {:?}), found {}{}",
                        n,
                        n * per_sample,
                        spec.shape,
                        data.len(),
                        if per_sample > 0 && data.len() % per_sample == 0 {
                            format!(" ({} samples)", data.len() / per_sample)
                        } else {
                            String::new()
                        }
                    ),
                });
            }
            if let Some(index) = first_non_finite(data) {
                return Err(EngineError::NonFiniteInput {
                    input: spec.name.clone(),
                    index,
                    value: data[index],
                });
            }
        }
        let classes = i64::try_from(manifest.num_classes).unwrap_or(i64::MAX);
        if let Some((index, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < -1 || l >= classes)
        {
            return Err(EngineError::LabelOutOfRange {
                index,
                label,
                num_classes: manifest.num_classes,
            });
        }
        Ok(())
    }
}

avx2_dispatch! {
    /// Index of the first NaN or infinity, if any.
    ///
    /// A value is non-finite exactly when its bits without the sign are at
    /// least those of +inf. Blocks are scanned branch-free (vectorized); only
    /// a block that trips the test is searched element-wise. A few
    /// microseconds per MNIST batch.
    pub fn first_non_finite(data: &[f32]) -> Option<usize> => first_non_finite_kernel
}

#[inline(always)]
fn first_non_finite_kernel(data: &[f32]) -> Option<usize> {
    const ABS: u32 = 0x7fff_ffff;
    const INF: u32 = 0x7f80_0000;
    const BLOCK: usize = 1024;
    for (b, block) in data.chunks(BLOCK).enumerate() {
        let bad = block
            .iter()
            .fold(0u32, |acc, v| acc | u32::from(v.to_bits() & ABS >= INF));
        if bad != 0 {
            let i = block.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Some(b * BLOCK + i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_non_finite_value() {
        let mut v = vec![0.5f32; 1000];
        assert_eq!(first_non_finite(&v), None);
        v[700] = f32::INFINITY;
        v[900] = f32::NAN;
        assert_eq!(first_non_finite(&v), Some(700));
        v[3] = f32::NEG_INFINITY;
        assert_eq!(first_non_finite(&v), Some(3));
        assert_eq!(first_non_finite(&[f32::MAX, f32::MIN, 0.0, -0.0]), None);
    }
}
