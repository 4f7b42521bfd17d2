//! `data/status/workers.json`: who is alive in the active run, rewritten
//! atomically by the master and read by `master deploy status`
//! (see `deploy::report::WorkerStatusFile` for the reader).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Path of the status file under the data folder.
pub const STATUS_FILE: &str = "status/workers.json";

/// Whether the master still counts a worker in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Heartbeats arrive.
    Active,
    /// Heartbeats stopped for longer than the configured timeout.
    Gone,
}

/// One worker's line in the status file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerLiveness {
    /// Last heartbeat (Unix ms).
    pub last_heartbeat_ms: u64,
    /// Active or gone.
    pub state: WorkerState,
    /// Rounds reported so far.
    pub rounds: u64,
    /// The global version the worker last reported training on.
    pub version: u64,
}

/// The whole file.
#[derive(Serialize)]
struct StatusDocument<'a> {
    run_id: &'a str,
    updated_at_ms: u64,
    workers: &'a BTreeMap<String, WorkerLiveness>,
}

/// Writes the status file of one run.
#[derive(Debug, Clone)]
pub struct StatusFile {
    path: PathBuf,
    run_id: String,
}

impl StatusFile {
    /// The status file `<data_dir>/status/workers.json` of run `run_id`.
    pub fn new(data_dir: &Path, run_id: &str) -> Self {
        Self {
            path: data_dir.join(STATUS_FILE),
            run_id: run_id.to_string(),
        }
    }

    /// Where the file is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with the current state of every worker, stamped now.
    pub fn write(&self, workers: &BTreeMap<String, WorkerLiveness>) -> anyhow::Result<()> {
        self.write_at(workers, crate::deploy::report::now_ms())
    }

    /// [`Self::write`] with an explicit `updated_at_ms`.
    pub fn write_at(
        &self,
        workers: &BTreeMap<String, WorkerLiveness>,
        updated_at_ms: u64,
    ) -> anyhow::Result<()> {
        let doc = StatusDocument {
            run_id: &self.run_id,
            updated_at_ms,
            workers,
        };
        let mut text = serde_json::to_string_pretty(&doc)?;
        text.push('\n');
        super::write_atomically(&self.path, text.as_bytes())
    }

    /// Removes the file at the end of the run, so `master deploy status`
    /// reports no active run. A file that is already gone is fine.
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::anyhow!(
                "{}: cannot remove: {e}",
                self.path.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::report::{heartbeat_cell, read_status_file};

    fn workers() -> BTreeMap<String, WorkerLiveness> {
        BTreeMap::from([
            (
                "w1".to_string(),
                WorkerLiveness {
                    last_heartbeat_ms: 1000,
                    state: WorkerState::Active,
                    rounds: 12,
                    version: 30,
                },
            ),
            (
                "w2".to_string(),
                WorkerLiveness {
                    last_heartbeat_ms: 400,
                    state: WorkerState::Gone,
                    rounds: 3,
                    version: 9,
                },
            ),
        ])
    }

    #[test]
    fn file_format() {
        let dir = tempfile::tempdir().unwrap();
        let status = StatusFile::new(dir.path(), "r1");
        status.write_at(&workers(), 900).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(status.path()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "run_id": "r1",
                "updated_at_ms": 900,
                "workers": {
                    "w1": {"last_heartbeat_ms": 1000, "state": "active", "rounds": 12, "version": 30},
                    "w2": {"last_heartbeat_ms": 400, "state": "gone", "rounds": 3, "version": 9}
                }
            })
        );
    }

    #[test]
    fn deploy_status_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let status = StatusFile::new(dir.path(), "r1");
        assert_eq!(status.path(), dir.path().join("status/workers.json"));
        status.write_at(&workers(), 900).unwrap();
        let file = read_status_file(status.path()).unwrap().unwrap();
        assert_eq!(
            heartbeat_cell(Some(&file), "w1", None, 3500),
            "2.5s ago (active), run r1"
        );
        assert_eq!(
            heartbeat_cell(Some(&file), "w2", None, 3500),
            "3.1s ago (gone), run r1"
        );
        status.remove().unwrap();
        assert!(read_status_file(status.path()).unwrap().is_none());
        status.remove().unwrap();
    }
}
