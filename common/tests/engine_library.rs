//! Loading the ONNX Runtime library: a missing file, a file that is not a
//! library, and a library that is not ONNX Runtime each give a one-line error
//! that says to run deploy/ort/install.sh; afterwards the real library (from
//! deploy/ort/lib, installed by that script) still loads. One test, because
//! the library is loaded once per process and these steps build on each other.

use std::path::Path;

use common::engine::runtime::{self, compiled_workspace};
use common::engine::EngineError;

fn one_line_with_hint(err: &EngineError) -> String {
    let text = err.to_string();
    println!("{text}");
    assert!(!text.contains('\n'), "not one line: {text}");
    assert!(
        text.contains("deploy/ort/install.sh"),
        "no install hint: {text}"
    );
    text
}

#[test]
fn bad_libraries_are_clear_errors_then_the_real_one_loads() {
    let missing = Path::new("/nonexistent/libonnxruntime.so");
    let err = runtime::runtime(Some(missing)).unwrap_err();
    assert!(matches!(err, EngineError::LibraryNotFound { .. }));
    assert!(one_line_with_hint(&err).contains("/nonexistent/libonnxruntime.so"));

    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("libonnxruntime.so");
    std::fs::write(&text_file, "this is not a shared library\n").unwrap();
    let err = runtime::runtime(Some(&text_file)).unwrap_err();
    assert!(
        matches!(err, EngineError::LibraryUnusable { .. }),
        "{err:?}"
    );
    one_line_with_hint(&err);

    // A real shared library that is not ONNX Runtime.
    let other = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.is_file());
    if let Some(other) = other {
        let err = runtime::runtime(Some(other)).unwrap_err();
        assert!(one_line_with_hint(&err).contains("OrtGetApiBase"), "{err}");
    }

    let installed = compiled_workspace().join("deploy/ort/lib/libonnxruntime.so");
    assert!(
        installed.is_file(),
        "{} is missing: run deploy/ort/install.sh",
        installed.display()
    );
    let rt = runtime::runtime(Some(&installed)).unwrap();
    assert_eq!(rt.library, installed);
    // Loaded once: later calls reuse it, whatever they ask for.
    let again = runtime::runtime(Some(missing)).unwrap();
    assert!(std::ptr::eq(rt, again));
}
