//! The testbed's network, made with `ip` and `tc` (iproute2): a bridge on
//! the host, per node a namespace and a veth pair, and an htb class on each
//! end (uplink = the namespace end's egress, downlink = the host end's).
//!
//! Every address is inside 198.18.0.0/15 and exists only on the bridge and in
//! the namespaces made here; no route, address or firewall rule of the host
//! is touched.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context;

use super::profile::Subnet;
use super::rate::Rate;

/// Burst of every htb class: below one packet costs throughput at high
/// rates (3% at 1 gbit), 15k is what EdgeTB uses.
const BURST: &str = "15k";

/// The htb class id shaped traffic goes to (handle 1:, class 1:10).
const CLASS: &str = "1:10";

/// Runs `program args`, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program}` (is iproute2 installed?)"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`] inside namespace `ns`.
fn run_in(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs and ignores failure (teardown of things that may be gone already).
fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The host's IPv4 routes that share addresses with `subnet`, as
/// `(prefix, device)`: another testbed (or anything else) already using
/// them would take the replies of this one.
pub fn routes_overlapping(subnet: &Subnet) -> anyhow::Result<Vec<(String, String)>> {
    let text = run("ip", &["-4", "-o", "route", "show", "table", "all"])?;
    Ok(parse_routes(&text)
        .into_iter()
        .filter(|(net, prefix, _)| *prefix > 0 && subnet.overlaps(*net, *prefix))
        .map(|(net, prefix, dev)| (format!("{net}/{prefix}"), dev))
        .collect())
}

/// `(network, prefix, device)` of each `ip -4 -o route` line with a
/// destination prefix (default and unparsable lines are skipped).
pub fn parse_routes(text: &str) -> Vec<(Ipv4Addr, u8, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut dest = words.next()?;
            if matches!(dest, "local" | "broadcast" | "unicast") {
                dest = words.next()?;
            }
            let (addr, prefix) = match dest.split_once('/') {
                Some((a, p)) => (a.parse().ok()?, p.parse().ok()?),
                None => (dest.parse().ok()?, 32),
            };
            let dev = line
                .split_whitespace()
                .skip_while(|w| *w != "dev")
                .nth(1)
                .unwrap_or("?")
                .to_string();
            Some((addr, prefix, dev))
        })
        .collect()
}

/// Whether the kernel has the netem qdisc (probed once, in a throwaway
/// namespace, so nothing of the host is touched).
pub fn netem_available() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let ns = format!("hermes-netem-probe-{}", std::process::id());
        if run("ip", &["netns", "add", &ns]).is_err() {
            return false;
        }
        let ok = run_in(
            &ns,
            "tc",
            &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        )
        .is_ok();
        run_quiet("ip", &["netns", "del", &ns]);
        ok
    })
}

/// Device and namespace names of a testbed; all at most 15 characters.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names for testbed `name` (1–8 characters).
    pub fn new(name: &str) -> Self {
        Self {
            prefix: format!("hb{name}"),
        }
    }

    /// The host bridge.
    pub fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// Node `index`'s namespace.
    pub fn netns(&self, index: usize) -> String {
        format!("{}-n{index}", self.prefix)
    }

    /// Node `index`'s veth end on the bridge (downlink is its egress).
    pub fn host_veth(&self, index: usize) -> String {
        format!("{}h{index}", self.prefix)
    }

    /// Node `index`'s veth end in its namespace (uplink is its egress).
    pub fn node_veth(&self, index: usize) -> String {
        format!("{}n{index}", self.prefix)
    }
}

/// Creates the bridge with the gateway address (fails if it exists).
pub fn create_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
    run("ip", &["link", "add", bridge, "type", "bridge"])
        .with_context(|| format!("create bridge {bridge} (is a testbed of this name up already? see `master testbed status`)"))?;
    run(
        "ip",
        &["addr", "add", &format!("{gateway}/{prefix}"), "dev", bridge],
    )?;
    run("ip", &["link", "set", bridge, "up"])?;
    Ok(())
}

/// Creates namespace `ns` joined to `bridge` by the veth pair
/// `host_veth`/`node_veth`, with `ip/prefix` inside.
pub fn create_node(
    ns: &str,
    bridge: &str,
    host_veth: &str,
    node_veth: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> anyhow::Result<()> {
    run("ip", &["netns", "add", ns])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    run(
        "ip",
        &[
            "link", "add", host_veth, "type", "veth", "peer", "name", node_veth, "netns", ns,
        ],
    )?;
    run("ip", &["link", "set", host_veth, "master", bridge])?;
    run("ip", &["link", "set", host_veth, "up"])?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/{prefix}"),
            "dev",
            node_veth,
        ],
    )?;
    run("ip", &["-n", ns, "link", "set", node_veth, "up"])?;
    Ok(())
}

/// Where a device lives: on the host or in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Namespace, `None` = the host.
    pub netns: Option<String>,
    /// Interface name.
    pub name: String,
}

impl Device {
    fn tc(&self, args: &[&str]) -> anyhow::Result<String> {
        match &self.netns {
            Some(ns) => run_in(ns, "tc", args),
            None => run("tc", args),
        }
    }

    /// Shapes the device's egress to `rate`: htb root, one class with
    /// rate = ceil, a packet fifo of `queue_packets` under it.
    pub fn shape(&self, rate: Rate, queue_packets: u32) -> anyhow::Result<()> {
        let dev = self.name.as_str();
        let r = rate.tc_arg();
        let limit = queue_packets.to_string();
        self.tc(&[
            "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10",
        ])?;
        self.tc(&[
            "class", "replace", "dev", dev, "parent", "1:", "classid", CLASS, "htb", "rate", &r,
            "ceil", &r, "burst", BURST, "cburst", BURST,
        ])?;
        self.tc(&[
            "qdisc", "replace", "dev", dev, "parent", CLASS, "handle", "10:", "pfifo", "limit",
            &limit,
        ])?;
        Ok(())
    }

    /// Changes the rate of a shaped device in place (nothing restarted).
    pub fn set_rate(&self, rate: Rate) -> anyhow::Result<()> {
        let r = rate.tc_arg();
        self.tc(&[
            "class", "change", "dev", &self.name, "parent", "1:", "classid", CLASS, "htb", "rate",
            &r, "ceil", &r, "burst", BURST, "cburst", BURST,
        ])
        .map(|_| ())
    }

    /// Bytes and packets sent through the shaped class (tc's counters), and
    /// the configured rate; `None` when the device is not shaped.
    pub fn class_stats(&self) -> anyhow::Result<Option<ClassStats>> {
        let out = self.tc(&["-s", "class", "show", "dev", &self.name])?;
        parse_class_stats(&out)
    }

    /// Bytes the device sent (kernel counter, shaped or not).
    pub fn tx_bytes(&self) -> anyhow::Result<u64> {
        let out = match &self.netns {
            Some(ns) => run(
                "ip",
                &["-n", ns, "-s", "-j", "link", "show", "dev", &self.name],
            )?,
            None => run("ip", &["-s", "-j", "link", "show", "dev", &self.name])?,
        };
        let v: serde_json::Value = serde_json::from_str(&out).context("parse `ip -s -j link`")?;
        v.get(0)
            .and_then(|l| l.pointer("/stats64/tx/bytes"))
            .and_then(|b| b.as_u64())
            .with_context(|| format!("no tx byte counter for {}", self.name))
    }
}

/// What tc says about a shaped class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassStats {
    /// Bytes sent through it.
    pub bytes: u64,
    /// Packets sent.
    pub packets: u64,
    /// Packets dropped (queue full).
    pub drops: u64,
    /// The configured rate (bits/s).
    pub rate_bits: u64,
}

/// Parses `tc -s class show` text (iproute2 prints no JSON for htb
/// classes), picking class 1:10.
pub fn parse_class_stats(text: &str) -> anyhow::Result<Option<ClassStats>> {
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 3 || words[0] != "class" || words[2] != CLASS {
            continue;
        }
        let rate_bits = words
            .iter()
            .position(|w| *w == "rate")
            .and_then(|i| words.get(i + 1))
            .map(|r| parse_tc_rate(r))
            .transpose()?
            .unwrap_or(0);
        let sent = lines
            .next()
            .context("tc class output ends after the class line")?;
        let sw: Vec<&str> = sent.split_whitespace().collect();
        let num = |i: usize| -> anyhow::Result<u64> {
            sw.get(i)
                .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
                .and_then(|w| w.parse().ok())
                .with_context(|| format!("unexpected tc counters line `{}`", sent.trim()))
        };
        anyhow::ensure!(
            sw.first() == Some(&"Sent"),
            "unexpected tc counters line `{}`",
            sent.trim()
        );
        return Ok(Some(ClassStats {
            bytes: num(1)?,
            packets: num(3)?,
            drops: num(6)?,
            rate_bits,
        }));
    }
    Ok(None)
}

/// Parses a rate as tc prints it (`1Mbit`, `500Kbit`, `2500bit`, `1.5Mbit`).
fn parse_tc_rate(text: &str) -> anyhow::Result<u64> {
    let lower = text.to_ascii_lowercase();
    let (num, scale) = if let Some(n) = lower.strip_suffix("gbit") {
        (n, 1e9)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix("bit") {
        (n, 1.0)
    } else {
        anyhow::bail!("unexpected tc rate `{text}`")
    };
    let v: f64 = num
        .parse()
        .with_context(|| format!("unexpected tc rate `{text}`"))?;
    Ok((v * scale).round() as u64)
}

/// Removes a namespace (killing nothing: the caller kills its processes first).
pub fn delete_netns(ns: &str) {
    run_quiet("ip", &["netns", "del", ns]);
}

/// Removes a link device (a veth end takes its peer with it).
pub fn delete_link(dev: &str) {
    run_quiet("ip", &["link", "del", dev]);
}

/// Whether a link device exists on the host.
pub fn link_exists(dev: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", dev])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Namespaces that exist now.
pub fn list_netns() -> Vec<String> {
    run("ip", &["netns", "list"])
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of processes inside namespace `ns`.
pub fn netns_pids(ns: &str) -> Vec<u32> {
    run("ip", &["netns", "pids", ns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_parsed_and_overlaps_found() {
        let text = "default via 192.0.2.1 dev eth0\n\
198.18.204.0/24 dev hbtt2135br proto kernel scope link src 198.18.204.1\n\
local 198.18.204.1 dev hbtt2135br table local proto kernel scope host src 198.18.204.1\n\
10.0.0.0/8 dev eth1\n\
garbage line\n";
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 3);
        assert_eq!(
            routes[1],
            ("198.18.204.1".parse().unwrap(), 32, "hbtt2135br".into())
        );
        let s = Subnet::parse("198.18.204.0/24").unwrap();
        let hits: Vec<_> = routes
            .iter()
            .filter(|(n, p, _)| s.overlaps(*n, *p))
            .collect();
        assert_eq!(hits.len(), 2);
        assert!(!Subnet::parse("198.18.205.0/24")
            .unwrap()
            .overlaps("198.18.204.0".parse().unwrap(), 24));
        assert!(Subnet::parse("198.18.0.0/16")
            .unwrap()
            .overlaps("198.18.204.0".parse().unwrap(), 24));
    }

    #[test]
    fn device_names_fit_in_fifteen_characters() {
        let n = Names::new("abcdefgh");
        for s in [n.bridge(), n.host_veth(9999), n.node_veth(9999)] {
            assert!(s.len() <= 15, "{s}");
        }
    }

    #[test]
    fn class_stats_parse_tc_text() {
        let text = "class htb 1:10 root leaf 10: prio 0 rate 1Mbit ceil 1Mbit burst 15Kb cburst 15Kb \n Sent 123456 bytes 99 pkt (dropped 3, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\n";
        let s = parse_class_stats(text).unwrap().unwrap();
        assert_eq!(s.bytes, 123456);
        assert_eq!(s.packets, 99);
        assert_eq!(s.drops, 3);
        assert_eq!(s.rate_bits, 1_000_000);
        assert_eq!(parse_class_stats("").unwrap(), None);
        assert!(parse_class_stats("class htb 1:10 root rate 1Mbit\n garbage\n").is_err());
        assert_eq!(parse_tc_rate("1.5Mbit").unwrap(), 1_500_000);
        assert_eq!(parse_tc_rate("500Kbit").unwrap(), 500_000);
        assert_eq!(parse_tc_rate("2500bit").unwrap(), 2500);
    }
}
