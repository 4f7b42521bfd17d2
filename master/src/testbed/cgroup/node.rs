//! One node's cgroup: caps, processes, removal, joining before exec.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{
    read_opt, validate_name, write, Caps, CgroupError, CgroupVersion, CPU_PERIOD_US, HERMES_DIR,
    KILL_TIMEOUT, POLL, RMDIR_TIMEOUT,
};

/// One node's cgroup directories (one per hierarchy in v1, one in v2).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCgroup {
    pub(super) version: CgroupVersion,
    pub(super) dirs: Vec<PathBuf>,
    pub(super) cpu_dir: Option<PathBuf>,
    pub(super) memory_dir: Option<PathBuf>,
    pub(super) usage_dir: Option<PathBuf>,
}

impl NodeCgroup {
    /// Rebuilds a node cgroup from the directories [`NodeCgroup::paths`] returned (e.g. read
    /// back from a state file after a crash). Each must be an absolute
    /// `<base>/hermes/<testbed>/<node>` with valid names, all for the same node — anything
    /// else is refused, since [`NodeCgroup::remove`] kills every process in them. Directories
    /// that no longer exist are accepted (removing them is a no-op); existing ones are
    /// recognised by their control files.
    pub fn from_paths<P: AsRef<Path>>(paths: &[P]) -> Result<NodeCgroup, CgroupError> {
        let refuse = |path: &Path, reason: &str| CgroupError::NotNodePath {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let first = paths
            .first()
            .ok_or_else(|| refuse(Path::new(""), "no paths given"))?;
        let names = |p: &Path| -> Option<(String, String)> {
            let node = p.file_name()?.to_str()?;
            let testbed_dir = p.parent()?;
            let testbed = testbed_dir.file_name()?.to_str()?;
            let hermes = testbed_dir.parent()?.file_name()?;
            (hermes == HERMES_DIR).then(|| (testbed.to_string(), node.to_string()))
        };
        let expected = names(first.as_ref());
        let mut cgroup = NodeCgroup {
            version: CgroupVersion::V1,
            dirs: Vec::new(),
            cpu_dir: None,
            memory_dir: None,
            usage_dir: None,
        };
        let (mut v1, mut v2) = (false, false);
        for path in paths.iter().map(AsRef::as_ref) {
            if !path.is_absolute() {
                return Err(refuse(path, "not absolute"));
            }
            let Some((testbed, node)) = names(path) else {
                return Err(refuse(path, "no hermes/<testbed>/<node> at its end"));
            };
            validate_name("testbed", &testbed)?;
            validate_name("node", &node)?;
            if Some((testbed, node)) != expected {
                return Err(refuse(
                    path,
                    "not the same testbed and node as the first path",
                ));
            }
            let has = |file: &str| path.join(file).exists();
            if has("cgroup.controllers") || has("cpu.max") || has("memory.max") {
                v2 = true;
                cgroup.cpu_dir = Some(path.to_path_buf());
                cgroup.memory_dir = Some(path.to_path_buf());
                cgroup.usage_dir = Some(path.to_path_buf());
            } else {
                if has("cpu.cfs_quota_us") {
                    v1 = true;
                    cgroup.cpu_dir = Some(path.to_path_buf());
                    cgroup.usage_dir = cgroup.usage_dir.take().or(Some(path.to_path_buf()));
                }
                if has("memory.limit_in_bytes") {
                    v1 = true;
                    cgroup.memory_dir = Some(path.to_path_buf());
                }
                if has("cpuacct.usage") {
                    cgroup.usage_dir = Some(path.to_path_buf());
                }
            }
            cgroup.dirs.push(path.to_path_buf());
        }
        if v1 && v2 {
            return Err(refuse(
                first.as_ref(),
                "a mix of cgroup v1 and v2 directories",
            ));
        }
        if v2 {
            cgroup.version = CgroupVersion::V2;
        }
        Ok(cgroup)
    }

    /// Which interface the node uses.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Every node directory, one per hierarchy (record these to rebuild with
    /// [`NodeCgroup::from_paths`]); the parents `hermes/<testbed>` and `hermes` are implied.
    pub fn paths(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The `cgroup.procs` file of each node directory.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Changes the caps live (running processes are affected at once). Uncapped is `-1` in
    /// v1 and `max` in v2; a memory cap disables swap (`memory.memsw.limit_in_bytes` in v1,
    /// `memory.swap.max` in v2, where present).
    pub fn set(&self, caps: &Caps) -> Result<(), CgroupError> {
        caps.validate()?;
        let cpu = self.controller_dir(&self.cpu_dir, "cpu")?;
        let memory = self.controller_dir(&self.memory_dir, "memory")?;
        let quota = caps.cpu.map(|c| (c * CPU_PERIOD_US as f64).round() as u64);
        match self.version {
            CgroupVersion::V1 => {
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(
                    &cpu.join("cpu.cfs_quota_us"),
                    &quota.map_or("-1".into(), |q| q.to_string()),
                )?;
                let limit = caps.memory_bytes.map_or("-1".into(), |b| b.to_string());
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                let has_memsw = memsw.exists();
                if has_memsw {
                    // The kernel demands limit <= memsw at every step.
                    write(&memsw, "-1")?;
                }
                write(&memory.join("memory.limit_in_bytes"), &limit)?;
                if has_memsw {
                    write(&memsw, &limit)?;
                }
            }
            CgroupVersion::V2 => {
                let quota = quota.map_or("max".into(), |q| q.to_string());
                write(&cpu.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                let limit = caps.memory_bytes.map_or("max".into(), |b| b.to_string());
                write(&memory.join("memory.max"), &limit)?;
                let swap = memory.join("memory.swap.max");
                if swap.exists() {
                    write(
                        &swap,
                        if caps.memory_bytes.is_some() {
                            "0"
                        } else {
                            "max"
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Every process in the node (union over the hierarchies, sorted); a directory that no
    /// longer exists contributes none.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all: Vec<i32> = self
            .pids_by_file()?
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect();
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// SIGKILLs every process in the node, again and again until none is listed (forks
    /// included), for at most [`KILL_TIMEOUT`]. Refuses if this process is in it.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let me = std::process::id() as i32;
        let start = Instant::now();
        loop {
            let listed = self.pids_by_file()?;
            if let Some((path, _)) = listed.iter().find(|(_, p)| p.contains(&me)) {
                let path = path.clone();
                return Err(CgroupError::SelfInCgroup { path, pid: me });
            }
            let Some((path, pids)) = listed.into_iter().find(|(_, p)| !p.is_empty()) else {
                return Ok(());
            };
            if start.elapsed() > KILL_TIMEOUT {
                let waited_ms = start.elapsed().as_millis();
                return Err(CgroupError::KillTimeout {
                    path,
                    pids,
                    waited_ms,
                });
            }
            // v2 (Linux 5.14+): the kernel kills the whole cgroup at once, no pid-reuse race.
            let kill_file = path.with_file_name("cgroup.kill");
            if self.version == CgroupVersion::V2 && kill_file.exists() {
                write(&kill_file, "1")?;
                std::thread::sleep(POLL);
                continue;
            }
            for &pid in &pids {
                // SAFETY: kill(2) with a positive pid read from cgroup.procs (never 0 or -1).
                if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                    let source = io::Error::last_os_error();
                    if source.raw_os_error() != Some(libc::ESRCH) {
                        return Err(CgroupError::Kill { pid, path, source });
                    }
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills every process, removes the node directories, then `hermes/<testbed>` and
    /// `hermes` where they are left empty. Idempotent: missing directories are fine.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.kill_all()?;
        for dir in &self.dirs {
            let start = Instant::now();
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // A just-killed process may take a moment to leave.
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && start.elapsed() < RMDIR_TIMEOUT =>
                    {
                        self.kill_all()?;
                        std::thread::sleep(POLL);
                    }
                    Err(source) => {
                        return Err(CgroupError::RemoveDir {
                            path: dir.clone(),
                            source,
                        })
                    }
                }
            }
        }
        let testbeds: Vec<&Path> = self.dirs.iter().filter_map(|d| d.parent()).collect();
        let hermes: Vec<&Path> = testbeds.iter().filter_map(|d| d.parent()).collect();
        for dir in testbeds.into_iter().chain(hermes) {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Still holds other nodes or testbeds.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
                Err(source) => {
                    return Err(CgroupError::RemoveDir {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// CPU time used by the node's processes so far, in seconds (`cpuacct.usage` in v1,
    /// `usage_usec` of `cpu.stat` in v2); `None` where the kernel does not account it.
    pub fn cpu_usage_secs(&self) -> Result<Option<f64>, CgroupError> {
        let Some(dir) = &self.usage_dir else {
            return Ok(None);
        };
        let (path, scale) = match self.version {
            CgroupVersion::V1 => (dir.join("cpuacct.usage"), 1e-9),
            CgroupVersion::V2 => (dir.join("cpu.stat"), 1e-6),
        };
        let Some(text) = read_opt(&path)? else {
            return Ok(None);
        };
        let value = match self.version {
            CgroupVersion::V1 => Some(text.trim()),
            CgroupVersion::V2 => text.lines().find_map(|l| l.strip_prefix("usage_usec ")),
        };
        let Some(value) = value else {
            return Ok(None);
        };
        let n: u64 = value.trim().parse().map_err(|_| CgroupError::Parse {
            path: path.clone(),
            reason: format!("{value:?} is not a CPU time"),
        })?;
        Ok(Some(n as f64 * scale))
    }

    fn controller_dir<'a>(
        &self,
        dir: &'a Option<PathBuf>,
        controller: &'static str,
    ) -> Result<&'a Path, CgroupError> {
        dir.as_deref().ok_or_else(|| CgroupError::NoController {
            path: self.dirs.first().cloned().unwrap_or_default(),
            controller,
        })
    }

    fn pids_by_file(&self) -> Result<Vec<(PathBuf, Vec<i32>)>, CgroupError> {
        let mut out = Vec::new();
        for path in self.procs_files() {
            let Some(text) = read_opt(&path)? else {
                continue;
            };
            let pids = text
                .split_whitespace()
                .map(|s| match s.parse::<i32>() {
                    Ok(pid) if pid > 0 => Ok(pid),
                    _ => Err(CgroupError::Parse {
                        path: path.clone(),
                        reason: format!("{s:?} is not a pid"),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push((path, pids));
        }
        Ok(out)
    }
}

/// Moves the calling process into each cgroup by writing `0` to each `cgroup.procs` file.
/// Meant for [`CommandExt::pre_exec`] (between fork and exec): it only calls `open`, `write`
/// and `close`, allocates nothing and takes no lock. Prepare the `CString`s before forking.
pub fn join_self(procs_files: &[CString]) -> io::Result<()> {
    for file in procs_files {
        // SAFETY: a valid NUL-terminated path; the fd is closed below on every path.
        let fd = unsafe { libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = loop {
            // SAFETY: writes one byte from a static buffer to an fd we own.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            if n == 1 {
                break Ok(());
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break Err(if n < 0 {
                e
            } else {
                io::Error::from_raw_os_error(libc::EIO)
            });
        };
        // SAFETY: closes the fd opened above, once.
        unsafe { libc::close(fd) };
        result?;
    }
    Ok(())
}

/// Makes `cmd`'s child join `node` before it execs (via [`join_self`]), so it never runs
/// uncapped; `spawn` then fails if joining fails.
pub fn apply_to_command(node: &NodeCgroup, cmd: &mut Command) -> Result<(), CgroupError> {
    let files = node
        .procs_files()
        .into_iter()
        .map(|p| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| CgroupError::NulInPath { path: p.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // SAFETY: the hook only makes async-signal-safe calls (open/write/close) on memory
    // allocated before the fork.
    unsafe {
        cmd.pre_exec(move || join_self(&files));
    }
    Ok(())
}
