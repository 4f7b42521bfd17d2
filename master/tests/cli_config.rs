//! Configuration errors: both binaries exit non-zero with one line naming the
//! file and the field.

use std::path::Path;
use std::process::Command;

fn sibling_binary(name: &str) -> std::path::PathBuf {
    let master = Path::new(env!("CARGO_BIN_EXE_master"));
    let path = master.with_file_name(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Runs `bin --conf <file with text>` and returns (success, stderr).
fn run_with_config(bin: &Path, text: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("conf.json");
    if let Some(text) = text {
        std::fs::write(&path, text).expect("write config");
    }
    let out = Command::new(bin)
        .arg("--conf")
        .arg(&path)
        .env_remove("RUST_LOG")
        .output()
        .expect("run binary");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (
        out.status.success(),
        stderr.replace(&path.display().to_string(), "<conf>"),
    )
}

fn check(bin: &Path, text: Option<&str>, expect: &[&str]) {
    let (ok, err) = run_with_config(bin, text);
    assert!(!ok, "{}: must fail for {text:?}", bin.display());
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    assert!(err.contains("<conf>"), "names the file: {err}");
    for e in expect {
        assert!(err.contains(e), "expected `{e}` in: {err}");
    }
}

#[test]
fn master_config_errors_are_one_line_and_named() {
    let master = Path::new(env!("CARGO_BIN_EXE_master"));
    check(master, None, &["cannot read config file"]);
    check(master, Some("{ \"run_id\": "), &["invalid JSON", "line 1"]);
    check(
        master,
        Some(r#"{"min_workerz": 2}"#),
        &["field `min_workerz`", "unknown field"],
    );
    check(
        master,
        Some(r#"{"kafka": {"chunk_bytes": "big"}}"#),
        &["field `kafka.chunk_bytes`", "invalid type"],
    );
}

#[test]
fn worker_config_errors_are_one_line_and_named() {
    let worker = sibling_binary("worker");
    check(&worker, None, &["cannot read config file"]);
    check(&worker, Some("[1, 2"), &["invalid JSON"]);
    check(
        &worker,
        Some(r#"{"kafka": {"brokerz": "x"}}"#),
        &["field `kafka.brokerz`", "unknown field"],
    );
    check(
        &worker,
        Some(r#"{"slowdown": "fast"}"#),
        &["field `slowdown`"],
    );
    check(&worker, Some(r#"{"slowdown": 0.5}"#), &["slowdown must be"]);
}
