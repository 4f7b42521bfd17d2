//! The global model on disk after every version, written atomically, so a
//! crash never leaves a half-written checkpoint and offsets are committed
//! only for updates that are safely in one.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::aggregation::LedgerEntry;
use crate::allocation::AllocatorSnapshot;
use crate::registry::WorkerSnapshot;

/// File name of the checkpoint inside the run folder.
pub const FILE: &str = "checkpoint.bin";

/// What a checkpoint holds: everything a restarted master needs to carry
/// on (the coordinator's state; Kafka's committed offsets say where to read).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// The global version.
    pub version: u64,
    /// The global parameters, flat.
    pub parameters: Vec<f32>,
    /// Every applied update.
    pub ledger: Vec<LedgerEntry>,
    /// The workers, with their statistics.
    pub workers: Vec<WorkerSnapshot>,
    /// What the allocator learned.
    pub allocator: AllocatorSnapshot,
    /// Updates applied.
    pub accepted: u64,
    /// Rejections by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Best test loss so far and its version (patience).
    pub best_loss: f64,
    /// Version of the best test loss.
    pub best_loss_version: u64,
}

/// Writes `<run_dir>/checkpoint.bin` (temp file, fsync, rename).
pub fn save(run_dir: &Path, checkpoint: &Checkpoint) -> anyhow::Result<PathBuf> {
    let path = run_dir.join(FILE);
    let tmp = run_dir.join(format!("{FILE}.tmp"));
    let bytes = common::protocol::encode(checkpoint)?;
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(&bytes)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("sync {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(path)
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path) -> anyhow::Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    common::protocol::decode(&bytes, 4 * 1024 * 1024 * 1024)
        .with_context(|| format!("decode {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_temp_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ckpt = Checkpoint {
            version: 7,
            parameters: vec![1.0, -2.5],
            ledger: Vec::new(),
            workers: Vec::new(),
            allocator: AllocatorSnapshot::default(),
            accepted: 3,
            rejected: [("too_stale".to_string(), 2)].into(),
            best_loss: 0.5,
            best_loss_version: 6,
        };
        let path = save(dir.path(), &ckpt).expect("saved");
        let back = load(&path).expect("loaded");
        assert_eq!(back, ckpt);
        assert!(!dir.path().join("checkpoint.bin.tmp").exists());
    }

    #[test]
    fn corrupt_checkpoint_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FILE);
        std::fs::write(&path, b"junk").expect("write");
        assert!(load(&path).is_err());
    }
}
