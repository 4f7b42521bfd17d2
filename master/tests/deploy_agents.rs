//! Devices that serve many runs: `master deploy up` once puts long-lived
//! agents (`worker --agent`, a release build made on demand, sent gzip) on
//! two sshd "hosts"; then three runs with different run ids (one with
//! another policy) complete in a row with the same agents — the run ids come
//! from the masters, no host has overrides, nothing is uploaded again. The
//! agents survive a broker restart between runs, and an agent killed on one
//! host is restarted by `deploy up` without touching the other.
//!
//! Real sshd, SFTP, broker (the test's own, so it can be restarted), ONNX
//! Runtime, mnist_5k.

mod cluster;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster::{OwnBroker, Proc};
use serde_json::{json, Value};
use support::sshd::process_alive;
use support::Lab;

fn workspace() -> PathBuf {
    cluster::workspace()
}

/// A master config for `run_id` with `policy`, on `brokers`, data in `dir`.
fn master_conf(dir: &Path, run_id: &str, policy: &str, brokers: &str) -> PathBuf {
    let root = workspace();
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(root.join("conf/master.json")).unwrap()).unwrap();
    m["run_id"] = run_id.into();
    m["kafka"]["brokers"] = brokers.into();
    m["min_workers"] = 2.into();
    m["registration_timeout_secs"] = 120.into();
    m["policy"]["name"] = policy.into();
    m["data_dir"] = dir.join("master-data").display().to_string().into();
    m["dataset"]["source"]["path"] = root
        .join("data/mnist/mnist_5k.csv.gz")
        .display()
        .to_string()
        .into();
    m["model"]["artifacts"] = root
        .join("examples/artifacts/mlp")
        .display()
        .to_string()
        .into();
    m["stop"]["target_accuracy"] = 0.85.into();
    m["stop"]["max_wall_secs"] = 180.into();
    // What every joining agent changes for this run (from the master, not
    // from any host's file).
    m["agents"]["overrides"] = json!({"heartbeat_secs": 1});
    let path = dir.join(format!("master-{run_id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    path
}

/// Runs one master to its end; returns its summary.
fn run_master(lab: &Lab, run_id: &str, policy: &str, brokers: &str) -> Value {
    let conf = master_conf(lab.dir.path(), run_id, policy, brokers);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_master"));
    // The lab folder holds data/hermes.key, the key deploy shipped.
    cmd.arg("--conf").arg(&conf).current_dir(lab.dir.path());
    let mut master = Proc::spawn(&format!("master-{run_id}"), cmd);
    let code = master.wait_exit(Duration::from_secs(200));
    let out = master.output();
    assert_eq!(code, Some(0), "run {run_id} did not end well:\n{out}");
    for id in ["w0", "w1"] {
        assert!(
            out.contains(&format!("worker registered: {id}")),
            "{id} did not join run {run_id}:\n{out}"
        );
    }
    let summary_path = lab
        .path("master-data/runs")
        .join(run_id)
        .join("summary.json");
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["run_id"], run_id);
    assert_eq!(summary["policy"], policy, "{summary:#}");
    for id in ["w0", "w1"] {
        let rounds = summary["workers"][id]["rounds"].as_u64().unwrap_or(0);
        assert!(rounds > 0, "{id} trained no round in {run_id}: {summary:#}");
    }
    summary
}

fn agent_log(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(lab.servers[i].remote_dir.join("worker.log")).unwrap_or_default()
}

#[test]
fn one_deploy_serves_three_runs_across_a_broker_restart_and_an_agent_kill() {
    cluster::require_setup();
    let dir = tempfile::tempdir().unwrap();
    let broker = OwnBroker::new(dir.path().join("kafka"), 19792);
    broker.script("start.sh");
    let brokers = broker.bootstrap();

    let lab = Lab::new(2);
    lab.trust(&[0, 1]);
    // The real base worker config (no run id: the masters name the runs).
    std::fs::copy(
        workspace().join("conf/worker.json"),
        lab.path("worker.json"),
    )
    .unwrap();
    // No `binary`: deploy builds the release worker; no per-host overrides.
    let hosts: Vec<Value> = (0..2)
        .map(|i| {
            let mut entry = lab.host_entry(i);
            entry["overrides"] = json!({});
            entry
        })
        .collect();
    let cluster_path = lab.path("cluster.json");
    std::fs::write(
        &cluster_path,
        serde_json::to_vec_pretty(&json!({
            "brokers": brokers,
            "ort_lib": workspace().join("deploy/ort/lib/libonnxruntime.so"),
            "overrides": {"master_timeout_secs": 60},
            "hosts": hosts,
        }))
        .unwrap(),
    )
    .unwrap();

    let up = lab.deploy(&cluster_path, &["up"]);
    assert_eq!(up.code, 0, "deploy up failed:\n{}{}", up.stdout, up.stderr);
    for i in 0..2 {
        let row = up.row(&format!("host{i}"));
        assert!(row.contains("started (pid"), "{row}");
        assert!(
            row.contains("uploaded worker, onnxruntime, config, run key"),
            "{row}"
        );
        assert!(row.contains("sent gzip"), "{row}");
        assert!(row.contains("release build (cargo"), "{row}");
        assert!(row.contains("agent"), "{row}");
        let config: Value = serde_json::from_slice(
            &std::fs::read(lab.servers[i].remote_dir.join("worker.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            config["run_id"],
            Value::Null,
            "the run id must not be pinned"
        );
        assert_eq!(config["master_timeout_secs"], 60);
    }
    let pids: Vec<i32> = lab
        .servers
        .iter()
        .map(|s| s.worker_pid().unwrap())
        .collect();

    // Run 1 (hermes).
    run_master(&lab, "agents-r1", "hermes", &brokers);

    // The broker goes away and comes back between runs.
    broker.script("stop.sh");
    std::thread::sleep(Duration::from_secs(3));
    broker.script("start.sh");

    // Run 2, another policy, same agents.
    run_master(&lab, "agents-r2", "bsp", &brokers);
    for (i, pid) in pids.iter().enumerate() {
        assert!(
            process_alive(*pid),
            "agent {i} exited:\n{}",
            agent_log(&lab, i)
        );
        let log = agent_log(&lab, i);
        for run in ["agents-r1", "agents-r2"] {
            assert!(
                log.contains(&format!("joining run `{run}`")),
                "agent {i} did not join {run}:\n{log}"
            );
        }
        assert!(
            !log.contains('\u{1b}'),
            "colour codes in worker.log:\n{log}"
        );
    }

    // status: both idle, running, the same processes.
    let status = lab.deploy(&cluster_path, &["status"]);
    assert_eq!(status.code, 0);
    for (i, pid) in pids.iter().enumerate() {
        let row = status.row(&format!("host{i}"));
        assert!(row.contains(&format!("running (pid {pid})")), "{row}");
        assert!(row.contains("idle"), "{row}");
    }

    // An agent killed on host1: `up` restarts only that one, uploading nothing.
    let killed = pids[1];
    let status = Command::new("kill")
        .args(["-9", &killed.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while process_alive(killed) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let again = lab.deploy(&cluster_path, &["up"]);
    assert_eq!(again.code, 0);
    let row0 = again.row("host0");
    assert!(
        row0.contains(&format!("already running (pid {})", pids[0])),
        "{row0}"
    );
    let row1 = again.row("host1");
    assert!(row1.contains("started (pid"), "{row1}");
    for row in [&row0, &row1] {
        assert!(
            row.contains("nothing uploaded (4 files unchanged)"),
            "{row}"
        );
    }
    let restarted = lab.servers[1].worker_pid().unwrap();
    assert_ne!(restarted, killed);

    // Run 3 with the restarted agent.
    run_master(&lab, "agents-r3", "hermes", &brokers);
    assert!(process_alive(pids[0]) && process_alive(restarted));

    let stop = lab.deploy(&cluster_path, &["stop"]);
    assert_eq!(stop.code, 0);
    for pid in [pids[0], restarted] {
        assert!(!process_alive(pid), "agent {pid} still alive after stop");
    }
}
