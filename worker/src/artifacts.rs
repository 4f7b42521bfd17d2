//! Writing the artifact files of a model package to disk, after checking
//! everything about them that came from the network: file and model names,
//! how many files, how large, and that the manifest names only files that
//! were shipped.

use std::path::{Path, PathBuf};

use anyhow::Context;
use common::engine::manifest::MANIFEST_FILE;
use common::engine::Manifest;
use common::protocol::ArtifactFile;

/// Most files a package may carry.
pub const MAX_FILES: usize = 64;
/// Longest file or model name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Largest total size of the files of one package (bytes).
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;

/// Why a name from the network is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("name `{0}...` is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// The name is `.`, `..` or starts with a dot.
    #[error("name `{0}` starts with a dot (hidden file, `.` or `..`)")]
    Dot(String),
    /// The name has a character outside `[A-Za-z0-9._-]` (a separator...).
    #[error("name `{name}` has the character {bad:?}; only [A-Za-z0-9._-] is allowed")]
    BadChar {
        /// The whole name (escaped by the caller's Debug).
        name: String,
        /// The first bad character.
        bad: char,
    },
}

/// Checks that `name` is a plain file name: `[A-Za-z0-9._-]`, not starting
/// with a dot (so never `.` or `..`), at most [`MAX_NAME_LEN`] characters.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.chars().take(32).collect()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            name: name.escape_debug().to_string(),
            bad,
        });
    }
    if name.starts_with('.') {
        return Err(NameError::Dot(name.to_string()));
    }
    Ok(())
}

/// Checks a package's model name and files and parses its manifest; nothing
/// is written. The manifest must name only files of the package.
pub fn check_package(model: &str, files: &[ArtifactFile]) -> anyhow::Result<Manifest> {
    check_name(model).with_context(|| "model name".to_string())?;
    anyhow::ensure!(
        !files.is_empty() && files.len() <= MAX_FILES,
        "the package has {} artifact files; between 1 and {MAX_FILES} are accepted",
        files.len()
    );
    let mut total = 0u64;
    for (i, f) in files.iter().enumerate() {
        check_name(&f.name).with_context(|| format!("artifact file #{i}"))?;
        if files[..i].iter().any(|g| g.name == f.name) {
            anyhow::bail!("artifact file `{}` is in the package twice", f.name);
        }
        total += f.bytes.len() as u64;
    }
    anyhow::ensure!(
        total <= MAX_TOTAL_BYTES,
        "artifact files total {total} bytes, more than the {MAX_TOTAL_BYTES} accepted"
    );
    let manifest_file = files
        .iter()
        .find(|f| f.name == MANIFEST_FILE)
        .with_context(|| format!("the package has no `{MANIFEST_FILE}`"))?;
    let manifest = Manifest::parse(&manifest_file.bytes, Path::new(MANIFEST_FILE))?;
    for (what, path, required) in [
        ("training_graph", &manifest.training_graph, true),
        ("eval_graph", &manifest.eval_graph, true),
        // The package's global carries the parameters; the master leaves
        // this file out (see [`with_initial_parameters`]).
        ("initial_parameters", &manifest.initial_parameters, false),
    ] {
        let name = path.to_str().unwrap_or_default();
        check_name(name).with_context(|| format!("manifest {what} `{}`", path.display()))?;
        anyhow::ensure!(
            !required || files.iter().any(|f| f.name == name),
            "manifest {what} names `{name}`, which is not in the package"
        );
    }
    Ok(manifest)
}

/// Adds the manifest's initial-parameters file, made from `parameters`
/// (f32 little-endian, the file's format), when the package left it out.
pub fn with_initial_parameters(
    manifest: &Manifest,
    files: &mut Vec<ArtifactFile>,
    parameters: &[f32],
) {
    let name = manifest
        .initial_parameters
        .to_str()
        .unwrap_or_default()
        .to_string();
    if files.iter().any(|f| f.name == name) {
        return;
    }
    let bytes = parameters.iter().flat_map(|p| p.to_le_bytes()).collect();
    files.push(ArtifactFile { name, bytes });
}

/// Writes the (already checked) files into `<root>/<model>/`, replacing
/// what was there: they go to a staging folder first, which then takes the
/// old folder's place. Returns the folder.
pub fn write_package(root: &Path, model: &str, files: &[ArtifactFile]) -> anyhow::Result<PathBuf> {
    check_name(model).context("model name")?;
    std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    let target = root.join(model);
    let staging = root.join(format!(".staging-{model}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove {}", staging.display()))?;
    }
    std::fs::create_dir(&staging).with_context(|| format!("create {}", staging.display()))?;
    for f in files {
        check_name(&f.name).context("artifact file")?;
        let path = staging.join(&f.name);
        std::fs::write(&path, &f.bytes).with_context(|| format!("write {}", path.display()))?;
    }
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("remove old {}", target.display()))?;
    }
    std::fs::rename(&staging, &target)
        .with_context(|| format!("move {} to {}", staging.display(), target.display()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: &[u8]) -> ArtifactFile {
        ArtifactFile {
            name: name.into(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn plain_names_pass() {
        for ok in ["manifest.json", "training_lowered.onnx", "a-b_c.1", "X"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn traversal_separators_and_odd_names_are_refused() {
        assert!(matches!(
            check_name("../x"),
            Err(NameError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(check_name(".."), Err(NameError::Dot(_))));
        assert!(matches!(check_name("."), Err(NameError::Dot(_))));
        assert!(matches!(check_name(".hidden"), Err(NameError::Dot(_))));
        assert!(matches!(
            check_name("a\\b"),
            Err(NameError::BadChar { bad: '\\', .. })
        ));
        assert!(matches!(
            check_name("/etc/passwd"),
            Err(NameError::BadChar { .. })
        ));
        assert!(matches!(
            check_name("a b"),
            Err(NameError::BadChar { bad: ' ', .. })
        ));
        assert!(matches!(
            check_name("nul\0"),
            Err(NameError::BadChar { bad: '\0', .. })
        ));
        assert!(matches!(
            check_name("é"),
            Err(NameError::BadChar { bad: 'é', .. })
        ));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert!(matches!(
            check_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(_))
        ));
        assert_eq!(check_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn package_checks_name_count_duplicates_and_manifest() {
        let err = check_package("mlp", &[file("../x", b"1")]).expect_err("refused");
        assert!(format!("{err:#}").contains("../x"), "{err:#}");
        let err = check_package("../mlp", &[file("a", b"1")]).expect_err("refused");
        assert!(format!("{err:#}").contains("model name"), "{err:#}");
        let err = check_package("mlp", &[]).expect_err("refused");
        assert!(err.to_string().contains("0 artifact files"), "{err}");
        let many: Vec<_> = (0..=MAX_FILES)
            .map(|i| file(&format!("f{i}"), b""))
            .collect();
        assert!(check_package("mlp", &many).is_err());
        let err = check_package("mlp", &[file("a", b"1"), file("a", b"2")]).expect_err("dup");
        assert!(err.to_string().contains("twice"), "{err}");
        let err = check_package("mlp", &[file("a", b"1")]).expect_err("no manifest");
        assert!(err.to_string().contains("manifest.json"), "{err}");
        let err = check_package("mlp", &[file("manifest.json", b"{")]).expect_err("bad json");
        assert!(format!("{err:#}").contains("manifest"), "{err:#}");
    }

    #[test]
    fn a_package_without_initial_parameters_gets_them_from_the_global() {
        let manifest = serde_json::json!({
            "format_version": 1,
            "model": "tiny",
            "training_graph": "t.onnx",
            "eval_graph": "e.onnx",
            "initial_parameters": "init.bin",
            "inputs": [{"name": "input", "shape": [-1, 4], "dtype": "float32"}],
            "label": {"name": "labels", "shape": [-1], "dtype": "int64"},
            "num_classes": 3,
            "parameters": [{"name": "b", "shape": [3], "offset": 0, "numel": 3}],
            "train_outputs": {"loss": "loss", "gradients": [{"parameter": "b", "output": "b_grad"}]},
            "eval_outputs": {"loss": "loss", "logits": "logits"},
            "generator": {"opset": 17}
        })
        .to_string();
        let mut files = vec![
            file("manifest.json", manifest.as_bytes()),
            file("t.onnx", b"t"),
            file("e.onnx", b"e"),
        ];
        let m = check_package("tiny", &files).expect("the parameters file may be left out");
        with_initial_parameters(&m, &mut files, &[1.0, -2.0, 0.5]);
        let init = files.iter().find(|f| f.name == "init.bin").expect("made");
        let back: Vec<f32> = init
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, vec![1.0, -2.0, 0.5]);
        // A package that brings its own keeps it.
        let mut again = files.clone();
        with_initial_parameters(&m, &mut again, &[9.0, 9.0, 9.0]);
        assert_eq!(again.len(), files.len());
        // The graphs stay required.
        let err = check_package("tiny", &files[..2]).expect_err("no eval graph");
        assert!(err.to_string().contains("eval_graph"), "{err}");
    }

    #[test]
    fn write_replaces_the_previous_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first =
            write_package(dir.path(), "m", &[file("a", b"1"), file("old", b"x")]).expect("written");
        assert_eq!(std::fs::read(first.join("a")).expect("read"), b"1");
        let second = write_package(dir.path(), "m", &[file("a", b"2")]).expect("written");
        assert_eq!(first, second);
        assert_eq!(std::fs::read(second.join("a")).expect("read"), b"2");
        assert!(!second.join("old").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(leftovers.len(), 1, "staging folder removed");
    }
}
