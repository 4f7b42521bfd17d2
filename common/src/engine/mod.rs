//! Training with lowered ONNX Runtime training artifacts; optimizers in Rust.
//!
//! Stock ONNX Runtime has no training kernels, so the artifact tool
//! (`examples/artifact_tool`, run by `examples/build_artifacts.sh`) rewrites
//! the training graph into standard operators whose outputs are the loss and
//! the raw gradients, and writes a `manifest.json` describing it
//! (`docs/artifacts-manifest.md`). This module runs that graph on the stock
//! library through `ort` and applies the optimizer itself.
//!
//! * [`config`] — [`EngineConfig`]: library path, threads, seed, optimizer.
//! * [`runtime`] — finding and loading `libonnxruntime.so` once per process.
//! * [`manifest`] — the artifact folder's contract, parsed and self-checked.
//! * [`graph_scan`] — spotting unlowered (training-only) operators in a graph.
//! * [`model`] — graphs opened as sessions and matched against the manifest.
//! * [`batch`] — the borrowed mini-batch and its validation.
//! * [`optimizer`] — SGD, momentum and AdamW with the reference's formulas.
//! * `simd` — AVX2 builds of the hot element-wise loops, picked at run time.
//! * [`trainer`] — [`Engine`]: `train_step`, `gradients`, `evaluate`, parameters.
//! * [`error`] — [`EngineError`].

pub mod batch;
pub mod config;
pub mod error;
pub mod graph_scan;
pub mod manifest;
pub mod model;
pub mod optimizer;
pub mod runtime;
mod simd;
pub mod trainer;

pub use batch::Batch;
pub use config::EngineConfig;
pub use error::EngineError;
pub use manifest::Manifest;
pub use optimizer::{AdamWConfig, AdamWMode, Optimizer, OptimizerConfig, SgdConfig};
pub use trainer::{epoch_order, Engine, Evaluation};
