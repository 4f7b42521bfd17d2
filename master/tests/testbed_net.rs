//! `master testbed` against the real kernel: namespaces, veth, htb, live
//! `set`, and `down` leaving nothing behind (also after `up` is killed).
//! Throughput is measured with iperf3 between a namespace and the host.
//!
//! Needs root; skipped otherwise unless `HERMES_TESTBED_TESTS=required`
//! (CI sets it), then it fails.

mod testbed_support;

use std::path::PathBuf;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testbed_support::{repo, root_or_skip};

/// A testbed in a temp folder, brought down when dropped.
struct Bed {
    name: String,
    dir: tempfile::TempDir,
    profile: PathBuf,
}

impl Bed {
    fn new(name: &str, subnet: &str, nodes: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile.json");
        let p = serde_json::json!({
            "name": name, "subnet": subnet,
            "broker": {"start": false},
            "nodes": nodes,
        });
        std::fs::write(&profile, serde_json::to_vec(&p).unwrap()).unwrap();
        Self {
            name: name.into(),
            dir,
            profile,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn master(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_master"));
        c.current_dir(repo())
            .arg("testbed")
            .args(args)
            .arg("--conf")
            .arg(&self.profile)
            .arg("--state-dir")
            .arg(self.state_dir());
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.master(args).output().unwrap();
        assert!(
            out.status.success(),
            "master testbed {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn state(&self) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.state_dir().join(format!("{}.json", self.name))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn netns(&self, i: usize) -> String {
        self.state()["nodes"][i]["netns"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Asserts nothing of this testbed is left.
    fn assert_gone(&self) {
        testbed_support::assert_testbed_gone(&self.name, &self.state_dir());
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.master(&["down"]).output();
    }
}

/// iperf3 goodput in Mbit/s between namespace `ns` and the host at `gw`:
/// uplink (namespace sends) or downlink (`-R`, host sends).
fn iperf(ns: &str, gw: &str, port: u16, secs: u32, downlink: bool) -> serde_json::Value {
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", gw, "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (apt-get install iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec!["netns", "exec", ns, "iperf3", "-c", gw, "-p"];
    let p = port.to_string();
    let t = secs.to_string();
    // A lost SYN must fail the test in seconds, not after TCP's 2 minutes.
    args.extend([
        p.as_str(),
        "-t",
        &t,
        "-i",
        "0.5",
        "-J",
        "--connect-timeout",
        "5000",
    ]);
    if downlink {
        args.push("-R");
    }
    let out = Command::new("ip").args(&args).output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn goodput_mbit(report: &serde_json::Value) -> f64 {
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e6
}

#[test]
fn shaped_links_carry_their_rate_both_ways_and_change_live() {
    if !root_or_skip() {
        return;
    }
    let bed = Bed::new(
        &format!("tn{}", std::process::id() % 10000),
        "198.18.201.0/24",
        serde_json::json!([{"name": "node-a", "uplink": "1mbit", "downlink": "1mbit"}]),
    );
    let up = bed.run(&["up"]);
    assert!(up.contains("node-a"), "{up}");
    let ns = bed.netns(0);
    let gw = "198.18.201.1";
    for (i, mbit) in [1.0, 5.0, 20.0].into_iter().enumerate() {
        if i > 0 {
            let r = format!("{mbit}mbit");
            bed.run(&["set", "--node", "node-a", "--uplink", &r, "--downlink", &r]);
        }
        for downlink in [false, true] {
            let got = goodput_mbit(&iperf(&ns, gw, 15201, 4, downlink));
            let ratio = got / mbit;
            eprintln!(
                "{} at {mbit} mbit: goodput {got:.3} Mbit/s = {ratio:.3} of the rate",
                if downlink { "downlink" } else { "uplink" }
            );
            assert!((0.9..=1.1).contains(&ratio), "{mbit} mbit: {got} Mbit/s");
        }
    }
    let status = bed.run(&["status"]);
    assert!(status.contains("20mbit"), "{status}");
    assert!(status.contains("no netem"), "{status}");

    // A live change: 20 → 5 mbit two seconds into a transfer; from 2 s after
    // the change on, every half-second interval is within 10% of 5 mbit.
    let ns2 = ns.clone();
    let t = std::thread::spawn(move || iperf(&ns2, gw, 15202, 7, true));
    std::thread::sleep(Duration::from_millis(2300));
    let changed = Instant::now();
    bed.run(&["set", "--node", "node-a", "--downlink", "5mbit"]);
    let set_secs = changed.elapsed().as_secs_f64();
    let report = t.join().unwrap();
    let intervals = report["intervals"].as_array().unwrap();
    let mut checked = 0;
    for iv in intervals {
        let start = iv["sum"]["start"].as_f64().unwrap();
        let rate = iv["sum"]["bits_per_second"].as_f64().unwrap() / 1e6;
        eprintln!("t = {start:.1} s: {rate:.2} Mbit/s");
        // The change was issued ~2.3 s after the client started (+ iperf's start-up).
        if start >= 2.3 + set_secs + 2.0 + 0.5 {
            assert!(
                (4.5..=5.5).contains(&rate),
                "t = {start}: {rate} Mbit/s after set to 5 mbit"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} intervals after the change");
    bed.run(&["down"]);
    bed.assert_gone();
}

#[test]
fn down_removes_everything_after_up_was_killed() {
    if !root_or_skip() {
        return;
    }
    let nodes: Vec<_> = (0..24)
        .map(|i| serde_json::json!({"name": format!("n{i}"), "uplink": "5mbit", "downlink": "5mbit"}))
        .collect();
    let bed = Bed::new(
        &format!("tk{}", std::process::id() % 10000),
        "198.18.202.0/24",
        serde_json::Value::Array(nodes),
    );
    let mut up = bed
        .master(&["up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it mid-way: some namespaces made, others not.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = bed.state_dir().join(format!("{}.json", bed.name)).exists()
            && bed.state()["nodes"]
                .as_array()
                .is_some_and(|n| n.len() >= 5);
        if made || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    up.kill().unwrap(); // SIGKILL
    let _ = up.wait();
    let made = bed.state()["nodes"].as_array().map_or(0, |n| n.len());
    assert!((5..24).contains(&made), "killed after {made} of 24 nodes");
    let out = bed.run(&["down"]);
    eprintln!("{out}");
    bed.assert_gone();
    // down again: nothing to do, still fine.
    bed.run(&["down"]);
}

#[test]
fn up_refuses_netem_fields_and_bad_profiles_with_one_line() {
    if !root_or_skip() {
        return;
    }
    let bed = Bed::new(
        &format!("te{}", std::process::id() % 10000),
        "198.18.203.0/24",
        serde_json::json!([{"name": "a", "uplink": "5mbit", "delay": "20ms"}]),
    );
    let out = bed.master(&["up"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node `a`: field `delay`") && err.contains("netem"),
        "{err}"
    );
    bed.assert_gone();
    // A subnet a live testbed holds is refused before anything is made.
    let first = Bed::new(
        &format!("tf{}", std::process::id() % 10000),
        "198.18.203.0/24",
        serde_json::json!([{"name": "a", "uplink": "5mbit"}]),
    );
    first.run(&["up"]);
    let second = Bed::new(
        &format!("tg{}", std::process::id() % 10000),
        "198.18.203.128/25",
        serde_json::json!([{"name": "b", "uplink": "5mbit"}]),
    );
    let out = second.master(&["up"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("overlaps 198.18.203.0/24") && err.contains(&format!("hb{}br", first.name)),
        "{err}"
    );
    second.assert_gone();
    first.run(&["down"]);
    first.assert_gone();
}
