//! `master bench`: run policies on a testbed profile and compare them.
//!
//! Brings the testbed up, runs every policy `repeats` times on the same
//! profile with the same seeds and target (repeat-major order, so a drift of
//! the machine hits every policy alike), tears the testbed down, and writes
//! `data/bench/policies.json` and `data/bench/policies.png`.
//!
//! * [`runner`] — one run: workers in the nodes, the master on the host, trace replay, tc counters.
//! * [`report`] — medians, ratios against BSP, `policies.json` and `policies.png`.
//! * [`overhead`] — `--suite overhead`: the runs' round-phase profiles, `overhead.json` and `overhead.png`.

pub mod overhead;
pub mod report;
pub mod runner;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::testbed::{lifecycle, Profile};

/// `master bench ...`
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The testbed profile (`conf/testbed/<name>.json`).
    #[arg(long)]
    pub profile: PathBuf,
    /// Comma-separated policies (default: the profile's `bench.policies`).
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Runs per policy (default: the profile's `bench.repeats`).
    #[arg(long)]
    pub repeats: Option<u32>,
    /// Folder of the results (`policies.json`, `policies.png`).
    #[arg(long, default_value = "data/bench")]
    pub out: PathBuf,
    /// Folder of the testbed state file.
    #[arg(long, default_value = crate::testbed::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The baseline of the ratios.
    #[arg(long, default_value = "bsp")]
    pub baseline: String,
    /// What to report: `policies` (time to target, bytes, contributions)
    /// or `overhead` (also where each round's time went, from every run's
    /// `phases.csv`: `overhead.json`, `overhead.png`).
    #[arg(long, value_enum, default_value_t = Suite::Policies)]
    pub suite: Suite,
    /// Master configuration for every run, on top of the profile's
    /// `bench.overrides`: `KEY=JSON` with a dotted key, e.g.
    /// `--set allocation.mode='"throughput"' --set prefetch=false`.
    #[arg(long = "set", value_name = "KEY=JSON")]
    pub set: Vec<String>,
}

/// `a.b=JSON` as `{"a": {"b": JSON}}`; the error names the bad argument.
pub fn parse_set(arg: &str) -> anyhow::Result<serde_json::Value> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--set `{arg}`: expected KEY=JSON"))?;
    let mut v: serde_json::Value = serde_json::from_str(value).map_err(|e| {
        anyhow::anyhow!("--set `{arg}`: the value is not JSON ({e}); quote strings: '\"text\"'")
    })?;
    let parts: Vec<&str> = key.split('.').collect();
    anyhow::ensure!(
        parts.iter().all(|p| !p.is_empty()),
        "--set `{arg}`: empty part in the key `{key}`"
    );
    for part in parts.iter().rev() {
        v = serde_json::json!({ *part: v });
    }
    Ok(v)
}

/// The reports a bench writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// Policies compared: `policies.json`, `policies.png`.
    Policies,
    /// The same, plus the round-phase profile: `overhead.json`, `overhead.png`.
    Overhead,
}

/// Prints a line above the progress bar, or plainly when the bar is hidden
/// (output not a terminal), where `println` on the bar would drop it.
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    lifecycle::require_root("master bench")?;
    let mut profile = Profile::load(&args.profile)?;
    for arg in &args.set {
        let patch = parse_set(arg)?;
        common::config::deep_merge(&mut profile.bench.overrides, &patch);
    }
    let policies = if args.policies.is_empty() {
        profile.bench.policies.clone()
    } else {
        args.policies.clone()
    };
    anyhow::ensure!(!policies.is_empty(), "no policy to run");
    for p in &policies {
        anyhow::ensure!(
            crate::policy::policy_names().any(|n| n == p),
            "--policies: unknown policy `{p}`; known: {}",
            crate::policy::policy_names().collect::<Vec<_>>().join(", ")
        );
    }
    let repeats = args.repeats.unwrap_or(profile.bench.repeats);
    anyhow::ensure!(repeats >= 1, "--repeats must be at least 1");
    let work_dir = args.out.join("testbed").join(&profile.name);
    let opts = lifecycle::UpOptions {
        start_workers: Some(false),
        run_id: None,
        work_dir: Some(work_dir),
        detached_replay: false,
    };
    let mut state = lifecycle::up(&args.profile, &profile, &args.state_dir, &opts)?;
    println!("{}", crate::testbed::control::status_table(&state));
    let total = policies.len() * repeats as usize;
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "bench {pos}/{len} runs [{bar:30}] {elapsed} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    let stop = crate::testbed::spawn::stop_signals();
    'runs: {
        for repeat in 1..=repeats {
            for policy in &policies {
                bar.set_message(format!("{policy} repeat {repeat}"));
                let spec = runner::RunSpec {
                    policy: policy.clone(),
                    repeat,
                    seed: profile.bench.seed + u64::from(repeat) - 1,
                };
                match runner::run_one(&mut state, &profile, &args.state_dir, &spec) {
                    Ok(r) => {
                        say(&bar, format!(
                            "{policy} #{repeat}: {} in {:.1} s, final accuracy {:.4}, {} versions ({})",
                            if r.reached_target { "target reached" } else { "target NOT reached" },
                            r.time_to_target_secs.unwrap_or(r.duration_secs),
                            r.final_accuracy.unwrap_or(f64::NAN),
                            r.versions,
                            r.stop_reason
                        ));
                        runs.push(r);
                    }
                    Err(e) => {
                        say(&bar, format!("{policy} #{repeat}: FAILED: {e:#}"));
                        failures.push(format!("{policy} #{repeat}: {e:#}"));
                    }
                }
                bar.inc(1);
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    failures.push("interrupted: the remaining runs were not started".into());
                    break 'runs;
                }
            }
        }
    }
    bar.finish_and_clear();
    let down = lifecycle::down(&args.state_dir, &profile.name)?;
    if !down.errors.is_empty() {
        tracing::warn!("testbed down left errors: {}", down.errors.join("; "));
    }
    let target = runs
        .first()
        .and_then(|r: &report::BenchRun| {
            let summary = crate::outputs::summary::RunSummary::read(
                &r.run_dir.join(crate::outputs::summary::SUMMARY_FILE),
            )
            .ok()?;
            summary.target_accuracy
        })
        .unwrap_or(f64::NAN);
    let report = report::BenchReport::new(
        profile.name.clone(),
        serde_json::to_value(&profile)?,
        report::machine_info(),
        format!(
            "testbed {}: network namespaces + htb links ({}); compute: {}; delay/loss: {}",
            profile.name,
            args.profile.display(),
            state.compute_emulation,
            if crate::testbed::net::netem_available() {
                "netem present, unused"
            } else {
                "not emulated (no netem in this kernel)"
            }
        ),
        target,
        repeats,
        runs,
    )
    .with_baseline(&args.baseline);
    let json = args.out.join("policies.json");
    let png = args.out.join("policies.png");
    report::write_json(&report, &json)?;
    report::plot_png(&report, &png)?;
    println!("{}", report::format_table(&report));
    println!("wrote {} and {}", json.display(), png.display());
    if args.suite == Suite::Overhead {
        let phases = overhead::OverheadReport::from_runs(&profile.name, &report.runs);
        let json = args.out.join(overhead::OVERHEAD_JSON);
        let png = args.out.join(overhead::OVERHEAD_PNG);
        phases.write_json(&json)?;
        phases.write_png(&png)?;
        println!("{}", phases.table());
        println!("wrote {} and {}", json.display(), png.display());
    }
    if !failures.is_empty() {
        eprintln!(
            "{} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_arguments_become_nested_overrides() {
        assert_eq!(
            parse_set("allocation.mode=\"throughput\"").unwrap(),
            serde_json::json!({"allocation": {"mode": "throughput"}})
        );
        assert_eq!(
            parse_set("prefetch=false").unwrap(),
            serde_json::json!({"prefetch": false})
        );
        assert!(parse_set("prefetch")
            .unwrap_err()
            .to_string()
            .contains("KEY=JSON"));
        assert!(parse_set("a.mode=throughput")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        assert!(parse_set("a..b=1").is_err());
    }
}
