//! Shared fixtures of the `deploy_*` integration tests: a temp directory with
//! a user key, real sshd servers ("hosts"), an inventory and a helper that
//! runs the real `master deploy` binary.

#![allow(dead_code)]

pub mod sshd;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use sshd::{SshServer, UserKey};

/// A fake worker: prints its arguments and environment, runs until SIGTERM.
pub const FAKE_WORKER: &str = "#!/bin/sh\n\
echo \"fake worker starting: $*\"\n\
echo \"ORT_DYLIB_PATH=$ORT_DYLIB_PATH\"\n\
trap 'echo \"fake worker got TERM\"; exit 0' TERM\n\
while true; do sleep 0.2; done\n";

/// The result of one `master deploy` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output (the results table).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The table row of `host` (the line that starts with its name).
    pub fn row(&self, host: &str) -> String {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("no row for {host} in:\n{}", self.stdout))
            .to_string()
    }
}

/// A temp directory with a user key, some sshd "hosts", local files to deploy.
pub struct Lab {
    /// The servers (declared first: dropped, and so stopped, first).
    pub servers: Vec<SshServer>,
    /// The user key all servers accept.
    pub key: UserKey,
    /// The temp directory (deleted on drop, after the servers are stopped).
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Starts `hosts` sshd servers.
    pub fn new(hosts: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = UserKey::generate(dir.path());
        let servers = (0..hosts)
            .map(|i| SshServer::start(&dir.path().join(format!("host{i}")), &key))
            .collect();
        let lab = Self { servers, key, dir };
        std::fs::write(lab.path("worker.sh"), FAKE_WORKER).expect("write fake worker");
        std::fs::write(lab.path("libonnxruntime.so"), b"not really onnxruntime\n")
            .expect("write fake ort lib");
        std::fs::write(
            lab.path("worker.json"),
            serde_json::to_vec_pretty(&json!({
                "worker_id": "placeholder",
                "kafka": {"brokers": "127.0.0.1:1"},
                "training": {"local_epochs": 1}
            }))
            .expect("json"),
        )
        .expect("write base worker config");
        lab
    }

    /// A path inside the lab directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The known_hosts file the tests pass with `--known-hosts`.
    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// Writes `known_hosts` with the true keys of the given servers.
    pub fn trust(&self, servers: &[usize]) {
        let lines: Vec<String> = servers
            .iter()
            .map(|&i| self.servers[i].known_hosts_line())
            .collect();
        std::fs::write(self.known_hosts(), lines.join("\n") + "\n").expect("write known_hosts");
    }

    /// Inventory entry for server `i` (named `host<i>`, worker id `w<i>`).
    pub fn host_entry(&self, i: usize) -> Value {
        let server = &self.servers[i];
        self.entry(
            &format!("host{i}"),
            server.port,
            &server.remote_dir,
            &format!("w{i}"),
        )
    }

    /// An inventory entry for any port (for unreachable hosts).
    pub fn entry(&self, name: &str, port: u16, remote_dir: &Path, worker_id: &str) -> Value {
        json!({
            "name": name,
            "address": "127.0.0.1",
            "port": port,
            "user": sshd::current_user(),
            "auth": {"key": self.key.private},
            "remote_dir": remote_dir,
            "worker_id": worker_id,
            "overrides": {"training": {"local_epochs": 2}}
        })
    }

    /// Writes the inventory with `hosts` and default local files; returns its path.
    pub fn write_cluster(&self, hosts: Vec<Value>) -> PathBuf {
        self.write_cluster_with(
            hosts,
            self.path("worker.sh"),
            self.path("libonnxruntime.so"),
        )
    }

    /// Writes the inventory with explicit worker binary and ORT library.
    pub fn write_cluster_with(&self, hosts: Vec<Value>, binary: PathBuf, ort: PathBuf) -> PathBuf {
        let cluster = json!({
            "brokers": "127.0.0.1:9092",
            "worker_config": self.path("worker.json"),
            "binary": binary,
            "ort_lib": ort,
            "hosts": hosts,
        });
        let path = self.path("cluster.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&cluster).expect("json"))
            .expect("write cluster.json");
        path
    }

    /// Runs `master deploy --cluster <cluster> --known-hosts <lab> <args...>`.
    pub fn deploy(&self, cluster: &Path, args: &[&str]) -> Run {
        self.deploy_env(cluster, args, &[])
    }

    /// Like [`Lab::deploy`], with extra environment variables.
    pub fn deploy_env(&self, cluster: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_master"))
            .current_dir(self.dir.path())
            .envs(env.iter().copied())
            .arg("deploy")
            .arg("--cluster")
            .arg(cluster)
            .arg("--known-hosts")
            .arg(self.known_hosts())
            .arg("--status-file")
            .arg(self.path("workers-status.json"))
            .args([
                "--connect-timeout",
                "5",
                "--command-timeout",
                "20",
                "--stop-timeout",
                "5",
            ])
            .args(args)
            .output()
            .expect("run master deploy");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ master deploy {}\nexit {}\n{}{}",
            args.join(" "),
            run.code,
            run.stdout,
            run.stderr
        );
        run
    }
}

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails with the fix when setup has not produced the data, artifacts or library.
pub fn require_setup() {
    for (path, fix) in [
        (
            "data/mnist/mnist_5k.csv.gz",
            "bash examples/prepare_data.sh",
        ),
        (
            "examples/artifacts/mlp/manifest.json",
            "bash examples/build_artifacts.sh",
        ),
        (
            "deploy/ort/lib/libonnxruntime.so",
            "bash deploy/ort/install.sh",
        ),
    ] {
        assert!(
            workspace().join(path).exists(),
            "{path} missing: run `{fix}` (or deploy/setup.sh)"
        );
    }
}

/// `target/<profile>/worker`, (re)built with the profile of this test's master.
pub fn worker_binary() -> PathBuf {
    let master = PathBuf::from(env!("CARGO_BIN_EXE_master"));
    let dir = master.parent().expect("target dir");
    let profile = dir
        .file_name()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace())
        .args(["build", "-q", "-p", "worker"]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status().expect("run cargo build -p worker");
    assert!(status.success(), "cargo build -p worker failed");
    let worker = dir.join("worker");
    assert!(worker.exists(), "{} missing", worker.display());
    worker
}
