//! The EdgeTB "hybrid run": two emulated workers inside `master testbed`
//! nodes (namespaces, shaped links, cgroup caps) and one real device deployed
//! over SSH (`master deploy up` to a real sshd on loopback) join one run of
//! the real master on the host, through the testbed's one Kafka broker: the
//! nodes and the master use its bridge listener, the device its external
//! listener on 127.0.0.1.
//!
//! The run uses BSP, so every version waits for all three workers and each
//! of them provably trains; the default optimizer reaches the low target in a
//! few versions. Afterwards: summary.json names the two emulated nodes with
//! their testbed and link rate and the device as a real one, the centralized
//! log has lines from all three, and `deploy stop` plus `testbed down` leave
//! nothing behind.
//!
//! Needs root; skipped otherwise unless `HERMES_TESTBED_TESTS=required`
//! (then it fails). Also needs what setup provides: the Kafka jars (fetched
//! by deploy/kafka/start.sh), data/mnist/mnist_5k.csv.gz, the MLP artifacts
//! and the ONNX Runtime library.

mod testbed_support;

mod support;

use std::path::PathBuf;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testbed_support::{repo, root_or_skip};

use serde_json::{json, Value};
use support::sshd::{free_port, process_alive};
use support::{require_setup, worker_binary, Lab};

/// Three distinct free loopback ports.
fn free_ports() -> (u16, u16, u16) {
    loop {
        let (a, b, c) = (free_port(), free_port(), free_port());
        if a != b && b != c && a != c {
            return (a, b, c);
        }
    }
}

/// The testbed, brought down (and its per-name folders under the repository
/// removed) when dropped.
struct Bed {
    name: String,
    profile: PathBuf,
    state_dir: PathBuf,
}

impl Bed {
    fn master(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_master"));
        c.current_dir(repo())
            .env("NO_COLOR", "1")
            .arg("testbed")
            .args(args)
            .arg("--conf")
            .arg(&self.profile)
            .arg("--state-dir")
            .arg(&self.state_dir);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.master(args).output().expect("run master testbed");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "$ master testbed {}\n{stdout}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "master testbed {args:?} failed");
        stdout
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir.join(format!("{}.json", self.name))
    }

    /// Asserts nothing of this testbed is left: namespaces, links, cgroups,
    /// the state file, the broker.
    fn assert_gone(&self, broker_port: u16) {
        let state_dir = self.state_file().parent().unwrap().to_path_buf();
        testbed_support::assert_testbed_gone(&self.name, &state_dir);
        assert!(
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], broker_port)),
                Duration::from_millis(500)
            )
            .is_err(),
            "the broker's external listener still answers"
        );
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let down = self.master(&["down"]).output();
        // The broker's storage and the nodes' configs and logs are per
        // testbed name; this test's name is used once.
        if down.is_ok_and(|o| o.status.success()) {
            let _ = std::fs::remove_dir_all(repo().join(".cache/kafka-testbed").join(&self.name));
            let _ = std::fs::remove_dir_all(repo().join("data/testbed").join(&self.name));
        }
    }
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
fn emulated_nodes_and_a_real_device_train_in_one_run() {
    if !root_or_skip() {
        return;
    }
    let started = Instant::now();
    require_setup();
    let worker = worker_binary();
    let ort = repo().join("deploy/ort/lib/libonnxruntime.so");
    let lab = Lab::new(1);
    lab.trust(&[0]);
    let phase = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    phase("worker built, sshd up");

    let name = format!("hy{}", std::process::id() % 10000);
    let run_id = format!(
        "hybrid-{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let gateway = "198.18.210.1";
    let (port, controller_port, external_port) = free_ports();
    let external = format!("127.0.0.1:{external_port}");
    let bootstrap = format!("{gateway}:{port}");

    // 1. The testbed: two shaped, capped nodes, the broker with an external
    //    listener for the device, a worker started in each node.
    let profile = lab.path("testbed.json");
    std::fs::write(
        &profile,
        serde_json::to_vec_pretty(&json!({
            "name": name,
            "subnet": "198.18.210.0/24",
            "broker": {
                "start": true,
                "port": port,
                "controller_port": controller_port,
                "external": {"bind": external, "advertised": external},
            },
            "workers": {
                "start": true,
                "config": "conf/worker.json",
                "binary": worker,
                "run_id": run_id,
                "overrides": {"logging": {"level": "info"}},
            },
            "nodes": [
                {"name": "edge-fast", "uplink": "20mbit", "downlink": "20mbit", "cpu": 1.0},
                {"name": "edge-slow", "uplink": "5mbit", "downlink": "5mbit", "cpu": 0.5},
            ],
        }))
        .unwrap(),
    )
    .unwrap();
    let bed = Bed {
        name: name.clone(),
        profile,
        state_dir: lab.path("testbed-state"),
    };
    let up = bed.run(&["up"]);
    assert!(
        up.contains(&format!("broker: {bootstrap}, devices: {external}")),
        "{up}"
    );
    for node in ["edge-fast", "edge-slow"] {
        assert!(up.contains(&format!("worker {node}")), "{up}");
    }

    phase("testbed up");

    // 2. The real device: the real worker over SSH, told the external listener.
    std::fs::copy(repo().join("conf/worker.json"), lab.path("worker.json"))
        .expect("copy conf/worker.json");
    let mut host = lab.host_entry(0);
    host["worker_id"] = "device-1".into();
    host["overrides"] = json!({"run_id": run_id});
    let cluster = lab.write_cluster_with(vec![host], worker.clone(), ort);
    let mut inventory: Value = serde_json::from_slice(&std::fs::read(&cluster).unwrap()).unwrap();
    inventory["brokers"] = external.clone().into();
    // The master runs in the repository (its run key is data/hermes.key
    // there, made when the testbed started its workers); deploy runs in the
    // lab's folder, so it is told which key to ship.
    inventory["key_file"] = repo()
        .join(common::runkey::DEFAULT_KEY_FILE)
        .display()
        .to_string()
        .into();
    std::fs::write(&cluster, serde_json::to_vec_pretty(&inventory).unwrap()).unwrap();
    let deployed = lab.deploy(&cluster, &["up"]);
    assert_eq!(deployed.code, 0, "deploy up failed");
    assert!(
        deployed.row("host0").contains("started (pid"),
        "{}",
        deployed.stdout
    );
    let remote = &lab.servers[0].remote_dir;
    let device_conf: Value =
        serde_json::from_slice(&std::fs::read(remote.join("worker.json")).unwrap()).unwrap();
    assert_eq!(device_conf["worker_id"], "device-1");
    assert_eq!(device_conf["run_id"], run_id.as_str());
    assert_eq!(device_conf["kafka"]["brokers"], external.as_str());
    let device_pid = lab.servers[0].worker_pid().expect("device worker pid");
    phase("device deployed");

    // 3. The real master on the host, on the bridge listener, waiting for all three.
    let data_dir = lab.path("master-data");
    let mut conf: Value =
        serde_json::from_slice(&std::fs::read(repo().join("conf/master.json")).unwrap()).unwrap();
    conf["run_id"] = run_id.clone().into();
    conf["min_workers"] = 3.into();
    conf["registration_timeout_secs"] = 60.into();
    conf["kafka"]["brokers"] = bootstrap.clone().into();
    conf["data_dir"] = data_dir.display().to_string().into();
    conf["dataset"]["source"]["path"] = repo()
        .join("data/mnist/mnist_5k.csv.gz")
        .display()
        .to_string()
        .into();
    conf["model"]["artifacts"] = repo()
        .join("examples/artifacts/mlp")
        .display()
        .to_string()
        .into();
    conf["policy"]["name"] = "bsp".into();
    conf["stop"]["target_accuracy"] = 0.8.into();
    conf["stop"]["max_wall_secs"] = 120.into();
    let conf_path = lab.path("master.json");
    std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    let log_path = lab.path("master.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let run_started = Instant::now();
    let mut master = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_master"))
            .current_dir(repo())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .arg("--conf")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start master"),
    );
    let deadline = Instant::now() + Duration::from_secs(200);
    let status = loop {
        if let Some(s) = master.0.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let master_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let node_logs = || {
        ["edge-fast", "edge-slow"]
            .iter()
            .map(|n| {
                let p = repo()
                    .join("data/testbed")
                    .join(&name)
                    .join("nodes")
                    .join(n)
                    .join("worker.log");
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
            + &format!(
                "\n--- device-1:\n{}",
                std::fs::read_to_string(remote.join("worker.log")).unwrap_or_default()
            )
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "master did not exit 0 ({status:?}):\n{master_log}\n{}",
        node_logs()
    );
    let run_secs = run_started.elapsed().as_secs_f64();
    phase("master finished");

    // 4. What the run recorded.
    let summary_path = data_dir.join("runs").join(&run_id).join("summary.json");
    let summary: Value = serde_json::from_slice(
        &std::fs::read(&summary_path).unwrap_or_else(|e| panic!("{}: {e}", summary_path.display())),
    )
    .unwrap();
    assert_eq!(
        summary["stop_reason"], "target accuracy reached",
        "{summary:#}"
    );
    let accuracy = summary["final_test_accuracy"].as_f64().unwrap_or(0.0);
    assert!(accuracy >= 0.8, "final accuracy {accuracy}");
    let workers = summary["workers"].as_object().expect("workers");
    let mut ids: Vec<&str> = workers.keys().map(String::as_str).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["device-1", "edge-fast", "edge-slow"], "{summary:#}");
    for (id, rate) in [("edge-fast", "20mbit"), ("edge-slow", "5mbit")] {
        let emulation = workers[id]["emulation"].as_str().unwrap_or_default();
        assert!(
            emulation.contains(&format!("testbed {name}"))
                && emulation.contains(&format!("uplink {rate} / downlink {rate}")),
            "{id}: {emulation}"
        );
    }
    let device = workers["device-1"]["emulation"]
        .as_str()
        .unwrap_or_default();
    assert!(device.contains("real device"), "device-1: {device}");
    for (id, w) in workers {
        assert!(w["rounds"].as_u64().unwrap_or(0) >= 1, "{id}: {w}");
        assert!(
            w["updates_accepted"].as_u64().unwrap_or(0) >= 1,
            "{id}: {w}"
        );
    }

    let central = std::fs::read_to_string(data_dir.join("centralized-logs/distml-central.txt"))
        .unwrap_or_default();
    for id in ["edge-fast", "edge-slow", "device-1", "master"] {
        assert!(
            central.contains(&format!(" - {id}] ")),
            "no line from {id} in the centralized log:\n{central}"
        );
    }

    // 5. Teardown: the device's worker, then the testbed; nothing is left.
    let stop = lab.deploy(&cluster, &["stop"]);
    assert_eq!(stop.code, 0, "deploy stop failed");
    let row = stop.row("host0");
    assert!(
        row.contains(&format!("stopped (pid {device_pid}")) || row.contains("was not running"),
        "{row}"
    );
    let gone = Instant::now() + Duration::from_secs(5);
    while process_alive(device_pid) && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!process_alive(device_pid), "device worker still alive");
    phase("device stopped");
    let down = bed.run(&["down"]);
    assert!(down.contains("2 namespace(s)"), "{down}");
    bed.assert_gone(external_port);
    phase("testbed down");

    println!(
        "hybrid run {run_id}: target reached, final accuracy {accuracy:.4} at version {} \
         after {run_secs:.1} s of master run; rounds: device-1 {}, edge-fast {}, edge-slow {}; \
         whole test {:.1} s",
        summary["versions"],
        workers["device-1"]["rounds"],
        workers["edge-fast"]["rounds"],
        workers["edge-slow"]["rounds"],
        started.elapsed().as_secs_f64()
    );
}
