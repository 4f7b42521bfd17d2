//! The worker binary `deploy up` ships when the inventory names none: a
//! release build of this workspace's `worker`, made (or found up to date)
//! with cargo on demand, for the local target or cross-built for a host's
//! architecture.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A release build cargo produced (or found up to date).
#[derive(Debug, Clone)]
pub struct Built {
    /// The executable.
    pub path: PathBuf,
    /// `None` = the local target, else the target triple.
    pub target: Option<String>,
    /// How long cargo took (a no-op build takes a second or so).
    pub took: Duration,
}

impl Built {
    /// A few words for the results table.
    pub fn describe(&self) -> String {
        format!(
            "release build{} (cargo, {:.1} s)",
            self.target
                .as_ref()
                .map(|t| format!(" for {t}"))
                .unwrap_or_default(),
            self.took.as_secs_f64()
        )
    }
}

/// The Rust target triple of a Linux host whose `uname -m` is `machine`.
pub fn linux_triple(machine: &str) -> Option<&'static str> {
    Some(match machine.trim() {
        "x86_64" | "amd64" => "x86_64-unknown-linux-gnu",
        "aarch64" | "arm64" => "aarch64-unknown-linux-gnu",
        "armv7l" | "armv7" => "armv7-unknown-linux-gnueabihf",
        "riscv64" => "riscv64gc-unknown-linux-gnu",
        _ => return None,
    })
}

/// Builds `worker` in release mode in the workspace around the current
/// directory (`target`: cross-build for that triple). The error says what
/// to do instead (build it yourself and name it in `binary`).
pub fn release_worker(target: Option<&str>) -> anyhow::Result<Built> {
    let started = Instant::now();
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_dir());
    cmd.args([
        "build",
        "--release",
        "-p",
        "worker",
        "--message-format=json-render-diagnostics",
    ]);
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    let what = match target {
        Some(t) => format!("cross-build the worker for {t}"),
        None => "build the release worker".to_string(),
    };
    let out = cmd.output().with_context(|| {
        format!("cannot run cargo to {what}; build it yourself and set `binary` in the inventory")
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(6).collect();
        let hint = if target.is_some() {
            format!(
                " (is the target installed: `rustup target add {}`, with a linker for it?)",
                target.unwrap_or_default()
            )
        } else {
            String::new()
        };
        bail!(
            "cargo could not {what}{hint}: {}; or build it yourself and set `binary` in the inventory",
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let path = executable_of(&String::from_utf8_lossy(&out.stdout), "worker")
        .context("cargo built the worker but named no executable")?;
    Ok(Built {
        path,
        target: target.map(str::to_string),
        took: started.elapsed(),
    })
}

/// The workspace around the current directory, else the one this master
/// was built from (when it still exists), else the current directory.
fn workspace_dir() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let is_workspace = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .map(|t| t.contains("[workspace]"))
            .unwrap_or(false)
    };
    if let Some(dir) = cwd.ancestors().find(|d| is_workspace(d)) {
        return dir.to_path_buf();
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_workspace(&built_from) {
        return built_from;
    }
    cwd
}

/// `$CARGO` when set (running under cargo), else `cargo` on the PATH.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// The executable of binary `name` in cargo's JSON messages.
fn executable_of(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_is_read_from_cargo_messages() {
        let msgs = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"common","kind":["lib"]},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"worker","kind":["bin"]},"executable":"/t/release/worker"}"#,
            "\nnot json\n",
            r#"{"reason":"build-finished","success":true}"#
        );
        assert_eq!(
            executable_of(msgs, "worker"),
            Some(PathBuf::from("/t/release/worker"))
        );
        assert_eq!(executable_of(msgs, "master"), None);
    }

    #[test]
    fn triples_of_common_machines() {
        assert_eq!(linux_triple("x86_64\n"), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(linux_triple("aarch64"), Some("aarch64-unknown-linux-gnu"));
        assert_eq!(linux_triple("sparc"), None);
    }
}
