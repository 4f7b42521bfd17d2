//! A local cluster for end-to-end tests: the real `master` and `worker`
//! binaries, the real broker (started by `deploy/kafka/start.sh` when needed),
//! real ONNX Runtime, mnist_5k. Every process is killed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running broker's address.
pub fn brokers() -> String {
    if let Ok(b) = std::env::var("HERMES_TEST_BROKERS") {
        return b;
    }
    let ok = Command::new("bash")
        .arg(workspace().join("deploy/kafka/start.sh"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "deploy/kafka/start.sh failed");
    "127.0.0.1:9092".into()
}

/// Fails with the fix when setup has not produced the data or the artifacts.
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

/// A process whose stderr lines are collected, killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut v) = sink.lock() {
                        v.push(strip_ansi(&line));
                    }
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            lines,
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// Waits until a printed line contains `needle`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self
                .lines
                .lock()
                .map(|v| v.iter().any(|l| l.contains(needle)))
                .unwrap_or(false)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// SIGKILL, as a crashing device would die.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One test's cluster: its own run id, data folder and configs.
pub struct Cluster {
    pub run_id: String,
    pub dir: tempfile::TempDir,
    pub brokers: String,
    master_conf: PathBuf,
    worker_conf: PathBuf,
    /// Environment variables master and workers get (e.g. a SASL password).
    pub env: Vec<(String, String)>,
}

impl Cluster {
    /// A cluster whose master config is conf/master.json changed by `edit`.
    pub fn new(name: &str, edit: impl FnOnce(&mut Value)) -> Cluster {
        Self::on_brokers(name, brokers(), edit)
    }

    /// Like [`Cluster::new`] on the broker(s) at `brokers`.
    pub fn on_brokers(name: &str, brokers: String, edit: impl FnOnce(&mut Value)) -> Cluster {
        require_setup();
        let run_id = format!("e2e-{name}-{}", std::process::id());
        let dir = tempfile::tempdir().expect("temp dir");
        let root = workspace();
        let mut master: Value = serde_json::from_slice(
            &std::fs::read(root.join("conf/master.json")).expect("read conf/master.json"),
        )
        .expect("parse conf/master.json");
        master["run_id"] = run_id.clone().into();
        master["kafka"]["brokers"] = brokers.clone().into();
        master["data_dir"] = dir.path().join("data").display().to_string().into();
        master["dataset"]["source"]["path"] = root
            .join("data/mnist/mnist_5k.csv.gz")
            .display()
            .to_string()
            .into();
        master["model"]["artifacts"] = root
            .join("examples/artifacts/mlp")
            .display()
            .to_string()
            .into();
        master["registration_timeout_secs"] = 120.into();
        master["stop"]["max_wall_secs"] = 240.into();
        edit(&mut master);
        // The run key, as a user makes one (`openssl rand -hex 32`); master
        // and workers find it at the default path, tests' own clients read
        // it with `key()`.
        common::runkey::create_key_file(&dir.path().join(common::runkey::DEFAULT_KEY_FILE))
            .expect("create the run key");
        let master_conf = dir.path().join("master.json");
        std::fs::write(
            &master_conf,
            serde_json::to_vec_pretty(&master).expect("json"),
        )
        .expect("write master.json");

        let mut worker: Value = serde_json::from_slice(
            &std::fs::read(root.join("conf/worker.json")).expect("read conf/worker.json"),
        )
        .expect("parse conf/worker.json");
        worker["run_id"] = run_id.clone().into();
        worker["kafka"]["brokers"] = brokers.clone().into();
        let worker_conf = dir.path().join("worker.json");
        std::fs::write(
            &worker_conf,
            serde_json::to_vec_pretty(&worker).expect("json"),
        )
        .expect("write worker.json");
        Cluster {
            run_id,
            dir,
            brokers,
            master_conf,
            worker_conf,
            env: Vec::new(),
        }
    }

    fn binary(name: &str) -> PathBuf {
        let path = Path::new(env!("CARGO_BIN_EXE_master")).with_file_name(name);
        assert!(
            path.exists(),
            "{} not built: run `cargo build --workspace`",
            path.display()
        );
        path
    }

    /// The run's key (what master and workers sign with).
    pub fn key(&self) -> common::auth::HmacKey {
        common::auth::HmacKey::from_file(self.dir.path().join(common::runkey::DEFAULT_KEY_FILE))
            .expect("the run key")
    }

    /// Changes the worker config (conf/worker.json with the test's run id
    /// and brokers) with `edit`.
    pub fn edit_worker(&self, edit: impl FnOnce(&mut Value)) {
        let mut worker: Value =
            serde_json::from_slice(&std::fs::read(&self.worker_conf).expect("read worker.json"))
                .expect("parse worker.json");
        edit(&mut worker);
        std::fs::write(
            &self.worker_conf,
            serde_json::to_vec_pretty(&worker).expect("json"),
        )
        .expect("write worker.json");
    }

    /// Starts the master.
    pub fn master(&self) -> Proc {
        let mut cmd = Command::new(Self::binary("master"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--conf")
            .arg(&self.master_conf)
            .current_dir(self.dir.path());
        Proc::spawn("master", cmd)
    }

    /// Starts worker `id` with an emulated `slowdown`.
    pub fn worker(&self, id: &str, slowdown: f64) -> Proc {
        let mut cmd = Command::new(Self::binary("worker"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--conf")
            .arg(&self.worker_conf)
            .arg("--id")
            .arg(id)
            .env("HERMES_SLOWDOWN", slowdown.to_string())
            .env(
                "HERMES_WORK_DIR",
                self.dir
                    .path()
                    .join("workers")
                    .join(id)
                    .display()
                    .to_string(),
            )
            .current_dir(self.dir.path());
        Proc::spawn(id, cmd)
    }

    /// `<data>/runs/<run id>`.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("data/runs").join(&self.run_id)
    }

    /// The run's summary.json.
    pub fn summary(&self) -> Value {
        let path = self.run_dir().join("summary.json");
        serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
        )
        .expect("summary.json parses")
    }

    /// The centralized log's text.
    pub fn central_log(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("data/centralized-logs/distml-central.txt"),
        )
        .unwrap_or_default()
    }

    /// allocation.csv rows as (worker, round, size).
    pub fn allocations(&self) -> Vec<(String, u64, usize)> {
        let text =
            std::fs::read_to_string(self.run_dir().join("allocation.csv")).expect("allocation.csv");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no column {name}"))
        };
        let (w, r, s) = (col("worker"), col("round"), col("size"));
        lines
            .map(|l| {
                let cells: Vec<&str> = l.split(',').collect();
                (
                    cells[w].to_string(),
                    cells[r].parse().expect("round"),
                    cells[s].parse().expect("size"),
                )
            })
            .collect()
    }
}

/// A broker of one test's own (own ports and storage), run by the project's
/// `deploy/kafka/start.sh` / `stop.sh`; stopped on drop.
pub struct OwnBroker {
    /// Pid, log, config and storage.
    pub state_dir: PathBuf,
    /// Client port; the controller listens on the next one.
    pub port: u16,
    /// More settings for the scripts (TLS listeners, SCRAM users, ...).
    pub env: Vec<(String, String)>,
}

impl OwnBroker {
    /// A broker on `port` (and `port + 1`) keeping its state in `state_dir`.
    pub fn new(state_dir: PathBuf, port: u16) -> Self {
        Self {
            state_dir,
            port,
            env: Vec::new(),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(workspace().join("deploy/kafka").join(script))
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", (self.port + 1).to_string())
            .env("KAFKA_STATE_DIR", &self.state_dir)
            .env("KAFKA_STOP_TIMEOUT", "20")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `start.sh` or `stop.sh`; fails the test with its stderr.
    pub fn script(&self, script: &str) {
        let out = self
            .command(script)
            .output()
            .expect("run the broker script");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.command("stop.sh").output();
    }
}
