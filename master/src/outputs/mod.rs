//! What a run leaves behind, and what it shows while it runs.
//!
//! - [`metrics`]: `data/runs/<run-id>/metrics.csv`, one row per global version.
//! - [`summary`]: `data/runs/<run-id>/summary.json`, and the check that it
//!   agrees with metrics.csv.
//! - [`plot`]: `data/runs/<run-id>/accuracy.png`, test accuracy and loss over time.
//! - [`central_log`]: `data/centralized-logs/distml-central.txt`, one line per
//!   log record from every node.
//! - [`status_file`]: `data/status/workers.json`, read by `master deploy status`.
//! - [`progress`]: the live progress line on the terminal.
//!
//! None of these talk to Kafka; the master's loop feeds them.

pub mod central_log;
pub mod metrics;
pub mod plot;
pub mod progress;
pub mod status_file;
pub mod summary;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Folder of one run's outputs: `<data_dir>/runs/<run_id>`.
///
/// Fails when `run_id` could escape that folder (empty, `.`/`..`, a path
/// separator or a control character), since it names a directory.
pub fn run_dir(data_dir: &Path, run_id: &str) -> anyhow::Result<PathBuf> {
    let bad = run_id.is_empty()
        || run_id == "."
        || run_id == ".."
        || run_id
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    anyhow::ensure!(
        !bad,
        "run id {run_id:?} cannot name a folder (no '/', '\\', '..' or control characters)"
    );
    Ok(data_dir.join("runs").join(run_id))
}

/// A temporary name beside `path` (same folder, created if missing), ending
/// in `suffix`: `.<name>.tmp-<pid><suffix>`.
fn temp_beside(path: &Path, suffix: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    Ok(dir.join(format!(
        ".{}.tmp-{}{suffix}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Draws a PNG with `draw` into a temporary file beside `path`, then renames
/// it over `path`, so a reader never sees half a picture. (The bitmap
/// encoder picks the format from the extension, so the temporary name ends
/// in `.png`.) Creates the parent folder; the temporary file is removed on
/// failure.
pub fn write_png_atomically(
    path: &Path,
    draw: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp = temp_beside(path, ".png")?;
    let drawn = draw(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
    });
    if drawn.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    drawn
}

/// Writes `bytes` to `path` so readers see the old file or the new one, never
/// a mix: a temporary file in the same folder, synced, then renamed over.
/// Creates the parent folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_beside(path, "")?;
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!("{}: cannot write: {e}", path.display()));
    }
    Ok(())
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds
/// (`2026-11-29T23:59:01.123Z`); out-of-range values render as the epoch.
pub fn rfc3339_utc(ms: u64) -> String {
    utc(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses [`rfc3339_utc`]'s output (any RFC 3339 time) back to Unix ms.
pub fn parse_rfc3339_ms(text: &str) -> anyhow::Result<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    u64::try_from(t.timestamp_millis()).with_context(|| format!("{text:?} is before 1970"))
}

/// Unix milliseconds as a UTC date-time (the epoch when out of range).
fn utc(ms: u64) -> chrono::DateTime<chrono::Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_rejects_escaping_ids() {
        let base = Path::new("data");
        assert_eq!(
            run_dir(base, "demo-1").unwrap(),
            Path::new("data/runs/demo-1")
        );
        for bad in ["", ".", "..", "a/b", "a\\b", "x\ny"] {
            assert!(run_dir(base, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.json");
        write_atomically(&path, b"first version, longer").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_795_996_741_123; // 2026-11-29T23:59:01.123Z
        assert_eq!(rfc3339_utc(ms), "2026-11-29T23:59:01.123Z");
        assert_eq!(parse_rfc3339_ms(&rfc3339_utc(ms)).unwrap(), ms);
        assert!(parse_rfc3339_ms("yesterday").is_err());
    }
}
