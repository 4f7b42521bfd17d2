//! A run survives the loss of a Kafka broker: a 3-broker KRaft cluster
//! (`deploy/kafka/start.sh --cluster 3`, on its own ports and state dir), the
//! real master and two workers training the MLP on mnist_5k, and `kill -9` of
//! the broker that leads most of the run's partitions mid-run.
//!
//! Asserted: the topics were created with 3 replicas and
//! `min.insync.replicas` 2 (replication factor `auto`); the run reaches its
//! target and every process exits 0; nothing is lost or duplicated: every
//! update a worker reports as published is in the updates topic once, the
//! master read each worker's updates in order without a gap (every one it
//! read is admitted-and-applied or explicitly rejected, only the last ones
//! published as the run ended may be unread), summary.json, metrics.csv and
//! the master's log agree on it, and the versions form one continuous sequence.

mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{workspace, Cluster};
use common::protocol::UpdateDelta;
use common::transport::{StartAt, Transport};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use serde_json::json;

/// Brokers in the test cluster.
const NODES: usize = 3;

/// A 3-broker cluster started by `deploy/kafka/start.sh --cluster 3` on spare
/// ports with its own state dir; stopped (and its storage removed) on drop.
struct KafkaCluster {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    ports: Vec<u16>,
}

impl KafkaCluster {
    fn start() -> KafkaCluster {
        // Six distinct free ports: held open together, then released.
        let held: Vec<TcpListener> = (0..2 * NODES)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a spare port"))
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        drop(held);
        let list = |p: &[u16]| p.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let dir = tempfile::tempdir().expect("temp dir");
        let env = vec![
            (
                "KAFKA_CLUSTER_DIR".to_string(),
                dir.path().display().to_string(),
            ),
            ("KAFKA_CLUSTER_PORTS".to_string(), list(&ports[..NODES])),
            (
                "KAFKA_CLUSTER_CONTROLLER_PORTS".to_string(),
                list(&ports[NODES..]),
            ),
            ("KAFKA_HOST".to_string(), "127.0.0.1".to_string()),
        ];
        let cluster = KafkaCluster {
            dir,
            env,
            ports: ports[..NODES].to_vec(),
        };
        let start = Instant::now();
        let out = cluster.script("start.sh", &[]);
        assert!(
            out.status.success(),
            "start.sh --cluster 3 failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "3-broker cluster up in {:.1} s on {}",
            start.elapsed().as_secs_f64(),
            cluster.bootstrap()
        );
        cluster
    }

    /// Runs `deploy/kafka/<name> --cluster 3 <args>` with this cluster's settings.
    fn script(&self, name: &str, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(workspace().join("deploy/kafka").join(name))
            .args(["--cluster", &NODES.to_string()])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KAFKA_STOP_TIMEOUT", "15")
            .output()
            .unwrap_or_else(|e| panic!("run deploy/kafka/{name}: {e}"))
    }

    fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_dir(&self, node: i32) -> PathBuf {
        self.dir.path().join(format!("node-{node}"))
    }

    /// The JVM pid of broker `node` (1-based, its KRaft node id).
    fn pid(&self, node: i32) -> i32 {
        let path = self.node_dir(node).join("broker.pid");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .parse()
            .expect("pid")
    }

    /// SIGKILL, as a crashed machine: no controlled shutdown, no leader handover.
    fn kill9(&self, node: i32) {
        let pid = self.pid(node);
        let ok = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -9 {pid} (broker {node}) failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while PathBuf::from(format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metadata(&self) -> Metadata {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("metadata client");
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("cluster metadata")
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let start = Instant::now();
        let out = self.script("stop.sh", &[]);
        println!(
            "cluster stopped in {:.1} s: {}{}",
            start.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// `key=value` from a tracing line (`key=value` or `key="value"`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    Some(rest.split(['"', ' ']).next().unwrap_or(rest))
}

/// Rounds whose update a worker reports as published: `round N major: ...,
/// update B bytes` with B > 0 (B is what the broker acknowledged).
fn published_rounds(worker_log: &str) -> Vec<u64> {
    worker_log
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(" round ")? + 7..];
            let (round, rest) = rest.split_once(' ')?;
            if !rest.starts_with("major:") {
                return None;
            }
            let bytes: u64 = l
                .rsplit_once(", update ")?
                .1
                .strip_suffix(" bytes")?
                .parse()
                .ok()?;
            (bytes > 0).then(|| round.parse().ok()).flatten()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_completes_and_loses_nothing_when_a_broker_is_killed() {
    let kafka = KafkaCluster::start();
    let c = Cluster::on_brokers("failover", kafka.bootstrap(), |m| {
        m["min_workers"] = 2.into();
        m["training"]["optimizer"] = json!({"kind": "sgd", "lr": 0.02});
        m["stop"]["target_accuracy"] = 0.88.into();
        // A produce can wait out the leader election (the broker session
        // timeout, 9 s): heartbeats must not time out meanwhile.
        m["heartbeat_timeout_secs"] = 30.into();
    });
    let started = Instant::now();
    let mut master = c.master();
    let mut workers = vec![c.worker("w1", 1.0), c.worker("w2", 1.0)];

    let waited = tokio::task::block_in_place(|| {
        master.wait_for("global version 3:", Duration::from_secs(150))
    });
    assert!(waited, "no version 3:\n{}", master.output());

    // Replication factor "auto" on 3 brokers: 3 replicas, all in sync, and
    // min.insync.replicas 2 on every topic of the run.
    let topics = common::transport::Topics::new("hermes", &c.run_id);
    let mut names = topics.run_topics();
    names.extend(["w1", "w2"].map(|w| topics.shard(w)));
    let md = kafka.metadata();
    assert_eq!(md.brokers().len(), NODES, "brokers in the metadata");
    let mut leads: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for name in &names {
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("topic {name} is not in the metadata"));
        assert!(!t.partitions().is_empty(), "{name} has no partitions");
        for p in t.partitions() {
            assert_eq!(p.replicas().len(), 3, "{name}/{}: replicas", p.id());
            assert_eq!(p.isr().len(), 3, "{name}/{}: in-sync replicas", p.id());
            leads
                .entry(p.leader())
                .or_default()
                .push(format!("{name}/{}", p.id()));
        }
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .expect("admin client");
    let resources: Vec<ResourceSpecifier<'_>> =
        names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    for described in admin
        .describe_configs(resources.iter(), &AdminOptions::new())
        .await
        .expect("describe topic configs")
    {
        let r = described.expect("topic config");
        let min_isr = r
            .get("min.insync.replicas")
            .and_then(|e| e.value.clone())
            .unwrap_or_default();
        assert_eq!(min_isr, "2", "min.insync.replicas of {:?}", r.specifier);
    }

    // Kill the broker that leads the most of the run's partitions.
    let (&victim, led) = leads
        .iter()
        .max_by_key(|(id, parts)| (parts.len(), -**id))
        .expect("a leader");
    let version_at_kill = master
        .output()
        .lines()
        .filter_map(|l| field(l, "version")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    println!(
        "kill -9 broker {victim} (leader of {}) at version {version_at_kill}, {:.1} s into the run",
        led.join(", "),
        started.elapsed().as_secs_f64()
    );
    kafka.kill9(victim);

    let (code, master_out) = tokio::task::block_in_place(|| {
        let code = master.wait_exit(Duration::from_secs(240));
        (code, master.output())
    });
    assert_eq!(
        code,
        Some(0),
        "master did not finish cleanly:\n{master_out}"
    );
    let mut worker_out = BTreeMap::new();
    for w in &mut workers {
        let code = tokio::task::block_in_place(|| w.wait_exit(Duration::from_secs(30)));
        assert_eq!(code, Some(0), "{} did not stop:\n{}", w.name, w.output());
        worker_out.insert(w.name.clone(), w.output());
    }
    println!(
        "run finished {:.1} s after start",
        started.elapsed().as_secs_f64()
    );

    let summary = c.summary();
    assert_eq!(
        summary["stop_reason"], "target accuracy reached",
        "{summary:#}"
    );
    let accuracy = summary["final_test_accuracy"].as_f64().unwrap_or(0.0);
    assert!(accuracy >= 0.88, "final accuracy {accuracy}");
    let versions = summary["versions"].as_u64().expect("versions");
    assert!(
        versions > version_at_kill,
        "no version after the kill (at {version_at_kill}, last {versions})"
    );
    master::outputs::summary::check_agreement(&c.run_dir())
        .expect("summary.json and metrics.csv agree");

    // metrics.csv: versions 0, 1, 2, ... without a gap; each made by exactly
    // one applied update (the hermes policy), counted in updates_accepted.
    let rows = master::outputs::metrics::read_metrics(&c.run_dir().join("metrics.csv"))
        .expect("metrics.csv");
    let mut applied_by: BTreeMap<String, u64> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.version, i as u64, "metrics.csv row {i}");
        assert_eq!(row.updates_accepted, i as u64, "metrics.csv row {i}");
        if i > 0 {
            let w = row.worker.clone().expect("the worker of a version");
            *applied_by.entry(w).or_default() += 1;
        }
    }
    assert_eq!(rows.last().map(|r| r.version), Some(versions));
    let stall = rows
        .windows(2)
        .filter(|w| w[1].version > version_at_kill)
        .map(|w| w[1].elapsed_secs - w[0].elapsed_secs)
        .fold(0.0, f64::max);
    println!("longest time between two versions after the kill: {stall:.1} s");
    assert_eq!(summary["updates_accepted"].as_u64(), Some(versions));

    // What the master read: admitted (then applied) and rejected updates, by round.
    let mut admitted: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut rejected: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for line in master_out.lines() {
        if line.contains("update admitted") {
            let w = field(line, "worker").expect("worker").to_string();
            let r = field(line, "round").and_then(|r| r.parse().ok());
            let fresh = admitted.entry(w).or_default().insert(r.expect("round"));
            assert!(fresh, "admitted twice: {line}");
        } else if let Some(rest) = line.split("rejected: update of round ").nth(1) {
            let w = field(line, "sender").expect("sender").to_string();
            let r: u64 = rest
                .split(' ')
                .next()
                .and_then(|r| r.parse().ok())
                .expect("round");
            assert!(
                rejected.entry(w).or_default().insert(r),
                "rejected twice: {line}"
            );
        }
    }

    // The broker's record of the run: every update in the updates topic.
    let kafka_cfg = common::config::KafkaConfig {
        brokers: kafka.bootstrap(),
        connect_timeout_secs: 30,
        ..Default::default()
    };
    let auditor = Transport::connect_with_key(&kafka_cfg, &c.run_id, "auditor", Some(c.key()))
        .await
        .expect("connect the auditor");
    let mut rx = auditor
        .receiver(
            std::slice::from_ref(&topics.updates()),
            &format!("auditor-{}", std::process::id()),
            StartAt::Beginning,
        )
        .await
        .expect("updates receiver");
    let mut in_topic: BTreeMap<String, Vec<(i64, u64, u64)>> = BTreeMap::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(4) {
        if let Some(d) = rx
            .recv_timeout(Duration::from_millis(500))
            .await
            .expect("read the updates topic")
        {
            let u: UpdateDelta = d.decode(64 << 20).expect("an update decodes");
            assert_eq!(u.worker_id, d.sender);
            in_topic
                .entry(u.worker_id)
                .or_default()
                .push((d.offset, u.incarnation, u.round));
            quiet_since = Instant::now();
        }
    }

    let mut unread_total = 0;
    for id in ["w1", "w2"] {
        let out = &worker_out[id];
        assert!(
            !out.contains("could not send the update"),
            "{id} failed to publish an update:\n{out}"
        );
        let published = published_rounds(out);
        assert!(!published.is_empty(), "{id} published nothing:\n{out}");
        let mut records = in_topic.get(id).cloned().unwrap_or_default();
        records.sort();
        let incarnations: BTreeSet<u64> = records.iter().map(|r| r.1).collect();
        assert_eq!(
            incarnations.len(),
            1,
            "{id}: one worker process, {incarnations:?}"
        );
        let stream: Vec<u64> = records.iter().map(|r| r.2).collect();
        let unique: BTreeSet<u64> = stream.iter().copied().collect();
        assert_eq!(
            unique.len(),
            stream.len(),
            "{id}: duplicate records {stream:?}"
        );
        for r in &published {
            assert!(
                unique.contains(r),
                "{id}: update of round {r} acknowledged but not in the topic {stream:?}"
            );
        }
        let admitted_w = admitted.remove(id).unwrap_or_default();
        let rejected_w = rejected.remove(id).unwrap_or_default();
        assert!(
            admitted_w.is_disjoint(&rejected_w),
            "{id}: admitted and rejected"
        );
        // The master read a prefix of this worker's stream: nothing skipped.
        let read = admitted_w.len() + rejected_w.len();
        for r in &stream[..read.min(stream.len())] {
            assert!(
                admitted_w.contains(r) || rejected_w.contains(r),
                "{id}: the update of round {r} was neither applied nor rejected, \
                 though later ones were (stream {stream:?}, admitted {admitted_w:?}, rejected {rejected_w:?})"
            );
        }
        assert!(
            read <= stream.len(),
            "{id}: the master read more than was sent"
        );
        let w = &summary["workers"][id];
        assert_eq!(
            w["updates_accepted"].as_u64(),
            Some(admitted_w.len() as u64),
            "{id}: {w}"
        );
        assert_eq!(
            w["updates_rejected"].as_u64(),
            Some(rejected_w.len() as u64),
            "{id}: {w}"
        );
        assert_eq!(
            applied_by.get(id).copied().unwrap_or(0),
            admitted_w.len() as u64,
            "{id}: versions in metrics.csv"
        );
        let unread = &stream[read..];
        unread_total += unread.len();
        println!(
            "{id}: {} published, {} in the topic, {} applied, {} rejected, unread at the end: {unread:?}",
            published.len(),
            stream.len(),
            admitted_w.len(),
            rejected_w.len()
        );
    }
    assert!(
        admitted.is_empty() && rejected.is_empty(),
        "updates of unknown workers"
    );
    assert_eq!(
        summary["updates_rejected"].as_u64(),
        Some(
            summary["updates_rejected_by_reason"]
                .as_object()
                .map_or(0, |m| {
                    m.values().filter_map(serde_json::Value::as_u64).sum()
                })
        ),
    );
    // Each worker trains one round at a time: at most its last update or two
    // can still be on the way when the master stops.
    assert!(unread_total <= 4, "{unread_total} updates never read");

    // The cluster noticed the loss: two brokers left, the dead one led nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut md = kafka.metadata();
    while md.brokers().len() != NODES - 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        md = kafka.metadata();
    }
    assert_eq!(md.brokers().len(), NODES - 1, "brokers after the kill");
    for t in md
        .topics()
        .iter()
        .filter(|t| names.iter().any(|n| n == t.name()))
    {
        for p in t.partitions() {
            assert_ne!(
                p.leader(),
                victim,
                "{}/{} still led by the dead broker",
                t.name(),
                p.id()
            );
        }
    }
    println!(
        "reached {accuracy:.4} at version {versions}; total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
