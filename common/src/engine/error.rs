//! The one error type of `common::engine`.
//!
//! Every variant says what was wrong and, where the user can fix it, how
//! (run `deploy/ort/install.sh`, run `examples/build_artifacts.sh`). Nothing
//! in the engine panics on bad input: a missing file, a manifest that does
//! not match its graph, a batch of the wrong shape, an out-of-range label or
//! a NaN in the data each comes back as one of these.

use std::path::PathBuf;

/// The hint appended to every "library missing or unusable" error.
pub const INSTALL_HINT: &str = "run deploy/ort/install.sh (or point engine.ort_library / ORT_DYLIB_PATH at a libonnxruntime.so)";

/// The hint appended to every "artifacts missing or not lowered" error.
pub const ARTIFACT_HINT: &str =
    "run examples/build_artifacts.sh (the artifact tool) to build and lower the artifacts";

/// Everything that can go wrong while loading artifacts or training.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No ONNX Runtime library at the resolved path.
    #[error("ONNX Runtime library not found at {} ({origin}); {INSTALL_HINT}", path.display())]
    LibraryNotFound {
        /// The path that was tried.
        path: PathBuf,
        /// Where the path came from (config, `ORT_DYLIB_PATH`, default).
        origin: String,
    },

    /// The file exists but is not a usable ONNX Runtime library.
    #[error("cannot use {} as the ONNX Runtime library: {reason}; {INSTALL_HINT}", path.display())]
    LibraryUnusable {
        /// The library path.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },

    /// A file the artifact folder must contain is missing.
    #[error("missing artifact file {}; {ARTIFACT_HINT}", path.display())]
    ArtifactMissing {
        /// The missing file.
        path: PathBuf,
    },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// `manifest.json` is not valid JSON for the manifest format.
    #[error("{}: invalid manifest: {reason}", path.display())]
    ManifestInvalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The manifest and a graph (or the parameter file) disagree.
    #[error("{}: does not match manifest.json: {reason}", path.display())]
    ManifestMismatch {
        /// The graph or data file that disagrees.
        path: PathBuf,
        /// The first disagreement found.
        reason: String,
    },

    /// The graph still holds training-only operators or inputs.
    #[error(
        "{} is an unlowered training graph (found {}); stock ONNX Runtime cannot run it — {ARTIFACT_HINT}",
        path.display(),
        found.join(", ")
    )]
    Unlowered {
        /// The graph file.
        path: PathBuf,
        /// The training-only operators and inputs found (deduplicated).
        found: Vec<String>,
    },

    /// The graph file is not a readable ONNX model.
    #[error("{}: not a readable ONNX model: {reason}", path.display())]
    ModelInvalid {
        /// The graph file.
        path: PathBuf,
        /// What the reader tripped over.
        reason: String,
    },

    /// ONNX Runtime reported an error.
    #[error("ONNX Runtime error while {context}: {message}")]
    Runtime {
        /// What the engine was doing.
        context: String,
        /// ONNX Runtime's message.
        message: String,
    },

    /// A batch holds no samples.
    #[error("empty batch: at least one sample is needed")]
    EmptyBatch,

    /// A batch has the wrong number of inputs or an input of the wrong length.
    #[error("batch input `{input}` has the wrong shape: {reason}")]
    BatchShape {
        /// The input name.
        input: String,
        /// Expected versus found.
        reason: String,
    },

    /// A label is neither a class index nor the ignore value -1.
    #[error("label {label} at sample {index} is out of range: expected 0..{num_classes} or -1 (ignored)")]
    LabelOutOfRange {
        /// Sample index in the batch.
        index: usize,
        /// The label found.
        label: i64,
        /// The model's class count.
        num_classes: usize,
    },

    /// The data holds a NaN or an infinity.
    #[error("batch input `{input}` holds a non-finite value ({value}) at element {index}")]
    NonFiniteInput {
        /// The input name.
        input: String,
        /// Flat element index.
        index: usize,
        /// The value (NaN or ±inf).
        value: f32,
    },

    /// A parameter buffer of the wrong length or with non-finite values was given.
    #[error("parameters rejected: {reason}")]
    ParametersInvalid {
        /// Expected versus found.
        reason: String,
    },

    /// The loss came out NaN or infinite; the parameters were left unchanged.
    #[error("training diverged: the loss is {loss}; parameters left unchanged (lower the learning rate?)")]
    Diverged {
        /// The loss value.
        loss: f32,
    },

    /// An optimizer or engine setting is out of range.
    #[error("invalid engine setting: {reason}")]
    Config {
        /// The setting and why it is rejected.
        reason: String,
    },
}

impl EngineError {
    /// Wraps an ONNX Runtime error with what the engine was doing.
    pub(crate) fn runtime<R>(context: impl Into<String>, err: ort::Error<R>) -> Self {
        EngineError::Runtime {
            context: context.into(),
            message: err.to_string(),
        }
    }

    /// Reads a file, mapping "not found" to [`EngineError::ArtifactMissing`].
    pub(crate) fn read_artifact(path: &std::path::Path) -> Result<Vec<u8>, EngineError> {
        std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                EngineError::ArtifactMissing {
                    path: path.to_path_buf(),
                }
            } else {
                EngineError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
    }
}

/// Shorthand for results in this module.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
