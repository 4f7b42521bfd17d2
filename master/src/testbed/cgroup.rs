//! CPU and memory caps per testbed node with Linux cgroups (v1 or v2).
//!
//! Every node gets a directory `<base>/hermes/<testbed>/<node>` under each controller it needs:
//! in cgroup v1 one in the `cpu` hierarchy and one in the `memory` hierarchy (plus `cpuacct`
//! when that is a separate hierarchy, for [`NodeCgroup::cpu_usage_secs`]); in cgroup v2 a single
//! directory. `<base>` is the cgroup this process is in (so the caps nest inside any limit that
//! already applies to it); in v2 the mount root is used instead when controllers cannot be
//! enabled below this process's own cgroup (the "no internal processes" rule).
//!
//! A CPU cap is a CFS bandwidth quota over a 100 ms period (`0.25` cores = 25 ms of CPU time
//! per 100 ms, whatever the number of cores); a memory cap ends a process that exceeds it with a
//! memcg OOM kill (SIGKILL), swap disabled where the kernel exposes a knob for it.
//!
//! A child is put into its node cgroup before `exec` by [`apply_to_command`] (a `pre_exec` hook
//! that writes `0` to each `cgroup.procs`), so it never runs uncapped.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod detect;
mod error;
mod node;
#[cfg(test)]
mod tests;

pub use error::CgroupError;
pub use node::{apply_to_command, join_self, NodeCgroup};

/// CFS period written with every CPU cap, in microseconds (100 ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CPU cap accepted, in cores (1 ms per 100 ms period, the kernel's minimum quota).
pub const MIN_CPU_CORES: f64 = 0.01;
/// Largest CPU cap accepted, in cores.
pub const MAX_CPU_CORES: f64 = 1024.0;
/// Smallest memory cap accepted, in bytes (4 MiB).
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;
/// The directory under each controller's base that holds every testbed.
pub const HERMES_DIR: &str = "hermes";
/// How long [`NodeCgroup::kill_all`] keeps sending SIGKILL before it gives up.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// Which cgroup interface is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy: one hierarchy per controller (or per group of controllers).
    V1,
    /// Unified: one hierarchy, controllers enabled per subtree.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// The caps of one node; `None` = uncapped.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Caps {
    /// CPU time in cores: `0.25` = a quarter of one core, `2.0` = two full cores.
    pub cpu: Option<f64>,
    /// Memory limit in bytes (see [`Caps::parse_memory`] for strings like "512M").
    pub memory_bytes: Option<u64>,
}

impl Caps {
    /// Checks the ranges: CPU finite and within [`MIN_CPU_CORES`]..=[`MAX_CPU_CORES`], memory at
    /// least [`MIN_MEMORY_BYTES`].
    pub fn validate(&self) -> Result<(), CgroupError> {
        if let Some(cpu) = self.cpu {
            if !(cpu.is_finite() && (MIN_CPU_CORES..=MAX_CPU_CORES).contains(&cpu)) {
                return Err(CgroupError::InvalidCaps(format!(
                    "cpu cap {cpu} cores is outside {MIN_CPU_CORES}..={MAX_CPU_CORES}"
                )));
            }
        }
        if let Some(bytes) = self.memory_bytes {
            if bytes < MIN_MEMORY_BYTES {
                return Err(CgroupError::InvalidCaps(format!(
                    "memory cap {bytes} bytes is below the minimum of {MIN_MEMORY_BYTES} (4 MiB)"
                )));
            }
        }
        Ok(())
    }

    /// Parses a memory size: a plain number is bytes; the units `K`, `M`, `G`, `T` (also
    /// written `KB`/`KiB`, any case) are binary (1024-based), as in Docker; a fraction needs a
    /// unit (`"1.5G"`) and is rounded down to whole bytes. Range checks are [`Caps::validate`]'s.
    pub fn parse_memory(input: &str) -> Result<u64, CgroupError> {
        let err = |reason: String| CgroupError::InvalidMemory {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(err("no number".into()));
        }
        let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            other => return Err(err(format!("unknown unit {other:?}"))),
        };
        if num.contains('.') {
            if multiplier == 1 {
                return Err(err("a fraction of a byte".into()));
            }
            let value: f64 = num
                .parse()
                .map_err(|_| err(format!("{num:?} is not a number")))?;
            let bytes = value * multiplier as f64;
            if !(bytes.is_finite() && bytes < u64::MAX as f64) {
                return Err(err("too large".into()));
            }
            Ok(bytes.floor() as u64)
        } else {
            let value: u64 = num
                .parse()
                .map_err(|_| err(format!("{num:?} is not a number")))?;
            value
                .checked_mul(multiplier)
                .ok_or_else(|| err("too large".into()))
        }
    }
}

impl fmt::Display for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cpu {
            Some(c) => write!(f, "cpu {c} cores")?,
            None => f.write_str("cpu uncapped")?,
        }
        match self.memory_bytes {
            Some(b) => write!(f, ", memory {:.1} MiB", b as f64 / (1u64 << 20) as f64),
            None => f.write_str(", memory uncapped"),
        }
    }
}

/// Where the controllers live on this machine; creates node cgroups.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupSystem {
    layout: Layout,
}

#[derive(Debug, Clone, PartialEq)]
enum Layout {
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        cpuacct: Option<PathBuf>,
    },
    V2 {
        base: PathBuf,
    },
}

impl CgroupSystem {
    /// Finds usable cgroups from `/proc/self/mountinfo` and `/proc/self/cgroup`: v2 when the
    /// unified hierarchy offers `cpu` and `memory` (enabling them in `cgroup.subtree_control`
    /// of the base as needed), else v1 when `cpu` (with CFS bandwidth control) and `memory`
    /// hierarchies are mounted and writable (combined mounts such as `cpu,cpuacct` work).
    /// `Ok(None)` when neither is usable (the reasons are logged); `Err` only when /proc
    /// cannot be read.
    pub fn detect() -> Result<Option<CgroupSystem>, CgroupError> {
        detect::detect()
    }

    /// A v1 system at explicit bases (directories inside the `cpu`, `memory` and optionally a
    /// separate `cpuacct` hierarchy); nothing is checked until [`CgroupSystem::create`].
    pub fn v1(
        cpu: impl Into<PathBuf>,
        memory: impl Into<PathBuf>,
        cpuacct: Option<PathBuf>,
    ) -> Self {
        let (cpu, memory) = (cpu.into(), memory.into());
        let cpuacct = cpuacct.filter(|a| *a != cpu);
        CgroupSystem {
            layout: Layout::V1 {
                cpu,
                memory,
                cpuacct,
            },
        }
    }

    /// A v2 system at an explicit base directory inside the unified hierarchy.
    pub fn v2(base: impl Into<PathBuf>) -> Self {
        CgroupSystem {
            layout: Layout::V2 { base: base.into() },
        }
    }

    /// Which interface this is.
    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// One line for reports, e.g. `cgroup v1: cpu.cfs_quota_us / memory.limit_in_bytes (cpu
    /// /sys/fs/cgroup/cpu, memory /sys/fs/cgroup/memory)`.
    pub fn describe(&self) -> String {
        match &self.layout {
            Layout::V1 { cpu, memory, .. } => format!(
                "cgroup v1: cpu.cfs_quota_us / memory.limit_in_bytes (cpu {}, memory {})",
                cpu.display(),
                memory.display()
            ),
            Layout::V2 { base } => {
                format!("cgroup v2: cpu.max / memory.max ({})", base.display())
            }
        }
    }

    /// The directories [`CgroupSystem::create`] would make for this node, one per hierarchy,
    /// without creating anything (so a caller can record them before creating).
    pub fn node_paths(&self, testbed: &str, node: &str) -> Result<Vec<PathBuf>, CgroupError> {
        validate_name("testbed", testbed)?;
        validate_name("node", node)?;
        let bases: Vec<&PathBuf> = match &self.layout {
            Layout::V1 {
                cpu,
                memory,
                cpuacct,
            } => {
                let mut bases: Vec<&PathBuf> = Vec::new();
                for b in [Some(cpu), Some(memory), cpuacct.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    if !bases.contains(&b) {
                        bases.push(b);
                    }
                }
                bases
            }
            Layout::V2 { base } => vec![base],
        };
        Ok(bases
            .into_iter()
            .map(|b| b.join(HERMES_DIR).join(testbed).join(node))
            .collect())
    }

    /// Creates (or reuses, after a crash) `hermes/<testbed>/<node>` under each controller and
    /// sets `caps`. On failure whatever was created for the node is removed again.
    pub fn create(
        &self,
        testbed: &str,
        node: &str,
        caps: &Caps,
    ) -> Result<NodeCgroup, CgroupError> {
        let dirs = self.node_paths(testbed, node)?;
        caps.validate()?;
        let cgroup = match &self.layout {
            Layout::V1 {
                cpu,
                memory,
                cpuacct,
            } => {
                let at = |base: &Path| base.join(HERMES_DIR).join(testbed).join(node);
                NodeCgroup {
                    version: CgroupVersion::V1,
                    cpu_dir: Some(at(cpu)),
                    memory_dir: Some(at(memory)),
                    usage_dir: Some(at(cpuacct.as_deref().unwrap_or(cpu))),
                    dirs,
                }
            }
            Layout::V2 { base } => {
                let dir = base.join(HERMES_DIR).join(testbed).join(node);
                NodeCgroup {
                    version: CgroupVersion::V2,
                    cpu_dir: Some(dir.clone()),
                    memory_dir: Some(dir.clone()),
                    usage_dir: Some(dir),
                    dirs,
                }
            }
        };
        let made = || -> Result<(), CgroupError> {
            if let Layout::V2 { base } = &self.layout {
                // Children only get the controllers their parent enables.
                let hermes = base.join(HERMES_DIR);
                detect::enable_v2_controllers(base)?;
                for dir in [hermes.clone(), hermes.join(testbed)] {
                    create_dir(&dir)?;
                    detect::enable_v2_controllers(&dir)?;
                }
            }
            cgroup.dirs.iter().try_for_each(|d| create_dir(d))?;
            cgroup.set(caps)
        };
        if let Err(e) = made() {
            if let Err(cleanup) = cgroup.remove() {
                tracing::warn!("cleaning up after a failed cgroup create: {cleanup}");
            }
            return Err(e);
        }
        Ok(cgroup)
    }
}

fn validate_name(what: &'static str, name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 64 {
        "longer than 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "only ASCII letters, digits, '-' and '_' are allowed (no '/', '.', spaces)"
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        "must start with a letter or digit"
    } else {
        return Ok(());
    };
    Err(CgroupError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    })
}

fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(|source| CgroupError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}
