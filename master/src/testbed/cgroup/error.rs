//! The error type of [`super`].

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with cgroups; each message names the path and what failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Reading a cgroup or /proc file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing a value into a cgroup control file failed.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("cannot create cgroup directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Removing a cgroup directory failed (after retries while it was busy).
    #[error("cannot remove cgroup directory {path}: {source}")]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A cgroup file held something unexpected.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A v2 cgroup does not offer a controller we need.
    #[error(
        "{path} does not offer the {controller} controller (cgroup.controllers: {available:?})"
    )]
    ControllerUnavailable {
        /// The cgroup directory.
        path: PathBuf,
        /// The missing controller.
        controller: &'static str,
        /// What `cgroup.controllers` lists.
        available: String,
    },
    /// A node cgroup rebuilt from paths lacks the directory for a controller.
    #[error("node cgroup {path} has no {controller} directory")]
    NoController {
        /// The node's first directory.
        path: PathBuf,
        /// The controller.
        controller: &'static str,
    },
    /// A testbed or node name is not usable as a cgroup directory name.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// "testbed" or "node".
        what: &'static str,
        /// The name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// CPU or memory caps out of range.
    #[error("invalid caps: {0}")]
    InvalidCaps(String),
    /// A memory size string that does not parse.
    #[error("invalid memory size {input:?}: {reason} (expected bytes or a number with K, M, G or T, e.g. \"512M\", \"2G\", \"64MiB\", \"1048576\")")]
    InvalidMemory {
        /// The input.
        input: String,
        /// What was wrong.
        reason: String,
    },
    /// A path given to [`NodeCgroup::from_paths`](super::NodeCgroup::from_paths) is not `<base>/hermes/<testbed>/<node>`.
    #[error("{path} is not a hermes node cgroup (<base>/hermes/<testbed>/<node>): {reason}")]
    NotNodePath {
        /// The path.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A path holds a NUL byte and cannot be passed to the kernel.
    #[error("cgroup path {path} contains a NUL byte")]
    NulInPath {
        /// The path.
        path: PathBuf,
    },
    /// `kill(2)` failed for a process listed in a node cgroup.
    #[error("cannot send SIGKILL to pid {pid} listed in {path}: {source}")]
    Kill {
        /// The process.
        pid: i32,
        /// The `cgroup.procs` file that listed it.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Processes still listed after [`KILL_TIMEOUT`](super::KILL_TIMEOUT) of SIGKILLs.
    #[error("processes {pids:?} still in {path} after {waited_ms} ms of SIGKILL")]
    KillTimeout {
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// What it still lists.
        pids: Vec<i32>,
        /// How long we tried.
        waited_ms: u128,
    },
    /// This process itself is in the node cgroup: killing everything in it would kill us.
    #[error("refusing to kill the processes of {path}: this process (pid {pid}) is in it")]
    SelfInCgroup {
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// Our pid.
        pid: i32,
    },
}
