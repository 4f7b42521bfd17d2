//! `master bench` end to end on the `ci` profile (real namespaces, tc,
//! cgroups, broker, workers, master), and `down` after the bench was killed
//! mid-run leaves nothing behind: no process, namespace, link, cgroup,
//! broker or state file.
//!
//! Needs root, the broker jars, ONNX Runtime, the dataset and the artifacts
//! (`deploy/setup.sh`); skipped without root unless
//! `HERMES_TESTBED_TESTS=required`.

mod testbed_support;

use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbed_support::{repo, root_or_skip};

/// The shipped `ci` profile with its own name, subnet and ports, in `dir`.
fn ci_profile(dir: &Path, name: &str, third_octet: u8, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("conf/testbed/ci.json")).unwrap();
    let mut p: serde_json::Value = serde_json::from_str(&text).unwrap();
    p["name"] = name.into();
    p["subnet"] = format!("198.18.{third_octet}.0/24").into();
    p["broker"]["port"] = port.into();
    p["broker"]["controller_port"] = (port + 1).into();
    let path = dir.join("profile.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    path
}

fn master() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_master"));
    c.current_dir(repo());
    c
}

fn down(name: &str, state_dir: &Path) -> std::process::Output {
    master()
        .args(["testbed", "down", "--name", name, "--state-dir"])
        .arg(state_dir)
        .output()
        .unwrap()
}

fn assert_nothing_left(name: &str, state_dir: &Path, pids: &[u32]) {
    testbed_support::assert_testbed_gone(name, state_dir);
    for pid in pids {
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "process {pid} still runs");
    }
    // The broker is checked by its pid, never by connecting: with the bridge
    // gone its address would route off the machine.
    let pid_file = repo()
        .join(".cache/kafka-testbed")
        .join(name)
        .join("broker.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let pid = pid.trim();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the testbed broker (pid {pid}) still runs"
        );
    }
}

#[test]
fn ci_profile_bench_writes_json_and_png() {
    if !root_or_skip() {
        return;
    }
    let name = format!("cb{}", std::process::id() % 10000);
    let dir = tempfile::tempdir().unwrap();
    let profile = ci_profile(dir.path(), &name, 211, 19710);
    let out_dir = dir.path().join("bench");
    let state_dir = dir.path().join("state");
    let out = master()
        .args(["bench", "--profile"])
        .arg(&profile)
        .arg("--out")
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(&state_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bench failed");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("policies.json")).unwrap())
            .unwrap();
    let png = std::fs::read(out_dir.join("policies.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "one run per policy");
    for run in runs {
        let policy = run["policy"].as_str().unwrap();
        assert!(
            run["reached_target"].as_bool().unwrap(),
            "{policy} did not reach the target"
        );
        // Both nodes' links carried traffic, as measured by tc.
        for node in ["worker-1", "worker-2"] {
            let link = &run["links"][node];
            assert!(
                link["down"].as_u64().unwrap() > 100_000,
                "{policy} {node}: {link}"
            );
            assert!(
                link["up"].as_u64().unwrap() > 1_000,
                "{policy} {node}: {link}"
            );
        }
        for (id, w) in run["workers"].as_object().unwrap() {
            let e = w["emulated"].as_str().unwrap();
            assert!(
                e.contains(&format!("testbed {name}")) && e.contains("cgroup"),
                "{id}: {e}"
            );
        }
        let dir = PathBuf::from(run["run_dir"].as_str().unwrap());
        // The bench's master log and the master's outputs share the run folder.
        assert!(dir.join("summary.json").exists());
        assert!(dir.join("master.log").exists(), "{}", dir.display());
    }
    let policies: Vec<&str> = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["hermes", "bsp"]);
    assert_eq!(report["policies"][1]["speedup"].as_f64(), Some(1.0));
    assert!(stdout.contains("speedup"), "{stdout}");
    assert_nothing_left(&name, &state_dir, &[]);
}

#[test]
fn down_after_a_killed_bench_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    let name = format!("ck{}", std::process::id() % 10000);
    let dir = tempfile::tempdir().unwrap();
    let profile = ci_profile(dir.path(), &name, 212, 19720);
    let state_dir = dir.path().join("state");
    let mut bench = master()
        .args(["bench", "--profile"])
        .arg(&profile)
        .arg("--out")
        .arg(dir.path().join("bench"))
        .arg("--state-dir")
        .arg(&state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until both workers run in their namespaces and the master on the
    // host (3 processes in the state file), then SIGKILL the bench.
    let state_file = state_dir.join(format!("{name}.json"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let pids: Vec<u32> = loop {
        let pids: Vec<u32> = std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|s| {
                s["processes"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["pid"].as_u64())
                            .map(|p| p as u32)
                            .collect()
                    })
                    .filter(|ps: &Vec<u32>| ps.len() == 3)
            })
            .unwrap_or_default();
        if pids.len() == 3 {
            break pids;
        }
        assert!(
            Instant::now() < deadline,
            "the bench never started its workers"
        );
        assert!(bench.try_wait().unwrap().is_none(), "the bench ended early");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(1500));
    bench.kill().unwrap();
    let _ = bench.wait();
    let out = down(&name, &state_dir);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(&name, &state_dir, &pids);
}
