//! End to end: `master deploy up` puts the real `worker` binary, its config
//! and the real ONNX Runtime library on two sshd "hosts"; both workers then
//! register with a real `master` over the real Kafka broker; `status` sees
//! them running and `stop` stops them.
//!
//! Needs the broker (`deploy/kafka/start.sh`, address from
//! HERMES_TEST_BROKERS, default 127.0.0.1:9092) and the ONNX Runtime library
//! (`deploy/ort/install.sh`); both scripts are run here when missing.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::sshd::process_alive;
use support::{worker_binary, Lab};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn brokers() -> String {
    std::env::var("HERMES_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn broker_reachable(brokers: &str) -> bool {
    brokers.split(',').any(|b| {
        b.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

/// Makes sure the broker answers, starting it with deploy/kafka/start.sh if needed.
fn ensure_broker() -> String {
    let brokers = brokers();
    if !broker_reachable(&brokers) {
        let status = Command::new("bash")
            .arg(workspace().join("deploy/kafka/start.sh"))
            .current_dir(workspace())
            .status()
            .expect("run deploy/kafka/start.sh");
        assert!(status.success(), "deploy/kafka/start.sh failed");
        assert!(
            broker_reachable(&brokers),
            "no Kafka broker at {brokers} even after deploy/kafka/start.sh"
        );
    }
    brokers
}

/// The ONNX Runtime library, installed with deploy/ort/install.sh if missing.
fn ort_library() -> PathBuf {
    let lib = workspace().join("deploy/ort/lib/libonnxruntime.so");
    if !lib.exists() {
        let status = Command::new("bash")
            .arg(workspace().join("deploy/ort/install.sh"))
            .current_dir(workspace())
            .status()
            .expect("run deploy/ort/install.sh");
        assert!(status.success(), "deploy/ort/install.sh failed");
    }
    assert!(lib.exists(), "{} missing", lib.display());
    lib
}

/// Starts the real master with `conf`, streaming its output lines.
fn start_master(conf: &Path, dir: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_master"))
        .current_dir(dir)
        .arg("--conf")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start master");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("[master] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    (child, rx)
}

/// Kills the master on drop if the test ends early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn deployed_workers_register_with_a_master_over_kafka() {
    let brokers = ensure_broker();
    let ort = ort_library();
    let worker = worker_binary();
    let lab = Lab::new(2);
    lab.trust(&[0, 1]);
    let run_id = format!(
        "deploy-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );

    // The real base worker config; each host gets the test's run id.
    std::fs::copy(
        workspace().join("conf/worker.json"),
        lab.path("worker.json"),
    )
    .expect("copy conf/worker.json");
    let hosts: Vec<Value> = (0..2)
        .map(|i| {
            let mut entry = lab.host_entry(i);
            entry["overrides"] = serde_json::json!({"run_id": run_id});
            entry
        })
        .collect();
    let cluster = lab.write_cluster_with(hosts, worker.clone(), ort.clone());
    let mut inventory: Value = serde_json::from_slice(&std::fs::read(&cluster).unwrap()).unwrap();
    inventory["brokers"] = brokers.clone().into();
    std::fs::write(&cluster, serde_json::to_vec_pretty(&inventory).unwrap()).unwrap();

    let up = lab.deploy(&cluster, &["up"]);
    assert_eq!(up.code, 0, "deploy up failed");
    for (i, server) in lab.servers.iter().enumerate() {
        let row = up.row(&format!("host{i}"));
        assert!(row.contains("started (pid"), "{row}");
        assert!(
            row.contains("uploaded worker, onnxruntime, config, run key"),
            "{row}"
        );
        assert_eq!(
            std::fs::read(server.remote_dir.join("lib/libonnxruntime.so")).unwrap(),
            std::fs::read(&ort).unwrap()
        );
        let config: Value =
            serde_json::from_slice(&std::fs::read(server.remote_dir.join("worker.json")).unwrap())
                .unwrap();
        assert_eq!(config["worker_id"], format!("w{i}"));
        assert_eq!(config["run_id"], run_id.as_str());
        assert_eq!(config["kafka"]["brokers"], brokers.as_str());
    }
    let pids: Vec<i32> = lab
        .servers
        .iter()
        .map(|s| s.worker_pid().unwrap())
        .collect();

    let status = lab.deploy(&cluster, &["status"]);
    assert_eq!(status.code, 0);
    for (i, pid) in pids.iter().enumerate() {
        assert!(
            status
                .row(&format!("host{i}"))
                .contains(&format!("running (pid {pid})")),
            "{}",
            status.stdout
        );
    }

    // A real master for the same run id waits for both workers.
    let mut master_conf: Value =
        serde_json::from_slice(&std::fs::read(workspace().join("conf/master.json")).unwrap())
            .unwrap();
    master_conf["run_id"] = run_id.clone().into();
    master_conf["min_workers"] = 2.into();
    master_conf["kafka"]["brokers"] = brokers.clone().into();
    if master_conf.get("data_dir").is_some() {
        master_conf["data_dir"] = lab.path("master-data").display().to_string().into();
        // The dataset and the artifacts stay where setup put them.
        master_conf["dataset"]["source"]["path"] = workspace()
            .join("data/mnist/mnist_5k.csv.gz")
            .display()
            .to_string()
            .into();
        master_conf["model"]["artifacts"] = workspace()
            .join("examples/artifacts/mlp")
            .display()
            .to_string()
            .into();
    }
    let master_conf_path = lab.path("master.json");
    std::fs::write(
        &master_conf_path,
        serde_json::to_vec_pretty(&master_conf).unwrap(),
    )
    .unwrap();
    let (child, lines) = start_master(&master_conf_path, lab.dir.path());
    let master = KillOnDrop(child);
    let mut registered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while registered.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            for id in ["w0", "w1"] {
                if line.contains(&format!("worker registered: {id}")) && !registered.contains(&id) {
                    registered.push(id);
                }
            }
        }
    }
    registered.sort();
    let log0 =
        std::fs::read_to_string(lab.servers[0].remote_dir.join("worker.log")).unwrap_or_default();
    assert_eq!(
        registered,
        vec!["w0", "w1"],
        "not every deployed worker registered; host0 worker.log:\n{log0}"
    );

    // The master would now train with them and end the run; this test is
    // about deployment, so it leaves (the training loop has its own tests).
    drop(master);

    // stop: whatever the master told them, no worker is left running.
    let stop = lab.deploy(&cluster, &["stop"]);
    assert_eq!(stop.code, 0);
    for (i, pid) in pids.iter().enumerate() {
        let row = stop.row(&format!("host{i}"));
        assert!(
            row.contains(&format!("stopped (pid {pid}")) || row.contains("was not running"),
            "{row}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!process_alive(*pid), "worker {pid} still alive after stop");
    }
    let status = lab.deploy(&cluster, &["status"]);
    assert!(
        status.row("host0").contains("not running"),
        "{}",
        status.stdout
    );
    assert!(
        status.row("host1").contains("not running"),
        "{}",
        status.stdout
    );

    // Again, with no master: nothing to upload, the workers start and keep
    // trying to register; `stop` then really has to stop them.
    let again = lab.deploy(&cluster, &["up"]);
    assert_eq!(again.code, 0);
    let mut pids = Vec::new();
    for (i, server) in lab.servers.iter().enumerate() {
        let row = again.row(&format!("host{i}"));
        assert!(
            row.contains("nothing uploaded (4 files unchanged)"),
            "{row}"
        );
        assert!(row.contains("started (pid"), "{row}");
        pids.push(server.worker_pid().unwrap());
    }
    std::thread::sleep(Duration::from_secs(2));
    let stop = lab.deploy(&cluster, &["stop"]);
    assert_eq!(stop.code, 0);
    for (i, pid) in pids.iter().enumerate() {
        let row = stop.row(&format!("host{i}"));
        assert!(row.contains(&format!("(pid {pid}")), "{row}");
        assert!(!process_alive(*pid), "worker {pid} still alive after stop");
    }
}
