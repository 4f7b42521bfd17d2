//! The replay driver: applies every link's rate changes at their planned times.
//!
//! All links share one start [`Instant`]; each change waits for its absolute
//! deadline `start + planned time`, so a slow `apply` (a `tc` call) makes the
//! next change late but never shifts the ones after it. The stop flag is
//! checked at least every [`STOP_POLL`].

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use super::schedule::{ChangePoints, ReplaySchedule};

/// The longest the driver sleeps before it looks at the stop flag again.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// How many failure messages [`ReplayStats::failures`] keeps (the count goes on).
pub const MAX_KEPT_FAILURES: usize = 100;

/// One application of a rate to a link, as the driver did it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRate {
    /// The link's id, as given to [`replay`].
    pub link: String,
    /// When the change was planned, seconds since the replay started.
    pub time_planned_s: f64,
    /// When `apply` was called, seconds since the replay started.
    pub time_applied_s: f64,
    /// Wall-clock time of the call, seconds since the Unix epoch.
    pub unix_time: f64,
    /// The rate applied, Mbit/s.
    pub rate_mbit: f64,
    /// `None` when `apply` succeeded, else its error (with its causes).
    pub error: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayStats {
    /// Calls of `apply` that succeeded.
    pub applied: u64,
    /// Calls of `apply` that failed.
    pub failed: u64,
    /// The first [`MAX_KEPT_FAILURES`] failures, each naming the link.
    pub failures: Vec<String>,
    /// The largest delay of a call behind its planned time, seconds.
    pub max_lateness_s: f64,
    /// The replay ended because the stop flag was set.
    pub stopped: bool,
    /// How long the replay ran, seconds.
    pub elapsed_s: f64,
}

/// Replays `links` (id, schedule) until `duration` has passed, `stop` is set,
/// or — without a duration — no link has a change left.
///
/// Every change point of every link before `duration` is handed to
/// `apply(link id, rate in Mbit/s)` at its planned time, in time order (links
/// in the given order on ties), starting with each link's rate at t = 0. Each
/// call is reported to `log`; a failed call is logged with its error, counted
/// in the stats, and the replay goes on. With a duration, the driver returns
/// only once the duration has passed (or `stop` is set), even after the last
/// change. Fails only on duplicate link ids.
pub fn replay(
    links: &[(String, ReplaySchedule)],
    duration: Option<Duration>,
    stop: &AtomicBool,
    mut apply: impl FnMut(&str, f64) -> anyhow::Result<()>,
    log: &mut dyn FnMut(&AppliedRate),
) -> anyhow::Result<ReplayStats> {
    let mut seen = HashSet::new();
    for (id, _) in links {
        anyhow::ensure!(
            seen.insert(id.as_str()),
            "replay: link id {id:?} appears twice"
        );
    }
    let horizon_s = duration.map_or(f64::INFINITY, |d| d.as_secs_f64());
    let mut streams: Vec<std::iter::Peekable<ChangePoints<'_>>> = links
        .iter()
        .map(|(_, s)| s.change_points(horizon_s).peekable())
        .collect();

    let start = Instant::now();
    let mut stats = ReplayStats::default();
    let finish = |mut stats: ReplayStats, stopped: bool| {
        stats.stopped = stopped;
        stats.elapsed_s = start.elapsed().as_secs_f64();
        Ok(stats)
    };
    loop {
        // The earliest pending change; the first link wins a tie.
        let mut earliest: Option<(usize, f64)> = None;
        for (i, stream) in streams.iter_mut().enumerate() {
            if let Some(p) = stream.peek() {
                if earliest.is_none_or(|(_, t)| p.time_s < t) {
                    earliest = Some((i, p.time_s));
                }
            }
        }
        let Some((i, _)) = earliest else { break };
        let Some(point) = streams[i].next() else {
            break;
        };
        let Ok(offset) = Duration::try_from_secs_f64(point.time_s) else {
            break;
        };
        let Some(deadline) = start.checked_add(offset) else {
            break;
        };
        if !sleep_until(deadline, stop) {
            return finish(stats, true);
        }
        let link = links[i].0.as_str();
        let time_applied_s = start.elapsed().as_secs_f64();
        let unix_time = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let error = apply(link, point.rate_mbit).err().map(|e| format!("{e:#}"));
        stats.max_lateness_s = stats.max_lateness_s.max(time_applied_s - point.time_s);
        match &error {
            None => stats.applied += 1,
            Some(e) => {
                stats.failed += 1;
                if stats.failures.len() < MAX_KEPT_FAILURES {
                    stats.failures.push(format!(
                        "link {link}: setting {} Mbit/s planned at {:.3} s failed: {e}",
                        point.rate_mbit, point.time_s
                    ));
                }
            }
        }
        log(&AppliedRate {
            link: link.to_string(),
            time_planned_s: point.time_s,
            time_applied_s,
            unix_time,
            rate_mbit: point.rate_mbit,
            error,
        });
    }
    if let Some(deadline) = duration.and_then(|d| start.checked_add(d)) {
        if !sleep_until(deadline, stop) {
            return finish(stats, true);
        }
    }
    let stopped = stop.load(Ordering::Acquire);
    finish(stats, stopped)
}

/// Sleeps until `deadline` in steps of at most [`STOP_POLL`]; false when
/// `stop` was set first.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(STOP_POLL));
    }
}

/// The CSV header [`AppliedRateCsv`] writes.
pub const APPLIED_RATE_CSV_HEADER: [&str; 5] = [
    "time_planned_s",
    "time_applied_s",
    "unix_time",
    "link",
    "rate_mbit",
];

/// Writes successful [`AppliedRate`]s as CSV rows
/// (`time_planned_s,time_applied_s,unix_time,link,rate_mbit`), flushed after
/// every row so a crash loses nothing. Failed applications are not rows: they
/// are in the log callback and [`ReplayStats`].
pub struct AppliedRateCsv<W: Write> {
    writer: csv::Writer<W>,
    first_error: Option<anyhow::Error>,
}

impl AppliedRateCsv<std::fs::File> {
    /// Creates (truncates) the file at `path` and writes the header.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("create applied-rate log {}", path.display()))?;
        Self::new(file).with_context(|| format!("write applied-rate log {}", path.display()))
    }
}

impl<W: Write> AppliedRateCsv<W> {
    /// Writes the header to `w`.
    pub fn new(w: W) -> anyhow::Result<Self> {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(APPLIED_RATE_CSV_HEADER)?;
        writer.flush()?;
        Ok(Self {
            writer,
            first_error: None,
        })
    }

    /// Writes `row` (nothing when it failed) and flushes.
    pub fn write(&mut self, row: &AppliedRate) -> anyhow::Result<()> {
        if row.error.is_some() {
            return Ok(());
        }
        self.writer.write_record([
            format!("{:.6}", row.time_planned_s),
            format!("{:.6}", row.time_applied_s),
            format!("{:.6}", row.unix_time),
            row.link.clone(),
            row.rate_mbit.to_string(),
        ])?;
        self.writer.flush()?;
        Ok(())
    }

    /// [`write`](Self::write) for a `log` callback, which cannot fail: the
    /// first error is kept for [`finish`](Self::finish), later rows are dropped.
    pub fn record(&mut self, row: &AppliedRate) {
        if self.first_error.is_none() {
            if let Err(e) = self.write(row) {
                self.first_error = Some(e);
            }
        }
    }

    /// Flushes and returns the writer, or the first error [`record`](Self::record) met.
    pub fn finish(mut self) -> anyhow::Result<W> {
        if let Some(e) = self.first_error.take() {
            return Err(e.context("write applied-rate log"));
        }
        self.writer
            .into_inner()
            .map_err(|e| anyhow::anyhow!("flush applied-rate log: {}", e.error()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::Trace;
    use super::*;
    use std::sync::Arc;

    /// 5 distinct rates 200 ms apart, no wrap.
    fn fast_schedule(base: f64) -> ReplaySchedule {
        let text: String = (0..5)
            .map(|i| format!("{} {}\n", f64::from(i) * 0.2, base + f64::from(i)))
            .collect();
        let trace = Trace::parse(&text, "fast").expect("valid");
        ReplaySchedule::new(&trace, 0.0, 1.0, false, 0.0).expect("valid")
    }

    #[test]
    fn applies_each_change_within_50_ms_of_its_plan() {
        let links = vec![
            ("a".to_string(), fast_schedule(10.0)),
            ("b".to_string(), fast_schedule(20.0)),
        ];
        let stop = AtomicBool::new(false);
        let mut rows = Vec::new();
        let mut calls = Vec::new();
        let stats = replay(
            &links,
            None,
            &stop,
            |link, rate| {
                calls.push((link.to_string(), rate));
                Ok(())
            },
            &mut |r| rows.push(r.clone()),
        )
        .expect("replay");
        assert_eq!(stats.applied, 10);
        assert_eq!(stats.failed, 0);
        assert!(!stats.stopped);
        assert_eq!(rows.len(), 10);
        for r in &rows {
            let late = r.time_applied_s - r.time_planned_s;
            assert!((-0.05..=0.05).contains(&late), "{r:?}");
            assert!(late >= 0.0, "applied early: {r:?}");
            assert!(r.unix_time > 1.6e9);
        }
        assert!(stats.max_lateness_s < 0.05, "{stats:?}");
        // Time order, link order on ties.
        let order: Vec<(String, f64)> =
            rows.iter().map(|r| (r.link.clone(), r.rate_mbit)).collect();
        assert_eq!(order, calls);
        assert_eq!(order[0], ("a".to_string(), 10.0));
        assert_eq!(order[1], ("b".to_string(), 20.0));
        assert_eq!(order[9], ("b".to_string(), 24.0));
        let planned: Vec<f64> = rows.iter().step_by(2).map(|r| r.time_planned_s).collect();
        assert_eq!(planned, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8]);
        // Ended right after the last change: no duration.
        assert!(stats.elapsed_s < 0.85 + 0.05, "{stats:?}");
    }

    #[test]
    fn a_slow_apply_does_not_shift_later_changes() {
        let links = vec![("a".to_string(), fast_schedule(1.0))];
        let stop = AtomicBool::new(false);
        let mut rows = Vec::new();
        let mut first = true;
        replay(
            &links,
            None,
            &stop,
            |_, _| {
                if std::mem::take(&mut first) {
                    std::thread::sleep(Duration::from_millis(120));
                }
                Ok(())
            },
            &mut |r| rows.push(r.clone()),
        )
        .expect("replay");
        for r in &rows[1..] {
            assert!((r.time_applied_s - r.time_planned_s).abs() < 0.05, "{r:?}");
        }
    }

    #[test]
    fn stop_flag_ends_the_replay_within_the_poll_interval() {
        let trace = Trace::parse("0 1\n100 2\n", "slow").expect("valid");
        let schedule = ReplaySchedule::new(&trace, 0.0, 1.0, true, 0.0).expect("valid");
        let links = vec![("a".to_string(), schedule)];
        let stop = Arc::new(AtomicBool::new(false));
        let setter = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Release);
            })
        };
        let mut rows = 0;
        let stats = replay(
            &links,
            Some(Duration::from_secs(60)),
            &stop,
            |_, _| Ok(()),
            &mut |_| rows += 1,
        )
        .expect("replay");
        setter.join().expect("join");
        assert!(stats.stopped);
        assert_eq!(rows, 1);
        assert!(
            stats.elapsed_s >= 0.3 && stats.elapsed_s < 0.3 + 0.1 + 0.05,
            "{stats:?}"
        );
    }

    #[test]
    fn a_duration_bounds_the_changes_and_is_waited_out() {
        let links = vec![("a".to_string(), fast_schedule(1.0))];
        let stop = AtomicBool::new(false);
        let mut rows = Vec::new();
        let stats = replay(
            &links,
            Some(Duration::from_millis(500)),
            &stop,
            |_, _| Ok(()),
            &mut |r| rows.push(r.rate_mbit),
        )
        .expect("replay");
        assert_eq!(rows, vec![1.0, 2.0, 3.0]);
        assert!(!stats.stopped);
        assert!(
            stats.elapsed_s >= 0.5 && stats.elapsed_s < 0.55,
            "{stats:?}"
        );
    }

    #[test]
    fn apply_errors_are_reported_and_the_replay_goes_on() {
        let links = vec![
            ("good".to_string(), fast_schedule(1.0)),
            ("veth-bad".to_string(), fast_schedule(5.0)),
        ];
        let stop = AtomicBool::new(false);
        let mut rows = Vec::new();
        let stats = replay(
            &links,
            None,
            &stop,
            |link, _| {
                anyhow::ensure!(link != "veth-bad", "tc exited with status 2");
                Ok(())
            },
            &mut |r| rows.push(r.clone()),
        )
        .expect("replay");
        assert_eq!(stats.applied, 5);
        assert_eq!(stats.failed, 5);
        assert_eq!(stats.failures.len(), 5);
        assert!(
            stats.failures[0].contains("link veth-bad"),
            "{:?}",
            stats.failures
        );
        assert!(stats.failures[0].contains("tc exited with status 2"));
        let failed: Vec<&AppliedRate> = rows.iter().filter(|r| r.error.is_some()).collect();
        assert_eq!(failed.len(), 5);
        assert!(failed.iter().all(|r| r.link == "veth-bad"));
    }

    #[test]
    fn duplicate_link_ids_are_refused() {
        let links = vec![
            ("a".to_string(), fast_schedule(1.0)),
            ("a".to_string(), fast_schedule(2.0)),
        ];
        let stop = AtomicBool::new(false);
        let e = replay(&links, None, &stop, |_, _| Ok(()), &mut |_| {}).expect_err("dup");
        assert!(e.to_string().contains("\"a\" appears twice"), "{e}");
    }

    #[test]
    fn csv_rows_are_written_and_flushed_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("applied.csv");
        let mut csv = AppliedRateCsv::create(&path).expect("create");
        let mut row = AppliedRate {
            link: "w1,eth0".to_string(),
            time_planned_s: 0.5,
            time_applied_s: 0.5012,
            unix_time: 1_700_000_000.25,
            rate_mbit: 12.5,
            error: None,
        };
        csv.record(&row);
        // Flushed: visible before the writer is dropped.
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "time_planned_s,time_applied_s,unix_time,link,rate_mbit\n\
             0.500000,0.501200,1700000000.250000,\"w1,eth0\",12.5\n"
        );
        row.error = Some("boom".to_string());
        csv.record(&row);
        csv.finish().expect("finish");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    }
}
