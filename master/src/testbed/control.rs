//! `status` (what the testbed is, read back from the kernel) and `set`
//! (change a link or cap live, nothing restarted).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::Args;

use super::cgroup::{Caps, NodeCgroup};
use super::lifecycle::{downlink, node_caps, require_root, uplink};
use super::net::{self, Device};
use super::rate::Rate;
use super::spawn;
use super::state::{NodeState, TestbedState};

/// `master testbed set`: new values for one node.
#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    /// The node to change.
    #[arg(long)]
    pub node: String,
    /// New uplink rate (e.g. `5mbit`).
    #[arg(long, value_parser = parse_rate)]
    pub uplink: Option<Rate>,
    /// New downlink rate.
    #[arg(long, value_parser = parse_rate)]
    pub downlink: Option<Rate>,
    /// New CPU cap in cores.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// New memory cap (`512M`, `2G`).
    #[arg(long)]
    pub memory: Option<String>,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    let (rate, warning) = Rate::parse(s).map_err(|e| e.to_string())?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    Ok(rate)
}

/// Applies `args` to the running testbed `name` and records it.
pub fn set(state_dir: &Path, name: &str, args: &SetArgs) -> anyhow::Result<()> {
    require_root("master testbed set")?;
    let mut state = TestbedState::load(state_dir, name)?
        .with_context(|| format!("testbed `{name}` is not up"))?;
    let queue = state.queue_packets();
    let ns = state.node_mut(&args.node)?;
    if let Some(r) = args.uplink {
        apply_rate(&uplink(ns), ns.node.uplink.is_some(), r, queue)?;
        ns.node.uplink = Some(r);
    }
    if let Some(r) = args.downlink {
        apply_rate(&downlink(ns), ns.node.downlink.is_some(), r, queue)?;
        ns.node.downlink = Some(r);
    }
    if args.cpu.is_some() || args.memory.is_some() {
        anyhow::ensure!(
            !ns.cgroups.is_empty(),
            "node `{}` has no cgroup (no caps in the profile, or no usable cgroups): caps cannot be set live",
            args.node
        );
        if let Some(c) = args.cpu {
            ns.node.cpu = Some(c);
        }
        if let Some(m) = &args.memory {
            ns.node.memory_bytes = Some(Caps::parse_memory(m)?);
        }
        let caps: Caps = node_caps(&ns.node);
        caps.validate()?;
        NodeCgroup::from_paths(&ns.cgroups)?.set(&caps)?;
    }
    let line = node_row(ns);
    state.save(state_dir)?;
    println!("{line}");
    Ok(())
}

/// Sets the rate of a device, shaping it first if it was unshaped.
pub fn apply_rate(
    dev: &Device,
    shaped: bool,
    rate: Rate,
    queue_packets: u32,
) -> anyhow::Result<()> {
    if shaped {
        dev.set_rate(rate)
    } else {
        dev.shape(rate, queue_packets)
    }
}

fn rate_cell(configured: Option<Rate>, dev: &Device) -> String {
    let actual = dev.class_stats().ok().flatten();
    match (configured, actual) {
        (None, None) => "unshaped".into(),
        (c, Some(s)) => {
            let in_force = Rate::from_bits(s.rate_bits);
            let mark = if c == Some(in_force) { "" } else { " (!)" };
            format!("{in_force}{mark} {:.2} MB sent", s.bytes as f64 / 1e6)
        }
        (Some(c), None) => format!("{c} (not in force!)"),
    }
}

fn node_row(n: &NodeState) -> String {
    let cpu = n.node.cpu.map_or("-".into(), |c| format!("{c}"));
    let mem = n
        .node
        .memory_bytes
        .map_or("-".into(), |m| format!("{}M", m >> 20));
    format!(
        "{:<14} {:<15} {:<32} {:<32} {:>6} {:>7}",
        n.node.name,
        n.node.ip.to_string(),
        rate_cell(n.node.uplink, &uplink(n)),
        rate_cell(n.node.downlink, &downlink(n)),
        cpu,
        mem
    )
}

/// The status table of a testbed, read back from the kernel.
pub fn status_table(state: &TestbedState) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "testbed {} (up since {}, profile {})",
        state.name,
        state.created_at,
        state.profile_path.display()
    );
    if let Some(b) = &state.bridge {
        let present = if net::link_exists(b) {
            ""
        } else {
            " (missing!)"
        };
        let _ = writeln!(out, "bridge: {b}{present}");
    }
    match &state.broker {
        Some(b) => {
            let _ = writeln!(
                out,
                "broker: {}{}",
                b.bootstrap,
                b.external
                    .as_ref()
                    .map_or(String::new(), |e| format!(", devices: {e}"))
            );
        }
        None => {
            let _ = writeln!(out, "broker: none started");
        }
    }
    let _ = writeln!(out, "compute: {}", state.compute_emulation);
    let _ = writeln!(
        out,
        "delay/loss: {}",
        if net::netem_available() {
            "netem available (not used)"
        } else {
            "not emulated: this kernel has no netem qdisc"
        }
    );
    let _ = writeln!(
        out,
        "{:<14} {:<15} {:<32} {:<32} {:>6} {:>7}",
        "node", "address", "uplink (in force, sent)", "downlink (in force, sent)", "cpu", "memory"
    );
    for n in &state.nodes {
        let _ = writeln!(out, "{}", node_row(n));
    }
    for p in &state.processes {
        let _ = writeln!(
            out,
            "process {:<24} pid {:<8} {} log {}",
            p.what,
            p.pid,
            if spawn::alive(p.pid) {
                "running"
            } else {
                "exited "
            },
            p.log.display()
        );
    }
    out
}
