//! Everything one run writes, behind one small facade the event loop calls:
//! metrics rows, allocation decisions, the centralized log, the status file,
//! live progress, and at the end the summary and the plot.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use common::protocol::{now_ms, LogRecord};
use common::transport::MetricsSnapshot;

use crate::allocation::AllocationRecord;
use crate::config::MasterConfig;
use crate::outputs::central_log::CentralLog;
use crate::outputs::metrics::{MetricsRow, MetricsWriter};
use crate::outputs::plot::{write_plot, PlotLabels};
use crate::outputs::progress::{ProgressSnapshot, RunProgress};
use crate::outputs::status_file::{StatusFile, WorkerLiveness, WorkerState};
use crate::outputs::summary::{RunSummary, RunTotals, WorkerSummary};
use crate::registry::WorkerRegistry;
use crate::workload::TestResult;

/// End-of-run facts for the summary.
pub struct SummaryInputs<'a> {
    /// The configuration used.
    pub cfg: &'a MasterConfig,
    /// Policy name.
    pub policy: &'a str,
    /// Why the run ended.
    pub stop_reason: &'a str,
    /// Final version.
    pub version: u64,
    /// Transport counters (bytes, rejected records).
    pub metrics: MetricsSnapshot,
    /// Updates and messages rejected by the master, by reason.
    pub rejected: &'a BTreeMap<String, u64>,
    /// Updates applied.
    pub accepted: u64,
    /// The workers.
    pub workers: &'a WorkerRegistry,
}

/// The files of one run.
pub struct RunOutputs {
    run_dir: PathBuf,
    run_id: String,
    policy: String,
    target_accuracy: Option<f64>,
    started_ms: u64,
    /// Bytes (up, down) counted before a resume, added to this process's counters.
    bytes_before: (u64, u64),
    metrics: MetricsWriter,
    allocation: File,
    central: CentralLog,
    central_failed: bool,
    status: StatusFile,
    progress: RunProgress,
}

impl RunOutputs {
    /// Creates `<data_dir>/runs/<run_id>/` and opens its files. A folder
    /// holding an earlier run's outputs is never overwritten: it is moved
    /// aside to `<run_id>.<UTC time>` first (and said so).
    pub fn create(cfg: &MasterConfig, policy: &str) -> anyhow::Result<Self> {
        let run_dir = crate::outputs::run_dir(&cfg.data_dir, &cfg.run_id)?;
        // Only a folder with an earlier run's outputs is moved; one prepared
        // for this run (a bench puts its logs there first) is used as it is.
        if run_dir.join(crate::outputs::metrics::METRICS_FILE).exists() {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let aside = run_dir.with_file_name(format!("{}.{stamp}", cfg.run_id));
            std::fs::rename(&run_dir, &aside).with_context(|| {
                format!("move the earlier run folder {} aside", run_dir.display())
            })?;
            tracing::warn!(
                "run folder {} existed: moved to {} (a fresh run never overwrites one)",
                run_dir.display(),
                aside.display()
            );
        }
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("create {}", run_dir.display()))?;
        let metrics = MetricsWriter::create(&run_dir)?;
        let alloc_path = run_dir.join("allocation.csv");
        let mut allocation = File::create(&alloc_path)
            .with_context(|| format!("create {}", alloc_path.display()))?;
        writeln!(allocation, "{}", AllocationRecord::CSV_HEADER)?;
        Self::with(cfg, policy, run_dir, metrics, allocation, now_ms(), (0, 0))
    }

    /// Opens the files of a run being resumed, for appending: metrics.csv
    /// keeps its rows and its clock (elapsed time and byte counts go on from
    /// the last row), allocation.csv grows.
    pub fn resume(cfg: &MasterConfig, policy: &str) -> anyhow::Result<Self> {
        let run_dir = crate::outputs::run_dir(&cfg.data_dir, &cfg.run_id)?;
        let metrics = MetricsWriter::open_append(&run_dir)?;
        let alloc_path = run_dir.join("allocation.csv");
        let allocation = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&alloc_path)
            .with_context(|| format!("{}: cannot open for appending", alloc_path.display()))?;
        let (started, bytes) = match metrics.last() {
            Some(r) => (
                now_ms().saturating_sub((r.elapsed_secs * 1000.0) as u64),
                (r.bytes_up, r.bytes_down),
            ),
            None => (now_ms(), (0, 0)),
        };
        Self::with(cfg, policy, run_dir, metrics, allocation, started, bytes)
    }

    fn with(
        cfg: &MasterConfig,
        policy: &str,
        run_dir: PathBuf,
        metrics: MetricsWriter,
        allocation: File,
        started_ms: u64,
        bytes_before: (u64, u64),
    ) -> anyhow::Result<Self> {
        let central = CentralLog::open(&cfg.data_dir)?;
        Ok(Self {
            run_dir,
            run_id: cfg.run_id.clone(),
            policy: policy.to_string(),
            target_accuracy: cfg.stop.target_accuracy,
            started_ms,
            bytes_before,
            metrics,
            allocation,
            central,
            central_failed: false,
            status: StatusFile::new(&cfg.data_dir, &cfg.run_id),
            // A bar only when max_versions is a real bound, else a spinner.
            progress: RunProgress::new(Some(cfg.stop.max_versions).filter(|&m| m < 100_000)),
        })
    }

    /// The run's folder.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir.clone()
    }

    /// The newest version in metrics.csv, if any.
    pub fn last_recorded_version(&self) -> Option<u64> {
        self.metrics.last().map(|r| r.version)
    }

    /// Appends the metrics row of a new global version.
    pub fn record_version(
        &mut self,
        version: u64,
        test: TestResult,
        wire: MetricsSnapshot,
        accepted: u64,
        rejected: u64,
        by: &str,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        self.metrics.append(MetricsRow {
            elapsed_secs: now.saturating_sub(self.started_ms) as f64 / 1000.0,
            wall_clock_ms: now,
            version,
            test_loss: test.loss,
            test_accuracy: test.accuracy,
            bytes_up: wire.bytes_received + self.bytes_before.0,
            bytes_down: wire.bytes_sent + self.bytes_before.1,
            updates_accepted: accepted,
            updates_rejected: rejected,
            worker: (!by.is_empty()).then(|| by.to_string()),
        })
    }

    /// Appends one allocation decision to allocation.csv.
    pub fn allocation(&mut self, record: &AllocationRecord) -> anyhow::Result<()> {
        writeln!(self.allocation, "{}", record.csv_row())?;
        self.allocation.flush()?;
        Ok(())
    }

    /// Appends a record to the centralized log (a failing disk is reported once).
    pub fn central_log(&mut self, record: &LogRecord) {
        if let Err(e) = self
            .central
            .append_remote(&record.node, std::slice::from_ref(record))
        {
            if !self.central_failed {
                eprintln!("master: centralized log: {e:#}");
                self.central_failed = true;
            }
        }
    }

    /// Updates the live progress line.
    pub fn progress(
        &self,
        version: u64,
        test: TestResult,
        accepted: u64,
        rejected: u64,
        wire: &MetricsSnapshot,
        active_workers: usize,
    ) {
        self.progress.update(&ProgressSnapshot {
            version,
            test_accuracy: Some(test.accuracy),
            updates_accepted: accepted,
            updates_rejected: rejected,
            bytes_up: wire.bytes_received + self.bytes_before.0,
            bytes_down: wire.bytes_sent + self.bytes_before.1,
            active_workers,
        });
    }

    /// Rewrites `data/status/workers.json`.
    pub fn write_status(&self, workers: &WorkerRegistry, version: u64) {
        let doc: BTreeMap<String, WorkerLiveness> = workers
            .all()
            .map(|(id, w)| {
                (
                    id.clone(),
                    WorkerLiveness {
                        last_heartbeat_ms: w.last_seen_ms,
                        state: if w.active {
                            WorkerState::Active
                        } else {
                            WorkerState::Gone
                        },
                        rounds: w.stats.rounds,
                        version,
                    },
                )
            })
            .collect();
        if let Err(e) = self.status.write(&doc) {
            tracing::debug!("status file: {e:#}");
        }
    }

    /// Writes summary.json and the plot; returns a few lines for the console.
    pub fn finish(&mut self, s: SummaryInputs<'_>) -> anyhow::Result<String> {
        self.progress
            .finish(&format!("version {} — {}", s.version, s.stop_reason));
        let mut rejected = s.rejected.clone();
        for (reason, n) in &s.metrics.rejected {
            *rejected.entry(format!("transport:{reason}")).or_insert(0) += n;
        }
        let workers = s
            .workers
            .all()
            .map(|(id, w)| {
                let st = &w.stats;
                (
                    id.clone(),
                    WorkerSummary {
                        rounds: st.rounds,
                        major_rounds: st.major_rounds,
                        minor_rounds: st.minor_rounds,
                        samples_trained: st.samples_trained,
                        mean_round_secs: if st.rounds > 0 {
                            st.round_secs_total / st.rounds as f64
                        } else {
                            0.0
                        },
                        slowdown: w.registration.slowdown,
                        emulation: if w.registration.emulation.is_empty() {
                            "real device (not emulated)".into()
                        } else {
                            w.registration.emulation.clone()
                        },
                        updates_accepted: st.updates_accepted,
                        updates_rejected: st.updates_rejected,
                        shards_received: st.shards_received,
                        mean_shard_size: if st.shards_received > 0 {
                            st.shard_samples_total as f64 / st.shards_received as f64
                        } else {
                            0.0
                        },
                        rejected_by_worker: st.rejected_by_worker(),
                    },
                )
            })
            .collect();
        let totals = RunTotals {
            run_id: self.run_id.clone(),
            policy: self.policy.clone(),
            started_ms: self.started_ms,
            ended_ms: now_ms(),
            stop_reason: s.stop_reason.to_string(),
            target_accuracy: self.target_accuracy,
            bytes_up: self
                .metrics
                .last()
                .map_or(s.metrics.bytes_received + self.bytes_before.0, |r| {
                    r.bytes_up
                }),
            bytes_down: self
                .metrics
                .last()
                .map_or(s.metrics.bytes_sent + self.bytes_before.1, |r| r.bytes_down),
            updates_accepted: s.accepted,
            rejected_by_reason: rejected,
            workers,
            config: serde_json::to_value(s.cfg)?,
        };
        let summary = RunSummary::build(totals, self.metrics.rows());
        let summary_path = summary.write(&self.run_dir)?;
        let labels = PlotLabels {
            run_id: &self.run_id,
            policy: &self.policy,
            target_accuracy: self.target_accuracy,
        };
        let plot = write_plot(&self.run_dir, &labels, self.metrics.rows())?;
        Ok(format!(
            "{}\nsummary: {}\nmetrics: {}\nplot:    {}",
            summary.render_text(),
            summary_path.display(),
            self.metrics.path().display(),
            plot.display()
        ))
    }
}
