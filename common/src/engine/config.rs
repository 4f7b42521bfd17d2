//! Engine settings: where ONNX Runtime lives, threads, seed, optimizer.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::optimizer::OptimizerConfig;

/// Settings of the training engine (the `engine` section of a worker's config).
///
/// Every field has a default, so `{}` is a valid engine section; unknown
/// fields are rejected so that a typo does not silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Path of `libonnxruntime.so`. When absent: the `ORT_DYLIB_PATH`
    /// environment variable, else `deploy/ort/lib/libonnxruntime.so` found next
    /// to (or above) the executable, else in the workspace this crate was built
    /// from. `deploy/ort/install.sh` puts the library there.
    pub ort_library: Option<PathBuf>,
    /// Threads ONNX Runtime may use inside one operator; 0 lets ONNX Runtime
    /// choose (one per physical core). Workers sharing a machine want 1.
    pub intra_op_threads: usize,
    /// Seed for everything random the engine does (e.g. [`super::epoch_order`]),
    /// so that runs repeat exactly.
    pub seed: u64,
    /// The optimizer applied after each gradient computation.
    pub optimizer: OptimizerConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ort_library: None,
            intra_op_threads: 1,
            seed: 42,
            optimizer: OptimizerConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_defaults() {
        let cfg: EngineConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, EngineConfig::default());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = serde_json::from_str::<EngineConfig>(r#"{"intra_threads": 2}"#).unwrap_err();
        assert!(err.to_string().contains("intra_threads"), "{err}");
    }

    #[test]
    fn optimizer_is_tagged() {
        let cfg: EngineConfig =
            serde_json::from_str(r#"{"optimizer": {"kind": "sgd", "lr": 0.1}, "seed": 7}"#)
                .unwrap();
        assert_eq!(cfg.seed, 7);
        assert!(matches!(cfg.optimizer, OptimizerConfig::Sgd(ref c) if c.lr == 0.1));
    }
}
