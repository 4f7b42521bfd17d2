//! The results table printed at the end, and the master's heartbeat file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Default path of the file the master writes while a run is active.
pub const DEFAULT_STATUS_FILE: &str = "data/status/workers.json";

/// Renders rows as a plain text table with a header and a rule.
/// Cells may hold several lines; the widest line sets the column width.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            let w = cell.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            widths[i] = widths[i].max(w);
        }
    }
    let mut out = String::new();
    let render = |cells: Vec<Vec<&str>>, out: &mut String| {
        let height = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for line in 0..height {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let part = cell.get(line).copied().unwrap_or("");
                if i + 1 == cells.len() {
                    text.push_str(part);
                } else {
                    text.push_str(&format!("{part:<width$}  ", width = widths[i]));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
    };
    render(header.iter().map(|h| vec![*h]).collect(), &mut out);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    for row in rows {
        let cells: Vec<Vec<&str>> = (0..columns)
            .map(|i| row.get(i).map(|c| c.lines().collect()).unwrap_or_default())
            .collect();
        render(cells, &mut out);
    }
    out
}

/// The master's `data/status/workers.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerStatusFile {
    /// The active run.
    pub run_id: String,
    /// When the master last wrote the file (Unix ms).
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Per worker id.
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerStatus>,
}

/// One worker as the master sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerStatus {
    /// Last heartbeat (Unix ms).
    pub last_heartbeat_ms: u64,
    /// State as the master names it ("active", ...).
    #[serde(default)]
    pub state: String,
}

/// Reads the status file; `Ok(None)` when it does not exist (no active run).
pub fn read_status_file(path: &Path) -> anyhow::Result<Option<WorkerStatusFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("{}: cannot read: {e}", path.display())),
    };
    let file = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a worker status file: {e}", path.display()))?;
    Ok(Some(file))
}

/// The "last heartbeat" cell for `worker_id`, which serves run `serving`
/// (from its state file, `None` = idle or unknown). The run of the heartbeat
/// is named, and a status file of another run than the worker serves is
/// flagged.
pub fn heartbeat_cell(
    status: Option<&WorkerStatusFile>,
    worker_id: &str,
    serving: Option<&str>,
    now_ms: u64,
) -> String {
    let Some(file) = status else {
        return "no active run".to_string();
    };
    let cell = heartbeat_of(file, worker_id, now_ms);
    match serving {
        Some(run) if run != file.run_id => format!(
            "{cell}; MISMATCH: the status file is of run {}, the worker serves run {run}",
            file.run_id
        ),
        _ => cell,
    }
}

fn heartbeat_of(file: &WorkerStatusFile, worker_id: &str, now_ms: u64) -> String {
    match file.workers.get(worker_id) {
        Some(w) => {
            let age = now_ms.saturating_sub(w.last_heartbeat_ms) as f64 / 1000.0;
            let state = if w.state.is_empty() {
                String::new()
            } else {
                format!(" ({})", w.state)
            };
            format!(
                "{age:.1}s ago{state}, run {}{}",
                file.run_id,
                stale_note(file, now_ms)
            )
        }
        None => format!("never (run {}{})", file.run_id, stale_note(file, now_ms)),
    }
}

/// A note when the master has not refreshed the status file for a minute
/// (the run may have ended without cleaning up).
fn stale_note(file: &WorkerStatusFile, now_ms: u64) -> String {
    let age = now_ms.saturating_sub(file.updated_at_ms);
    if file.updated_at_ms > 0 && age > 60_000 {
        format!("; status file not updated for {}s", age / 1000)
    } else {
        String::new()
    }
}

/// Now as Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["HOST", "RESULT"],
            &[
                vec!["a".into(), "ok".into()],
                vec!["longer".into(), "failed\nsecond line".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "HOST    RESULT");
        assert_eq!(lines[1], "------  -----------");
        assert_eq!(lines[2], "a       ok");
        assert_eq!(lines[3], "longer  failed");
        assert_eq!(lines[4], "        second line");
    }

    #[test]
    fn heartbeat_cells() {
        let file: WorkerStatusFile = serde_json::from_str(
            r#"{"run_id": "r1", "updated_at_ms": 900,
                "workers": {"w1": {"last_heartbeat_ms": 1000, "state": "active"}}}"#,
        )
        .unwrap();
        assert_eq!(
            heartbeat_cell(Some(&file), "w1", None, 3500),
            "2.5s ago (active), run r1"
        );
        assert_eq!(
            heartbeat_cell(Some(&file), "w2", None, 3500),
            "never (run r1)"
        );
        assert_eq!(heartbeat_cell(None, "w1", None, 0), "no active run");
        assert!(heartbeat_cell(Some(&file), "w1", None, 120_000).contains("not updated for 119s"));
        assert!(!heartbeat_cell(Some(&file), "w1", Some("r1"), 3500).contains("MISMATCH"));
        let other = heartbeat_cell(Some(&file), "w1", Some("r2"), 3500);
        assert!(
            other.contains("MISMATCH: the status file is of run r1, the worker serves run r2"),
            "{other}"
        );
    }
}
