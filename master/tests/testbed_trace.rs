//! Trace replay on a real testbed link: `up` starts the replay, every applied
//! rate lands in the CSV on schedule, and iperf3's measured throughput
//! follows the trace.
//!
//! Needs root; skipped otherwise unless `HERMES_TESTBED_TESTS=required`.

mod testbed_support;

use std::path::{Path, PathBuf};

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testbed_support::{repo, root_or_skip};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// (planned s, applied s, unix time, link, Mbit/s) rows of the CSV.
fn applied(csv: &Path) -> Vec<(f64, f64, f64, String, f64)> {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            Some((
                c.first()?.parse().ok()?,
                c.get(1)?.parse().ok()?,
                c.get(2)?.parse().ok()?,
                c.get(3)?.to_string(),
                c.get(4)?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn links_follow_the_trace_on_schedule() {
    if !root_or_skip() {
        return;
    }
    let name = format!("tt{}", std::process::id() % 10000);
    let dir = tempfile::tempdir().unwrap();
    // 3 s steps: 8, 2, 12, 4 Mbit/s, then wrap around.
    let trace = dir.path().join("steps.txt");
    std::fs::write(&trace, "# test steps\n0 8\n3 2\n6 12\n9 4\n").unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        serde_json::to_vec(&serde_json::json!({
            "name": name, "subnet": "198.18.204.0/24", "broker": {"start": false},
            "nodes": [{"name": "mobile", "uplink": "8mbit", "downlink": "8mbit",
                        "trace": {"file": trace, "scale": 1.0, "wrap": true}}]
        }))
        .unwrap(),
    )
    .unwrap();
    let state_dir = dir.path().join("state");
    let master = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_master"));
        c.current_dir(repo())
            .arg("testbed")
            .args(args)
            .arg("--conf")
            .arg(&profile)
            .arg("--state-dir")
            .arg(&state_dir);
        c
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Command);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down"]).output();
        }
    }
    let _down = Down(&master);
    let out = master(&["up"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state_dir.join(format!("{name}.json"))).unwrap(),
    )
    .unwrap();
    let ns = state["nodes"][0]["netns"].as_str().unwrap().to_string();
    let csv = PathBuf::from(state["work_dir"].as_str().unwrap()).join("applied_rates.csv");

    // Downlink throughput over 12 s, in half-second intervals.
    let gw = "198.18.204.1";
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", gw, "-p", "15204"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3");
    std::thread::sleep(Duration::from_millis(300));
    let client_start = now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "iperf3",
            "-c",
            gw,
            "-p",
            "15204",
            "-t",
            "12",
            "-i",
            "0.5",
            "-R",
            "-J",
            "--connect-timeout",
            "5000",
        ])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let rows = applied(&csv);
    let down: Vec<_> = rows.iter().filter(|r| r.3 == "mobile:down").collect();
    assert!(down.len() >= 5, "applied rows: {rows:?}");
    let expect = [8.0, 2.0, 12.0, 4.0];
    for (k, r) in down.iter().enumerate() {
        let late = r.1 - r.0;
        eprintln!(
            "applied {} → {} Mbit/s at {:.3} s (planned {:.3} s)",
            r.3, r.4, r.1, r.0
        );
        assert!((0.0..=0.5).contains(&late), "row {k} applied {late} s late");
        assert!(
            (r.0 - 3.0 * k as f64).abs() < 1e-9,
            "row {k} planned at {}",
            r.0
        );
        assert_eq!(r.4, expect[k % 4], "row {k}");
    }
    // The replay's clock: unix time of its t = 0.
    let t0 = down[0].2 - down[0].1;
    // Per trace segment, the mean throughput of the half-second intervals
    // that lie wholly inside it, leaving 0.9 s after each change for TCP
    // and the queue to settle.
    let mut segments: std::collections::BTreeMap<i64, (f64, f64)> = Default::default();
    for iv in report["intervals"].as_array().unwrap() {
        let start = client_start + iv["sum"]["start"].as_f64().unwrap();
        let end = client_start + iv["sum"]["end"].as_f64().unwrap();
        let bits = iv["sum"]["bytes"].as_f64().unwrap() * 8.0;
        let (a, b) = (start - t0, end - t0);
        let seg = (a / 3.0).floor();
        if a - seg * 3.0 < 0.9 || b > (seg + 1.0) * 3.0 + 0.05 {
            continue;
        }
        let e = segments.entry(seg as i64).or_default();
        e.0 += bits;
        e.1 += b - a;
    }
    let mut checked = 0;
    for (seg, (bits, secs)) in &segments {
        if *secs < 1.4 {
            continue;
        }
        let got = bits / secs / 1e6;
        let want = expect[(*seg as usize) % 4];
        eprintln!(
            "trace segment {seg} ({}..{} s): {got:.2} Mbit/s over {secs:.1} s (trace {want})",
            seg * 3,
            seg * 3 + 3
        );
        assert!(
            (got / want - 1.0).abs() <= 0.15,
            "segment {seg}: measured {got:.2} Mbit/s, trace says {want}"
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} segments checked: {segments:?}"
    );
    let out = master(&["down"]).output().unwrap();
    assert!(out.status.success());
    assert!(!state_dir.join(format!("{name}.json")).exists());
}
