//! Shared helpers of the engine integration tests: locating the artifacts
//! built by `examples/build_artifacts.sh`, reading the reference fixture, and
//! comparing tensors the way `docs/artifacts-manifest.md` defines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use common::engine::{Engine, EngineConfig, OptimizerConfig};
use serde_json::Value;

/// The workspace root (parent of `common/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("common/ has a parent")
        .to_path_buf()
}

/// `examples/artifacts/<model>`, which must have been built: a missing folder
/// fails the test with the command to run (never a silent skip).
pub fn artifacts(model: &str) -> PathBuf {
    let dir = workspace().join("examples/artifacts").join(model);
    assert!(
        dir.join("manifest.json").is_file() && dir.join("reference/reference.json").is_file(),
        "artifacts for `{model}` are missing at {}: run examples/build_artifacts.sh",
        dir.display()
    );
    dir
}

/// An engine on `examples/artifacts/<model>` with `optimizer`, one thread.
pub fn engine(model: &str, optimizer: OptimizerConfig) -> Engine {
    let config = EngineConfig {
        optimizer,
        ..EngineConfig::default()
    };
    match Engine::load(&artifacts(model), &config) {
        Ok(e) => e,
        Err(e) => panic!("loading {model}: {e}"),
    }
}

/// Little-endian `f32` file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Little-endian `i64` file.
pub fn read_i64(path: &Path) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The parity fixture of one artifact folder (`reference/`).
pub struct Reference {
    pub dir: PathBuf,
    pub json: Value,
    /// The fixed batch (single data input).
    pub input: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Reference {
    pub fn load(model: &str) -> Reference {
        let dir = artifacts(model).join("reference");
        let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        let inputs = json["inputs"].as_object().expect("reference inputs");
        assert_eq!(inputs.len(), 1, "fixture with one data input expected");
        let input_file = inputs.values().next().unwrap().as_str().unwrap();
        let input = read_f32(&dir.join(input_file));
        let labels = read_i64(&dir.join(json["labels"].as_str().unwrap()));
        Reference {
            dir,
            json,
            input,
            labels,
        }
    }

    pub fn f32_file(&self, key: &str) -> Vec<f32> {
        read_f32(&self.dir.join(key))
    }

    pub fn num(&self, pointer: &str) -> f64 {
        self.json
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("reference.json has no number at {pointer}"))
    }

    pub fn losses(&self, optimizer: &str) -> Vec<f64> {
        self.json["trajectories"][optimizer]["losses"]
            .as_array()
            .unwrap_or_else(|| panic!("no {optimizer} trajectory"))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    }
}

/// `max |a - b| / max |b|` (the manifest doc's per-tensor error).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| f64::from(y.abs())).fold(0.0, f64::max);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// A copy of `examples/artifacts/<model>` (without `reference/`) in a temp
/// folder, for tests that break files.
pub fn scratch_copy(model: &str) -> tempfile::TempDir {
    let src = artifacts(model);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}
