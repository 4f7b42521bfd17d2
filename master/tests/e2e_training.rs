//! Hermes end to end: the real master and workers over the real broker,
//! training the MLP on mnist_5k with real ONNX Runtime.

mod cluster;

use std::time::{Duration, Instant};

use cluster::Cluster;
use common::envelope::MessageKind;
use common::protocol::{Assignment, GlobalModel, Registration, StatusMessage, UpdateDelta};
use common::transport::{StartAt, Transport};
use serde_json::json;

fn sgd(lr: f64) -> serde_json::Value {
    json!({"kind": "sgd", "lr": lr})
}

#[test]
fn three_workers_reach_target_and_stragglers_get_smaller_shards() {
    let c = Cluster::new("three", |m| {
        m["min_workers"] = 3.into();
        m["training"]["optimizer"] = sgd(0.02);
        m["stop"]["target_accuracy"] = 0.88.into();
    });
    let mut master = c.master();
    let mut workers = vec![
        c.worker("w1", 1.0),
        c.worker("w2", 1.0),
        c.worker("w3", 4.0),
    ];

    let code = master.wait_exit(Duration::from_secs(300));
    assert_eq!(
        code,
        Some(0),
        "master did not finish cleanly:\n{}",
        master.output()
    );
    for w in &mut workers {
        assert_eq!(
            w.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{} did not stop:\n{}",
            w.name,
            w.output()
        );
    }

    let summary = c.summary();
    assert_eq!(
        summary["stop_reason"], "target accuracy reached",
        "{summary:#}"
    );
    let accuracy = summary["final_test_accuracy"]
        .as_f64()
        .expect("final accuracy");
    assert!(accuracy >= 0.88, "final accuracy {accuracy}");
    println!(
        "reached {accuracy:.4} at version {} after {} s",
        summary["versions"], summary["time_to_target_secs"]
    );
    master::outputs::summary::check_agreement(&c.run_dir())
        .expect("summary.json and metrics.csv agree");
    for id in ["w1", "w2", "w3"] {
        let w = &summary["workers"][id];
        assert!(w["rounds"].as_u64().unwrap_or(0) > 0, "{id}: {w}");
    }

    let log = c.central_log();
    for id in ["w1", "w2", "w3"] {
        assert!(
            log.contains(&format!(" - {id}] INFO")),
            "no line from {id} in the centralized log:\n{log}"
        );
    }
    assert!(
        log.contains(" - master] INFO"),
        "no master line in the centralized log"
    );

    // After the first rounds (throughput measured), the 4x straggler gets smaller shards.
    let alloc = c.allocations();
    let mean = |id: &str| {
        let sizes: Vec<usize> = alloc
            .iter()
            .filter(|(w, r, _)| w == id && *r >= 3)
            .map(|(_, _, s)| *s)
            .collect();
        assert!(
            !sizes.is_empty(),
            "{id} got no shard after round 3: {alloc:?}"
        );
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
    };
    let (fast, slow) = (mean("w1").min(mean("w2")), mean("w3"));
    println!("mean shard after round 3: fastest {fast:.0}, straggler {slow:.0}");
    assert!(slow < fast, "straggler {slow} vs fast {fast}");

    // Targeted delivery (the default): nothing on the shared model topic;
    // each worker's own stream has globals only just before shards, in
    // rising versions, so no worker was sent a superseded version.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kafka = common::config::KafkaConfig {
            brokers: c.brokers.clone(),
            ..Default::default()
        };
        let probe = Transport::connect_with_key(&kafka, &c.run_id, "probe", Some(c.key()))
            .await
            .expect("connect");
        let topics = probe.topics().clone();
        let mut model = probe
            .receiver(&[topics.model()], "probe-model", StartAt::Beginning)
            .await
            .expect("receiver");
        let on_model = model
            .recv_timeout(Duration::from_secs(3))
            .await
            .expect("recv");
        assert!(
            on_model.is_none(),
            "a record on the model topic: {on_model:?}"
        );
        for id in ["w1", "w2", "w3"] {
            let mut rx = probe
                .receiver(
                    &[topics.shard(id)],
                    &format!("probe-{id}"),
                    StartAt::Beginning,
                )
                .await
                .expect("receiver");
            let mut stream = Vec::new();
            while let Some(d) = rx.recv_timeout(Duration::from_secs(3)).await.expect("recv") {
                stream.push(d.decode::<Assignment>(64 << 20).expect("assignment"));
            }
            let mut last = 0;
            let mut globals = 0;
            for (i, a) in stream.iter().enumerate() {
                match a {
                    Assignment::Package(p) => last = p.global.version,
                    Assignment::Global(g) => {
                        assert!(g.version > last, "{id}: version {} after {last}", g.version);
                        assert!(
                            matches!(stream.get(i + 1), Some(Assignment::Shard(_))),
                            "{id}: a global not followed by its shard"
                        );
                        last = g.version;
                        globals += 1;
                    }
                    Assignment::Shard(_) => {}
                }
            }
            let shards = stream
                .iter()
                .filter(|a| matches!(a, Assignment::Shard(_)))
                .count();
            println!("{id}: {shards} shards, {globals} globals sent");
            assert!(
                globals >= 1 && globals <= shards,
                "{id}: {globals} globals, {shards} shards"
            );
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_foreign_updates_are_rejected_never_applied() {
    let c = Cluster::new("reject", |m| {
        m["min_workers"] = 2.into();
        m["training"]["optimizer"] = sgd(0.02);
        m["stop"]["target_accuracy"] = serde_json::Value::Null;
        m["stop"]["max_versions"] = 12.into();
        m["aggregation"]["max_staleness"] = 2.into();
        // The fixed bound is under test (not its scaling with a round's length).
        m["aggregation"]["staleness_scales_with_cycle"] = false.into();
        // The intruder reads the versions on the shared model topic.
        m["model_delivery"] = "broadcast".into();
    });
    let mut master = c.master();
    let mut worker = c.worker("honest", 1.0);

    // The intruder registers like a worker, then sends bad updates.
    let mut kafka = common::config::KafkaConfig {
        brokers: c.brokers.clone(),
        ..Default::default()
    };
    kafka.connect_timeout_secs = 30;
    // An insider: it holds the run key, so only the master's checks of
    // content stop it.
    let intruder = Transport::connect_with_key(&kafka, &c.run_id, "intruder", Some(c.key()))
        .await
        .expect("connect");
    intruder.create_run_topics().await.expect("topics");
    let topics = intruder.topics().clone();
    let mut models = intruder
        .receiver(
            std::slice::from_ref(&topics.model()),
            "intruder-models",
            StartAt::Beginning,
        )
        .await
        .expect("model receiver");
    let incarnation = 99;
    let register = StatusMessage::Register(Registration {
        worker_id: "intruder".into(),
        incarnation,
        hostname: "evil".into(),
        arch: "x86_64".into(),
        cores: 1,
        slowdown: 1.0,
        emulation: String::new(),
        sample_cache_bytes: 0,
    });
    let heartbeat = StatusMessage::Heartbeat {
        worker_id: "intruder".into(),
        incarnation,
        model_version: 0,
        rejected: Default::default(),
    };
    // Wait for the first global versions (the run has started, the intruder is
    // known). Like a real worker, it repeats its registration until the master
    // has seen it (the master reads from "now" and may still be starting).
    let mut newest = 0;
    let mut params = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while newest < 3 && Instant::now() < deadline {
        let hello = if newest == 0 { &register } else { &heartbeat };
        intruder
            .send(&topics.status(), "intruder", MessageKind::Status, hello)
            .await
            .expect("register/heartbeat");
        if let Some(d) = models
            .recv_timeout(Duration::from_millis(300))
            .await
            .expect("recv")
        {
            let g: GlobalModel = d.decode(64 << 20).expect("global decodes");
            newest = newest.max(g.version);
            params = g.parameters.len();
        }
    }
    assert!(
        newest >= 3,
        "no version 3 within 120 s:\n{}",
        master.output()
    );

    let update = |base_version: u64, delta: Vec<f32>| UpdateDelta {
        worker_id: "intruder".into(),
        incarnation,
        round: 1,
        base_version,
        samples: 100,
        validation_loss: 0.1,
        timing: Default::default(),
        delta,
    };
    let updates = topics.updates();
    // Wrong parameter count.
    intruder
        .send(
            &updates,
            "intruder",
            MessageKind::Update,
            &update(newest, vec![0.5; params - 1]),
        )
        .await
        .expect("send");
    // NaN values.
    let mut nan = vec![0.0; params];
    nan[7] = f32::NAN;
    intruder
        .send(
            &updates,
            "intruder",
            MessageKind::Update,
            &update(newest, nan),
        )
        .await
        .expect("send");
    // Stale beyond the bound (base 0 while the global is at >= 3, bound 2).
    intruder
        .send(
            &updates,
            "intruder",
            MessageKind::Update,
            &update(0, vec![1e3; params]),
        )
        .await
        .expect("send");
    // Foreign: another run's envelope on this run's updates topic.
    let foreign = Transport::connect_with_key(&kafka, "another-run", "intruder", Some(c.key()))
        .await
        .expect("connect");
    foreign
        .send(
            &updates,
            "intruder",
            MessageKind::Update,
            &update(newest, vec![1e3; params]),
        )
        .await
        .expect("send");
    // A forger without the key: well-formed, CRC-checked, and refused.
    let forger = Transport::connect_with_key(&kafka, &c.run_id, "honest", None)
        .await
        .expect("connect");
    forger
        .send(
            &updates,
            "honest",
            MessageKind::Update,
            &update(newest, vec![1e3; params]),
        )
        .await
        .expect("send");

    let code = tokio::task::spawn_blocking(move || {
        let code = master.wait_exit(Duration::from_secs(240));
        (code, master.output())
    })
    .await
    .expect("join");
    assert_eq!(code.0, Some(0), "master:\n{}", code.1);
    assert_eq!(worker.wait_exit(Duration::from_secs(30)), Some(0));

    let summary = c.summary();
    let by = &summary["updates_rejected_by_reason"];
    for reason in [
        "wrong_parameter_count",
        "non_finite",
        "too_stale",
        "transport:wrong_run_id",
        "transport:missing_tag",
    ] {
        assert!(
            by[reason].as_u64().unwrap_or(0) >= 1,
            "{reason} not counted: {by}"
        );
    }
    assert_eq!(
        summary["workers"]["intruder"]["updates_accepted"], 0,
        "{summary:#}"
    );
    assert_eq!(summary["stop_reason"], "max versions reached");
    // Only the honest worker's updates made versions: the intruder's huge
    // deltas would have wrecked the model. Loss fell from ln(10) = 2.30.
    let loss = summary["final_test_loss"].as_f64().unwrap_or(f64::NAN);
    assert!(
        loss.is_finite() && loss < 2.2,
        "final test loss {loss}: {summary:#}"
    );
    let best = summary["best_test_accuracy"].as_f64().unwrap_or(0.0);
    assert!(best > 0.3, "best accuracy {best}: {summary:#}");
    master::outputs::summary::check_agreement(&c.run_dir()).expect("agree");
}

#[test]
fn killed_worker_shard_returns_and_restarted_worker_rejoins() {
    let c = Cluster::new("kill", |m| {
        m["min_workers"] = 3.into();
        m["heartbeat_timeout_secs"] = 2.into();
        m["training"]["optimizer"] = sgd(0.005);
        m["stop"]["target_accuracy"] = 0.88.into();
    });
    let mut master = c.master();
    let mut w1 = c.worker("w1", 2.0);
    let mut w2 = c.worker("w2", 2.0);
    let mut w3 = c.worker("w3", 2.0);

    assert!(
        master.wait_for("global version 2:", Duration::from_secs(120)),
        "{}",
        master.output()
    );
    w2.kill();
    assert!(
        master.wait_for(
            "worker gone worker=w2 returned_samples=",
            Duration::from_secs(30)
        ),
        "w2 not marked gone:\n{}",
        master.output()
    );
    let out = master.output();
    let returned: usize = out
        .lines()
        .find_map(|l| l.split("worker gone worker=w2 returned_samples=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("returned sample count");
    assert!(
        returned > 0,
        "the killed worker's shard went back to the pool"
    );

    let mut w2 = c.worker("w2", 2.0);
    assert!(
        master.wait_for("worker rejoined: w2", Duration::from_secs(60)),
        "{}",
        master.output()
    );
    let rejoined_at = master
        .output()
        .lines()
        .position(|l| l.contains("worker rejoined: w2"))
        .expect("line");
    let deadline = Instant::now() + Duration::from_secs(120);
    let contributed = loop {
        let out = master.output();
        if out
            .lines()
            .skip(rejoined_at)
            .any(|l| l.contains("round report worker=w2"))
        {
            break true;
        }
        if Instant::now() > deadline || master.wait_exit(Duration::from_millis(1)).is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        contributed,
        "restarted w2 reported no round before the run ended:\n{}",
        master.output()
    );

    assert_eq!(
        master.wait_exit(Duration::from_secs(300)),
        Some(0),
        "{}",
        master.output()
    );
    let summary = c.summary();
    assert_eq!(
        summary["stop_reason"], "target accuracy reached",
        "{summary:#}"
    );
    assert!(summary["final_test_accuracy"].as_f64().unwrap_or(0.0) >= 0.88);
    for w in [&mut w1, &mut w2, &mut w3] {
        assert_eq!(
            w.wait_exit(Duration::from_secs(30)),
            Some(0),
            "{}",
            w.output()
        );
    }
}
