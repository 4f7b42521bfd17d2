//! One benchmark run on an up testbed: fresh workers in the nodes, the master
//! on the host (a child process, as a user runs it), the traces replayed
//! from t = 0, and the bytes every shaped link carried read from tc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::report::{BenchRun, LinkBytes};
use crate::deploy::workerconf::deep_merge;
use crate::outputs::metrics::{read_metrics, METRICS_FILE};
use crate::outputs::summary::{RunSummary, SUMMARY_FILE};
use crate::testbed::lifecycle::{self, downlink, uplink};
use crate::testbed::replay::{ReplayThread, RATES_FILE};
use crate::testbed::state::{ProcessState, TestbedState};
use crate::testbed::{control, spawn, Profile};

/// What one run is.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Sync policy.
    pub policy: String,
    /// Repeat number (1-based).
    pub repeat: u32,
    /// Training and allocation seed (the same for every policy of a repeat).
    pub seed: u64,
}

/// Bytes sent so far on each node's shaped links (up, down).
fn link_counters(state: &TestbedState) -> BTreeMap<String, (u64, u64)> {
    state
        .nodes
        .iter()
        .map(|n| {
            let read = |d: crate::testbed::net::Device| {
                d.class_stats()
                    .ok()
                    .flatten()
                    .map(|s| s.bytes)
                    .or_else(|| d.tx_bytes().ok())
                    .unwrap_or(0)
            };
            (n.node.name.clone(), (read(uplink(n)), read(downlink(n))))
        })
        .collect()
}

/// Puts every link back to the profile's rate (a trace may have moved it).
fn reset_links(state: &TestbedState) -> anyhow::Result<()> {
    let queue = state.queue_packets();
    for n in &state.nodes {
        if n.node.trace.is_none() {
            continue;
        }
        for (dev, rate) in [(uplink(n), n.node.uplink), (downlink(n), n.node.downlink)] {
            if let Some(r) = rate {
                control::apply_rate(&dev, dev.class_stats()?.is_some(), r, queue)?;
            }
        }
    }
    Ok(())
}

/// The master configuration of one run, written next to the bench results.
fn master_config(
    profile: &Profile,
    state: &TestbedState,
    spec: &RunSpec,
    run_id: &str,
) -> anyhow::Result<PathBuf> {
    let base_path = &profile.bench.master_config;
    let text = std::fs::read_to_string(base_path).with_context(|| {
        format!(
            "{}: cannot read the bench's master config",
            base_path.display()
        )
    })?;
    let mut cfg: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", base_path.display()))?;
    deep_merge(&mut cfg, &profile.bench.overrides);
    let bootstrap = state.bootstrap().context("the testbed has no broker")?;
    deep_merge(
        &mut cfg,
        &serde_json::json!({
            "run_id": run_id,
            "min_workers": state.nodes.len(),
            "kafka": {"brokers": bootstrap},
            "policy": {"name": spec.policy},
            "training": {"seed": spec.seed},
            "allocation": {"seed": spec.seed},
        }),
    );
    let path = state
        .work_dir
        .join("configs")
        .join(format!("{run_id}.json"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(path)
}

/// Runs one policy once; the testbed stays up.
pub fn run_one(
    state: &mut TestbedState,
    profile: &Profile,
    state_dir: &Path,
    spec: &RunSpec,
) -> anyhow::Result<BenchRun> {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let run_id = format!(
        "bench-{}-{}-{}-{stamp}",
        profile.name, spec.policy, spec.repeat
    );
    let conf = master_config(profile, state, spec, &run_id)?;
    let cfg: crate::config::MasterConfig = common::config::load(&conf)?;
    cfg.validate()
        .with_context(|| format!("{}: invalid configuration", conf.display()))?;
    let run_dir = crate::outputs::run_dir(&cfg.data_dir, &run_id)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("{}: cannot create", run_dir.display()))?;
    let run_dir = std::fs::canonicalize(&run_dir).unwrap_or(run_dir);
    reset_links(state)?;
    let before = link_counters(state);
    let started = Instant::now();
    let cgroups = state.nodes.iter().any(|n| !n.cgroups.is_empty());
    let mut workers =
        lifecycle::start_workers_in_nodes(state, profile, &run_id, cgroups, state_dir)?;
    let replay = ReplayThread::start(
        state.clone(),
        run_dir.join(RATES_FILE),
        cfg.data_dir.clone(),
    );
    let exe = std::env::current_exe().context("path of the master binary")?;
    let log_path = run_dir.join("master.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("{}: cannot create", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--conf")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    spawn::own_config_only(&mut cmd);
    let mut master = cmd.spawn().context("start the master")?;
    // Recorded so that `down` stops it too if the bench dies.
    state.processes.push(ProcessState {
        what: format!("bench master {run_id}"),
        pid: master.id(),
        log: log_path.clone(),
    });
    state.save(state_dir)?;
    // The master ends the run itself (target, budget, no progress); this
    // bound only catches a master that hangs.
    let limit = Duration::from_secs(cfg.stop.max_wall_secs + cfg.registration_timeout_secs + 60);
    let status = loop {
        if let Some(s) = master.try_wait()? {
            break Some(s);
        }
        if started.elapsed() > limit {
            let _ = master.kill();
            let _ = master.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let replay_result = replay.stop();
    // Workers leave on the master's stop message; whoever did not is stopped.
    let deadline = Instant::now() + Duration::from_secs(15);
    while workers.iter_mut().any(|w| matches!(w.try_wait(), Ok(None))) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut pids: Vec<u32> = workers.iter().map(|w| w.id()).collect();
    pids.push(master.id());
    spawn::terminate(&pids, Duration::from_secs(3));
    for w in &mut workers {
        let _ = w.wait();
    }
    state.processes.retain(|p| !pids.contains(&p.pid));
    state.save(state_dir)?;
    let after = link_counters(state);
    replay_result?;
    let status = status.with_context(|| {
        format!(
            "the master did not end within {} s (log: {})",
            limit.as_secs(),
            log_path.display()
        )
    })?;
    anyhow::ensure!(
        status.success(),
        "the master exited with {status} (log: {})",
        log_path.display()
    );
    let summary = RunSummary::read(&run_dir.join(SUMMARY_FILE))?;
    let rows = read_metrics(&run_dir.join(METRICS_FILE))?;
    let mut run = BenchRun::from_outputs(&summary, &rows, &run_dir, spec.repeat, spec.seed);
    for (id, w) in &mut run.workers {
        if let Some(s) = summary.workers.get(id) {
            w.emulated = s.emulation.clone();
        }
    }
    run.links = state
        .nodes
        .iter()
        .map(|n| {
            let name = &n.node.name;
            let (u0, d0) = before.get(name).copied().unwrap_or_default();
            let (u1, d1) = after.get(name).copied().unwrap_or_default();
            (
                name.clone(),
                LinkBytes {
                    up: u1.saturating_sub(u0),
                    down: d1.saturating_sub(d0),
                },
            )
        })
        .collect();
    Ok(run)
}
