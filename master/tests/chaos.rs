//! Chaos, bounded: during one run a random worker is killed (SIGKILL) and
//! restarted every few seconds, a foreign client (kcat) writes garbage,
//! replayed and bit-flipped records into every topic of the run, and the
//! broker is restarted once. The run must still reach its target; every
//! rejection is counted by reason in summary.json (the workers' too); no
//! update is applied twice.
//!
//! Starts its own broker (own ports and storage); real master, workers,
//! ONNX Runtime and mnist_5k.

mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{Cluster, OwnBroker, Proc};
use common::transport::Topics;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;

/// Up to `max` records of `topics` as the broker holds them, read by a
/// plain librdkafka consumer (not ours).
fn capture(brokers: &str, topics: &[String], max: usize) -> Vec<(String, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("chaos-{}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("capture consumer");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if consumer.subscribe(&names).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    while out.len() < max && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            if let Some(p) = m.payload() {
                out.push((m.topic().to_string(), p.to_vec()));
            }
        }
    }
    out
}

/// Sends each file in `files` as one record to `topic` with kcat.
fn kcat(brokers: &str, topic: &str, files: &[PathBuf]) -> bool {
    Command::new("kcat")
        .args(["-P", "-b", brokers, "-t", topic])
        .args(files)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// One wave of foreign records: into every topic, garbage, an exact replay
/// of a captured record and a bit-flipped copy of one.
fn inject(
    brokers: &str,
    topics: &[String],
    captured: &[(String, Vec<u8>)],
    dir: &Path,
    rng: &mut rand::rngs::StdRng,
    wave: usize,
) -> usize {
    let mut sent = 0;
    for (t, topic) in topics.iter().enumerate() {
        let mut records: Vec<Vec<u8>> = Vec::new();
        let len = rng.random_range(1..300);
        records.push((0..len).map(|_| rng.random()).collect());
        let own: Vec<&Vec<u8>> = captured
            .iter()
            .filter(|(from, _)| from == topic)
            .map(|(_, r)| r)
            .collect();
        let pool: Vec<&Vec<u8>> = if own.is_empty() {
            captured.iter().map(|(_, r)| r).collect()
        } else {
            own
        };
        if !pool.is_empty() {
            let replay = pool[rng.random_range(0..pool.len())].clone();
            let mut flipped = pool[rng.random_range(0..pool.len())].clone();
            if !flipped.is_empty() {
                let bit = rng.random_range(0..flipped.len() * 8);
                flipped[bit / 8] ^= 1 << (bit % 8);
            }
            records.push(replay);
            records.push(flipped);
        }
        let files: Vec<PathBuf> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let p = dir.join(format!("w{wave}-t{t}-r{i}.bin"));
                std::fs::write(&p, r).expect("write a record file");
                p
            })
            .collect();
        if kcat(brokers, topic, &files) {
            sent += files.len();
        }
    }
    sent
}

#[test]
fn workers_killed_records_forged_and_the_broker_restarted_the_run_still_ends_well() {
    let dir = tempfile::tempdir().unwrap();
    let broker = OwnBroker::new(dir.path().join("kafka"), 19892);
    broker.script("start.sh");
    let brokers = broker.bootstrap();
    let c = Cluster::on_brokers("chaos", brokers.clone(), |m| {
        m["min_workers"] = 3.into();
        m["training"]["optimizer"] = serde_json::json!({"kind": "sgd", "lr": 0.005});
        m["stop"]["target_accuracy"] = 0.9.into();
        m["stop"]["no_progress_secs"] = 90.into();
        m["stop"]["max_wall_secs"] = 300.into();
    });
    let ids = ["w1", "w2", "w3"];
    let mut master = c.master();
    let mut workers: BTreeMap<&str, Proc> = ids.iter().map(|id| (*id, c.worker(id, 1.0))).collect();
    assert!(
        master.wait_for("global version 1:", Duration::from_secs(120)),
        "no version 1:\n{}",
        master.output()
    );

    let prefix = "hermes";
    let names = Topics::new(prefix, &c.run_id);
    let mut topics = vec![
        names.control(),
        names.model(),
        names.updates(),
        names.status(),
        names.logs(),
    ];
    topics.extend(ids.iter().map(|id| names.shard(id)));
    let records_dir = dir.path().join("records");
    std::fs::create_dir_all(&records_dir).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC4A05);
    let started = Instant::now();
    let (mut kills, mut injected, mut waves) = (0, 0, 0);
    let mut broker_restarted = false;
    let mut captured = capture(&brokers, &topics, 200);
    // 40 s of chaos, or until the run ends.
    while started.elapsed() < Duration::from_secs(40) {
        if let Ok(Some(_)) = master_exited(&mut master) {
            break;
        }
        let id = ids[rng.random_range(0..ids.len())];
        if let Some(mut w) = workers.remove(id) {
            w.kill();
        }
        kills += 1;
        injected += inject(&brokers, &topics, &captured, &records_dir, &mut rng, waves);
        waves += 1;
        std::thread::sleep(Duration::from_secs(1));
        workers.insert(id, c.worker(id, 1.0));
        if !broker_restarted && waves >= 1 {
            broker.script("stop.sh");
            std::thread::sleep(Duration::from_secs(3));
            broker.script("start.sh");
            broker_restarted = true;
            captured = capture(&brokers, &topics, 200);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("chaos: {kills} kills, {waves} waves, {injected} foreign records, broker restarted: {broker_restarted}");
    assert!(
        broker_restarted,
        "the run ended before the broker restart:\n{}",
        master.output()
    );

    let code = master.wait_exit(Duration::from_secs(300));
    let out = master.output();
    let kept = std::env::temp_dir().join("hermes-chaos-master.log");
    if std::fs::write(&kept, &out).is_ok() {
        eprintln!("master output: {}", kept.display());
    }
    assert_eq!(code, Some(0), "master:\n{out}");
    // A worker the master welcomed got its Stop and exits 0; one restarted
    // so late that the run had ended before it registered has nobody to
    // talk to (it would wait for a master) and is stopped here.
    for (id, w) in workers.iter_mut() {
        let code = w.wait_exit(Duration::from_secs(30));
        if code.is_none() && !w.output().contains("registered with the master") {
            eprintln!("{id} was restarted after the run ended; stopping it");
            w.kill();
            continue;
        }
        assert_eq!(code, Some(0), "{id}:\n{}", w.output());
    }
    let summary = c.summary();
    assert_eq!(
        summary["stop_reason"], "target accuracy reached",
        "{summary:#}"
    );

    // Every rejection is counted by reason, the workers' too.
    let by = summary["updates_rejected_by_reason"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let transport: u64 = by
        .iter()
        .filter(|(k, _)| k.starts_with("transport:"))
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert!(transport > 0, "no transport rejection counted: {by:?}");
    // The exact copies were refused as copies, by the master and the workers.
    assert!(
        by.get("transport:replayed")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
            > 0,
        "no replay refused: {by:?}"
    );
    let worker_side = summary["worker_rejections_by_reason"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        !worker_side.is_empty(),
        "no worker-side rejection counted: {summary:#}"
    );
    assert!(
        worker_side
            .get("replayed")
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
            > 0,
        "no replay refused by a worker: {worker_side:?}"
    );
    eprintln!("master rejections: {by:?}\nworker rejections: {worker_side:?}");

    // No update applied twice: one admitted line per (worker, process,
    // round), and the hermes policy makes one version per applied update.
    let mut admitted = BTreeSet::new();
    for line in out.lines().filter(|l| l.contains("update admitted")) {
        let key = (
            field(line, "worker").unwrap_or("?").to_string(),
            field(line, "incarnation").unwrap_or("?").to_string(),
            field(line, "round").unwrap_or("?").to_string(),
        );
        if !admitted.insert(key.clone()) {
            let context: Vec<&str> = out
                .lines()
                .filter(|l| {
                    l.contains(&format!("incarnation={}", key.1)) || l.contains("global version")
                })
                .collect();
            panic!("admitted twice: {line}\n{}", context.join("\n"));
        }
    }
    let rows = master::outputs::metrics::read_metrics(&c.run_dir().join("metrics.csv"))
        .expect("metrics.csv");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.version, i as u64, "metrics.csv row {i}");
        assert_eq!(row.updates_accepted, i as u64, "metrics.csv row {i}");
    }
    assert_eq!(
        summary["updates_accepted"].as_u64(),
        summary["versions"].as_u64(),
        "{summary:#}"
    );
}

fn master_exited(p: &mut Proc) -> std::io::Result<Option<std::process::ExitStatus>> {
    p.child.try_wait()
}

/// `key=value` from a log line (the value up to the next space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line[at..].split([' ', ',']).next()
}
