//! `manifest.json`: the contract between the artifact tool and the engine.
//!
//! The format is specified in `docs/artifacts-manifest.md`. This module
//! parses it and checks that it is consistent with itself (parameter
//! offsets contiguous, sizes matching shapes, names unique); checking it
//! against the graphs is [`super::model`]'s job. Unknown fields are ignored
//! (the tool may add informational ones); `format_version` guards real changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};

/// The manifest format version this engine reads.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside an artifact folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Element types a graph input may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    Float32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit signed integer.
    Int32,
}

/// A data or label input of the graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Graph input name.
    pub name: String,
    /// Shape; -1 marks the batch dimension.
    pub shape: Vec<i64>,
    /// Element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// Elements per sample: the product of the non-batch dimensions.
    pub fn per_sample_len(&self) -> usize {
        self.shape
            .iter()
            .skip(1)
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .product()
    }

    /// The concrete shape for a batch of `n` samples.
    pub fn batch_shape(&self, n: usize) -> Vec<i64> {
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = i64::try_from(n).unwrap_or(i64::MAX);
        }
        shape
    }
}

/// One trainable parameter and its place in the flat buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterSpec {
    /// Parameter (and graph input) name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Element count.
    pub numel: usize,
}

impl ParameterSpec {
    /// The element range in the flat buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.numel
    }

    /// The shape as `usize` dimensions.
    pub fn dims(&self) -> Vec<usize> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect()
    }
}

/// Which training-graph output holds which parameter's gradient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientOutput {
    /// Parameter name.
    pub parameter: String,
    /// Graph output name.
    pub output: String,
}

/// Outputs of the lowered training graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutputs {
    /// The scalar loss.
    pub loss: String,
    /// One gradient output per parameter.
    pub gradients: Vec<GradientOutput>,
}

/// Outputs of the eval graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOutputs {
    /// The scalar loss.
    pub loss: String,
    /// The logits, `[batch, num_classes]`.
    pub logits: String,
}

/// The parsed `manifest.json` of one artifact folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; must be [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Model name (e.g. `mlp`).
    pub model: String,
    /// Lowered training graph file, relative to the folder.
    pub training_graph: PathBuf,
    /// Eval graph file, relative to the folder.
    pub eval_graph: PathBuf,
    /// Flat little-endian `f32` parameter file, relative to the folder.
    pub initial_parameters: PathBuf,
    /// Data inputs, in the order a [`super::Batch`] supplies them.
    pub inputs: Vec<TensorSpec>,
    /// The label input.
    pub label: TensorSpec,
    /// Number of classes.
    pub num_classes: usize,
    /// Trainable parameters in flat-buffer order.
    pub parameters: Vec<ParameterSpec>,
    /// Training graph outputs.
    pub train_outputs: TrainOutputs,
    /// Eval graph outputs.
    pub eval_outputs: EvalOutputs,
    /// How the artifacts were made (informational).
    #[serde(default)]
    pub generator: serde_json::Value,
}

impl Manifest {
    /// Reads and checks `<dir>/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = EngineError::read_artifact(&path)?;
        Manifest::parse(&bytes, &path)
    }

    /// Parses and checks manifest bytes; `path` is used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| EngineError::ManifestInvalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        manifest
            .check()
            .map_err(|reason| EngineError::ManifestInvalid {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(manifest)
    }

    /// Total parameter count (length of the flat buffer).
    pub fn parameter_count(&self) -> usize {
        self.parameters.iter().map(|p| p.numel).sum()
    }

    /// The parameter named `name`.
    pub fn parameter(&self, name: &str) -> Option<&ParameterSpec> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// Internal consistency; the error is the first problem found.
    fn check(&self) -> std::result::Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this engine reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.num_classes < 2 {
            return Err(format!(
                "num_classes must be >= 2, got {}",
                self.num_classes
            ));
        }
        if self.inputs.is_empty() {
            return Err("no data inputs".into());
        }
        for input in &self.inputs {
            if input.dtype != DType::Float32 {
                return Err(format!(
                    "data input `{}` has dtype {:?}; the engine feeds float32 data only",
                    input.name, input.dtype
                ));
            }
            check_batch_shape(input)?;
            // Checked here so that `per_sample_len` cannot overflow later.
            if checked_numel(&input.shape[1..]).is_none() {
                return Err(format!(
                    "data input `{}` shape {:?} has more elements than fit in memory",
                    input.name, input.shape
                ));
            }
            if input.per_sample_len() == 0 {
                return Err(format!(
                    "data input `{}` has an empty sample shape",
                    input.name
                ));
            }
        }
        if self.label.dtype != DType::Int64 || self.label.shape != [-1] {
            return Err(format!(
                "label `{}` must be int64 with shape [-1], got {:?} {:?}",
                self.label.name, self.label.dtype, self.label.shape
            ));
        }
        if self.parameters.is_empty() {
            return Err("no parameters".into());
        }
        let mut names = HashSet::new();
        for name in self
            .inputs
            .iter()
            .map(|i| &i.name)
            .chain([&self.label.name])
            .chain(self.parameters.iter().map(|p| &p.name))
        {
            if !names.insert(name.as_str()) {
                return Err(format!(
                    "name `{name}` is used twice among inputs and parameters"
                ));
            }
        }
        let mut expected_offset = 0usize;
        for p in &self.parameters {
            if p.shape.iter().any(|&d| d < 0) {
                return Err(format!(
                    "parameter `{}` has a negative dimension {:?}",
                    p.name, p.shape
                ));
            }
            let Some(product) = checked_numel(&p.shape) else {
                return Err(format!(
                    "parameter `{}` shape {:?} has more elements than fit in memory",
                    p.name, p.shape
                ));
            };
            if product != p.numel {
                return Err(format!(
                    "parameter `{}`: numel {} but shape {:?} holds {product}",
                    p.name, p.numel, p.shape
                ));
            }
            if p.offset != expected_offset {
                return Err(format!(
                    "parameter `{}`: offset {} but the previous parameters end at {expected_offset}",
                    p.name, p.offset
                ));
            }
            // Checked, so that `range` and `parameter_count` cannot overflow.
            expected_offset = expected_offset.checked_add(p.numel).ok_or_else(|| {
                format!(
                    "parameter `{}`: the parameters hold more elements than fit in memory",
                    p.name
                )
            })?;
        }
        let grads = &self.train_outputs.gradients;
        if grads.len() != self.parameters.len() {
            return Err(format!(
                "{} gradient outputs for {} parameters",
                grads.len(),
                self.parameters.len()
            ));
        }
        for p in &self.parameters {
            if !grads.iter().any(|g| g.parameter == p.name) {
                return Err(format!("no gradient output for parameter `{}`", p.name));
            }
        }
        Ok(())
    }
}

/// The product of non-negative `dims`, or `None` if it overflows `usize`.
fn checked_numel(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

fn check_batch_shape(spec: &TensorSpec) -> std::result::Result<(), String> {
    match spec.shape.split_first() {
        Some((&-1, rest)) if rest.iter().all(|&d| d > 0) => Ok(()),
        _ => Err(format!(
            "input `{}` shape {:?} must be [-1, d1, d2, ...] with positive d",
            spec.name, spec.shape
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "format_version": 1,
            "model": "tiny",
            "training_graph": "training_lowered.onnx",
            "eval_graph": "eval_lowered.onnx",
            "initial_parameters": "initial_parameters.bin",
            "inputs": [{"name": "input", "shape": [-1, 4], "dtype": "float32"}],
            "label": {"name": "labels", "shape": [-1], "dtype": "int64"},
            "num_classes": 3,
            "parameters": [
                {"name": "w", "shape": [3, 4], "offset": 0, "numel": 12},
                {"name": "b", "shape": [3], "offset": 12, "numel": 3}
            ],
            "train_outputs": {"loss": "loss", "gradients": [
                {"parameter": "w", "output": "w_grad"}, {"parameter": "b", "output": "b_grad"}]},
            "eval_outputs": {"loss": "loss", "logits": "logits"},
            "generator": {"opset": 17}
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Manifest> {
        Manifest::parse(v.to_string().as_bytes(), Path::new("manifest.json"))
    }

    #[test]
    fn valid_manifest_parses() {
        let m = parse(&sample()).unwrap();
        assert_eq!(m.parameter_count(), 15);
        assert_eq!(m.inputs[0].per_sample_len(), 4);
        assert_eq!(m.inputs[0].batch_shape(8), vec![8, 4]);
        assert_eq!(m.parameter("b").unwrap().range(), 12..15);
    }

    #[test]
    fn inconsistent_manifests_name_the_problem() {
        type Edit = fn(&mut serde_json::Value);
        let cases: Vec<(Edit, &str)> = vec![
            (|v| v["format_version"] = 2.into(), "format_version"),
            (|v| v["parameters"][1]["offset"] = 11.into(), "offset"),
            (|v| v["parameters"][0]["numel"] = 13.into(), "numel"),
            (|v| v["parameters"][1]["name"] = "w".into(), "used twice"),
            (
                |v| v["train_outputs"]["gradients"][1]["parameter"] = "x".into(),
                "`b`",
            ),
            (
                |v| v["inputs"][0]["shape"] = serde_json::json!([4, 4]),
                "[-1",
            ),
            (|v| v["label"]["dtype"] = "float32".into(), "label"),
            (|v| v["num_classes"] = 1.into(), "num_classes"),
        ];
        for (edit, needle) in cases {
            let mut v = sample();
            edit(&mut v);
            let err = parse(&v).unwrap_err().to_string();
            assert!(err.contains(needle), "expected `{needle}` in: {err}");
        }
    }

    /// Found by the `manifest` fuzz target: shapes whose element count
    /// overflows `usize` panicked in debug builds (`attempt to multiply with
    /// overflow`) and wrapped in release builds, where `[2^32, 2^32]` with
    /// `numel: 0` passed the check.
    #[test]
    fn element_counts_that_overflow_are_rejected() {
        let big = 1i64 << 32;
        let mut v = sample();
        v["inputs"][0]["shape"] = serde_json::json!([-1, big, big]);
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("more elements than fit"), "{err}");

        let mut v = sample();
        v["parameters"][0]["shape"] = serde_json::json!([big, big]);
        v["parameters"][0]["numel"] = 0.into();
        v["parameters"][1]["offset"] = 0.into();
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("more elements than fit"), "{err}");

        // Each parameter fits, their sum does not.
        let half = 1u64 << 63;
        let mut v = sample();
        v["parameters"] = serde_json::json!([
            {"name": "w", "shape": [1i64 << 62, 2], "offset": 0, "numel": half},
            {"name": "b", "shape": [1i64 << 62, 2], "offset": half, "numel": half}
        ]);
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("more elements than fit"), "{err}");
    }

    #[test]
    fn missing_field_is_reported() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("eval_outputs");
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains("eval_outputs"), "{err}");
    }
}
