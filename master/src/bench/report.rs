//! The bench report: every run of every policy, medians per policy, ratios
//! against a baseline (BSP by default), and the files that show them:
//! `data/bench/policies.json`, `data/bench/policies.png`, and a plain-text
//! or Markdown table.
//!
//! Everything here works on data already collected: the orchestration turns
//! each run's `summary.json` and `metrics.csv` (see [`BenchRun::from_outputs`])
//! and the testbed's tc counters into [`BenchRun`]s, then calls
//! [`BenchReport::new`]. Only [`machine_info`] looks at the host.
//!
//! Byte counts are reported in MB of 10^6 bytes. Medians of an even number of
//! values are the mean of the middle two.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::outputs::metrics::{read_metrics, MetricsRow, METRICS_FILE};
use crate::outputs::plot::{registered_font, FONT_ENV};
use crate::outputs::summary::{RunSummary, SUMMARY_FILE};

/// File name of the JSON report inside the bench folder.
pub const REPORT_JSON: &str = "policies.json";

/// File name of the PNG report inside the bench folder.
pub const REPORT_PNG: &str = "policies.png";

/// Width and height of [`plot_png`]'s picture in pixels.
pub const PNG_SIZE: (u32, u32) = (1200, 500);

/// The policy the others are compared with unless told otherwise.
pub const DEFAULT_BASELINE: &str = "bsp";

/// Bytes in one MB as the report counts them.
pub const BYTES_PER_MB: f64 = 1e6;

/// Font family [`registered_font`] registers (the same name `outputs::plot` uses).
const FAMILY: &str = "sans-serif";

/// Bytes that crossed one shaped link, read from its tc counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkBytes {
    /// Bytes the node sent (node → network).
    pub up: u64,
    /// Bytes the node received (network → node).
    pub down: u64,
}

impl LinkBytes {
    /// Both directions together.
    pub fn total(&self) -> u64 {
        self.up.saturating_add(self.down)
    }
}

/// One worker's share of one bench run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerContribution {
    /// Training rounds finished.
    pub rounds: u64,
    /// Rounds whose loss gate fired (an update was published).
    pub major_rounds: u64,
    /// This worker's updates applied to the global model; 0 means the run
    /// went on without it (see [`PolicySummary::starved_workers`]).
    pub updates_accepted: u64,
    /// Samples trained on, summed over rounds.
    pub samples_trained: u64,
    /// How this worker's node was emulated, e.g.
    /// `"netns+htb 1mbit, cgroup cpu 0.25"`. Filled in by the orchestration.
    pub emulated: String,
}

/// One run of one policy on the testbed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// Sync policy name (`hermes`, `bsp`, `asp`, `ssp`).
    pub policy: String,
    /// Which repetition of this policy (0-based).
    pub repeat: u32,
    /// Seed of the run (the same for every policy at a given repetition).
    pub seed: u64,
    /// The run's id.
    pub run_id: String,
    /// Folder holding the run's metrics.csv and summary.json.
    pub run_dir: PathBuf,
    /// Why the run stopped (`target_accuracy`, `time_budget`...).
    pub stop_reason: String,
    /// Whether some version reached the target accuracy.
    pub reached_target: bool,
    /// Seconds until a version first reached the target; `None` if never.
    pub time_to_target_secs: Option<f64>,
    /// Wall time of the run (seconds).
    pub duration_secs: f64,
    /// Test accuracy of the last version; `None` if nothing was evaluated.
    pub final_accuracy: Option<f64>,
    /// The last global version.
    pub versions: u64,
    /// Bytes received by the master, as the master counts them.
    pub bytes_up_master: u64,
    /// Bytes sent by the master, as the master counts them.
    pub bytes_down_master: u64,
    /// Bytes measured from tc counters on every shaped link, by node name.
    pub links: BTreeMap<String, LinkBytes>,
    /// Updates applied.
    pub updates_accepted: u64,
    /// Updates rejected, all reasons together.
    pub updates_rejected: u64,
    /// Per worker id.
    pub workers: BTreeMap<String, WorkerContribution>,
    /// `(elapsed seconds, test accuracy)` of every version, oldest first;
    /// finite values only.
    pub curve: Vec<(f64, f64)>,
}

impl BenchRun {
    /// Builds a run from its summary.json and metrics.csv contents. `links`
    /// is left empty and every worker's `emulated` blank: the orchestration
    /// knows those and fills them in.
    pub fn from_outputs(
        summary: &RunSummary,
        rows: &[MetricsRow],
        run_dir: &Path,
        repeat: u32,
        seed: u64,
    ) -> Self {
        let workers = summary
            .workers
            .iter()
            .map(|(id, w)| {
                let contribution = WorkerContribution {
                    rounds: w.rounds,
                    major_rounds: w.major_rounds,
                    updates_accepted: w.updates_accepted,
                    samples_trained: w.samples_trained,
                    emulated: String::new(),
                };
                (id.clone(), contribution)
            })
            .collect();
        Self {
            policy: summary.policy.clone(),
            repeat,
            seed,
            run_id: summary.run_id.clone(),
            run_dir: run_dir.to_path_buf(),
            stop_reason: summary.stop_reason.clone(),
            reached_target: summary.time_to_target_secs.is_some(),
            time_to_target_secs: summary.time_to_target_secs,
            duration_secs: summary.duration_secs,
            final_accuracy: summary.final_test_accuracy,
            versions: summary.versions,
            bytes_up_master: summary.bytes_up,
            bytes_down_master: summary.bytes_down,
            links: BTreeMap::new(),
            updates_accepted: summary.updates_accepted,
            updates_rejected: summary.updates_rejected,
            workers,
            curve: accuracy_curve(rows),
        }
    }

    /// Reads `<run_dir>/summary.json` and `<run_dir>/metrics.csv` and calls
    /// [`BenchRun::from_outputs`]; errors name the file.
    pub fn read(run_dir: &Path, repeat: u32, seed: u64) -> anyhow::Result<Self> {
        let summary = RunSummary::read(&run_dir.join(SUMMARY_FILE))?;
        let rows = read_metrics(&run_dir.join(METRICS_FILE))?;
        Ok(Self::from_outputs(&summary, &rows, run_dir, repeat, seed))
    }

    /// Bytes counted by the master, both directions.
    pub fn bytes_master(&self) -> u64 {
        self.bytes_up_master.saturating_add(self.bytes_down_master)
    }

    /// Bytes measured on the shaped links, summed over links and directions.
    pub fn bytes_links(&self) -> u64 {
        self.links
            .values()
            .fold(0u64, |sum, l| sum.saturating_add(l.total()))
    }

    /// Time to target when the run reached it.
    pub fn time_to_target(&self) -> Option<f64> {
        self.time_to_target_secs.filter(|_| self.reached_target)
    }

    /// Workers with no accepted update, by name.
    pub fn starved_workers(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(_, w)| w.updates_accepted == 0)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// `(elapsed seconds, test accuracy)` of every metrics row whose two values
/// are finite, in row order.
pub fn accuracy_curve(rows: &[MetricsRow]) -> Vec<(f64, f64)> {
    rows.iter()
        .filter(|r| r.elapsed_secs.is_finite() && r.test_accuracy.is_finite())
        .map(|r| (r.elapsed_secs, r.test_accuracy))
        .collect()
}

/// One policy over all its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySummary {
    /// Sync policy name.
    pub policy: String,
    /// Runs of this policy.
    pub runs: usize,
    /// Runs that reached the target accuracy.
    pub reached: usize,
    /// Median time to target over the runs that reached it; `None` if none did.
    pub median_time_to_target_secs: Option<f64>,
    /// Median wall time over all runs.
    pub median_duration_secs: f64,
    /// Median final test accuracy over the runs that evaluated something.
    pub median_final_accuracy: Option<f64>,
    /// Median over all runs of the bytes counted by the master (up + down).
    pub median_bytes_master: f64,
    /// Median over all runs of the bytes measured on the links (every link, up + down).
    pub median_bytes_links: f64,
    /// Median over all runs of the updates applied.
    pub median_updates_accepted: f64,
    /// Index into the runs given to [`summarize`] (and so into
    /// [`BenchReport::runs`]) of the median run: the one whose time to target
    /// is the median among the runs that reached it, or whose duration is
    /// the median when none did. For an even count, the lower of the middle
    /// two (ties go to the earlier run). Its curve is the one plotted.
    pub median_run: usize,
    /// The median run's id.
    pub median_run_id: String,
    /// Baseline median time to target / this policy's. `None` when the
    /// baseline is absent, or either policy never reached the target.
    pub speedup: Option<f64>,
    /// 1 − this policy's median link bytes / the baseline's (positive: less
    /// traffic). `None` as for `speedup`, or when the baseline measured no bytes.
    pub traffic_reduction_links: Option<f64>,
    /// The same with the bytes the master counted.
    pub traffic_reduction_master: Option<f64>,
    /// Workers with no accepted update in the median run: a run that reaches
    /// its target by leaving a worker out says so here.
    pub starved_workers: Vec<String>,
    /// Runs of this policy in which at least one worker had no accepted update.
    pub runs_with_starved_workers: usize,
}

/// Medians and ratios per policy, policies in the order they first appear
/// in `runs`. Ratios compare with the policy named `baseline`.
pub fn summarize(runs: &[BenchRun], baseline: &str) -> Vec<PolicySummary> {
    let mut order: Vec<&str> = Vec::new();
    for run in runs {
        if !order.contains(&run.policy.as_str()) {
            order.push(&run.policy);
        }
    }
    let mut summaries: Vec<PolicySummary> = order
        .into_iter()
        .map(|policy| summarize_policy(runs, policy))
        .collect();
    let base = summaries.iter().find(|s| s.policy == baseline).cloned();
    for summary in &mut summaries {
        set_ratios(summary, base.as_ref());
    }
    summaries
}

/// Medians of the runs of `policy` (at least one), ratios left unset.
fn summarize_policy(runs: &[BenchRun], policy: &str) -> PolicySummary {
    let mine: Vec<(usize, &BenchRun)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.policy == policy)
        .collect();
    let values = |f: &dyn Fn(&BenchRun) -> Option<f64>| -> Vec<f64> {
        mine.iter().filter_map(|(_, r)| f(r)).collect()
    };
    let all = |f: &dyn Fn(&BenchRun) -> f64| median(&values(&|r| Some(f(r)))).unwrap_or(0.0);
    let reached: Vec<(usize, f64)> = mine
        .iter()
        .filter_map(|(i, r)| r.time_to_target().map(|t| (*i, t)))
        .collect();
    let candidates: Vec<(usize, f64)> = if reached.is_empty() {
        mine.iter().map(|(i, r)| (*i, r.duration_secs)).collect()
    } else {
        reached.clone()
    };
    let median_run = median_index(&candidates).unwrap_or(0);
    let (median_run_id, starved_workers) = runs
        .get(median_run)
        .map(|r| (r.run_id.clone(), r.starved_workers()))
        .unwrap_or_default();
    PolicySummary {
        policy: policy.to_string(),
        runs: mine.len(),
        reached: reached.len(),
        median_time_to_target_secs: median(&values(&|r| r.time_to_target())),
        median_duration_secs: all(&|r| r.duration_secs),
        median_final_accuracy: median(&values(&|r| r.final_accuracy)),
        median_bytes_master: all(&|r| r.bytes_master() as f64),
        median_bytes_links: all(&|r| r.bytes_links() as f64),
        median_updates_accepted: all(&|r| r.updates_accepted as f64),
        median_run,
        median_run_id,
        speedup: None,
        traffic_reduction_links: None,
        traffic_reduction_master: None,
        starved_workers,
        runs_with_starved_workers: mine
            .iter()
            .filter(|(_, r)| !r.starved_workers().is_empty())
            .count(),
    }
}

/// Sets `summary`'s ratios against `base` (see [`PolicySummary::speedup`]).
fn set_ratios(summary: &mut PolicySummary, base: Option<&PolicySummary>) {
    let Some(base) = base else { return };
    let (Some(base_t), Some(t)) = (
        base.median_time_to_target_secs,
        summary.median_time_to_target_secs,
    ) else {
        return;
    };
    let finite = |v: f64| Some(v).filter(|v| v.is_finite());
    summary.speedup = (base_t > 0.0 && t > 0.0)
        .then(|| base_t / t)
        .and_then(finite);
    let reduction =
        |mine: f64, theirs: f64| (theirs > 0.0).then(|| 1.0 - mine / theirs).and_then(finite);
    summary.traffic_reduction_links =
        reduction(summary.median_bytes_links, base.median_bytes_links);
    summary.traffic_reduction_master =
        reduction(summary.median_bytes_master, base.median_bytes_master);
}

/// Median of `values` (NaNs ignored); the mean of the middle two for an even
/// count; `None` when there is nothing left.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The `usize` of the `(index, key)` pair with the median key: the lower of
/// the middle two for an even count, ties broken by index.
fn median_index(pairs: &[(usize, f64)]) -> Option<usize> {
    let mut v = pairs.to_vec();
    v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    v.get(v.len().checked_sub(1)? / 2).map(|p| p.0)
}

/// The machine a bench ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Logical cores available to this process.
    pub cores: usize,
    /// CPU model name from /proc/cpuinfo (`unknown` if absent).
    pub cpu_model: String,
    /// Kernel release (`uname -r`; `unknown` if unreadable).
    pub kernel_release: String,
    /// Total memory in bytes from /proc/meminfo; `None` if unreadable.
    pub total_memory_bytes: Option<u64>,
    /// Operating system (`linux`...).
    pub os: String,
    /// CPU architecture (`x86_64`...).
    pub arch: String,
    /// When this was read, RFC 3339 UTC.
    pub date_utc: String,
}

/// Describes this machine: cores, CPU model, kernel, memory, and the date.
pub fn machine_info() -> MachineInfo {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    MachineInfo {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
        kernel_release: if kernel.is_empty() {
            "unknown".into()
        } else {
            kernel
        },
        total_memory_bytes: mem_total_bytes(&read("/proc/meminfo")),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        date_utc: crate::outputs::rfc3339_utc(now_ms),
    }
}

/// The first `model name` in a /proc/cpuinfo text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("model name"))
        .find_map(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .filter(|m| !m.is_empty())
}

/// `MemTotal` of a /proc/meminfo text, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Everything policies.json holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Name of the testbed profile (its file stem).
    pub profile_name: String,
    /// The testbed profile as read.
    pub profile: serde_json::Value,
    /// The machine the bench ran on.
    pub machine: MachineInfo,
    /// How the testbed was emulated (namespaces, tc shaping, cgroup caps).
    pub emulation_note: String,
    /// The accuracy every run aimed for.
    pub target_accuracy: f64,
    /// Runs per policy.
    pub repeats: u32,
    /// The policy the ratios compare with.
    pub baseline: String,
    /// Every run, in the order they ran.
    pub runs: Vec<BenchRun>,
    /// One per policy, in first-run order ([`summarize`] of `runs`).
    pub policies: Vec<PolicySummary>,
}

impl BenchReport {
    /// A report on `runs` with their [`summarize`]d policies, compared with
    /// [`DEFAULT_BASELINE`] (see [`BenchReport::with_baseline`]).
    pub fn new(
        profile_name: impl Into<String>,
        profile: serde_json::Value,
        machine: MachineInfo,
        emulation_note: impl Into<String>,
        target_accuracy: f64,
        repeats: u32,
        runs: Vec<BenchRun>,
    ) -> Self {
        let policies = summarize(&runs, DEFAULT_BASELINE);
        Self {
            profile_name: profile_name.into(),
            profile,
            machine,
            emulation_note: emulation_note.into(),
            target_accuracy,
            repeats,
            baseline: DEFAULT_BASELINE.to_string(),
            runs,
            policies,
        }
    }

    /// The same report compared with `baseline` instead (policies recomputed).
    pub fn with_baseline(mut self, baseline: &str) -> Self {
        self.baseline = baseline.to_string();
        self.policies = summarize(&self.runs, baseline);
        self
    }

    /// The summary of `policy`, if it ran.
    pub fn policy(&self, policy: &str) -> Option<&PolicySummary> {
        self.policies.iter().find(|s| s.policy == policy)
    }

    /// The median run of a policy summary (the one plotted).
    pub fn median_run(&self, summary: &PolicySummary) -> Option<&BenchRun> {
        self.runs
            .get(summary.median_run)
            .filter(|r| r.policy == summary.policy)
    }
}

/// Writes `report` as pretty JSON to `path` atomically (temporary file, then
/// rename), creating the parent folders.
pub fn write_json(report: &BenchReport, path: &Path) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report)
        .with_context(|| format!("{}: cannot encode the bench report", path.display()))?;
    text.push('\n');
    crate::outputs::write_atomically(path, text.as_bytes())
}

/// Reads a policies.json written by [`write_json`].
pub fn read_json(path: &Path) -> anyhow::Result<BenchReport> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a bench report", path.display()))
}

/// Bytes as MB.
fn mb(bytes: f64) -> f64 {
    bytes / BYTES_PER_MB
}

/// Line colours, one per policy in order (then repeating).
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Colour of the bars of bytes counted by the master.
const MASTER_COLOR: RGBColor = RGBColor(31, 119, 180);

/// Colour of the bars of bytes measured on the links.
const LINKS_COLOR: RGBColor = RGBColor(255, 127, 14);

/// Draws `path` ([`PNG_SIZE`]): left, test accuracy over time of each
/// policy's median run with the target dashed; right, median bytes per
/// policy, counted by the master and measured on the links, in MB. The file
/// is replaced atomically; parent folders are created. Without a font the
/// picture is drawn without text (a warning says so).
pub fn plot_png(report: &BenchReport, path: &Path) -> anyhow::Result<()> {
    let text = registered_font().is_some();
    if !text {
        tracing::warn!(
            "no TrueType font found (see ${FONT_ENV}); {} has no text. \
             Install fonts-dejavu-core to get titles and labels",
            path.display()
        );
    }
    crate::outputs::write_png_atomically(path, |tmp| draw(tmp, report, text))
}

/// Draws both panels into `path`; `text` says whether a font is available.
fn draw(path: &Path, report: &BenchReport, text: bool) -> anyhow::Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: cannot draw: {e}", path.display());
    let root = BitMapBackend::new(path, PNG_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let body = if text {
        let title = format!(
            "hermes-rs bench: profile {}, {} repeat(s), target {:.1}%",
            report.profile_name,
            report.repeats,
            report.target_accuracy * 100.0
        );
        root.titled(&title, (FAMILY, 22)).map_err(|e| fail(&e))?
    } else {
        root.clone()
    };
    let (left, right) = body.split_horizontally(PNG_SIZE.0 * 3 / 5);

    // Left: accuracy of each policy's median run.
    let curves: Vec<(String, Vec<(f64, f64)>)> = report
        .policies
        .iter()
        .map(|s| {
            let points = report
                .median_run(s)
                .map(|r| {
                    r.curve
                        .iter()
                        .filter(|(t, a)| t.is_finite() && a.is_finite())
                        .map(|&(t, a)| (t.max(0.0), a.clamp(0.0, 1.0)))
                        .collect()
                })
                .unwrap_or_default();
            let label = format!("{} ({}/{} reached)", s.policy, s.reached, s.runs);
            (label, points)
        })
        .collect();
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.02;
    let mut builder = ChartBuilder::on(&left);
    builder.margin(12);
    if text {
        builder.x_label_area_size(40).y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..1.0)
        .map_err(|e| fail(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc("elapsed time (s)")
            .y_desc("test accuracy (median run)")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16));
    } else {
        mesh.x_labels(10).y_labels(10);
    }
    mesh.draw().map_err(|e| fail(&e))?;
    for (i, (label, points)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let series = chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| fail(&e))?;
        if text {
            series.label(label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        if let [only] = points.as_slice() {
            // One point draws no line: mark it.
            chart
                .draw_series(std::iter::once(Circle::new(*only, 4, color.filled())))
                .map_err(|e| fail(&e))?;
        }
    }
    let target = if report.target_accuracy.is_finite() {
        report.target_accuracy.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let dashed = chart
        .draw_series(DashedLineSeries::new(
            [(0.0, target), (x_max, target)],
            8,
            6,
            BLACK.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| fail(&e))?;
    if text {
        dashed
            .label(format!("target {:.1}%", report.target_accuracy * 100.0))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6).stroke_width(1))
            });
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FAMILY, 14))
            .draw()
            .map_err(|e| fail(&e))?;
    }

    // Right: median bytes per policy, two bars each.
    let n = report.policies.len();
    let bars: Vec<(f64, f64)> = report
        .policies
        .iter()
        .map(|s| (mb(s.median_bytes_master), mb(s.median_bytes_links)))
        .map(|(m, l)| (finite_or_zero(m), finite_or_zero(l)))
        .collect();
    let y_top = bars
        .iter()
        .flat_map(|&(m, l)| [m, l])
        .fold(0.0_f64, f64::max);
    let y_max = if y_top > 0.0 { y_top * 1.25 } else { 1.0 };
    let mut builder = ChartBuilder::on(&right);
    builder.margin(12);
    if text {
        builder.x_label_area_size(40).y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..n.max(1) as f64, 0.0..y_max)
        .map_err(|e| fail(&e))?;
    let mut mesh = chart.configure_mesh();
    // Policy names are drawn under each pair of bars below, not as ticks.
    mesh.disable_x_mesh()
        .x_labels(0)
        .light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.y_desc("median MB (10^6 bytes)")
            .x_desc("policy")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16));
    } else {
        mesh.y_labels(10);
    }
    mesh.draw().map_err(|e| fail(&e))?;
    let groups = [
        ("counted by the master", MASTER_COLOR, 0.1, 0.5),
        ("measured on the links (tc)", LINKS_COLOR, 0.5, 0.9),
    ];
    for (g, (label, color, from, to)) in groups.into_iter().enumerate() {
        let series = chart
            .draw_series(bars.iter().enumerate().map(|(i, &pair)| {
                let height = if g == 0 { pair.0 } else { pair.1 };
                let x = i as f64;
                Rectangle::new([(x + from, 0.0), (x + to, height)], color.filled())
            }))
            .map_err(|e| fail(&e))?;
        if text {
            series.label(label).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
    }
    if text {
        let style =
            TextStyle::from((FAMILY, 14).into_font()).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ));
        for (i, s) in report.policies.iter().enumerate() {
            // The root area's coordinates are the backend's pixels.
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(s.policy.clone(), (x, y + 6), style.clone()))
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FAMILY, 14))
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// `v`, or 0 when it is not finite.
fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Column headers of the policy table; `baseline` names the ratio columns.
fn table_header(baseline: &str) -> Vec<String> {
    vec![
        "policy".into(),
        "runs".into(),
        "reached".into(),
        "time to target".into(),
        "final accuracy".into(),
        "links MB".into(),
        "master MB".into(),
        "updates".into(),
        format!("speedup vs {}", baseline.to_uppercase()),
        format!("cut vs {} (links)", baseline.to_uppercase()),
        format!("cut vs {} (master)", baseline.to_uppercase()),
        "starved workers".into(),
    ]
}

/// One table row per policy, cells in [`table_header`] order.
fn table_rows(report: &BenchReport) -> Vec<Vec<String>> {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let pct = |v: Option<f64>| or_dash(v.map(|v| format!("{:+.1}%", v * 100.0)));
    report
        .policies
        .iter()
        .map(|s| {
            let starved = match s.starved_workers.len() {
                0 => "-".to_string(),
                n if n <= 4 => s.starved_workers.join(", "),
                n => format!("{n} workers ({}, …)", s.starved_workers[..3].join(", ")),
            };
            let starved = if s.runs_with_starved_workers > 0 {
                format!(
                    "{starved} [{}/{} runs starve a worker]",
                    s.runs_with_starved_workers, s.runs
                )
            } else {
                starved
            };
            vec![
                s.policy.clone(),
                s.runs.to_string(),
                format!("{}/{}", s.reached, s.runs),
                or_dash(s.median_time_to_target_secs.map(|t| format!("{t:.1} s"))),
                or_dash(
                    s.median_final_accuracy
                        .map(|a| format!("{:.2}%", a * 100.0)),
                ),
                format!("{:.2}", mb(s.median_bytes_links)),
                format!("{:.2}", mb(s.median_bytes_master)),
                format!("{:.0}", s.median_updates_accepted),
                or_dash(s.speedup.map(|x| format!("{x:.2}x"))),
                pct(s.traffic_reduction_links),
                pct(s.traffic_reduction_master),
                starved,
            ]
        })
        .collect()
}

/// What the table's columns mean, one line each.
fn table_notes(report: &BenchReport) -> Vec<String> {
    let base = report.baseline.to_uppercase();
    vec![
        format!(
            "profile {}, target accuracy {:.1}%, {} repeat(s) per policy; every figure is a \
             median (even counts: mean of the middle two)",
            report.profile_name,
            report.target_accuracy * 100.0,
            report.repeats
        ),
        "time to target: over the runs that reached it; bytes and updates: over all runs; \
         MB = 10^6 bytes, up + down"
            .to_string(),
        format!(
            "speedup = {base} median time to target / the policy's; cut = 1 - bytes / {base} \
             bytes (positive: less traffic); '-' when {base} is absent or a policy never reached \
             the target"
        ),
        "starved workers: no accepted update in the median run (the plotted one); \
         [k/n]: runs in which some worker had none"
            .to_string(),
    ]
}

/// A plain-text table, one row per policy, followed by notes on the columns.
pub fn format_table(report: &BenchReport) -> String {
    let header = table_header(&report.baseline);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut out = crate::deploy::report::table(&header, &table_rows(report));
    for note in table_notes(report) {
        let _ = writeln!(out, "  {note}");
    }
    out
}

/// The same table in Markdown, for the README; notes follow as a list.
pub fn format_markdown_table(report: &BenchReport) -> String {
    let cell = |c: &str| c.replace('|', "\\|").replace('\n', " ");
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let header = table_header(&report.baseline);
    let mut out = line(&header);
    let rule: Vec<String> = (0..header.len())
        .map(|i| {
            if i == 0 || i + 1 == header.len() {
                "---"
            } else {
                "---:"
            }
            .to_string()
        })
        .collect();
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in table_rows(report) {
        out.push_str(&line(&row));
    }
    out.push('\n');
    for note in table_notes(report) {
        let _ = writeln!(out, "- {}", cell(&note));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `policy` that reaches the target after `ttt` seconds (never
    /// when `None`), with `links` bytes on one link and `master` bytes counted.
    fn run(policy: &str, repeat: u32, ttt: Option<f64>, links: u64, master: u64) -> BenchRun {
        let mut workers = BTreeMap::new();
        for w in ["w1", "w2"] {
            workers.insert(
                w.to_string(),
                WorkerContribution {
                    rounds: 10,
                    major_rounds: 5,
                    updates_accepted: 5,
                    samples_trained: 1000,
                    emulated: "netns+htb 1mbit, cgroup cpu 0.25".into(),
                },
            );
        }
        let mut link_map = BTreeMap::new();
        link_map.insert(
            "w1".to_string(),
            LinkBytes {
                up: links / 4,
                down: links - links / 4,
            },
        );
        BenchRun {
            policy: policy.into(),
            repeat,
            seed: 7 + u64::from(repeat),
            run_id: format!("{policy}-{repeat}"),
            run_dir: PathBuf::from(format!("data/runs/{policy}-{repeat}")),
            stop_reason: if ttt.is_some() {
                "target_accuracy".into()
            } else {
                "time_budget".into()
            },
            reached_target: ttt.is_some(),
            time_to_target_secs: ttt,
            duration_secs: ttt.unwrap_or(100.0) + 0.5,
            final_accuracy: Some(if ttt.is_some() { 0.81 } else { 0.6 }),
            versions: 20,
            bytes_up_master: master / 2,
            bytes_down_master: master - master / 2,
            links: link_map,
            updates_accepted: 10,
            updates_rejected: 1,
            workers,
            curve: (0..10)
                .map(|i| (i as f64 * 2.0, 0.1 + 0.08 * i as f64))
                .collect(),
        }
    }

    fn report(runs: Vec<BenchRun>) -> BenchReport {
        let machine = MachineInfo {
            cores: 16,
            cpu_model: "Test CPU".into(),
            kernel_release: "6.1.0".into(),
            total_memory_bytes: Some(1 << 34),
            os: "linux".into(),
            arch: "x86_64".into(),
            date_utc: "2026-11-29T23:59:01.000Z".into(),
        };
        BenchReport::new(
            "edge4",
            serde_json::json!({"nodes": 4, "links": {"w1": "1mbit"}}),
            machine,
            "netns + tc htb per link, cgroup v2 cpu.max per worker",
            0.8,
            3,
            runs,
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Width and height from a PNG's IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert!(bytes.len() > 24, "too short for a PNG");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn medians_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0]), Some(5.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[f64::NAN, 1.0, 3.0]), Some(2.0));
    }

    #[test]
    fn median_run_is_the_lower_middle_and_ties_go_first() {
        assert_eq!(median_index(&[(0, 30.0), (1, 10.0), (2, 20.0)]), Some(2));
        assert_eq!(
            median_index(&[(0, 40.0), (1, 10.0), (2, 30.0), (3, 20.0)]),
            Some(3)
        );
        assert_eq!(median_index(&[(5, 1.0), (2, 1.0)]), Some(2));
        assert_eq!(median_index(&[]), None);
    }

    #[test]
    fn summaries_per_policy_in_first_seen_order() {
        let runs = vec![
            run("hermes", 0, Some(30.0), 3_000_000, 2_000_000),
            run("bsp", 0, Some(60.0), 9_000_000, 8_000_000),
            run("hermes", 1, Some(10.0), 1_000_000, 1_000_000),
            run("bsp", 1, Some(80.0), 11_000_000, 10_000_000),
            run("hermes", 2, Some(20.0), 2_000_000, 1_500_000),
            run("asp", 0, None, 5_000_000, 4_000_000),
        ];
        let s = summarize(&runs, "bsp");
        let names: Vec<&str> = s.iter().map(|p| p.policy.as_str()).collect();
        assert_eq!(names, ["hermes", "bsp", "asp"]);

        let hermes = &s[0];
        assert_eq!((hermes.runs, hermes.reached), (3, 3));
        assert_eq!(hermes.median_time_to_target_secs, Some(20.0));
        assert_eq!(hermes.median_duration_secs, 20.5);
        assert_eq!(hermes.median_bytes_links, 2_000_000.0);
        assert_eq!(hermes.median_bytes_master, 1_500_000.0);
        assert_eq!(hermes.median_final_accuracy, Some(0.81));
        assert_eq!(hermes.median_updates_accepted, 10.0);
        assert_eq!(hermes.median_run, 4);
        assert_eq!(hermes.median_run_id, "hermes-2");

        // Two runs: means of the middle two; the faster run is the median run.
        let bsp = &s[1];
        assert_eq!(bsp.median_time_to_target_secs, Some(70.0));
        assert_eq!(bsp.median_bytes_links, 10_000_000.0);
        assert_eq!(bsp.median_bytes_master, 9_000_000.0);
        assert_eq!(bsp.median_run, 1);
        assert_eq!(bsp.speedup, Some(1.0));
        assert_eq!(bsp.traffic_reduction_links, Some(0.0));

        // Hand numbers: 70 / 20 = 3.5; 1 − 2/10 = 0.8; 1 − 1.5/9.
        assert!(close(hermes.speedup.unwrap(), 3.5));
        assert!(close(hermes.traffic_reduction_links.unwrap(), 0.8));
        assert!(close(
            hermes.traffic_reduction_master.unwrap(),
            1.0 - 1.5 / 9.0
        ));

        // ASP never reached the target: no time, no ratios, median by duration.
        let asp = &s[2];
        assert_eq!((asp.runs, asp.reached), (1, 0));
        assert_eq!(asp.median_time_to_target_secs, None);
        assert_eq!(asp.median_duration_secs, 100.5);
        assert_eq!(asp.median_run, 5);
        assert_eq!(
            (
                asp.speedup,
                asp.traffic_reduction_links,
                asp.traffic_reduction_master
            ),
            (None, None, None)
        );
    }

    #[test]
    fn more_traffic_than_the_baseline_is_a_negative_cut() {
        let runs = vec![
            run("bsp", 0, Some(50.0), 1_000_000, 1_000_000),
            run("ssp", 0, Some(100.0), 1_500_000, 4_000_000),
        ];
        let s = summarize(&runs, "bsp");
        assert!(close(s[1].speedup.unwrap(), 0.5));
        assert!(close(s[1].traffic_reduction_links.unwrap(), -0.5));
        assert!(close(s[1].traffic_reduction_master.unwrap(), -3.0));
    }

    #[test]
    fn no_ratios_without_a_baseline_that_reached_the_target() {
        let hermes = run("hermes", 0, Some(10.0), 1_000_000, 1_000_000);
        let no_ratios = |s: &PolicySummary| {
            s.speedup.is_none()
                && s.traffic_reduction_links.is_none()
                && s.traffic_reduction_master.is_none()
        };
        // Baseline absent.
        let s = summarize(std::slice::from_ref(&hermes), "bsp");
        assert!(no_ratios(&s[0]), "{s:?}");
        // Baseline ran but never reached the target.
        let runs = vec![hermes.clone(), run("bsp", 0, None, 5_000_000, 5_000_000)];
        let s = summarize(&runs, "bsp");
        assert!(s.iter().all(no_ratios), "{s:?}");
        // A baseline that measured no link bytes gives no link ratio.
        let mut bsp = run("bsp", 0, Some(20.0), 0, 5_000_000);
        bsp.links.clear();
        let s = summarize(&[hermes, bsp], "bsp");
        assert_eq!(s[0].speedup, Some(2.0));
        assert_eq!(s[0].traffic_reduction_links, None);
        assert!(close(s[0].traffic_reduction_master.unwrap(), 0.8));
    }

    #[test]
    fn a_reached_flag_without_a_time_does_not_count_and_vice_versa() {
        let mut a = run("hermes", 0, Some(10.0), 1, 1);
        a.reached_target = false;
        let mut b = run("hermes", 1, None, 1, 1);
        b.reached_target = true;
        let s = summarize(&[a, b], "bsp");
        assert_eq!(s[0].reached, 0);
        assert_eq!(s[0].median_time_to_target_secs, None);
    }

    #[test]
    fn starved_workers_of_the_median_run_are_named() {
        let mut fast = run("hermes", 0, Some(10.0), 1_000_000, 1_000_000);
        fast.workers.get_mut("w2").unwrap().updates_accepted = 0;
        let mid = {
            let mut r = run("hermes", 1, Some(20.0), 1_000_000, 1_000_000);
            r.workers.get_mut("w1").unwrap().updates_accepted = 0;
            r
        };
        let slow = run("hermes", 2, Some(30.0), 1_000_000, 1_000_000);
        let s = summarize(&[fast, mid, slow], "bsp");
        assert_eq!(s[0].median_run, 1);
        assert_eq!(s[0].starved_workers, ["w1"]);
        assert_eq!(s[0].runs_with_starved_workers, 2);
        let text = format_table(&report(vec![run("bsp", 0, Some(5.0), 1, 1)]));
        assert!(text.lines().nth(2).unwrap().ends_with(" -"), "{text}");

        let r = report(vec![
            {
                let mut r = run("hermes", 0, Some(10.0), 1, 1);
                r.workers.get_mut("w2").unwrap().updates_accepted = 0;
                r
            },
            run("bsp", 0, Some(20.0), 1, 1),
        ]);
        assert_eq!(r.policy("hermes").unwrap().starved_workers, ["w2"]);
        assert!(r.policy("bsp").unwrap().starved_workers.is_empty());
        let text = format_table(&r);
        assert!(text.contains("w2 [1/1 runs starve a worker]"), "{text}");
    }

    #[test]
    fn with_baseline_recomputes_ratios() {
        let r = report(vec![
            run("hermes", 0, Some(10.0), 1_000_000, 1_000_000),
            run("bsp", 0, Some(40.0), 4_000_000, 4_000_000),
            run("asp", 0, Some(20.0), 2_000_000, 2_000_000),
        ]);
        assert_eq!(r.baseline, "bsp");
        assert_eq!(r.policy("hermes").unwrap().speedup, Some(4.0));
        let r = r.with_baseline("asp");
        assert_eq!(r.baseline, "asp");
        assert_eq!(r.policy("hermes").unwrap().speedup, Some(2.0));
        assert_eq!(r.policy("bsp").unwrap().speedup, Some(0.5));
        assert!(format_table(&r).contains("speedup vs ASP"));
    }

    #[test]
    fn json_round_trip_and_atomic_write() {
        let r = report(vec![
            run("hermes", 0, Some(12.345678901234567), 1_234_567, 7_654_321),
            run("bsp", 0, None, 9_999_999, 8_888_888),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/bench").join(REPORT_JSON);
        write_json(&r, &path).unwrap();
        assert_eq!(read_json(&path).unwrap(), r);
        write_json(&r, &path).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(REPORT_JSON)]);
        let e = format!(
            "{:#}",
            read_json(&dir.path().join("missing.json")).unwrap_err()
        );
        assert!(e.contains("missing.json"), "{e}");
        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        let e = format!("{:#}", read_json(&dir.path().join("bad.json")).unwrap_err());
        assert!(
            e.contains("bad.json") && e.contains("not a bench report"),
            "{e}"
        );
    }

    #[test]
    fn png_is_written_with_the_right_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench").join(REPORT_PNG);
        let r = report(vec![
            run("hermes", 0, Some(10.0), 1_000_000, 2_000_000),
            run("bsp", 0, Some(40.0), 4_000_000, 3_000_000),
            run("asp", 0, None, 2_000_000, 2_500_000),
            run("ssp", 0, Some(20.0), 3_000_000, 3_500_000),
        ]);
        plot_png(&r, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), PNG_SIZE);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "a temporary file was left"
        );
    }

    #[test]
    fn degenerate_reports_still_plot() {
        let dir = tempfile::tempdir().unwrap();
        // No runs at all.
        let path = dir.path().join("empty.png");
        plot_png(&report(Vec::new()), &path).unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), PNG_SIZE);
        // Empty curve, a single point, odd values, zero bytes.
        let mut empty = run("hermes", 0, None, 0, 0);
        empty.curve.clear();
        empty.links.clear();
        let mut single = run("bsp", 0, Some(3.0), 0, 0);
        single.curve = vec![(3.0, 0.85)];
        let mut odd = run("asp", 0, Some(1.0), 10, 10);
        odd.curve = vec![(f64::NAN, 0.5), (1.0, f64::INFINITY), (2.0, 1.7)];
        let mut r = report(vec![empty, single, odd]);
        r.target_accuracy = f64::NAN;
        let path = dir.path().join("odd.png");
        plot_png(&r, &path).unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), PNG_SIZE);
        // Without a font.
        let path = dir.path().join("plain.png");
        draw(&path, &r, false).unwrap();
        assert_eq!(png_size(&std::fs::read(&path).unwrap()), PNG_SIZE);
    }

    #[test]
    fn tables_have_a_row_per_policy() {
        let r = report(vec![
            run("hermes", 0, Some(10.0), 1_000_000, 2_000_000),
            run("bsp", 0, Some(40.0), 4_000_000, 3_000_000),
            run("asp", 0, None, 2_000_000, 2_500_000),
            run("ssp", 0, Some(20.0), 3_000_000, 3_500_000),
        ]);
        let text = format_table(&r);
        let rows: Vec<&str> = text.lines().collect();
        // Header, rule, four policies, then notes.
        for (line, policy) in rows[2..6].iter().zip(["hermes", "bsp", "asp", "ssp"]) {
            assert!(line.starts_with(policy), "{text}");
        }
        let hermes = rows[2];
        for expected in [
            "1/1", "10.0 s", "81.00%", "1.00", "2.00", "4.00x", "+75.0%", "+33.3%",
        ] {
            assert!(hermes.contains(expected), "{expected} missing: {hermes}");
        }
        // ASP never reached the target: no time, no ratios.
        assert!(rows[4].contains("0/1") && rows[4].contains(" - "), "{text}");
        assert!(text.contains("speedup vs BSP"), "{text}");

        let md = format_markdown_table(&r);
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].starts_with("| policy |"), "{md}");
        assert!(lines[1].starts_with("|---|---:|"), "{md}");
        let columns = lines[0].matches(" | ").count();
        for (line, policy) in lines[2..6].iter().zip(["hermes", "bsp", "asp", "ssp"]) {
            assert!(line.starts_with(&format!("| {policy} |")), "{md}");
            assert_eq!(line.matches(" | ").count(), columns, "{line}");
        }
        assert!(lines[2].contains("| 4.00x |"), "{md}");
    }

    #[test]
    fn runs_from_a_run_folder() {
        use crate::outputs::metrics::MetricsWriter;
        let dir = tempfile::tempdir().unwrap();
        let mut writer = MetricsWriter::create(dir.path()).unwrap();
        for v in 0..4u64 {
            writer
                .append(MetricsRow {
                    elapsed_secs: v as f64 * 1.5,
                    wall_clock_ms: 1_795_996_741_000 + v * 1500,
                    version: v,
                    test_loss: 1.0,
                    test_accuracy: if v == 2 { f64::NAN } else { 0.2 * v as f64 },
                    bytes_up: 10 * v,
                    bytes_down: 20 * v,
                    updates_accepted: v,
                    updates_rejected: 0,
                    worker: None,
                })
                .unwrap();
        }
        let summary_json = serde_json::json!({
            "run_id": "r1", "policy": "hermes",
            "started_at": "2026-11-29T23:59:01.000Z", "ended_at": "2026-11-29T23:59:07.000Z",
            "duration_secs": 6.0, "stop_reason": "target_accuracy", "target_accuracy": 0.5,
            "time_to_target_secs": 4.5, "version_at_target": 3,
            "final_test_accuracy": 0.6, "final_test_loss": 1.0,
            "best_test_accuracy": 0.6, "best_test_loss": 1.0, "versions": 3,
            "bytes_up": 30, "bytes_down": 60, "updates_accepted": 3, "updates_rejected": 0,
            "updates_rejected_by_reason": {},
            "workers": {"w1": {"rounds": 4, "major_rounds": 3, "minor_rounds": 1,
                "samples_trained": 400, "mean_round_secs": 1.0, "slowdown": 1.0,
                "updates_accepted": 3, "updates_rejected": 0, "shards_received": 4,
                "mean_shard_size": 100.0},
                "w2": {"rounds": 2, "major_rounds": 0, "minor_rounds": 2,
                "samples_trained": 200, "mean_round_secs": 3.0, "slowdown": 3.0,
                "updates_accepted": 0, "updates_rejected": 0, "shards_received": 2,
                "mean_shard_size": 100.0}},
            "heterogeneity": "x", "config": {}
        });
        std::fs::write(
            dir.path().join(SUMMARY_FILE),
            serde_json::to_string(&summary_json).unwrap(),
        )
        .unwrap();
        let r = BenchRun::read(dir.path(), 2, 99).unwrap();
        assert_eq!((r.policy.as_str(), r.repeat, r.seed), ("hermes", 2, 99));
        assert!(r.reached_target);
        assert_eq!(r.time_to_target(), Some(4.5));
        assert_eq!(r.bytes_master(), 90);
        assert_eq!(r.bytes_links(), 0);
        assert_eq!(r.curve, [(0.0, 0.0), (1.5, 0.2), (4.5, 0.6000000000000001)]);
        assert_eq!(r.workers["w1"].major_rounds, 3);
        assert_eq!(r.starved_workers(), ["w2"]);
        assert_eq!(r.run_dir, dir.path());

        let e = format!(
            "{:#}",
            BenchRun::read(&dir.path().join("nope"), 0, 0).unwrap_err()
        );
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn machine_description() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
                       model name\t: Intel(R) Xeon(R) Gold 6230\nflags\t: fpu\n\
                       processor\t: 1\nmodel name\t: other\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Gold 6230")
        );
        assert_eq!(cpu_model("processor\t: 0\n"), None);
        let meminfo = "MemTotal:       131891204 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(131_891_204 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);

        let m = machine_info();
        assert!(m.cores >= 1);
        assert!(!m.cpu_model.is_empty() && !m.kernel_release.is_empty());
        assert!(
            crate::outputs::parse_rfc3339_ms(&m.date_utc).is_ok(),
            "{m:?}"
        );
        if cfg!(target_os = "linux") {
            assert!(m.total_memory_bytes.unwrap_or(0) > 0, "{m:?}");
            assert_ne!(m.kernel_release, "unknown");
        }
    }

    #[test]
    fn link_and_master_bytes_add_up() {
        let mut r = run("hermes", 0, Some(1.0), 1000, 500);
        r.links
            .insert("master".into(), LinkBytes { up: 7, down: 3 });
        assert_eq!(r.bytes_links(), 1010);
        assert_eq!(r.bytes_master(), 500);
        assert_eq!(
            LinkBytes {
                up: u64::MAX,
                down: 1
            }
            .total(),
            u64::MAX
        );
    }
}
