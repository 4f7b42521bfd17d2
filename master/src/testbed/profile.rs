//! A testbed profile (`conf/testbed.json`, `conf/testbed/<name>.json`): the
//! emulated nodes, their links and caps, the broker, and how workers start.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::rate::Rate;

/// Everything a testbed profile holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name (1–8 of `a-z0-9`): prefixes every bridge, veth, namespace
    /// and cgroup the testbed makes, so two testbeds can coexist.
    pub name: String,
    /// A /16../28 inside 198.18.0.0/15 (the benchmarking range). The bridge
    /// takes the first address, nodes the following ones in order.
    #[serde(default = "default_subnet")]
    pub subnet: String,
    /// Packets the queue of a shaped link holds (a packet-count fifo under
    /// each htb class; see the README on bufferbloat).
    #[serde(default = "default_queue_packets")]
    pub queue_packets: u32,
    /// The Kafka broker the nodes and the master use.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// How `up` starts workers inside the nodes.
    #[serde(default)]
    pub workers: WorkersConfig,
    /// The emulated nodes.
    pub nodes: Vec<NodeSpec>,
    /// What `master bench` runs on this profile.
    #[serde(default)]
    pub bench: BenchConfig,
}

/// The broker of a testbed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Start (or reuse) a broker listening on the bridge address.
    pub start: bool,
    /// Client port on the bridge address.
    pub port: u16,
    /// KRaft controller port (bound on the bridge address too).
    pub controller_port: u16,
    /// An extra listener for real devices (hybrid runs), e.g.
    /// `{"bind": "0.0.0.0:19094", "advertised": "192.168.1.10:19094"}`.
    pub external: Option<ExternalListener>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            start: true,
            port: 19092,
            controller_port: 19093,
            external: None,
        }
    }
}

/// A broker listener for devices outside the testbed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExternalListener {
    /// `host:port` the listener binds.
    pub bind: String,
    /// `host:port` the devices are told to use.
    pub advertised: String,
}

/// How `up` starts the configured workers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Start a worker in every node (`master testbed up`); `bench` always does.
    pub start: bool,
    /// Base worker configuration.
    pub config: PathBuf,
    /// The worker binary; default: `worker` next to the running `master`.
    pub binary: Option<PathBuf>,
    /// Run id the workers join (`bench` sets its own per run).
    pub run_id: String,
    /// Deep-merged into every generated worker configuration.
    pub overrides: serde_json::Value,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            start: false,
            config: "conf/worker.json".into(),
            binary: None,
            run_id: "demo".into(),
            overrides: serde_json::Value::Object(Default::default()),
        }
    }
}

/// What `master bench` runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BenchConfig {
    /// Base master configuration.
    pub master_config: PathBuf,
    /// Deep-merged into the master configuration of every run (the target,
    /// the wall-clock budget, the model...).
    pub overrides: serde_json::Value,
    /// Policies when `--policies` is not given.
    pub policies: Vec<String>,
    /// Repeats when `--repeats` is not given.
    pub repeats: u32,
    /// Seed of repeat 1; repeat k uses `seed + k - 1` for the training and
    /// allocation seeds, the same for every policy.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            master_config: "conf/master.json".into(),
            overrides: serde_json::Value::Object(Default::default()),
            policies: vec!["hermes".into(), "bsp".into(), "asp".into(), "ssp".into()],
            repeats: 3,
            seed: 42,
        }
    }
}

/// One emulated node as written in the profile; `count` > 1 makes several.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name and worker id; with `count`, `{i}` is replaced by 1..=count.
    pub name: String,
    /// How many nodes this entry makes (default 1).
    #[serde(default)]
    pub count: Option<usize>,
    /// Uplink rate (node → broker); a list is used round-robin over `count`.
    #[serde(default)]
    pub uplink: Option<OneOrMany<Rate>>,
    /// Downlink rate (broker → node).
    #[serde(default)]
    pub downlink: Option<OneOrMany<Rate>>,
    /// CPU cap in cores (0.25 = a quarter of one core).
    #[serde(default)]
    pub cpu: Option<OneOrMany<f64>>,
    /// Memory cap (`512M`, `2G`, bytes).
    #[serde(default)]
    pub memory: Option<OneOrMany<String>>,
    /// Emulated slowdown factor of the worker (for machines without cgroups,
    /// or on top of a cap).
    #[serde(default)]
    pub slowdown: Option<OneOrMany<f64>>,
    /// Link delay: needs netem, which this kernel may lack (refused then).
    #[serde(default)]
    pub delay: Option<String>,
    /// Delay jitter: needs netem.
    #[serde(default)]
    pub jitter: Option<String>,
    /// Packet loss: needs netem.
    #[serde(default)]
    pub loss: Option<String>,
    /// The link follows a bandwidth trace.
    #[serde(default)]
    pub trace: Option<TraceSpec>,
    /// Deep-merged into this node's worker configuration.
    #[serde(default)]
    pub overrides: Option<serde_json::Value>,
}

/// A value given once or per node of a `count` entry.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// The same for every node.
    One(T),
    /// Node k of the entry takes item (k − 1) mod len.
    Many(Vec<T>),
}

// By hand rather than `untagged`, so the item's own error (a bad rate, say)
// reaches the user instead of "did not match any variant".
impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        match value {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| serde_json::from_value(v).map_err(serde::de::Error::custom))
                .collect::<Result<Vec<T>, D::Error>>()
                .map(OneOrMany::Many),
            v => serde_json::from_value(v)
                .map(OneOrMany::One)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl<T: Clone> OneOrMany<T> {
    fn pick(&self, k: usize) -> Option<T> {
        match self {
            OneOrMany::One(v) => Some(v.clone()),
            OneOrMany::Many(v) if v.is_empty() => None,
            OneOrMany::Many(v) => Some(v[k % v.len()].clone()),
        }
    }
}

/// A link following a bandwidth trace (ROG's replay).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// Trace file of `<seconds> <Mbit/s>` lines (relative to the profile's folder or the current one).
    pub file: PathBuf,
    /// Where in the trace this node starts (seconds); with `count`, node k
    /// starts at `offset_secs + (k − 1) × offset_step_secs`.
    #[serde(default)]
    pub offset_secs: f64,
    /// Added to the offset per node of a `count` entry.
    #[serde(default)]
    pub offset_step_secs: f64,
    /// Trace values are multiplied by this (ROG's workers: 0.7).
    #[serde(default = "one")]
    pub scale: f64,
    /// Repeat the trace at its end (else the last value holds).
    #[serde(default = "yes")]
    pub wrap: bool,
    /// Which directions follow the trace: `both`, `up` or `down`.
    #[serde(default)]
    pub direction: TraceDirection,
}

/// Directions a trace drives.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TraceDirection {
    /// Uplink and downlink get the same rate (as ROG's replay).
    #[default]
    Both,
    /// Only the uplink.
    Up,
    /// Only the downlink.
    Down,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_subnet() -> String {
    "198.18.0.0/24".into()
}
fn default_queue_packets() -> u32 {
    50
}

/// One node after `count` expansion and validation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// Node name and worker id.
    pub name: String,
    /// Position in the profile (0-based): picks the address and device names.
    pub index: usize,
    /// Address inside the namespace.
    pub ip: Ipv4Addr,
    /// Uplink rate; `None` = unshaped.
    pub uplink: Option<Rate>,
    /// Downlink rate; `None` = unshaped.
    pub downlink: Option<Rate>,
    /// CPU cap in cores.
    pub cpu: Option<f64>,
    /// Memory cap in bytes.
    pub memory_bytes: Option<u64>,
    /// Emulated slowdown of the worker.
    pub slowdown: Option<f64>,
    /// Trace replay, resolved.
    pub trace: Option<NodeTrace>,
    /// Worker config overrides of this node.
    pub overrides: Option<serde_json::Value>,
}

/// A node's trace after resolving paths and offsets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeTrace {
    /// The trace file.
    pub file: PathBuf,
    /// Start offset into the trace (seconds).
    pub offset_secs: f64,
    /// Rate multiplier.
    pub scale: f64,
    /// Repeat at the end.
    pub wrap: bool,
    /// Directions it drives.
    pub direction: TraceDirection,
}

/// The testbed's addressing, derived from `subnet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/p` and checks it lies inside 198.18.0.0/15.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (addr, prefix) = text
            .split_once('/')
            .with_context(|| format!("subnet `{text}`: write it as a.b.c.d/prefix"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("subnet `{text}`: not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (16..=28).contains(p))
            .with_context(|| format!("subnet `{text}`: prefix must be 16..=28"))?;
        let mask = u32::MAX << (32 - prefix);
        let network = u32::from(addr) & mask;
        anyhow::ensure!(
            network == u32::from(addr),
            "subnet `{text}`: host bits set (the network address is {})",
            Ipv4Addr::from(network)
        );
        let bench_net = u32::from(Ipv4Addr::new(198, 18, 0, 0));
        anyhow::ensure!(
            network & (u32::MAX << 17) == bench_net,
            "subnet `{text}`: must lie inside 198.18.0.0/15 (the benchmarking range; the testbed never uses other addresses)"
        );
        Ok(Self {
            network: Ipv4Addr::from(network),
            prefix,
        })
    }

    /// The bridge's (host's) address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Node `index`'s address.
    pub fn node(&self, index: usize) -> Option<Ipv4Addr> {
        let hosts = (1u64 << (32 - self.prefix)) - 2; // minus network and broadcast
        let n = index as u64 + 2;
        (n <= hosts).then(|| Ipv4Addr::from(u32::from(self.network) + n as u32))
    }

    /// Whether this subnet and `other` (`network`/`prefix`) share an address.
    pub fn overlaps(&self, network: Ipv4Addr, prefix: u8) -> bool {
        let common = self.prefix.min(prefix).min(32);
        let mask = if common == 0 {
            0
        } else {
            u32::MAX << (32 - common)
        };
        u32::from(self.network) & mask == u32::from(network) & mask
    }
}

impl Profile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the testbed profile", path.display()))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let mut profile: Profile = serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow::anyhow!("{}: field `{}`: {}", path.display(), e.path(), e.inner())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for spec in &mut profile.nodes {
            if let Some(t) = &mut spec.trace {
                if t.file.is_relative() && !t.file.exists() {
                    t.file = base.join(&t.file);
                }
            }
        }
        profile
            .nodes()
            .with_context(|| format!("{}: invalid testbed profile", path.display()))?;
        Ok(profile)
    }

    /// The subnet, parsed.
    pub fn subnet(&self) -> anyhow::Result<Subnet> {
        Subnet::parse(&self.subnet)
    }

    /// Expands `count` entries and validates every node; errors name the node and field.
    pub fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        anyhow::ensure!(
            !self.name.is_empty()
                && self.name.len() <= 8
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "name `{}`: 1 to 8 characters of a-z and 0-9 (it prefixes device names of at most 15 characters)",
            self.name
        );
        anyhow::ensure!(
            (2..=100_000).contains(&self.queue_packets),
            "queue_packets {}: must be 2..=100000",
            self.queue_packets
        );
        let subnet = self.subnet()?;
        anyhow::ensure!(
            self.broker.port != self.broker.controller_port,
            "broker: port and controller_port must differ"
        );
        let mut nodes = Vec::new();
        for spec in &self.nodes {
            let count = spec.count.unwrap_or(1);
            anyhow::ensure!(count >= 1, "node `{}`: count must be at least 1", spec.name);
            anyhow::ensure!(
                count == 1 || spec.name.contains("{i}"),
                "node `{}`: count {count} needs `{{i}}` in the name",
                spec.name
            );
            for k in 0..count {
                let name = spec.name.replace("{i}", &(k + 1).to_string());
                nodes.push(self.node(spec, k, name, nodes.len(), &subnet)?);
            }
        }
        anyhow::ensure!(!nodes.is_empty(), "nodes: the profile has no node");
        let mut names = std::collections::BTreeSet::new();
        for n in &nodes {
            anyhow::ensure!(names.insert(&n.name), "node `{}`: name used twice", n.name);
        }
        Ok(nodes)
    }

    fn node(
        &self,
        spec: &NodeSpec,
        k: usize,
        name: String,
        index: usize,
        subnet: &Subnet,
    ) -> anyhow::Result<Node> {
        let bad =
            |field: &str, why: String| anyhow::anyhow!("node `{name}`: field `{field}`: {why}");
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 40
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "node `{name}`: the name must be 1 to 40 characters of a-z, A-Z, 0-9, '-', '_', '.'"
        );
        for (field, value) in [
            ("delay", &spec.delay),
            ("jitter", &spec.jitter),
            ("loss", &spec.loss),
        ] {
            if let Some(v) = value {
                if !super::net::netem_available() {
                    return Err(bad(
                        field,
                        format!(
                            "`{v}` needs the netem qdisc, which this kernel does not have (delay, jitter and loss cannot be emulated here; remove the field)"
                        ),
                    ));
                }
                return Err(bad(
                    field,
                    "netem is present, but delay/jitter/loss are not supported by this testbed version".into(),
                ));
            }
        }
        let ip = subnet.node(index).ok_or_else(|| {
            bad(
                "subnet",
                format!(
                    "subnet {} has no address for node {}",
                    self.subnet,
                    index + 1
                ),
            )
        })?;
        let cpu = spec.cpu.as_ref().and_then(|v| v.pick(k));
        if let Some(c) = cpu {
            if !(c.is_finite() && (0.01..=1024.0).contains(&c)) {
                return Err(bad("cpu", format!("{c}: cores must be 0.01..=1024")));
            }
        }
        let memory_bytes = match spec.memory.as_ref().and_then(|v| v.pick(k)) {
            Some(m) => Some(
                super::cgroup::Caps::parse_memory(&m).map_err(|e| bad("memory", e.to_string()))?,
            ),
            None => None,
        };
        let slowdown = spec.slowdown.as_ref().and_then(|v| v.pick(k));
        if let Some(s) = slowdown {
            if !(s.is_finite() && (1.0..=1000.0).contains(&s)) {
                return Err(bad("slowdown", format!("{s}: must be 1..=1000")));
            }
        }
        let trace = match &spec.trace {
            Some(t) => {
                anyhow::ensure!(
                    t.scale.is_finite() && t.scale > 0.0,
                    "node `{name}`: field `trace.scale`: must be positive"
                );
                let offset = t.offset_secs + k as f64 * t.offset_step_secs;
                anyhow::ensure!(
                    offset.is_finite() && offset >= 0.0,
                    "node `{name}`: field `trace.offset_secs`: must be ≥ 0"
                );
                super::trace::Trace::load(&t.file).map_err(|e| bad("trace.file", e.to_string()))?;
                Some(NodeTrace {
                    file: t.file.clone(),
                    offset_secs: offset,
                    scale: t.scale,
                    wrap: t.wrap,
                    direction: t.direction,
                })
            }
            None => None,
        };
        Ok(Node {
            index,
            ip,
            uplink: spec.uplink.as_ref().and_then(|v| v.pick(k)),
            downlink: spec.downlink.as_ref().and_then(|v| v.pick(k)),
            cpu,
            memory_bytes,
            slowdown,
            trace,
            overrides: spec.overrides.clone(),
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(nodes: serde_json::Value) -> Profile {
        serde_json::from_value(serde_json::json!({"name": "t1", "nodes": nodes})).unwrap()
    }

    #[test]
    fn subnets_stay_in_the_benchmarking_range() {
        let s = Subnet::parse("198.18.3.0/24").unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(198, 18, 3, 1));
        assert_eq!(s.node(0), Some(Ipv4Addr::new(198, 18, 3, 2)));
        assert_eq!(s.node(252), Some(Ipv4Addr::new(198, 18, 3, 254)));
        assert_eq!(s.node(253), None);
        assert!(Subnet::parse("198.19.255.0/24").is_ok());
        for bad in [
            "10.0.0.0/24",
            "198.20.0.0/24",
            "192.168.1.0/24",
            "198.18.0.1/24",
            "198.18.0.0/8",
            "x/24",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn count_entries_expand_round_robin() {
        let p = profile(serde_json::json!([
            {"name": "fast", "uplink": "100mbit", "cpu": 1.0},
            {"name": "w{i}", "count": 3, "uplink": ["1mbit", "5mbit"], "downlink": "2mbit", "cpu": [0.5, 0.25, 0.125], "memory": "256M"}
        ]));
        let nodes = p.nodes().unwrap();
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["fast", "w1", "w2", "w3"]);
        assert_eq!(nodes[3].uplink.unwrap().to_string(), "1mbit");
        assert_eq!(nodes[2].uplink.unwrap().to_string(), "5mbit");
        assert_eq!(nodes[3].cpu, Some(0.125));
        assert_eq!(nodes[1].memory_bytes, Some(256 << 20));
        assert_eq!(nodes[3].ip, Ipv4Addr::new(198, 18, 0, 5));
    }

    #[test]
    fn errors_name_the_node_and_field() {
        let cases = [
            (
                serde_json::json!([{"name": "a", "cpu": 0.0}]),
                "node `a`: field `cpu`",
            ),
            (
                serde_json::json!([{"name": "a", "memory": "lots"}]),
                "node `a`: field `memory`",
            ),
            (
                serde_json::json!([{"name": "a"}, {"name": "a"}]),
                "node `a`: name used twice",
            ),
            (
                serde_json::json!([{"name": "w", "count": 2}]),
                "needs `{i}`",
            ),
            (
                serde_json::json!([{"name": "a", "delay": "10ms"}]),
                "node `a`: field `delay`",
            ),
            (serde_json::json!([{"name": "a/b"}]), "node `a/b`"),
            (serde_json::json!([]), "no node"),
        ];
        for (nodes, want) in cases {
            let e = format!("{:#}", profile(nodes).nodes().unwrap_err());
            assert!(e.contains(want), "{e} should contain {want}");
        }
        let e = serde_json::from_value::<Profile>(
            serde_json::json!({"name": "t", "nodes": [{"name": "a", "uplink": "5 megabit"}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("5 megabit"), "{e}");
    }

    #[test]
    fn shipped_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/testbed");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                Profile::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                seen += 1;
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/testbed.json");
        Profile::load(&root).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(seen >= 4, "conf/testbed has {seen} profiles");
    }
}
