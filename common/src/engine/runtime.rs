//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing is linked at build time, and
//! the stock `libonnxruntime.so` (from the PyPI `onnxruntime` wheel, put in
//! `deploy/ort/lib/` by `deploy/ort/install.sh`) is opened at run time. The
//! path comes from, in order:
//!
//! 1. [`EngineConfig::ort_library`](super::EngineConfig::ort_library);
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. `libonnxruntime.so` or `lib/libonnxruntime.so` next to the executable
//!    (how `master deploy` lays out a remote worker), or
//!    `deploy/ort/lib/libonnxruntime.so` in a folder above it (a cargo build
//!    inside the workspace);
//! 4. `deploy/ort/lib/libonnxruntime.so` in the workspace this crate was
//!    compiled in.
//!
//! A missing or unusable library is a one-line [`EngineError`] that says to
//! run `deploy/ort/install.sh`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use super::error::{EngineError, Result};

/// The library file name the default locations use.
pub const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The environment variable naming the library.
pub const LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// Where the install script puts the library, relative to the workspace.
pub const INSTALL_DIR: &str = "deploy/ort/lib";

/// The loaded library and its ONNX Runtime environment.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The environment every session is created in.
    pub environment: Environment,
    /// The library that was loaded.
    pub library: PathBuf,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The process-wide runtime, loading the library on first use.
///
/// Only a successful load is remembered, so after an error a later call may
/// try another path. Once loaded, the library stays: a later call naming a
/// different path gets the loaded one (ONNX Runtime cannot be loaded twice
/// into a process), and a debug event says so.
pub fn runtime(configured: Option<&Path>) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        note_if_different(rt, configured);
        return Ok(rt);
    }
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = RUNTIME.get() {
        note_if_different(rt, configured);
        return Ok(rt);
    }
    let env_value = std::env::var_os(LIBRARY_ENV).map(PathBuf::from);
    let (path, origin) = resolve_library(configured, env_value.as_deref(), &default_candidates());
    let rt = load(&path, &origin)?;
    tracing::debug!(library = %rt.library.display(), "ONNX Runtime loaded");
    Ok(RUNTIME.get_or_init(|| rt))
}

fn note_if_different(rt: &Runtime, configured: Option<&Path>) {
    if let Some(path) = configured {
        if absolute(path) != rt.library {
            tracing::debug!(
                requested = %path.display(),
                loaded = %rt.library.display(),
                "ONNX Runtime already loaded from another path; keeping it"
            );
        }
    }
}

/// Picks the library path: config, then the environment variable, then the
/// first existing default candidate (else the last candidate, so the error
/// names the canonical install location). Returns the path and where it came
/// from, for error messages.
pub fn resolve_library(
    configured: Option<&Path>,
    env_value: Option<&Path>,
    candidates: &[PathBuf],
) -> (PathBuf, String) {
    if let Some(path) = configured {
        return (absolute(path), "from engine.ort_library".into());
    }
    if let Some(path) = env_value.filter(|p| !p.as_os_str().is_empty()) {
        return (absolute(path), format!("from {LIBRARY_ENV}"));
    }
    let found = candidates.iter().find(|p| p.is_file());
    match found.or(candidates.last()) {
        Some(path) => (path.clone(), "default location".into()),
        None => (
            PathBuf::from(INSTALL_DIR).join(LIBRARY_NAME),
            "default location".into(),
        ),
    }
}

/// The default locations, most specific first.
pub fn default_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(LIBRARY_NAME));
        out.push(dir.join("lib").join(LIBRARY_NAME));
        out.extend(
            dir.ancestors()
                .map(|a| a.join(INSTALL_DIR).join(LIBRARY_NAME)),
        );
    }
    out.push(compiled_workspace().join(INSTALL_DIR).join(LIBRARY_NAME));
    out
}

/// The workspace root this crate was compiled in (the parent of `common/`).
pub fn compiled_workspace() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn load(path: &Path, origin: &str) -> Result<Runtime> {
    if !path.is_file() {
        return Err(EngineError::LibraryNotFound {
            path: path.to_path_buf(),
            origin: origin.to_string(),
        });
    }
    let unusable = |reason: String| EngineError::LibraryUnusable {
        path: path.to_path_buf(),
        reason: one_line(&reason),
    };
    let builder = ort::init_from(path).map_err(|e| unusable(e.to_string()))?;
    let environment = builder
        .with_name("hermes")
        .with_telemetry(false)
        .build()
        .map_err(|e| unusable(e.to_string()))?;
    Ok(Runtime {
        environment,
        library: path.to_path_buf(),
    })
}

/// Loader messages can span lines; errors here are one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_beats_environment_beats_defaults() {
        let cands = vec![
            PathBuf::from("/nonexistent/a.so"),
            PathBuf::from("/nonexistent/b.so"),
        ];
        let (p, o) = resolve_library(
            Some(Path::new("/x/lib.so")),
            Some(Path::new("/y/lib.so")),
            &cands,
        );
        assert_eq!(
            (p, o.contains("ort_library")),
            (PathBuf::from("/x/lib.so"), true)
        );
        let (p, o) = resolve_library(None, Some(Path::new("/y/lib.so")), &cands);
        assert_eq!(
            (p, o.contains(LIBRARY_ENV)),
            (PathBuf::from("/y/lib.so"), true)
        );
        // Nothing exists: the last (canonical) candidate is named.
        let (p, _) = resolve_library(None, Some(Path::new("")), &cands);
        assert_eq!(p, PathBuf::from("/nonexistent/b.so"));
    }

    #[test]
    fn first_existing_default_wins() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join(LIBRARY_NAME);
        std::fs::write(&real, b"x").unwrap();
        let cands = vec![
            dir.path().join("missing.so"),
            real.clone(),
            PathBuf::from("/nonexistent/c.so"),
        ];
        assert_eq!(resolve_library(None, None, &cands).0, real);
    }

    #[test]
    fn relative_config_path_is_made_absolute() {
        let (p, _) = resolve_library(Some(Path::new("lib/x.so")), None, &[]);
        assert!(p.is_absolute());
    }

    #[test]
    fn defaults_end_with_the_compiled_workspace() {
        let c = default_candidates();
        assert_eq!(
            c.last().unwrap(),
            &compiled_workspace().join("deploy/ort/lib/libonnxruntime.so")
        );
    }
}
