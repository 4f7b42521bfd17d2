//! `summary.json`: what a run achieved, written once at the end (atomically),
//! and the check that it agrees with metrics.csv.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::metrics::{read_metrics, MetricsRow, METRICS_FILE};

/// File name of the summary inside a run folder.
pub const SUMMARY_FILE: &str = "summary.json";

/// How compute heterogeneity is emulated, stated in every summary.
pub const HETEROGENEITY_NOTE: &str =
    "per-worker slowdown factor: the worker idles (s−1)× its measured compute time";

/// The summary's statement of how heterogeneity was emulated: the slowdown
/// rule, and which workers ran in the testbed (their `emulation` says how)
/// and which on real devices.
pub fn heterogeneity_note(workers: &BTreeMap<String, WorkerSummary>) -> String {
    let emulated: Vec<&str> = workers
        .iter()
        .filter(|(_, w)| !w.emulation.is_empty() && !w.emulation.starts_with("real device"))
        .map(|(id, _)| id.as_str())
        .collect();
    if emulated.is_empty() {
        return HETEROGENEITY_NOTE.to_string();
    }
    format!(
        "{HETEROGENEITY_NOTE}; emulated in the testbed (see each worker's `emulation`): {}; real devices: {}",
        emulated.join(", "),
        workers.len() - emulated.len()
    )
}

/// One worker's share of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// Training rounds finished.
    pub rounds: u64,
    /// Rounds whose loss gate fired (an update was published).
    pub major_rounds: u64,
    /// Rounds that only sent a report.
    pub minor_rounds: u64,
    /// Samples trained on, summed over rounds.
    pub samples_trained: u64,
    /// Mean wall time of a round (seconds), slowdown included.
    pub mean_round_secs: f64,
    /// Emulated slowdown factor (1 = none).
    pub slowdown: f64,
    /// How the device was emulated (testbed namespace, links, caps), or
    /// "real device (not emulated)".
    #[serde(default)]
    pub emulation: String,
    /// This worker's updates applied to the global model.
    pub updates_accepted: u64,
    /// This worker's updates rejected.
    pub updates_rejected: u64,
    /// Shards assigned to it.
    pub shards_received: u64,
    /// Mean shard size (samples).
    pub mean_shard_size: f64,
    /// Records this worker rejected (what it received from the master or a
    /// forger), by reason, as its heartbeats reported them.
    #[serde(default)]
    pub rejected_by_worker: BTreeMap<String, u64>,
}

/// Everything summary.json holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// Sync policy name (`hermes`, `bsp`...).
    pub policy: String,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// End time, RFC 3339 UTC.
    pub ended_at: String,
    /// Wall time of the run (seconds).
    pub duration_secs: f64,
    /// Why the run stopped (`target_accuracy`, `patience`, `max_versions`,
    /// `time_budget`, `interrupted`...).
    pub stop_reason: String,
    /// The accuracy the run aimed for, when one was set.
    pub target_accuracy: Option<f64>,
    /// Seconds until a version first reached the target; null if never.
    pub time_to_target_secs: Option<f64>,
    /// Version that first reached the target; null if never.
    pub version_at_target: Option<u64>,
    /// Test accuracy of the last version; null if nothing was evaluated.
    pub final_test_accuracy: Option<f64>,
    /// Test loss of the last version; null if nothing was evaluated or not finite.
    pub final_test_loss: Option<f64>,
    /// Highest test accuracy of any version.
    pub best_test_accuracy: Option<f64>,
    /// Lowest finite test loss of any version.
    pub best_test_loss: Option<f64>,
    /// The last global version.
    pub versions: u64,
    /// Bytes received by the master over the whole run.
    pub bytes_up: u64,
    /// Bytes sent by the master over the whole run.
    pub bytes_down: u64,
    /// Updates applied.
    pub updates_accepted: u64,
    /// Updates rejected, all reasons together.
    pub updates_rejected: u64,
    /// Updates rejected, by reason.
    pub updates_rejected_by_reason: BTreeMap<String, u64>,
    /// Records the workers rejected, by reason, all workers together.
    #[serde(default)]
    pub worker_rejections_by_reason: BTreeMap<String, u64>,
    /// Per worker id.
    pub workers: BTreeMap<String, WorkerSummary>,
    /// How compute heterogeneity was emulated.
    pub heterogeneity: String,
    /// The master configuration used.
    pub config: serde_json::Value,
}

/// What the master knows at the end of a run, besides the metrics rows.
#[derive(Debug, Clone)]
pub struct RunTotals {
    /// The run's id.
    pub run_id: String,
    /// Sync policy name.
    pub policy: String,
    /// Start (Unix ms).
    pub started_ms: u64,
    /// End (Unix ms).
    pub ended_ms: u64,
    /// Why the run stopped.
    pub stop_reason: String,
    /// Target accuracy, if any.
    pub target_accuracy: Option<f64>,
    /// Bytes received by the master over the whole run.
    pub bytes_up: u64,
    /// Bytes sent by the master over the whole run.
    pub bytes_down: u64,
    /// Updates applied over the whole run.
    pub updates_accepted: u64,
    /// Updates rejected, by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Per worker id.
    pub workers: BTreeMap<String, WorkerSummary>,
    /// The master configuration used.
    pub config: serde_json::Value,
}

impl RunSummary {
    /// Builds the summary from end-of-run totals and the metrics rows
    /// (final/best accuracy and loss, time to target).
    pub fn build(totals: RunTotals, rows: &[MetricsRow]) -> Self {
        let last = rows.last();
        let reached = totals
            .target_accuracy
            .and_then(|t| rows.iter().find(|r| r.test_accuracy >= t));
        Self {
            run_id: totals.run_id,
            policy: totals.policy,
            started_at: super::rfc3339_utc(totals.started_ms),
            ended_at: super::rfc3339_utc(totals.ended_ms),
            duration_secs: totals.ended_ms.saturating_sub(totals.started_ms) as f64 / 1000.0,
            stop_reason: totals.stop_reason,
            target_accuracy: totals.target_accuracy,
            time_to_target_secs: reached.map(|r| r.elapsed_secs),
            version_at_target: reached.map(|r| r.version),
            final_test_accuracy: last.map(|r| r.test_accuracy).filter(|v| v.is_finite()),
            final_test_loss: last.map(|r| r.test_loss).filter(|v| v.is_finite()),
            best_test_accuracy: best(rows.iter().map(|r| r.test_accuracy), f64::max),
            best_test_loss: best(rows.iter().map(|r| r.test_loss), f64::min),
            versions: last.map_or(0, |r| r.version),
            bytes_up: totals.bytes_up,
            bytes_down: totals.bytes_down,
            updates_accepted: totals.updates_accepted,
            updates_rejected: totals.rejected_by_reason.values().sum(),
            updates_rejected_by_reason: totals.rejected_by_reason,
            heterogeneity: heterogeneity_note(&totals.workers),
            worker_rejections_by_reason: totals.workers.values().fold(
                BTreeMap::new(),
                |mut all, w| {
                    for (reason, n) in &w.rejected_by_worker {
                        let e = all.entry(reason.clone()).or_insert(0);
                        *e = e.saturating_add(*n);
                    }
                    all
                },
            ),
            workers: totals.workers,
            config: totals.config,
        }
    }

    /// Writes `<run_dir>/summary.json` atomically; returns its path.
    pub fn write(&self, run_dir: &Path) -> anyhow::Result<PathBuf> {
        let path = run_dir.join(SUMMARY_FILE);
        let mut text = serde_json::to_string_pretty(self).context("encode run summary")?;
        text.push('\n');
        super::write_atomically(&path, text.as_bytes())?;
        Ok(path)
    }

    /// Reads a summary.json.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a run summary", path.display()))
    }

    /// A short human-readable report: outcome, traffic, and one line per worker.
    pub fn render_text(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", v * 100.0));
        let mut out = String::new();
        let _ = writeln!(out, "run {} (policy {})", self.run_id, self.policy);
        let _ = writeln!(
            out,
            "stopped: {} after {:.1}s at version {}",
            self.stop_reason, self.duration_secs, self.versions
        );
        let target = match (self.target_accuracy, self.time_to_target_secs) {
            (Some(t), Some(s)) => format!("{} reached after {s:.1}s", pct(Some(t))),
            (Some(t), None) => format!("{} not reached", pct(Some(t))),
            (None, _) => "none set".to_string(),
        };
        let _ = writeln!(out, "target accuracy: {target}");
        let _ = writeln!(
            out,
            "test accuracy: final {}, best {}; test loss: final {}",
            pct(self.final_test_accuracy),
            pct(self.best_test_accuracy),
            self.final_test_loss
                .map_or("-".to_string(), |v| format!("{v:.4}"))
        );
        let _ = writeln!(
            out,
            "bytes up {}, down {}; updates accepted {}, rejected {}{}",
            self.bytes_up,
            self.bytes_down,
            self.updates_accepted,
            self.updates_rejected,
            if self.updates_rejected_by_reason.is_empty() {
                String::new()
            } else {
                let reasons: Vec<String> = self
                    .updates_rejected_by_reason
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                format!(" ({})", reasons.join(", "))
            }
        );
        if !self.worker_rejections_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .worker_rejections_by_reason
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "rejected by workers: {}", reasons.join(", "));
        }
        let _ = writeln!(out, "heterogeneity: {}", self.heterogeneity);
        let header = [
            "WORKER",
            "SLOWDOWN",
            "ROUNDS",
            "MAJOR",
            "MINOR",
            "SAMPLES",
            "ROUND S",
            "SHARDS",
            "MEAN SHARD",
            "ACCEPTED",
            "REJECTED",
        ];
        let rows: Vec<Vec<String>> = self
            .workers
            .iter()
            .map(|(id, w)| {
                vec![
                    id.clone(),
                    format!("{:.2}", w.slowdown),
                    w.rounds.to_string(),
                    w.major_rounds.to_string(),
                    w.minor_rounds.to_string(),
                    w.samples_trained.to_string(),
                    format!("{:.2}", w.mean_round_secs),
                    w.shards_received.to_string(),
                    format!("{:.0}", w.mean_shard_size),
                    w.updates_accepted.to_string(),
                    w.updates_rejected.to_string(),
                ]
            })
            .collect();
        out.push_str(&crate::deploy::report::table(&header, &rows));
        for (id, w) in &self.workers {
            if !w.emulation.is_empty() {
                let _ = writeln!(out, "{id}: {}", w.emulation);
            }
        }
        out
    }
}

/// The best finite value under `pick` (max or min).
fn best(values: impl Iterator<Item = f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    values.filter(|v| v.is_finite()).reduce(pick)
}

/// Checks that `<run_dir>/summary.json` agrees with `<run_dir>/metrics.csv`:
/// same final version, final and best accuracy and loss, time to target;
/// totals never below the last row. Names every disagreement.
pub fn check_agreement(run_dir: &Path) -> anyhow::Result<()> {
    let summary = RunSummary::read(&run_dir.join(SUMMARY_FILE))?;
    let rows = read_metrics(&run_dir.join(METRICS_FILE))?;
    check_rows_agree(&summary, &rows).with_context(|| {
        format!(
            "{}: summary.json and metrics.csv disagree",
            run_dir.display()
        )
    })
}

/// [`check_agreement`] on values already read.
pub fn check_rows_agree(summary: &RunSummary, rows: &[MetricsRow]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let last = rows.last();
    let expect_version = last.map_or(0, |r| r.version);
    if summary.versions != expect_version {
        problems.push(format!(
            "versions {} but last metrics row has version {expect_version}",
            summary.versions
        ));
    }
    let mut same = |name: &str, summary_value: Option<f64>, rows_value: Option<f64>| {
        if summary_value != rows_value {
            problems.push(format!(
                "{name} {summary_value:?} but metrics.csv gives {rows_value:?}"
            ));
        }
    };
    let finite = |v: f64| Some(v).filter(|v| v.is_finite());
    same(
        "final_test_accuracy",
        summary.final_test_accuracy,
        last.and_then(|r| finite(r.test_accuracy)),
    );
    same(
        "final_test_loss",
        summary.final_test_loss,
        last.and_then(|r| finite(r.test_loss)),
    );
    same(
        "best_test_accuracy",
        summary.best_test_accuracy,
        best(rows.iter().map(|r| r.test_accuracy), f64::max),
    );
    same(
        "best_test_loss",
        summary.best_test_loss,
        best(rows.iter().map(|r| r.test_loss), f64::min),
    );
    let reached = summary
        .target_accuracy
        .and_then(|t| rows.iter().find(|r| r.test_accuracy >= t));
    // metrics.csv keeps elapsed time to the millisecond.
    let close = match (summary.time_to_target_secs, reached) {
        (None, None) => true,
        (Some(s), Some(r)) => (s - r.elapsed_secs).abs() <= 0.0005 + 1e-9,
        _ => false,
    };
    if !close {
        problems.push(format!(
            "time_to_target_secs {:?} but metrics.csv first reaches the target at {:?}",
            summary.time_to_target_secs,
            reached.map(|r| r.elapsed_secs)
        ));
    }
    if let Some(last) = last {
        for (name, total, row) in [
            ("bytes_up", summary.bytes_up, last.bytes_up),
            ("bytes_down", summary.bytes_down, last.bytes_down),
            (
                "updates_accepted",
                summary.updates_accepted,
                last.updates_accepted,
            ),
            (
                "updates_rejected",
                summary.updates_rejected,
                last.updates_rejected,
            ),
        ] {
            if total < row {
                problems.push(format!(
                    "{name} {total} is below the last metrics row's {row}"
                ));
            }
        }
    }
    for pair in rows.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.version <= a.version
            || b.bytes_up < a.bytes_up
            || b.bytes_down < a.bytes_down
            || b.updates_accepted < a.updates_accepted
        {
            problems.push(format!(
                "metrics.csv goes backwards from version {} to {}",
                a.version, b.version
            ));
        }
    }
    let by_reason: u64 = summary.updates_rejected_by_reason.values().sum();
    if by_reason != summary.updates_rejected {
        problems.push(format!(
            "updates_rejected {} but the reasons add up to {by_reason}",
            summary.updates_rejected
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    /// summary.json is compared exactly with metrics.csv, so reading it back
    /// must give the same f64 (serde_json's `float_roundtrip`; without it a
    /// value such as this one came back one ULP off in a real run).
    #[test]
    fn floats_read_back_exactly() {
        let x = 1.4312069416046145_f64;
        let text = serde_json::to_string(&x).expect("serialize");
        let back: f64 = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.to_bits(), x.to_bits(), "{text}");
    }

    use super::super::metrics::tests::row;
    use super::super::metrics::MetricsWriter;
    use super::*;

    fn totals(rows: &[MetricsRow]) -> RunTotals {
        let last = rows.last().cloned().unwrap_or_else(|| row(0));
        let mut workers = BTreeMap::new();
        workers.insert(
            "w1".to_string(),
            WorkerSummary {
                rounds: 10,
                major_rounds: 4,
                minor_rounds: 6,
                samples_trained: 5000,
                mean_round_secs: 1.25,
                slowdown: 3.0,
                emulation: String::new(),
                updates_accepted: 4,
                updates_rejected: 0,
                shards_received: 10,
                mean_shard_size: 500.0,
                rejected_by_worker: [("bad_tag".to_string(), 2)].into(),
            },
        );
        RunTotals {
            run_id: "r1".into(),
            policy: "hermes".into(),
            started_ms: 1_795_996_741_000,
            ended_ms: 1_795_996_761_500,
            stop_reason: "target_accuracy".into(),
            target_accuracy: Some(0.75),
            bytes_up: last.bytes_up + 10,
            bytes_down: last.bytes_down + 20,
            updates_accepted: last.updates_accepted,
            rejected_by_reason: BTreeMap::from([("stale".to_string(), last.updates_rejected)]),
            workers,
            config: serde_json::json!({"run_id": "r1", "min_workers": 3}),
        }
    }

    #[test]
    fn build_takes_final_best_and_target_from_rows() {
        // row(v).test_accuracy = 0.1 + 0.8 (1 - 1/(v+1)): 0.74 at v = 4, 0.7667 at
        // v = 5, so target 0.75 is first reached at v = 5 (elapsed 7.5 s).
        let mut rows: Vec<MetricsRow> = (0..5).map(row).collect();
        rows[4].test_loss = f64::NAN;
        let s = RunSummary::build(totals(&rows), &rows);
        assert_eq!(s.versions, 4);
        assert_eq!(s.time_to_target_secs, None);
        assert_eq!(s.version_at_target, None);
        assert_eq!(s.final_test_accuracy, Some(rows[4].test_accuracy));
        assert_eq!(s.best_test_accuracy, Some(rows[4].test_accuracy));
        assert_eq!(
            s.final_test_loss, None,
            "NaN loss must not be the final loss"
        );
        assert_eq!(s.best_test_loss, Some(rows[3].test_loss));
        assert_eq!(s.duration_secs, 20.5);
        assert_eq!(s.started_at, "2026-11-29T23:59:01.000Z");
        assert_eq!(s.updates_rejected, rows[4].updates_rejected);

        let mut t = totals(&rows);
        t.target_accuracy = Some(0.5); // row(1) has exactly 0.5
        let s = RunSummary::build(t, &rows);
        assert_eq!(s.time_to_target_secs, Some(1.5));
        assert_eq!(s.version_at_target, Some(1));
    }

    #[test]
    fn summary_round_trips_and_agrees_with_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        for v in 0..8 {
            w.append(row(v)).unwrap();
        }
        let s = RunSummary::build(totals(w.rows()), w.rows());
        assert_eq!(s.time_to_target_secs, Some(7.5));
        assert_eq!(s.version_at_target, Some(5));
        let path = s.write(dir.path()).unwrap();
        let back = RunSummary::read(&path).unwrap();
        assert_eq!(back, s);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["heterogeneity"], HETEROGENEITY_NOTE);
        assert_eq!(json["workers"]["w1"]["major_rounds"], 4);
        assert_eq!(json["worker_rejections_by_reason"]["bad_tag"], 2);
        assert_eq!(json["config"]["min_workers"], 3);
        check_agreement(dir.path()).unwrap();
    }

    #[test]
    fn disagreements_are_caught_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        for v in 0..8 {
            w.append(row(v)).unwrap();
        }
        let good = RunSummary::build(totals(w.rows()), w.rows());

        let mut bad = good.clone();
        bad.versions = 9;
        bad.final_test_accuracy = Some(0.99);
        bad.bytes_up = 1;
        bad.write(dir.path()).unwrap();
        let e = format!("{:#}", check_agreement(dir.path()).unwrap_err());
        assert!(e.contains("versions 9"), "{e}");
        assert!(e.contains("final_test_accuracy"), "{e}");
        assert!(e.contains("bytes_up 1 is below"), "{e}");

        let mut bad = good.clone();
        bad.time_to_target_secs = Some(3.0);
        let e = format!("{:#}", check_rows_agree(&bad, w.rows()).unwrap_err());
        assert!(e.contains("time_to_target_secs"), "{e}");

        // A row missing from metrics.csv (e.g. the file was cut short).
        let e = check_rows_agree(&good, &w.rows()[..7]).unwrap_err();
        assert!(e.to_string().contains("versions 7"), "{e}");
    }

    #[test]
    fn empty_run_agrees_with_empty_metrics() {
        let s = RunSummary::build(totals(&[]), &[]);
        assert_eq!(s.versions, 0);
        assert_eq!(s.final_test_accuracy, None);
        check_rows_agree(&s, &[]).unwrap();
    }

    #[test]
    fn text_report_lists_workers() {
        let rows: Vec<MetricsRow> = (0..8).map(row).collect();
        let text = RunSummary::build(totals(&rows), &rows).render_text();
        assert!(text.contains("run r1 (policy hermes)"), "{text}");
        assert!(text.contains("75.00% reached after 7.5s"), "{text}");
        assert!(text.contains(HETEROGENEITY_NOTE), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("w1") && l.contains("3.00")),
            "{text}"
        );
    }

    #[test]
    fn heterogeneity_names_emulated_and_real_workers() {
        let mut workers = BTreeMap::new();
        workers.insert("w1".to_string(), WorkerSummary::default());
        assert_eq!(heterogeneity_note(&workers), HETEROGENEITY_NOTE);
        workers.insert(
            "w2".to_string(),
            WorkerSummary {
                emulation: "testbed t: netns 198.18.0.2, uplink 1mbit".into(),
                ..Default::default()
            },
        );
        workers.insert(
            "d1".to_string(),
            WorkerSummary {
                emulation: "real device (not emulated)".into(),
                ..Default::default()
            },
        );
        let note = heterogeneity_note(&workers);
        assert!(
            note.contains("testbed (see each worker's `emulation`): w2; real devices: 2"),
            "{note}"
        );
    }
}
