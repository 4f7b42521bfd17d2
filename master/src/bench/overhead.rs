//! `master bench --suite overhead`: where the rounds' time goes, policy by
//! policy, from every run's round-phase profile (`phases.csv`, see
//! [`crate::phases`]).
//!
//! Per policy, over all its runs' versions: the median and p95 of the
//! interval between versions and of the overhead (the interval less the
//! closing worker's compute and idle), and the median of every phase. The
//! first version of a run is left out (it carries the package and start-up).
//! Writes `overhead.json` and `overhead.png` (stacked phases per version,
//! one panel per policy, from each policy's first run).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::report::{machine_info, median, BenchRun, MachineInfo};
use crate::outputs::plot::{registered_font, FONT_ENV};
use crate::phases::{PhaseRow, PHASES_FILE};

/// File name of the JSON report inside the bench folder.
pub const OVERHEAD_JSON: &str = "overhead.json";

/// File name of the PNG report inside the bench folder.
pub const OVERHEAD_PNG: &str = "overhead.png";

/// Font family the plot's text uses once a font is registered.
const FAMILY: &str = "sans-serif";

/// The stacked phases, bottom first, with their colours.
const STACK: &[(&str, RGBColor)] = &[
    ("compute", RGBColor(31, 119, 180)),
    ("idle", RGBColor(174, 199, 232)),
    ("queued+prepare", RGBColor(255, 187, 120)),
    ("transfer", RGBColor(44, 160, 44)),
    ("dispatch", RGBColor(214, 39, 40)),
    ("admission", RGBColor(148, 103, 189)),
];

/// How a phase is read from a row.
type Column = dyn Fn(&PhaseRow) -> Option<f64>;

/// One policy's phases over its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyPhases {
    /// The policy.
    pub policy: String,
    /// Runs with a profile.
    pub runs: usize,
    /// Versions counted (the first of each run left out).
    pub versions: usize,
    /// Median interval between versions, ms.
    pub interval_median_ms: Option<f64>,
    /// 95th percentile of the interval, ms.
    pub interval_p95_ms: Option<f64>,
    /// Median overhead above the closing worker's compute and idle, ms.
    pub overhead_median_ms: Option<f64>,
    /// 95th percentile of the overhead, ms.
    pub overhead_p95_ms: Option<f64>,
    /// Median of every phase, ms, by column name.
    pub phase_medians_ms: BTreeMap<String, f64>,
    /// The first run's versions, for the picture.
    pub first_run: Vec<PhaseRow>,
}

/// The overhead report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverheadReport {
    /// The testbed profile.
    pub profile_name: String,
    /// The machine.
    pub machine: MachineInfo,
    /// Per policy, in the order run.
    pub policies: Vec<PolicyPhases>,
}

/// The `q` quantile (0..=1) of `values`, nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// A row's phases as the picture stacks them (negative parts as zero).
fn stacked(row: &PhaseRow) -> [f64; 6] {
    let z = |v: Option<f64>| v.unwrap_or(0.0).max(0.0);
    [
        z(row.compute_ms),
        z(row.idle_ms),
        z(row.queued_ms) + z(row.prepare_ms),
        z(row.transfer_ms),
        z(row.dispatch_ms),
        z(row.admission_ms),
    ]
}

impl PolicyPhases {
    /// Summarises `runs` (rows of each run of one policy).
    pub fn new(policy: &str, runs: &[Vec<PhaseRow>]) -> Self {
        let rows: Vec<&PhaseRow> = runs.iter().flat_map(|r| r.iter().skip(1)).collect();
        let col = |f: &dyn Fn(&PhaseRow) -> Option<f64>| -> Vec<f64> {
            rows.iter().filter_map(|r| f(r)).collect()
        };
        let interval = col(&|r| Some(r.interval_ms));
        let overhead = col(&|r| r.overhead_ms);
        let mut phase_medians_ms = BTreeMap::new();
        let columns: [(&str, &Column); 13] = [
            ("interval", &|r| Some(r.interval_ms)),
            ("dispatch", &|r| r.dispatch_ms),
            ("delivery", &|r| r.delivery_ms),
            ("transfer", &|r| r.transfer_ms),
            ("queued", &|r| r.queued_ms),
            ("prepare", &|r| r.prepare_ms),
            ("compute", &|r| r.compute_ms),
            ("idle", &|r| r.idle_ms),
            ("admission", &|r| r.admission_ms),
            ("evaluation", &|r| Some(r.evaluation_ms)),
            ("checkpoint", &|r| Some(r.checkpoint_ms)),
            ("record", &|r| Some(r.record_ms)),
            ("overhead", &|r| r.overhead_ms),
        ];
        for (name, f) in columns {
            if let Some(m) = median(&col(f)) {
                phase_medians_ms.insert(name.to_string(), m);
            }
        }
        Self {
            policy: policy.to_string(),
            runs: runs.len(),
            versions: rows.len(),
            interval_median_ms: median(&interval),
            interval_p95_ms: quantile(&interval, 0.95),
            overhead_median_ms: median(&overhead),
            overhead_p95_ms: quantile(&overhead, 0.95),
            phase_medians_ms,
            first_run: runs.first().cloned().unwrap_or_default(),
        }
    }
}

impl OverheadReport {
    /// Reads the profiles of `runs` (a run without one is reported and skipped).
    pub fn from_runs(profile_name: &str, runs: &[BenchRun]) -> Self {
        let mut by_policy: Vec<(String, Vec<Vec<PhaseRow>>)> = Vec::new();
        for run in runs {
            let rows = match crate::phases::read(&run.run_dir.join(PHASES_FILE)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("{}: no round-phase profile: {e:#}", run.run_id);
                    continue;
                }
            };
            match by_policy.iter_mut().find(|(p, _)| *p == run.policy) {
                Some((_, v)) => v.push(rows),
                None => by_policy.push((run.policy.clone(), vec![rows])),
            }
        }
        Self {
            profile_name: profile_name.to_string(),
            machine: machine_info(),
            policies: by_policy
                .iter()
                .map(|(p, runs)| PolicyPhases::new(p, runs))
                .collect(),
        }
    }

    /// The table printed after the bench.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
        let g = |p: &PolicyPhases, k: &str| f(p.phase_medians_ms.get(k).copied());
        let mut out = format!(
            "round phases on profile {} (ms, medians over versions; overhead = interval - closing worker's compute and idle)\n",
            self.profile_name
        );
        out.push_str(&format!(
            "{:<8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "policy",
            "versions",
            "interval",
            "p95",
            "overhead",
            "p95",
            "compute",
            "idle",
            "dispatch",
            "transfer",
            "admit",
            "eval",
            "ckpt"
        ));
        for p in &self.policies {
            out.push_str(&format!(
                "{:<8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                p.policy,
                p.versions,
                f(p.interval_median_ms),
                f(p.interval_p95_ms),
                f(p.overhead_median_ms),
                f(p.overhead_p95_ms),
                g(p, "compute"),
                g(p, "idle"),
                g(p, "dispatch"),
                g(p, "transfer"),
                g(p, "admission"),
                g(p, "evaluation"),
                g(p, "checkpoint"),
            ));
        }
        out
    }

    /// Writes the JSON report (parent folders created).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))
    }

    /// Draws the stacked phases of each policy's first run, one panel per policy.
    pub fn write_png(&self, path: &Path) -> anyhow::Result<()> {
        let text = registered_font().is_some();
        if !text {
            tracing::warn!(
                "no TrueType font found (see ${FONT_ENV}); {} has no text",
                path.display()
            );
        }
        crate::outputs::write_png_atomically(path, |tmp| self.draw(tmp, text))
    }

    fn draw(&self, path: &Path, text: bool) -> anyhow::Result<()> {
        let fail =
            |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: cannot draw: {e}", path.display());
        let panels = self.policies.len().max(1);
        let size = (1200_u32, 260 * panels as u32 + 60);
        let root = BitMapBackend::new(path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let body = if text {
            root.titled(
                &format!(
                    "round phases per version (ms), profile {}",
                    self.profile_name
                ),
                (FAMILY, 20),
            )
            .map_err(|e| fail(&e))?
        } else {
            root.clone()
        };
        let areas = body.split_evenly((panels, 1));
        for (area, p) in areas.iter().zip(&self.policies) {
            let rows = &p.first_run;
            let y_max = rows
                .iter()
                .map(|r| r.interval_ms.max(stacked(r).iter().sum()))
                .filter(|v| v.is_finite())
                .fold(1.0_f64, f64::max)
                * 1.1;
            let n = rows.len().max(1) as f64;
            let mut builder = ChartBuilder::on(area);
            builder.margin(8);
            if text {
                builder
                    .caption(
                        format!(
                            "{}: interval median {} ms, overhead median {} ms",
                            p.policy,
                            p.interval_median_ms
                                .map_or("-".into(), |v| format!("{v:.1}")),
                            p.overhead_median_ms
                                .map_or("-".into(), |v| format!("{v:.1}"))
                        ),
                        (FAMILY, 15),
                    )
                    .x_label_area_size(24)
                    .y_label_area_size(50);
            }
            let mut chart = builder
                .build_cartesian_2d(0.0..n, 0.0..y_max)
                .map_err(|e| fail(&e))?;
            if text {
                chart
                    .configure_mesh()
                    .x_desc("version (first run)")
                    .y_desc("ms")
                    .draw()
                    .map_err(|e| fail(&e))?;
            }
            for (k, (name, colour)) in STACK.iter().enumerate() {
                let bars = rows.iter().enumerate().map(|(i, r)| {
                    let parts = stacked(r);
                    let below: f64 = parts[..k].iter().sum();
                    let x = i as f64;
                    Rectangle::new(
                        [(x + 0.1, below), (x + 0.9, below + parts[k])],
                        colour.filled(),
                    )
                });
                let series = chart.draw_series(bars).map_err(|e| fail(&e))?;
                if text {
                    series.label(*name).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                    });
                }
            }
            let line = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (i as f64 + 0.5, r.interval_ms.clamp(0.0, y_max)));
            let series = chart
                .draw_series(LineSeries::new(line, BLACK.stroke_width(1)))
                .map_err(|e| fail(&e))?;
            if text {
                series
                    .label("interval")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK));
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font((FAMILY, 12))
                    .draw()
                    .map_err(|e| fail(&e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: u64, interval: f64, compute: f64) -> PhaseRow {
        PhaseRow {
            version,
            interval_ms: interval,
            compute_ms: Some(compute),
            idle_ms: Some(0.0),
            overhead_ms: Some(interval - compute),
            dispatch_ms: Some(1.0),
            transfer_ms: Some(2.0),
            ..PhaseRow::default()
        }
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.95), Some(19.0));
        assert_eq!(quantile(&v, 1.0), Some(20.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
    }

    #[test]
    fn the_first_version_of_each_run_is_left_out() {
        let runs = vec![
            vec![row(1, 1000.0, 10.0), row(2, 50.0, 40.0), row(3, 70.0, 40.0)],
            vec![row(1, 900.0, 10.0), row(2, 60.0, 40.0)],
        ];
        let p = PolicyPhases::new("bsp", &runs);
        assert_eq!(p.versions, 3);
        assert_eq!(p.interval_median_ms, Some(60.0));
        assert_eq!(p.overhead_median_ms, Some(20.0));
        assert_eq!(p.phase_medians_ms.get("transfer"), Some(&2.0));
        assert_eq!(p.first_run.len(), 3);
    }

    #[test]
    fn the_picture_is_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let report = OverheadReport {
            profile_name: "t".into(),
            machine: machine_info(),
            policies: vec![
                PolicyPhases::new("bsp", &[vec![row(1, 100.0, 50.0), row(2, 80.0, 60.0)]]),
                PolicyPhases::new("asp", &[vec![]]),
            ],
        };
        let png = dir.path().join(OVERHEAD_PNG);
        report.write_png(&png).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        assert!(report.table().contains("bsp"));
    }
}
