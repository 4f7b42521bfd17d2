//! Trace replay on the testbed's links: every applied rate goes to a CSV
//! (planned and applied time) and a line in the centralized log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use super::lifecycle::{downlink, uplink};
use super::net::Device;
use super::profile::TraceDirection;
use super::rate::Rate;
use super::state::TestbedState;
use super::trace::{AppliedRate, AppliedRateCsv, ReplaySchedule, Trace};
use crate::outputs::central_log::CentralLog;
use common::protocol::LogRecord;

/// The slowest rate a trace may drive a link to (Mbit/s): tc cannot shape to 0.
const FLOOR_MBIT: f64 = 0.008;

/// CSV of applied rates inside a work or run folder.
pub const RATES_FILE: &str = "applied_rates.csv";

/// The links of `state` that follow a trace: (link id, device, schedule).
pub fn schedules(state: &TestbedState) -> anyhow::Result<Vec<(String, Device, ReplaySchedule)>> {
    let mut out = Vec::new();
    for ns in &state.nodes {
        let Some(t) = &ns.node.trace else { continue };
        let trace =
            Trace::load(&t.file).with_context(|| format!("node `{}`: trace", ns.node.name))?;
        let schedule = ReplaySchedule::new(&trace, t.offset_secs, t.scale, t.wrap, FLOOR_MBIT)
            .with_context(|| format!("node `{}`: trace", ns.node.name))?;
        if matches!(t.direction, TraceDirection::Both | TraceDirection::Up) {
            out.push((format!("{}:up", ns.node.name), uplink(ns), schedule.clone()));
        }
        if matches!(t.direction, TraceDirection::Both | TraceDirection::Down) {
            out.push((format!("{}:down", ns.node.name), downlink(ns), schedule));
        }
    }
    Ok(out)
}

/// Replays every traced link of `state` until `stop` is set, writing
/// `csv_path` and lines to the centralized log under `data_dir`.
pub fn replay_links(
    state: &TestbedState,
    stop: &AtomicBool,
    csv_path: &Path,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let links = schedules(state)?;
    if links.is_empty() {
        return Ok(());
    }
    let queue = state.queue_packets();
    let mut csv = AppliedRateCsv::create(csv_path)?;
    let mut central = CentralLog::open(data_dir)?;
    let devices: Vec<(String, Device)> = links
        .iter()
        .map(|(id, d, _)| (id.clone(), d.clone()))
        .collect();
    let schedules: Vec<(String, ReplaySchedule)> =
        links.into_iter().map(|(id, _, s)| (id, s)).collect();
    let mut shaped = std::collections::BTreeSet::new();
    for (id, dev) in &devices {
        if dev.class_stats().ok().flatten().is_some() {
            shaped.insert(id.clone());
        }
    }
    let apply = |id: &str, mbit: f64| -> anyhow::Result<()> {
        let dev = devices
            .iter()
            .find(|(d, _)| d == id)
            .map(|(_, d)| d)
            .with_context(|| format!("unknown link {id}"))?;
        let rate = Rate::from_mbit(mbit);
        if shaped.contains(id) {
            dev.set_rate(rate)
        } else {
            dev.shape(rate, queue)?;
            shaped.insert(id.to_string());
            Ok(())
        }
    };
    let mut log = |a: &AppliedRate| {
        if let Err(e) = csv.write(a) {
            tracing::warn!("{}: {e:#}", csv_path.display());
        }
        let record = LogRecord {
            timestamp_ms: (a.unix_time * 1000.0) as u64,
            node: "testbed".into(),
            level: if a.error.is_some() { "WARN" } else { "INFO" }.into(),
            target: "testbed::replay".into(),
            message: match &a.error {
                Some(e) => format!(
                    "trace replay: {} could not be set to {:.3} Mbit/s: {e}",
                    a.link, a.rate_mbit
                ),
                None => format!(
                    "trace replay: {} → {:.3} Mbit/s at t = {:.2} s (planned {:.2} s)",
                    a.link, a.rate_mbit, a.time_applied_s, a.time_planned_s
                ),
            },
        };
        let _ = central.append(&record);
    };
    super::trace::replay(&schedules, None, stop, apply, &mut log)?;
    Ok(())
}

/// A replay running on its own thread; stopped when dropped.
pub struct ReplayThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl ReplayThread {
    /// Starts replaying `state`'s traces; the CSV goes to `csv_path`.
    pub fn start(state: TestbedState, csv_path: PathBuf, data_dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || replay_links(&state, &flag, &csv_path, &data_dir));
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the replay and returns its result.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the trace replay thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ReplayThread {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// `master testbed replay`: replays until SIGTERM/SIGINT (what `down` sends).
pub fn run_detached(state_dir: &Path, name: &str) -> anyhow::Result<()> {
    let state = TestbedState::load(state_dir, name)?
        .with_context(|| format!("testbed `{name}` is not up"))?;
    let stop = super::spawn::stop_signals();
    let csv = state.work_dir.join(RATES_FILE);
    replay_links(&state, stop, &csv, Path::new("data"))
}
