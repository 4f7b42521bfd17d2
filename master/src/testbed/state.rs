//! The testbed's state file: everything `up` made, written before and after
//! each step (atomically), so `down` removes it all, also after a crash.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::profile::{Node, Profile};

/// Default folder of state files (tmpfs: gone at reboot, like namespaces).
pub const DEFAULT_STATE_DIR: &str = "/run/hermes-rs/testbed";

/// What a testbed made and runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TestbedState {
    /// Testbed name.
    pub name: String,
    /// When `up` began (RFC 3339).
    pub created_at: String,
    /// The profile file it came from.
    pub profile_path: PathBuf,
    /// The profile as loaded.
    pub profile: Option<Profile>,
    /// The bridge, once its creation was attempted.
    pub bridge: Option<String>,
    /// Nodes whose namespace creation was attempted.
    pub nodes: Vec<NodeState>,
    /// How compute is emulated (stated in every report).
    pub compute_emulation: String,
    /// The broker the testbed started (stopped by `down`).
    pub broker: Option<BrokerState>,
    /// Processes the testbed started (workers, trace replay).
    pub processes: Vec<ProcessState>,
    /// Folder with generated configs, worker logs and the applied-rate CSV.
    pub work_dir: PathBuf,
}

/// A node as made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    /// The node as the profile gave it; `uplink`/`downlink`/`cpu`/`memory`
    /// are updated by `set` to what is in force.
    pub node: Node,
    /// Its namespace.
    pub netns: String,
    /// Its veth end on the bridge.
    pub host_veth: String,
    /// Its veth end inside the namespace.
    pub node_veth: String,
    /// Its cgroup directories (empty = none).
    pub cgroups: Vec<PathBuf>,
}

/// A broker started by the testbed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BrokerState {
    /// `KAFKA_STATE_DIR` it runs with.
    pub state_dir: PathBuf,
    /// Address the nodes and the master use.
    pub bootstrap: String,
    /// Extra listener for real devices, as advertised.
    pub external: Option<String>,
    /// `KAFKA_HOST`, `KAFKA_PORT`, `KAFKA_CONTROLLER_PORT` it was started with.
    pub env: Vec<(String, String)>,
}

/// A process started by the testbed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessState {
    /// What it is (`worker worker-1`, `trace replay`).
    pub what: String,
    /// Its pid.
    pub pid: u32,
    /// Its log file.
    pub log: PathBuf,
}

impl TestbedState {
    /// The state file of testbed `name` in `dir`.
    pub fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.json"))
    }

    /// Reads the state of `name`; `None` when there is none.
    pub fn load(dir: &Path, name: &str) -> anyhow::Result<Option<Self>> {
        let path = Self::path(dir, name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
        };
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a testbed state file", path.display()))?;
        Ok(Some(state))
    }

    /// Writes the state atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let path = Self::path(dir, &self.name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)
                .with_context(|| format!("{}: cannot write", tmp.display()))?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(())
    }

    /// Removes the state file.
    pub fn remove_file(dir: &Path, name: &str) -> anyhow::Result<()> {
        match std::fs::remove_file(Self::path(dir, name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("remove the testbed state file"),
        }
    }

    /// The node called `name`.
    pub fn node_mut(&mut self, name: &str) -> anyhow::Result<&mut NodeState> {
        let known: Vec<String> = self.nodes.iter().map(|n| n.node.name.clone()).collect();
        self.nodes
            .iter_mut()
            .find(|n| n.node.name == name)
            .with_context(|| {
                format!(
                    "no node `{name}` in this testbed (nodes: {})",
                    known.join(", ")
                )
            })
    }

    /// Packets each shaped link's queue holds (the profile's, else 50).
    pub fn queue_packets(&self) -> u32 {
        self.profile.as_ref().map_or(50, |p| p.queue_packets)
    }

    /// The broker address nodes use.
    pub fn bootstrap(&self) -> Option<&str> {
        self.broker.as_ref().map(|b| b.bootstrap.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(TestbedState::load(dir.path(), "x").unwrap(), None);
        let s = TestbedState {
            name: "x".into(),
            bridge: Some("hbxbr".into()),
            ..Default::default()
        };
        s.save(dir.path()).unwrap();
        assert_eq!(TestbedState::load(dir.path(), "x").unwrap(), Some(s));
        std::fs::write(TestbedState::path(dir.path(), "y"), "{oops").unwrap();
        let e = TestbedState::load(dir.path(), "y").unwrap_err();
        assert!(format!("{e:#}").contains("not a testbed state file"));
        TestbedState::remove_file(dir.path(), "x").unwrap();
        TestbedState::remove_file(dir.path(), "x").unwrap();
    }
}
