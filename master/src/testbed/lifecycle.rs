//! `up` and `down`: making the testbed and removing every trace of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::cgroup::{Caps, CgroupSystem, NodeCgroup};
use super::net::{self, Device, Names};
use super::profile::{Node, Profile};
use super::state::{NodeState, ProcessState, TestbedState};
use super::{broker, spawn};

/// Fails unless the process runs as root.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    anyhow::ensure!(
        euid == 0,
        "{what} needs root (network namespaces, tc and cgroups); run it with sudo"
    );
    Ok(())
}

/// Options of `up`.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Start a worker in every node (else as the profile says).
    pub start_workers: Option<bool>,
    /// Run id for the workers (else the profile's).
    pub run_id: Option<String>,
    /// Folder for generated configs, logs and rate CSVs (default
    /// `data/testbed/<name>`).
    pub work_dir: Option<PathBuf>,
    /// Start the trace replay as a detached process (`up` from the command
    /// line); `bench` replays in-process instead.
    pub detached_replay: bool,
}

/// Brings testbed `profile` up; on failure removes what it made.
pub fn up(
    profile_path: &Path,
    profile: &Profile,
    state_dir: &Path,
    opts: &UpOptions,
) -> anyhow::Result<TestbedState> {
    require_root("master testbed up")?;
    let nodes = profile.nodes()?;
    if let Some(old) = TestbedState::load(state_dir, &profile.name)? {
        anyhow::bail!(
            "testbed `{}` is up already (since {}); run `master testbed down --conf {}` first",
            old.name,
            old.created_at,
            old.profile_path.display()
        );
    }
    let subnet = profile.subnet()?;
    let taken = net::routes_overlapping(&subnet)?;
    if let Some((prefix, dev)) = taken.first() {
        anyhow::bail!(
            "subnet {}/{} of testbed `{}` overlaps {prefix} on device {dev}, which is in use already \
             (another testbed? `master testbed down` with its profile, or give this one another `subnet`)",
            subnet.network,
            subnet.prefix,
            profile.name
        );
    }
    let work_dir = opts
        .work_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("data/testbed").join(&profile.name));
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("{}: cannot create", work_dir.display()))?;
    let cgroups = CgroupSystem::detect().context("detect cgroups")?;
    let mut state = TestbedState {
        name: profile.name.clone(),
        created_at: chrono::Utc::now().to_rfc3339(),
        profile_path: profile_path.to_path_buf(),
        profile: Some(profile.clone()),
        compute_emulation: compute_emulation(cgroups.as_ref(), &nodes),
        work_dir: std::fs::canonicalize(&work_dir).unwrap_or(work_dir),
        ..Default::default()
    };
    match build(
        &mut state,
        profile,
        &nodes,
        cgroups.as_ref(),
        state_dir,
        opts,
    ) {
        Ok(()) => Ok(state),
        Err(e) => {
            tracing::error!("testbed up failed, removing what was made: {e:#}");
            let _ = down(state_dir, &profile.name);
            Err(e)
        }
    }
}

fn build(
    state: &mut TestbedState,
    profile: &Profile,
    nodes: &[Node],
    cgroups: Option<&CgroupSystem>,
    state_dir: &Path,
    opts: &UpOptions,
) -> anyhow::Result<()> {
    let names = Names::new(&profile.name);
    let subnet = profile.subnet()?;
    let bridge = names.bridge();
    // Recorded before it is made: a crash in between still gets it removed.
    state.bridge = Some(bridge.clone());
    state.save(state_dir)?;
    net::create_bridge(&bridge, subnet.gateway(), subnet.prefix)?;
    let bar = indicatif::ProgressBar::new(nodes.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg:20} [{bar:30}] {pos}/{len} nodes")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("testbed {}", profile.name));
    for node in nodes {
        let ns = NodeState {
            node: node.clone(),
            netns: names.netns(node.index),
            host_veth: names.host_veth(node.index),
            node_veth: names.node_veth(node.index),
            cgroups: Vec::new(),
        };
        state.nodes.push(ns.clone());
        state.save(state_dir)?;
        net::create_node(
            &ns.netns,
            &bridge,
            &ns.host_veth,
            &ns.node_veth,
            node.ip,
            subnet.prefix,
        )
        .with_context(|| format!("node `{}`", node.name))?;
        if let Some(rate) = node.uplink {
            uplink(&ns).shape(rate, profile.queue_packets)?;
        }
        if let Some(rate) = node.downlink {
            downlink(&ns).shape(rate, profile.queue_packets)?;
        }
        let caps = node_caps(node);
        if let (Some(sys), true) = (cgroups, caps.cpu.is_some() || caps.memory_bytes.is_some()) {
            // Recorded before they are made, like the bridge.
            if let Some(last) = state.nodes.last_mut() {
                last.cgroups = sys.node_paths(&profile.name, &node.name)?;
            }
            state.save(state_dir)?;
            let cg = sys
                .create(&profile.name, &node.name, &caps)
                .with_context(|| format!("node `{}`: cgroup", node.name))?;
            let dirs = cg.paths().to_vec();
            if let Some(last) = state.nodes.last_mut() {
                last.cgroups = dirs;
            }
            state.save(state_dir)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if profile.broker.start {
        let b = broker::start(&profile.name, &profile.broker, subnet.gateway())?;
        state.broker = Some(b);
        state.save(state_dir)?;
    }
    let start_workers = opts.start_workers.unwrap_or(profile.workers.start);
    if start_workers {
        let run_id = opts
            .run_id
            .clone()
            .unwrap_or(profile.workers.run_id.clone());
        start_workers_in_nodes(state, profile, &run_id, cgroups.is_some(), state_dir)?;
    }
    if opts.detached_replay && nodes.iter().any(|n| n.trace.is_some()) {
        let exe = std::env::current_exe().context("path of the master binary")?;
        let log = state.work_dir.join("replay.log");
        let mut cmd = Command::new(exe);
        cmd.args(["testbed", "replay", "--name", &profile.name, "--state-dir"])
            .arg(state_dir);
        let out = std::fs::File::create(&log)
            .with_context(|| format!("{}: cannot create", log.display()))?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: setsid(2) only.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().context("start the trace replay")?;
        state.processes.push(ProcessState {
            what: "trace replay".into(),
            pid: child.id(),
            log,
        });
        state.save(state_dir)?;
    }
    Ok(())
}

/// The caps of a node.
pub fn node_caps(node: &Node) -> Caps {
    Caps {
        cpu: node.cpu,
        memory_bytes: node.memory_bytes,
    }
}

/// The uplink device of a node (its namespace end).
pub fn uplink(ns: &NodeState) -> Device {
    Device {
        netns: Some(ns.netns.clone()),
        name: ns.node_veth.clone(),
    }
}

/// The downlink device of a node (its host end).
pub fn downlink(ns: &NodeState) -> Device {
    Device {
        netns: None,
        name: ns.host_veth.clone(),
    }
}

/// One line on how compute is emulated, for every report.
pub fn compute_emulation(cgroups: Option<&CgroupSystem>, nodes: &[Node]) -> String {
    let capped = nodes
        .iter()
        .any(|n| n.cpu.is_some() || n.memory_bytes.is_some());
    match (cgroups, capped) {
        (Some(sys), true) => format!("CPU/memory caps with {}", sys.describe()),
        (None, true) => "no usable cgroups: CPU caps become the worker's slowdown factor (1/cap), memory caps are not enforced".into(),
        (_, false) => "no compute caps".into(),
    }
}

/// How node `n` is emulated, in words (stated in the worker's registration
/// and so in the run summary).
pub fn describe_node(testbed: &str, n: &Node, cgroups: bool) -> String {
    let mut parts = vec![format!("testbed {testbed}: netns {}", n.ip)];
    let link = |r: Option<super::rate::Rate>| r.map_or("unshaped".to_string(), |r| r.to_string());
    match &n.trace {
        Some(t) => parts.push(format!(
            "links follow trace {} (offset {} s, scale {}, {:?})",
            t.file.display(),
            t.offset_secs,
            t.scale,
            t.direction
        )),
        None => parts.push(format!(
            "uplink {} / downlink {} (htb)",
            link(n.uplink),
            link(n.downlink)
        )),
    }
    if let Some(c) = n.cpu {
        parts.push(if cgroups {
            format!("cpu {c} cores (cgroup)")
        } else {
            format!(
                "cpu {c} cores as slowdown {:.2} (no cgroups)",
                effective_slowdown(n, false)
            )
        });
    }
    if let Some(m) = n.memory_bytes {
        parts.push(format!(
            "memory {} MiB{}",
            m >> 20,
            if cgroups {
                " (cgroup)"
            } else {
                " (not enforced)"
            }
        ));
    }
    if let Some(s) = n.slowdown {
        parts.push(format!("slowdown {s}"));
    }
    parts.join(", ")
}

/// The worker's slowdown factor: the node's own, times 1/cpu where no
/// cgroups cap the CPU.
pub fn effective_slowdown(n: &Node, cgroups: bool) -> f64 {
    let base = n.slowdown.unwrap_or(1.0);
    match (n.cpu, cgroups) {
        (Some(c), false) if c < 1.0 => base / c,
        _ => base,
    }
}

/// Writes each node's worker config and starts the workers.
pub fn start_workers_in_nodes(
    state: &mut TestbedState,
    profile: &Profile,
    run_id: &str,
    cgroups: bool,
    state_dir: &Path,
) -> anyhow::Result<Vec<std::process::Child>> {
    let bootstrap = state
        .bootstrap()
        .map(str::to_string)
        .context("the testbed has no broker (broker.start is false): workers need one")?;
    let base = crate::deploy::workerconf::load_base(&profile.workers.config)?;
    let binary = match &profile.workers.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("path of the master binary")?
            .with_file_name("worker"),
    };
    anyhow::ensure!(
        binary.is_file(),
        "{}: worker binary not found (build it with `cargo build -p worker`, or set workers.binary)",
        binary.display()
    );
    let mut children = Vec::new();
    for ns in state.nodes.clone() {
        let n = &ns.node;
        let dir = state.work_dir.join("nodes").join(&n.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let mut fixed = serde_json::json!({
            "run_id": run_id,
            "slowdown": effective_slowdown(n, cgroups),
            "work_dir": dir.join("work"),
            "emulation": describe_node(&profile.name, n, cgroups),
        });
        crate::deploy::workerconf::deep_merge(&mut fixed, &profile.workers.overrides);
        if let Some(o) = &n.overrides {
            crate::deploy::workerconf::deep_merge(&mut fixed, o);
        }
        let mut config =
            crate::deploy::workerconf::generate(&base, &n.name, Some(&bootstrap), None, &[&fixed])?;
        if crate::deploy::workerconf::wants_run_key(&config) {
            // The master's run key, named absolutely: the worker may run
            // anywhere, it reads the same file.
            let key = run_key_path()?;
            config["kafka"]["hmac_key_file"] = key.display().to_string().into();
        }
        let conf_path = dir.join("worker.json");
        std::fs::write(&conf_path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("{}: cannot write", conf_path.display()))?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--conf").arg(&conf_path);
        spawn::own_config_only(&mut cmd);
        let log = dir.join("worker.log");
        let child = spawn::spawn_detached(cmd, &ns.netns, &ns.cgroups, &log)
            .with_context(|| format!("node `{}`: start the worker", n.name))?;
        state.processes.push(ProcessState {
            what: format!("worker {}", n.name),
            pid: child.id(),
            log,
        });
        state.save(state_dir)?;
        children.push(child);
    }
    Ok(children)
}

/// The absolute path of the default run key, created when missing.
fn run_key_path() -> anyhow::Result<PathBuf> {
    let path = std::path::absolute(common::runkey::DEFAULT_KEY_FILE)
        .context("the run key's absolute path")?;
    if !path.exists() {
        common::runkey::create_key_file(&path)?;
    }
    Ok(path)
}

/// Removes testbed `name`: processes, broker, veths, namespaces, bridge,
/// cgroups and the state file. Idempotent; works from the state file alone,
/// and also sweeps devices and namespaces named after the testbed.
pub fn down(state_dir: &Path, name: &str) -> anyhow::Result<DownReport> {
    require_root("master testbed down")?;
    let state = TestbedState::load(state_dir, name)?;
    let names = Names::new(name);
    let mut report = DownReport::default();
    let mut pids: Vec<u32> = Vec::new();
    if let Some(s) = &state {
        pids.extend(s.processes.iter().map(|p| p.pid));
    }
    let prefix = names.netns(0);
    let prefix = prefix.trim_end_matches('0');
    let namespaces: Vec<String> = net::list_netns()
        .into_iter()
        .filter(|ns| ns.starts_with(prefix))
        .collect();
    for ns in &namespaces {
        pids.extend(net::netns_pids(ns));
    }
    pids.sort_unstable();
    pids.dedup();
    let live: Vec<u32> = pids.into_iter().filter(|&p| spawn::alive(p)).collect();
    report.processes = live.len();
    spawn::terminate(&live, std::time::Duration::from_secs(5));
    if let Some(b) = state.as_ref().and_then(|s| s.broker.as_ref()) {
        match broker::stop(b) {
            // The testbed's broker holds only this testbed's runs: its
            // storage goes with it.
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&b.state_dir);
            }
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    for ns in &namespaces {
        net::delete_netns(ns);
        report.namespaces += 1;
    }
    let bridge = names.bridge();
    if let Some(s) = &state {
        for n in &s.nodes {
            if net::link_exists(&n.host_veth) {
                net::delete_link(&n.host_veth);
            }
            if net::list_netns().contains(&n.netns) {
                net::delete_netns(&n.netns);
                report.namespaces += 1;
            }
        }
    }
    if net::link_exists(&bridge) {
        net::delete_link(&bridge);
        report.bridge = true;
    }
    let mut groups: Vec<Vec<PathBuf>> = state
        .as_ref()
        .map(|s| s.nodes.iter().map(|n| n.cgroups.clone()).collect())
        .unwrap_or_default();
    groups.extend(leftover_cgroups(name));
    groups.sort();
    groups.dedup();
    for dirs in groups.into_iter().filter(|d| !d.is_empty()) {
        let removed = NodeCgroup::from_paths(&dirs).and_then(|cg| cg.remove());
        match removed {
            Ok(()) => report.cgroups += 1,
            Err(e) => report.errors.push(format!("cgroups: {e}")),
        }
    }
    TestbedState::remove_file(state_dir, name)?;
    report.had_state = state.is_some();
    Ok(report)
}

/// Node cgroups of testbed `name` that exist now (per node, its directory in
/// every hierarchy), found by listing `hermes/<name>/` — so `down` removes
/// them even when the state file missed them.
fn leftover_cgroups(name: &str) -> Vec<Vec<PathBuf>> {
    let Ok(Some(sys)) = CgroupSystem::detect() else {
        return Vec::new();
    };
    let Ok(probe) = sys.node_paths(name, "probe") else {
        return Vec::new();
    };
    let mut nodes = std::collections::BTreeSet::new();
    for p in &probe {
        if let Some(Ok(entries)) = p.parent().map(std::fs::read_dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    nodes.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    nodes
        .into_iter()
        .filter_map(|node| sys.node_paths(name, &node).ok())
        .collect()
}

/// What `down` removed.
#[derive(Clone, Debug, Default)]
pub struct DownReport {
    /// A state file was there.
    pub had_state: bool,
    /// Processes killed.
    pub processes: usize,
    /// Namespaces removed.
    pub namespaces: usize,
    /// The bridge was removed.
    pub bridge: bool,
    /// cgroup directories removed.
    pub cgroups: usize,
    /// What could not be removed.
    pub errors: Vec<String>,
}
