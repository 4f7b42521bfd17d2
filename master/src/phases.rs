//! The round-phase profile: where each version's time went, one row per
//! version in `<run>/phases.csv`.
//!
//! A version is made when an update completes what the policy waits for
//! (the *closing* update: under BSP the slowest worker's). Its interval (from
//! the previous version) is followed along that worker's round, with the
//! master's clock for what the master sees and the worker's durations for
//! what only the worker sees, so no two clocks are compared:
//!
//! ```text
//! previous version ─dispatch─▶ shard sent ──────── in flight ────────▶ update read ─admission─▶ version
//!                               (delivery)  transfer + queued + prepare
//!                                           + compute + idle
//! ```
//!
//! * `dispatch` — from the previous version to the closing worker's shard
//!   leaving (waits in the master, its sends); negative when the shard left
//!   before the previous version (asynchronous policies, queued shards).
//! * `transfer` — the in-flight time the worker does not account for: the
//!   shard's and global's way down, the update's way up, the broker.
//! * `queued`, `prepare`, `compute`, `idle` — the worker's own phases.
//! * `admission` — decoding, admitting and aggregating the closing update.
//! * `evaluation`, `checkpoint`, `record`, `broadcast` — the master's work
//!   for the version, after its shards went out (off their path).
//! * `overhead` — the interval less the closing worker's compute and idle:
//!   what coordination cost on top of the work itself.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::protocol::RoundTiming;

/// File name of the profile inside a run folder.
pub const PHASES_FILE: &str = "phases.csv";

/// The CSV header (the columns of [`PhaseRow`]).
pub const CSV_HEADER: &str = "version,at_secs,interval_ms,worker,dispatch_ms,delivery_ms,transfer_ms,queued_ms,prepare_ms,compute_ms,idle_ms,admission_ms,evaluation_ms,checkpoint_ms,record_ms,broadcast_ms,overhead_ms";

/// One version's phases, milliseconds (`None`: not known, e.g. a version
/// made by a tick without a closing update, or a worker's bad number).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseRow {
    /// The version.
    pub version: u64,
    /// Seconds since training started, when the version was made.
    pub at_secs: f64,
    /// Since the previous version.
    pub interval_ms: f64,
    /// The worker whose update closed the version.
    pub worker: String,
    /// Previous version → the closing worker's shard sent.
    pub dispatch_ms: Option<f64>,
    /// How long the send of that shard (with its global) took.
    pub delivery_ms: Option<f64>,
    /// In flight, less the worker's own phases.
    pub transfer_ms: Option<f64>,
    /// The shard waited at the worker.
    pub queued_ms: Option<f64>,
    /// Decoding and adopting at the worker.
    pub prepare_ms: Option<f64>,
    /// Training and validation at the worker.
    pub compute_ms: Option<f64>,
    /// Emulated idle at the worker.
    pub idle_ms: Option<f64>,
    /// Decode, admit, aggregate at the master.
    pub admission_ms: Option<f64>,
    /// Test-set evaluation.
    pub evaluation_ms: f64,
    /// Checkpoint write.
    pub checkpoint_ms: f64,
    /// Metrics row and offset commit.
    pub record_ms: f64,
    /// Broadcast on the model topic (`model_delivery: broadcast`).
    pub broadcast_ms: f64,
    /// Interval less the closing worker's compute and idle.
    pub overhead_ms: Option<f64>,
}

impl PhaseRow {
    /// The row as a CSV line (empty fields for unknown values).
    pub fn csv_line(&self) -> String {
        let o = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
        format!(
            "{},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{}",
            self.version,
            self.at_secs,
            self.interval_ms,
            csv_field(&self.worker),
            o(self.dispatch_ms),
            o(self.delivery_ms),
            o(self.transfer_ms),
            o(self.queued_ms),
            o(self.prepare_ms),
            o(self.compute_ms),
            o(self.idle_ms),
            o(self.admission_ms),
            self.evaluation_ms,
            self.checkpoint_ms,
            self.record_ms,
            self.broadcast_ms,
            o(self.overhead_ms),
        )
    }

    /// Parses a line written by [`PhaseRow::csv_line`].
    pub fn parse(line: &str) -> Result<Self, String> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != CSV_HEADER.split(',').count() {
            return Err(format!("{} fields, expected 17", f.len()));
        }
        let num = |i: usize| -> Result<f64, String> {
            f[i].parse::<f64>()
                .map_err(|_| format!("field {} is not a number: `{}`", i + 1, f[i]))
        };
        let opt = |i: usize| -> Result<Option<f64>, String> {
            if f[i].is_empty() {
                Ok(None)
            } else {
                num(i).map(Some)
            }
        };
        Ok(Self {
            version: f[0]
                .parse()
                .map_err(|_| format!("version is not a number: `{}`", f[0]))?,
            at_secs: num(1)?,
            interval_ms: num(2)?,
            worker: f[3].to_string(),
            dispatch_ms: opt(4)?,
            delivery_ms: opt(5)?,
            transfer_ms: opt(6)?,
            queued_ms: opt(7)?,
            prepare_ms: opt(8)?,
            compute_ms: opt(9)?,
            idle_ms: opt(10)?,
            admission_ms: opt(11)?,
            evaluation_ms: num(12)?,
            checkpoint_ms: num(13)?,
            record_ms: num(14)?,
            broadcast_ms: num(15)?,
            overhead_ms: opt(16)?,
        })
    }
}

/// Reads a run's `phases.csv`.
pub fn read(path: &Path) -> anyhow::Result<Vec<PhaseRow>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    text.lines()
        .skip(1)
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            PhaseRow::parse(l).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 2))
        })
        .collect()
}

/// Worker ids are checked at the envelope (no commas), but a CSV field is
/// never trusted to be clean.
fn csv_field(s: &str) -> String {
    s.chars()
        .map(|c| if c == ',' || c.is_control() { '_' } else { c })
        .collect()
}

/// A worker's number, if it is one a worker could have measured.
fn plausible_ms(secs: f64) -> Option<f64> {
    (secs.is_finite() && (0.0..1e6).contains(&secs)).then_some(secs * 1e3)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier {
        ms(later - earlier)
    } else {
        -ms(earlier - later)
    }
}

/// The last shard sent to a worker.
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Instant,
    took: Duration,
}

/// The update that made the version being recorded.
#[derive(Clone, Debug)]
struct Closing {
    worker: String,
    /// The shard it trained on (taken before the next shards go out).
    sent: Option<Sent>,
    received: Instant,
    made: Instant,
    admission: Duration,
    timing: RoundTiming,
}

/// Follows the phases as the shell carries out the coordinator's actions,
/// and writes a row per version.
pub struct PhaseClock {
    file: File,
    started: Option<Instant>,
    last_version: Option<Instant>,
    sent: HashMap<String, Sent>,
    closing: Option<Closing>,
    broadcast: Duration,
}

impl PhaseClock {
    /// Opens `<run_dir>/phases.csv`: a new file with its header, or (on
    /// resume) the existing one to append to.
    pub fn open(run_dir: &Path, resume: bool) -> anyhow::Result<Self> {
        let path = run_dir.join(PHASES_FILE);
        let exists = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        if !(resume && exists) {
            file.set_len(0)?;
            writeln!(file, "{CSV_HEADER}")?;
        }
        Ok(Self {
            file,
            started: None,
            last_version: None,
            sent: HashMap::new(),
            closing: None,
            broadcast: Duration::ZERO,
        })
    }

    /// Training (or a resumed run) starts at `now`: the first interval runs from here.
    pub fn training_started(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        self.last_version.get_or_insert(now);
    }

    /// A batch of shards (to `workers`) was sent at `at`, taking `took`.
    pub fn shards_sent<'a>(
        &mut self,
        workers: impl IntoIterator<Item = &'a str>,
        at: Instant,
        took: Duration,
    ) {
        for w in workers {
            self.sent.insert(w.to_string(), Sent { at, took });
        }
    }

    /// An update read at `received` was handled by `made` (decode, admit,
    /// aggregate); `closed` when it made a new version.
    pub fn update_handled(
        &mut self,
        worker: &str,
        timing: RoundTiming,
        received: Instant,
        made: Instant,
        closed: bool,
    ) {
        if closed {
            self.closing = Some(Closing {
                worker: worker.to_string(),
                sent: self.sent.get(worker).copied(),
                received,
                made,
                admission: made.saturating_duration_since(received),
                timing,
            });
        }
    }

    /// The version was broadcast on the model topic, taking `took`.
    pub fn broadcast(&mut self, took: Duration) {
        self.broadcast += took;
    }

    /// Writes the row of `version`, made before `now`, with the master's work for it.
    pub fn version_done(
        &mut self,
        version: u64,
        now: Instant,
        evaluation: Duration,
        checkpoint: Duration,
        record: Duration,
    ) -> anyhow::Result<PhaseRow> {
        let closing = self.closing.take();
        let made = closing.as_ref().map(|c| c.made).unwrap_or(now);
        let previous = self.last_version.unwrap_or(made);
        let started = self.started.unwrap_or(previous);
        let interval = ms(made.saturating_duration_since(previous));
        let mut row = PhaseRow {
            version,
            at_secs: made.saturating_duration_since(started).as_secs_f64(),
            interval_ms: interval,
            evaluation_ms: ms(evaluation),
            checkpoint_ms: ms(checkpoint),
            record_ms: ms(record),
            broadcast_ms: ms(std::mem::take(&mut self.broadcast)),
            ..PhaseRow::default()
        };
        if let Some(c) = closing {
            row.worker = c.worker.clone();
            row.admission_ms = Some(ms(c.admission));
            row.queued_ms = plausible_ms(c.timing.queued_secs);
            row.prepare_ms = plausible_ms(c.timing.prepare_secs);
            row.compute_ms = plausible_ms(c.timing.compute_secs);
            row.idle_ms = plausible_ms(c.timing.idle_secs);
            if let (Some(compute), Some(idle)) = (row.compute_ms, row.idle_ms) {
                row.overhead_ms = Some(interval - compute - idle);
            }
            if let Some(sent) = c.sent {
                row.dispatch_ms = Some(signed_ms(sent.at, previous));
                row.delivery_ms = Some(ms(sent.took));
                let in_flight = signed_ms(c.received, sent.at);
                let own = [row.queued_ms, row.prepare_ms, row.compute_ms, row.idle_ms]
                    .into_iter()
                    .sum::<Option<f64>>();
                row.transfer_ms = own.map(|own| in_flight - own);
            }
        }
        self.last_version = Some(made);
        writeln!(self.file, "{}", row.csv_line()).context("append to phases.csv")?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(compute: f64, idle: f64) -> RoundTiming {
        RoundTiming {
            queued_secs: 0.001,
            prepare_secs: 0.002,
            compute_secs: compute,
            idle_secs: idle,
        }
    }

    #[test]
    fn the_interval_is_followed_along_the_closing_workers_round() {
        let dir = tempfile::tempdir().unwrap();
        let mut clock = PhaseClock::open(dir.path(), false).unwrap();
        let t0 = Instant::now();
        clock.training_started(t0);
        let sent = t0 + Duration::from_millis(10);
        clock.shards_sent(["a", "b"], sent, Duration::from_millis(4));
        // b's round: 3 ms of its own overheads, 50 + 30 ms of work; read at
        // 100 ms after its shard left, handled 2 ms later.
        let received = sent + Duration::from_millis(100);
        let made = received + Duration::from_millis(2);
        clock.update_handled("a", timing(0.01, 0.0), received, made, false);
        clock.update_handled("b", timing(0.05, 0.03), received, made, true);
        // The next shards go out before the version's bookkeeping.
        clock.shards_sent(["a", "b"], made, Duration::from_millis(4));
        let row = clock
            .version_done(
                1,
                made + Duration::from_millis(9),
                Duration::from_millis(5),
                Duration::from_millis(3),
                Duration::from_millis(1),
            )
            .unwrap();
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-6;
        assert_eq!(row.worker, "b");
        assert!((row.interval_ms - 112.0).abs() < 1e-6, "{row:?}");
        assert!(close(row.dispatch_ms, 10.0), "{row:?}");
        assert!(close(row.delivery_ms, 4.0));
        assert!(close(row.transfer_ms, 100.0 - 83.0), "{row:?}");
        assert!(close(row.admission_ms, 2.0));
        assert!(close(row.overhead_ms, 112.0 - 80.0));
        assert_eq!(row.evaluation_ms, 5.0);
        // Written, and read back the same.
        let rows = read(&dir.path().join(PHASES_FILE)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].worker, "b");
        assert!((rows[0].transfer_ms.unwrap() - 17.0).abs() < 1e-3);
    }

    #[test]
    fn untrusted_worker_numbers_and_a_version_without_update_leave_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut clock = PhaseClock::open(dir.path(), false).unwrap();
        let t0 = Instant::now();
        clock.training_started(t0);
        let bad = RoundTiming {
            queued_secs: f64::NAN,
            prepare_secs: -1.0,
            compute_secs: f64::INFINITY,
            idle_secs: 0.0,
        };
        clock.shards_sent(["w,x"], t0, Duration::ZERO);
        let r = t0 + Duration::from_millis(20);
        clock.update_handled("w,x", bad, r, r, true);
        let row = clock
            .version_done(1, r, Duration::ZERO, Duration::ZERO, Duration::ZERO)
            .unwrap();
        assert_eq!(row.queued_ms, None);
        assert_eq!(row.compute_ms, None);
        assert_eq!(row.transfer_ms, None);
        assert_eq!(row.overhead_ms, None);
        // A version a tick made (a worker gone under BSP): no closing update.
        let row = clock
            .version_done(
                2,
                r + Duration::from_millis(5),
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
            )
            .unwrap();
        assert!(row.worker.is_empty() && row.dispatch_ms.is_none());
        let rows = read(&dir.path().join(PHASES_FILE)).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].worker, "w_x", "a comma cannot split the row");
    }

    #[test]
    fn a_resumed_run_appends() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        {
            let mut c = PhaseClock::open(dir.path(), false).unwrap();
            c.training_started(now);
            c.version_done(1, now, Duration::ZERO, Duration::ZERO, Duration::ZERO)
                .unwrap();
        }
        let mut c = PhaseClock::open(dir.path(), true).unwrap();
        c.training_started(now);
        c.version_done(2, now, Duration::ZERO, Duration::ZERO, Duration::ZERO)
            .unwrap();
        let rows = read(&dir.path().join(PHASES_FILE)).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
}
