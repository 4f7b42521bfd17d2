//! Starting processes inside a node: its cgroups joined and its network
//! namespace entered between fork and exec, so not one instruction of the
//! program runs uncapped or on the host's network.
//!
//! (`ip netns exec` would remount /sys, hiding the cgroup tree; entering
//! with `setns` keeps the host's mounts.)

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use super::cgroup;

/// Prepares `cmd` to run in namespace `netns` (by name, `/run/netns/<name>`),
/// in the cgroups whose directories are `cgroup_dirs`, in a session of its own.
pub fn into_node(cmd: &mut Command, netns: &str, cgroup_dirs: &[PathBuf]) -> anyhow::Result<()> {
    let ns_path = Path::new("/run/netns").join(netns);
    // Opened here (close-on-exec), entered in the child.
    let ns = File::open(&ns_path)
        .with_context(|| format!("{}: cannot open the node's namespace", ns_path.display()))?;
    let procs: Vec<CString> = cgroup_dirs
        .iter()
        .map(|d| {
            CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes())
                .context("cgroup path with a NUL byte")
        })
        .collect::<anyhow::Result<_>>()?;
    // SAFETY: the hook only makes raw system calls (setsid, open/write/close
    // inside join_self, setns) on data prepared before the fork; `ns` is
    // moved into the closure and stays open until exec closes it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            cgroup::join_self(&procs)?;
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Starts `cmd` detached inside the node, output appended to `log`.
pub fn spawn_detached(
    mut cmd: Command,
    netns: &str,
    cgroup_dirs: &[PathBuf],
    log: &Path,
) -> anyhow::Result<std::process::Child> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("{}: cannot open", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    into_node(&mut cmd, netns, cgroup_dirs)?;
    cmd.spawn()
        .with_context(|| format!("start {:?} in namespace {netns}", cmd.get_program()))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Turns SIGTERM and SIGINT into a flag (so a long operation can stop
/// cleanly and tear down what it made) and returns the flag.
pub fn stop_signals() -> &'static AtomicBool {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
    &STOP
}

/// Makes a child read only the configuration file it is given: the caller's
/// `HERMES_*` overrides (run id, brokers, slowdown...) are removed, except
/// the HMAC key; colour is off (its output goes to a log file).
pub fn own_config_only(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("HERMES_") && !k.starts_with("HERMES_HMAC_KEY") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_COLOR", "1");
}

/// Whether process `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Sends `signal` to `pid` (errors ignored: it may be gone).
pub fn signal(pid: u32, signal: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a plain pid and signal number.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`, for each pid; waits until all are gone
/// (bounded).
pub fn terminate(pids: &[u32], grace: std::time::Duration) {
    for &p in pids {
        signal(p, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for &p in pids {
        if alive(p) {
            signal(p, libc::SIGKILL);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
