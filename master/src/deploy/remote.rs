//! The worker process on a host: start (detached), probe, stop, read its log.
//!
//! Layout of the remote directory:
//! `worker` (binary), `worker.json` (config), `lib/libonnxruntime.so`,
//! `worker.log` (stdout and stderr, appended), `worker.pid`,
//! `data/hermes.key` (the run key), and the worker's state file in its
//! working directory (`data/worker/<id>/state.json` by default).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::inventory::WorkerMode;
use super::session::{quote_path, Remote};

/// Paths of the deployed files inside one remote directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The remote directory (absolute).
    pub dir: PathBuf,
}

impl Layout {
    /// The worker binary.
    pub fn binary(&self) -> PathBuf {
        self.dir.join("worker")
    }
    /// The generated worker config.
    pub fn config(&self) -> PathBuf {
        self.dir.join("worker.json")
    }
    /// Directory of shared libraries.
    pub fn lib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }
    /// The ONNX Runtime library.
    pub fn ort_lib(&self) -> PathBuf {
        self.lib_dir().join("libonnxruntime.so")
    }
    /// The run key, where the worker looks by default (it runs in `dir`).
    pub fn key(&self) -> PathBuf {
        self.dir.join(common::runkey::DEFAULT_KEY_FILE)
    }
    /// The worker's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("worker.log")
    }
    /// The pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("worker.pid")
    }
}

/// Makes `remote_dir` absolute: `~`, `~/x` and relative paths are taken from
/// the remote user's home directory.
pub fn resolve_dir(remote: &Remote, remote_dir: &str) -> anyhow::Result<Layout> {
    if remote_dir.starts_with('/') {
        return Ok(Layout {
            dir: PathBuf::from(remote_dir),
        });
    }
    let home = remote.exec_ok("printf '%s' \"$HOME\"")?;
    let home = home.trim();
    if !home.starts_with('/') {
        bail!("cannot find the remote home directory (got `{home}`); use an absolute remote_dir");
    }
    let rest = remote_dir
        .strip_prefix("~/")
        .or_else(|| remote_dir.strip_prefix('~'))
        .unwrap_or(remote_dir);
    Ok(Layout {
        dir: Path::new(home).join(rest),
    })
}

/// Shell snippet that sets `$pid` to the pid in the pid file when that
/// process is alive (and not a zombie), and exits 1 otherwise.
fn alive_snippet(layout: &Layout) -> String {
    format!(
        "pid=$(cat {pidfile} 2>/dev/null); \
         [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null || exit 1; \
         if [ -r /proc/$pid/stat ]; then \
           st=$(sed -n 's/^.*) \\(.\\).*$/\\1/p' /proc/$pid/stat); \
           [ \"$st\" = Z ] && exit 1; \
         fi; ",
        pidfile = quote_path(&layout.pid_file())
    )
}

/// The pid of the running worker, if it runs.
pub fn running_pid(remote: &Remote, layout: &Layout) -> anyhow::Result<Option<u32>> {
    let out = remote.exec(&format!("{} echo \"$pid\"", alive_snippet(layout)))?;
    if !out.success() {
        return Ok(None);
    }
    Ok(out.stdout.trim().parse().ok())
}

/// Starts the worker detached (new session, immune to hangup, stdin from
/// /dev/null, output appended to the log) and records its pid. Then waits
/// `check` and makes sure it is still alive, explaining why when it is not.
pub fn start(
    remote: &Remote,
    layout: &Layout,
    mode: WorkerMode,
    check: Duration,
) -> anyhow::Result<u32> {
    let flags = match mode {
        WorkerMode::Agent => " --agent",
        WorkerMode::Once => "",
    };
    let command = format!(
        "cd {dir} || exit 1; \
         if command -v setsid >/dev/null 2>&1; then S=setsid; else S=; fi; \
         echo \"=== master deploy: starting worker at $(date -u '+%Y-%m-%dT%H:%M:%SZ') ===\" >> {log}; \
         ORT_DYLIB_PATH={ort} $S nohup {bin} --conf {conf}{flags} >> {log} 2>&1 < /dev/null & \
         echo $! > {pidfile}; cat {pidfile}",
        dir = quote_path(&layout.dir),
        log = quote_path(&layout.log()),
        ort = quote_path(&layout.ort_lib()),
        bin = quote_path(&layout.binary()),
        conf = quote_path(&layout.config()),
        pidfile = quote_path(&layout.pid_file()),
    );
    let stdout = remote
        .exec_ok(&command)
        .context("cannot start the worker")?;
    let pid: u32 = stdout.trim().parse().with_context(|| {
        format!(
            "starting the worker printed no pid (got `{}`)",
            stdout.trim()
        )
    })?;
    std::thread::sleep(check);
    if running_pid(remote, layout)? == Some(pid) {
        return Ok(pid);
    }
    let tail = tail_log(remote, layout, 20).unwrap_or_default();
    bail!("{}", explain_early_exit(&tail))
}

/// Turns the last log lines of a worker that died at once into a message.
pub fn explain_early_exit(tail: &str) -> String {
    // Only the lines of the latest start matter.
    let lines: Vec<&str> = tail.lines().collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("=== master deploy"))
        .map_or(0, |i| i + 1);
    let last = lines[from..].join(" | ");
    let lower = last.to_ascii_lowercase();
    // glibc's execvp hands an ELF it cannot run to /bin/sh, which then fails on it.
    let elf_as_script =
        lower.contains("elf") && (lower.contains("not found") || lower.contains("syntax error"));
    let reason = if lower.contains("exec format error")
        || lower.contains("cannot execute binary file")
        || elf_as_script
    {
        "binary not executable on this host: exec format error (built for another \
         architecture? set `binary` for this host to a matching build)"
    } else if lower.contains("permission denied") {
        "binary not executable on this host: permission denied (is the remote \
         directory on a noexec filesystem?)"
    } else if lower.contains("error while loading shared libraries") || lower.contains("glibc_") {
        "the worker cannot load its shared libraries (glibc too old, or a missing library)"
    } else if lower.contains("no such file or directory") && lower.contains("nohup") {
        "binary not executable on this host: its program interpreter (dynamic loader) \
         is missing (built for another architecture or libc?)"
    } else {
        "the worker exited right after starting"
    };
    if last.trim().is_empty() {
        reason.to_string()
    } else {
        format!("{reason}; worker.log: {last}")
    }
}

/// What `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// No worker was running.
    NotRunning,
    /// The worker exited after SIGTERM.
    Gracefully(u32),
    /// The worker ignored SIGTERM for the whole timeout and was killed.
    Killed(u32),
}

/// Sends SIGTERM (to the worker's process group when it leads one), waits up
/// to `grace`, then sends SIGKILL. Removes the pid file.
pub fn stop(remote: &Remote, layout: &Layout, grace: Duration) -> anyhow::Result<Stopped> {
    let Some(pid) = running_pid(remote, layout)? else {
        remote.exec(&format!("rm -f {}", quote_path(&layout.pid_file())))?;
        return Ok(Stopped::NotRunning);
    };
    signal(remote, pid, "TERM")?;
    let deadline = Instant::now() + grace;
    let mut result = Stopped::Gracefully(pid);
    loop {
        if running_pid(remote, layout)? != Some(pid) {
            break;
        }
        if Instant::now() >= deadline {
            signal(remote, pid, "KILL")?;
            result = Stopped::Killed(pid);
            let kill_deadline = Instant::now() + Duration::from_secs(5);
            while running_pid(remote, layout)? == Some(pid) {
                if Instant::now() >= kill_deadline {
                    bail!("worker (pid {pid}) still alive after SIGKILL");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    remote.exec(&format!("rm -f {}", quote_path(&layout.pid_file())))?;
    Ok(result)
}

fn signal(remote: &Remote, pid: u32, sig: &str) -> anyhow::Result<()> {
    remote.exec(&format!(
        "kill -{sig} -- -{pid} 2>/dev/null || kill -{sig} {pid} 2>/dev/null; true"
    ))?;
    Ok(())
}

/// The last `lines` lines of the worker's log, without terminal escape
/// sequences (an older worker may have written colour codes).
pub fn tail_log(remote: &Remote, layout: &Layout, lines: usize) -> anyhow::Result<String> {
    let out = remote.exec(&format!("tail -n {lines} {}", quote_path(&layout.log())))?;
    if !out.success() {
        bail!(
            "cannot read {}: {}",
            layout.log().display(),
            out.stderr.trim()
        );
    }
    Ok(strip_ansi(&out.stdout))
}

/// Removes ANSI escape sequences (`ESC [ ... letter`, and a lone `ESC x`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// What a deployed worker's state file says.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct WorkerState {
    /// `idle`, `serving` or `exited`.
    pub state: String,
    /// The run served.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The process that wrote it.
    #[serde(default)]
    pub pid: u32,
}

/// Reads the worker's state file (`state_file` relative to the remote
/// directory unless absolute); `None` when missing or unreadable.
pub fn read_state(remote: &Remote, layout: &Layout, state_file: &Path) -> Option<WorkerState> {
    let path = layout.dir.join(state_file);
    let out = remote
        .exec(&format!("cat {} 2>/dev/null", quote_path(&path)))
        .ok()?;
    if !out.success() {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_exit_reasons() {
        let m = explain_early_exit("nohup: failed to run command './worker': Exec format error\n");
        assert!(m.contains("exec format error"), "{m}");
        let m = explain_early_exit("/opt/h/worker: 1: \u{7f}ELF\u{2}: not found\n");
        assert!(m.contains("exec format error"), "{m}");
        let m = explain_early_exit("./worker: error while loading shared libraries: libx.so\n");
        assert!(m.contains("shared libraries"), "{m}");
        let m = explain_early_exit(
            "old: exec format error\n=== master deploy: starting ===\nthread main panicked\n",
        );
        assert!(
            m.contains("exited right after") && m.contains("panicked"),
            "{m}"
        );
    }

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m worker: ok\n"),
            "2026  INFO worker: ok\n"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn layout_paths() {
        let l = Layout {
            dir: PathBuf::from("/opt/h"),
        };
        assert_eq!(l.ort_lib(), PathBuf::from("/opt/h/lib/libonnxruntime.so"));
        assert_eq!(l.pid_file(), PathBuf::from("/opt/h/worker.pid"));
    }
}
