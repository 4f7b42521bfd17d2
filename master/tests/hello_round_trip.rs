//! The real binaries over the real broker: a master and two workers register
//! and exit cleanly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn brokers() -> String {
    if let Ok(b) = std::env::var("HERMES_TEST_BROKERS") {
        return b;
    }
    let ok = Command::new("bash")
        .arg(root().join("deploy/kafka/start.sh"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "deploy/kafka/start.sh failed");
    "127.0.0.1:9092".into()
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}

#[test]
fn master_and_two_workers_register_and_exit() {
    let brokers = brokers();
    let run = format!("hello-{}", std::process::id());
    let master_bin = PathBuf::from(env!("CARGO_BIN_EXE_master"));
    let worker_bin = master_bin.with_file_name("worker");
    assert!(
        worker_bin.exists(),
        "build the worker first: cargo build --workspace"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let master_conf = dir.path().join("master.json");
    std::fs::write(
        &master_conf,
        format!(r#"{{"run_id": "{run}", "min_workers": 2, "registration_timeout_secs": 60, "kafka": {{"brokers": "{brokers}"}}}}"#),
    )
    .expect("write master config");
    let worker_conf = dir.path().join("worker.json");
    std::fs::write(
        &worker_conf,
        format!(r#"{{"run_id": "{run}", "kafka": {{"brokers": "{brokers}"}}}}"#),
    )
    .expect("write worker config");

    let mut master = Command::new(&master_bin)
        .args(["--conf".as_ref(), master_conf.as_os_str()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start master");
    let workers: Vec<_> = ["edge-a", "edge-b"]
        .iter()
        .map(|id| {
            Command::new(&worker_bin)
                .args(["--conf".as_ref(), worker_conf.as_os_str()])
                .env("HERMES_WORKER_ID", id)
                .stderr(Stdio::null())
                .spawn()
                .expect("start worker")
        })
        .collect();

    let status = wait_exit(&mut master, Duration::from_secs(90)).expect("master finishes");
    let mut log = String::new();
    if let Some(mut err) = master.stderr.take() {
        std::io::Read::read_to_string(&mut err, &mut log).expect("read master log");
    }
    assert!(status.success(), "master failed:\n{log}");
    assert!(log.contains("worker registered: edge-a"), "{log}");
    assert!(log.contains("worker registered: edge-b"), "{log}");
    for mut w in workers {
        let status = wait_exit(&mut w, Duration::from_secs(30)).expect("worker stops when told");
        assert!(status.success());
    }
}
