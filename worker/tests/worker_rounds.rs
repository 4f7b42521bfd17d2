//! The real worker binary over the real broker, with the test playing the
//! master by hand: register → welcome → a malicious package (refused) → the
//! real MLP package with mnist_5k data → round 1 (major, an update) → a
//! global of the wrong size and a garbage shard (both refused) → a new
//! global and round 2 (adopted) → stop. Needs the broker script, the ONNX
//! Runtime library (deploy/ort/install.sh), examples/prepare_data.sh and
//! examples/build_artifacts.sh.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::config::KafkaConfig;
use common::data::csv::{load_csv, CsvOptions};
use common::data::{Dataset, Limits, Shard, Split, SplitSpec};
use common::envelope::MessageKind;
use common::protocol::{
    ArtifactFile, Assignment, ControlMessage, GlobalModel, LogBatch, ModelPackage, Registration,
    RoundReport, ShardAssignment, StatusMessage, TrainingPlan, UpdateDelta,
};
use common::stats::GateConfig;
use common::transport::{Receiver, StartAt, Topics, Transport};

const LIMIT: u64 = 64 << 20;

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

fn mnist() -> Dataset {
    let path = root().join("data/mnist/mnist_5k.csv.gz");
    assert!(
        path.is_file(),
        "{} missing: run examples/prepare_data.sh",
        path.display()
    );
    let mut ds = load_csv(&path, &CsvOptions::mnist_5k(), &Limits::default()).expect("mnist_5k");
    ds.scale_to_unit(255.0).expect("scale");
    ds
}

/// The artifact files the manifest names, plus the manifest, and the
/// initial parameters.
fn mlp_files() -> (Vec<ArtifactFile>, Vec<f32>) {
    let dir = root().join("examples/artifacts/mlp");
    let manifest_bytes = std::fs::read(dir.join("manifest.json"))
        .expect("examples/artifacts/mlp/manifest.json: run examples/build_artifacts.sh");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("json");
    let mut files = vec![ArtifactFile {
        name: "manifest.json".into(),
        bytes: manifest_bytes,
    }];
    for key in ["training_graph", "eval_graph", "initial_parameters"] {
        let name = manifest[key].as_str().expect("file name").to_string();
        let bytes = std::fs::read(dir.join(&name)).expect("artifact file");
        files.push(ArtifactFile { name, bytes });
    }
    let init_name = manifest["initial_parameters"].as_str().expect("name");
    let params: Vec<f32> = std::fs::read(dir.join(init_name))
        .expect("initial parameters")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (files, params)
}

/// mnist_5k is sorted by class: validation and shards are drawn from a
/// stratified split.
struct Parts {
    ds: Dataset,
    split: Split,
}

impl Parts {
    fn new() -> Self {
        let ds = mnist();
        let spec = SplitSpec::Counts {
            train: 2000,
            validation: 500,
            test: 0,
        };
        let split = Split::stratified(ds.labels(), spec, 3).expect("split");
        Parts { ds, split }
    }

    fn validation(&self) -> Vec<u8> {
        self.ds
            .shard_to_bytes(&self.split.validation)
            .expect("encode")
    }

    fn train(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        let idx: Vec<usize> = self.split.train.indices()[range].to_vec();
        self.ds.shard_to_bytes(&Shard::new(idx)).expect("encode")
    }
}

/// What the fake master has seen so far.
#[derive(Default)]
struct Seen {
    registration: Option<Registration>,
    heartbeats: usize,
    reports: Vec<RoundReport>,
    updates: Vec<UpdateDelta>,
    log_lines: Vec<String>,
    goodbyes: Vec<String>,
    cache_misses: Vec<u64>,
}

impl Seen {
    fn logs_contain(&self, needle: &str) -> bool {
        self.log_lines.iter().any(|l| l.contains(needle))
    }
}

/// Reads status, updates and logs until `done` holds or `limit` passes.
async fn pump(
    rx: &mut Receiver,
    seen: &mut Seen,
    mut worker: Option<&mut Child>,
    limit: Duration,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(seen) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if let Some(Ok(Some(status))) = worker.as_mut().map(|w| w.try_wait()) {
            panic!("worker exited early ({status}) while waiting for {what}");
        }
        let Some(d) = rx
            .recv_timeout(Duration::from_millis(300))
            .await
            .expect("receive")
        else {
            continue;
        };
        match d.kind {
            MessageKind::Status => match d.decode::<StatusMessage>(LIMIT).expect("status") {
                StatusMessage::Register(r) => seen.registration = Some(r),
                StatusMessage::Heartbeat { .. } => seen.heartbeats += 1,
                StatusMessage::RoundReport(r) => seen.reports.push(r),
                StatusMessage::Goodbye { reason, .. } => seen.goodbyes.push(reason),
                StatusMessage::CacheMiss { shard_id, .. } => seen.cache_misses.push(shard_id),
            },
            MessageKind::Update => seen
                .updates
                .push(d.decode::<UpdateDelta>(LIMIT).expect("update")),
            MessageKind::Log => {
                let batch: LogBatch = d.decode(LIMIT).expect("log batch");
                for r in batch {
                    assert_eq!(r.node, "edge-7");
                    seen.log_lines.push(format!("{} {}", r.level, r.message));
                }
            }
            other => panic!("unexpected {other:?} from the worker"),
        }
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
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

/// Kills the worker if the test panics.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The test's side of a run: a transport playing the master, its receiver
/// on status, updates and logs, and the worker process.
struct FakeMaster {
    master: Transport,
    topics: Topics,
    rx: Receiver,
    seen: Seen,
    dir: tempfile::TempDir,
    guard: Guard,
}

impl FakeMaster {
    /// Starts a fake master and the worker binary (id `edge-7`, config id
    /// `worker-x` overridden by `--id`) with the given slowdown.
    async fn start(name: &str, slowdown: f64) -> FakeMaster {
        Self::start_with(name, slowdown, serde_json::json!({})).await
    }

    /// Like [`FakeMaster::start`], with `extra` merged into the worker config.
    async fn start_with(name: &str, slowdown: f64, extra: serde_json::Value) -> FakeMaster {
        let brokers = brokers();
        let run = format!("{name}-{}-{}", std::process::id(), rand::random::<u32>());
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("run.key");
        common::runkey::create_key_file(&key_file).expect("run key");
        let kafka = KafkaConfig {
            brokers: brokers.clone(),
            connect_timeout_secs: 30,
            hmac_key_file: Some(key_file.clone()),
            ..KafkaConfig::default()
        };
        let master = Transport::connect(&kafka, &run, "master")
            .await
            .expect("connect");
        master.create_run_topics().await.expect("topics");
        let topics = master.topics().clone();
        let rx = master
            .receiver(
                &[topics.status(), topics.updates(), topics.logs()],
                "fake-master",
                StartAt::Beginning,
            )
            .await
            .expect("receiver");
        let conf = dir.path().join("worker.json");
        let mut config = serde_json::json!({
                "run_id": run,
                "worker_id": "worker-x",
                "heartbeat_secs": 1,
                "register_retry_secs": 1,
                "slowdown": slowdown,
                "work_dir": dir.path().join("work"),
                "kafka": {"brokers": brokers, "hmac_key_file": key_file},
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        std::fs::write(&conf, config.to_string()).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("worker.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["--conf".as_ref(), conf.as_os_str()])
            .args(["--id", "edge-7"])
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start worker");
        FakeMaster {
            master,
            topics,
            rx,
            seen: Seen::default(),
            dir,
            guard: Guard(Some(child)),
        }
    }

    fn worker(&mut self) -> &mut Child {
        self.guard.0.as_mut().expect("worker running")
    }

    /// Reads until `done` holds (at most 90 s).
    async fn wait_for(&mut self, what: &str, done: impl Fn(&Seen) -> bool) {
        let child = self.guard.0.as_mut();
        pump(
            &mut self.rx,
            &mut self.seen,
            child,
            Duration::from_secs(90),
            what,
            done,
        )
        .await;
    }

    /// Waits for the registration and welcomes it.
    async fn welcome(&mut self) -> Registration {
        self.wait_for("registration", |s| s.registration.is_some())
            .await;
        let reg = self.seen.registration.clone().expect("registered");
        self.control(ControlMessage::Welcome {
            worker_id: reg.worker_id.clone(),
            incarnation: reg.incarnation,
        })
        .await;
        reg
    }

    async fn control(&self, msg: ControlMessage) {
        self.master
            .send(&self.topics.control(), "master", MessageKind::Control, &msg)
            .await
            .expect("send control");
    }

    async fn assign(&self, a: Assignment) {
        self.master
            .send(
                &self.topics.shard("edge-7"),
                "edge-7",
                MessageKind::Shard,
                &a,
            )
            .await
            .expect("send assignment");
    }

    async fn global(&self, g: GlobalModel) {
        self.master
            .send(&self.topics.model(), "master", MessageKind::Model, &g)
            .await
            .expect("send global");
    }

    /// The worker's stderr so far.
    fn worker_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default()
    }

    /// Waits for the worker to exit; its status.
    fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = wait_exit(self.worker(), limit);
        let status =
            status.unwrap_or_else(|| panic!("worker did not exit:\n{}", self.worker_log()));
        self.guard.0 = None;
        status
    }
}

fn plan() -> TrainingPlan {
    TrainingPlan {
        epochs: 1,
        batch_size: 64,
        optimizer_json: r#"{"kind": "adamw", "lr": 0.001}"#.into(),
        gate: GateConfig::default(),
        gate_updates: true,
        seed: 7,
    }
}

fn package(
    files: Vec<ArtifactFile>,
    initial: &[f32],
    plan: TrainingPlan,
    validation: Vec<u8>,
) -> Assignment {
    Assignment::Package(ModelPackage {
        model: "mlp".into(),
        files,
        global: GlobalModel {
            version: 0,
            parameters: initial.to_vec(),
        },
        plan,
        validation,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_trains_rounds_for_a_hand_played_master() {
    let parts = Parts::new();
    let (files, initial) = mlp_files();
    let n_params = initial.len();
    let mut m = FakeMaster::start("worker-rounds", 1.5).await;
    let reg = m.welcome().await;
    assert_eq!(reg.worker_id, "edge-7", "--id overrides the config");
    assert_eq!(reg.slowdown, 1.5);

    // A package with a path-traversal file name is refused; the worker lives on.
    let mut evil = files.clone();
    evil.push(ArtifactFile {
        name: "../x".into(),
        bytes: b"owned".to_vec(),
    });
    m.assign(package(evil, &initial, plan(), parts.validation()))
        .await;
    m.wait_for("the package refusal", |s| {
        s.logs_contain("rejected the model package")
    })
    .await;
    assert!(!m.dir.path().join("work/artifacts/x").exists());
    assert!(!m.dir.path().join("work/x").exists());

    // The real package, then shard 1.
    m.assign(package(files.clone(), &initial, plan(), parts.validation()))
        .await;
    m.assign(Assignment::Shard(ShardAssignment {
        shard_id: 11,
        round: 1,
        data: parts.train(0..1000),
        ..Default::default()
    }))
    .await;
    m.wait_for("round 1", |s| {
        !s.reports.is_empty() && !s.updates.is_empty()
    })
    .await;
    let r1 = m.seen.reports[0].clone();
    assert_eq!(
        (r1.round, r1.shard_id, r1.samples, r1.epochs),
        (1, 11, 1000, 1)
    );
    assert!(r1.major, "the first round is major: {r1:?}");
    assert_eq!(r1.base_version, 0);
    assert!(r1.update_bytes as usize > n_params * 4, "{r1:?}");
    assert!(r1.validation_loss.is_finite() && r1.validation_loss > 0.0);
    assert!(
        r1.validation_accuracy > 0.5,
        "one epoch on 1000 samples: {r1:?}"
    );
    assert!(r1.compute_secs > 0.0);
    let want_idle = 0.5 * r1.compute_secs;
    assert!(
        (r1.emulated_idle_secs - want_idle).abs() < 1e-6,
        "idle {} for compute {}",
        r1.emulated_idle_secs,
        r1.compute_secs
    );
    assert!(r1.round_secs >= r1.compute_secs + r1.emulated_idle_secs);
    let u1 = m.seen.updates[0].clone();
    assert_eq!(u1.worker_id, "edge-7");
    assert_eq!((u1.round, u1.base_version, u1.samples), (1, 0, 1000));
    assert_eq!(u1.incarnation, reg.incarnation);
    assert_eq!(u1.delta.len(), n_params);
    assert!(u1.delta.iter().all(|v| v.is_finite()));
    assert!(
        u1.delta.iter().any(|&v| v != 0.0),
        "training moved the weights"
    );
    assert_eq!(u1.validation_loss, r1.validation_loss);

    // A global of the wrong size and a garbage shard are refused.
    m.global(GlobalModel {
        version: 9,
        parameters: vec![0.0; n_params - 1],
    })
    .await;
    m.assign(Assignment::Shard(ShardAssignment {
        shard_id: 12,
        round: 2,
        data: b"not a dataset".to_vec(),
        ..Default::default()
    }))
    .await;
    m.wait_for("the refusals", |s| {
        s.logs_contain("ignored global model") && s.logs_contain("rejected shard 12")
    })
    .await;

    // The master aggregates round 1 into version 1; round 2 starts from it.
    let v1: Vec<f32> = initial.iter().zip(&u1.delta).map(|(p, d)| p + d).collect();
    m.global(GlobalModel {
        version: 1,
        parameters: v1,
    })
    .await;
    // Give the worker time to read the global before the shard arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.assign(Assignment::Shard(ShardAssignment {
        shard_id: 13,
        round: 2,
        data: parts.train(1000..2000),
        ..Default::default()
    }))
    .await;
    m.wait_for("round 2", |s| s.reports.len() >= 2).await;
    let r2 = m.seen.reports[1].clone();
    assert_eq!((r2.round, r2.shard_id, r2.samples), (2, 13, 1000));
    assert_eq!(r2.base_version, 1, "global version 1 adopted, 9 refused");
    assert!(
        r2.validation_loss < r1.validation_loss,
        "{r1:?} then {r2:?}"
    );
    // Warm-up: the second loss is judged minor without a statistic.
    assert!(!r2.major && r2.statistic.is_none(), "{r2:?}");
    assert_eq!(r2.update_bytes, 0);
    assert_eq!(m.seen.updates.len(), 1, "no update on a minor round");
    assert!(m.seen.heartbeats > 0);

    // By reference: shard 14 sends 300 samples for the cache, shard 15
    // names 100 of them and carries none, shard 16 names samples never sent.
    let reg = m.seen.registration.clone().expect("registered");
    assert_eq!(
        reg.sample_cache_bytes,
        256 << 20,
        "the default cache is stated"
    );
    let ids = |r: std::ops::Range<u32>| r.collect::<Vec<u32>>();
    // (shard, round, training rows sent, their ids, ids named)
    let by_reference = [
        (14, 3, 0..300, ids(5000..5300), ids(5000..5300)),
        (15, 4, 0..0, vec![], ids(5100..5200)),
        (16, 5, 0..0, vec![], ids(5250..5350)),
    ];
    for (shard_id, round, rows, fresh, samples) in by_reference {
        m.assign(Assignment::Shard(ShardAssignment {
            shard_id,
            round,
            data: parts.train(rows),
            samples,
            fresh,
            keep: true,
            min_version: 1,
        }))
        .await;
    }
    m.wait_for("the cached rounds and the miss", |s| {
        s.reports.len() >= 4 && !s.cache_misses.is_empty()
    })
    .await;
    let (r3, r4) = (&m.seen.reports[2], &m.seen.reports[3]);
    assert_eq!((r3.shard_id, r3.samples), (14, 300));
    assert_eq!(
        (r4.shard_id, r4.samples),
        (15, 100),
        "trained from the cache"
    );
    assert_eq!(
        m.seen.cache_misses,
        vec![16],
        "50 of its samples were never sent"
    );
    assert_eq!(
        m.seen.reports.len(),
        4,
        "no round on a shard it cannot assemble"
    );

    // A shard for a version the worker does not have yet waits for it.
    m.assign(Assignment::Shard(ShardAssignment {
        shard_id: 17,
        round: 6,
        data: parts.train(300..400),
        min_version: 2,
        ..Default::default()
    }))
    .await;
    // Had it not waited, its round would report base version 1.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v2 = m.seen.updates.iter().fold(initial.clone(), |p, u| {
        p.iter().zip(&u.delta).map(|(a, d)| a + d).collect()
    });
    m.global(GlobalModel {
        version: 2,
        parameters: v2,
    })
    .await;
    m.wait_for("round 6", |s| s.reports.len() >= 5).await;
    let r6 = &m.seen.reports[4];
    assert_eq!(
        (r6.shard_id, r6.base_version),
        (17, 2),
        "trained from version 2"
    );

    m.wait_for("the round log lines", |s| {
        s.logs_contain("round 1 major") && s.logs_contain("round 2 minor")
    })
    .await;
    println!("round 1: {r1:?}\nround 2: {r2:?}");
    for line in &m.seen.log_lines {
        println!("central log: {line}");
    }
    assert!(
        m.seen.logs_contain("INFO emulated slowdown 1.5x: idled"),
        "{:#?}",
        m.seen.log_lines
    );
    assert!(m.seen.logs_contain("model `mlp` ready"));
    assert!(m.seen.logs_contain("../x"), "the refusal names the file");

    m.control(ControlMessage::Stop {
        reason: "test done".into(),
    })
    .await;
    let status = m.exit_status(Duration::from_secs(30));
    assert!(
        status.success(),
        "worker exit {status}:\n{}",
        m.worker_log()
    );
    assert!(m
        .dir
        .path()
        .join("work/artifacts/mlp/manifest.json")
        .is_file());
}

/// A worker idling through a long emulated slowdown keeps heartbeating
/// (training runs off the async runtime), and SIGTERM mid-round ends it
/// promptly with a Goodbye and exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_worker_heartbeats_and_leaves_on_sigterm() {
    let parts = Parts::new();
    let (files, initial) = mlp_files();
    let mut m = FakeMaster::start("worker-sigterm", 400.0).await;
    m.welcome().await;
    let slow_plan = TrainingPlan {
        epochs: 3,
        ..plan()
    };
    m.assign(package(files, &initial, slow_plan, parts.validation()))
        .await;
    m.assign(Assignment::Shard(ShardAssignment {
        shard_id: 1,
        round: 1,
        data: parts.train(0..2000),
        ..Default::default()
    }))
    .await;
    m.wait_for("the round to start idling", |s| {
        s.logs_contain("emulated slowdown 400.0x")
    })
    .await;
    let before = m.seen.heartbeats;
    let until = Instant::now() + Duration::from_millis(3500);
    m.wait_for("heartbeats while the round idles", |_| {
        Instant::now() >= until
    })
    .await;
    assert!(
        m.seen.reports.is_empty(),
        "the round should still be idling: {:?}",
        m.seen.reports
    );
    assert!(
        m.seen.heartbeats >= before + 2,
        "{} heartbeats in 3.5 s of a busy round",
        m.seen.heartbeats - before
    );

    let pid = m.worker().id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let sent = Instant::now();
    let status = m.exit_status(Duration::from_secs(20));
    assert!(status.success(), "exit {status}:\n{}", m.worker_log());
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "aborting the round took {:?}",
        sent.elapsed()
    );
    m.wait_for("the goodbye", |s| !s.goodbyes.is_empty()).await;
    assert!(
        m.seen.goodbyes[0].contains("SIGTERM"),
        "{:?}",
        m.seen.goodbyes
    );
    assert!(
        m.seen.reports.is_empty(),
        "the aborted round sends no report"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_master_is_waited_for_then_given_up_on() {
    let mut m = FakeMaster::start_with(
        "silent-master",
        1.0,
        serde_json::json!({"master_timeout_secs": 8}),
    )
    .await;
    m.welcome().await;
    // Quiet, then an "alive": the worker's silence clock starts again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    m.control(ControlMessage::Alive { version: 0 }).await;
    let alive_at = Instant::now();
    let status = m.exit_status(Duration::from_secs(40));
    let log = m.worker_log();
    assert!(!status.success(), "gave up, non-zero: {status}\n{log}");
    assert!(
        alive_at.elapsed() >= Duration::from_secs(6),
        "the alive message did not count: exited {:?} after it\n{log}",
        alive_at.elapsed()
    );
    assert!(log.contains("no word from the master"), "{log}");
    assert!(log.contains("has been silent for"), "{log}");
}

/// A worker that started before its master registers as soon as the master
/// speaks, not a `register_retry_secs` later: its first registration went
/// out while nobody listened; the master's first "alive" brings the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_the_master_registers_when_the_master_speaks() {
    let m = FakeMaster::start_with(
        "late-master",
        1.0,
        serde_json::json!({"register_retry_secs": 600}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !m.worker_log().contains("registering with the master") {
        assert!(
            Instant::now() < deadline,
            "the worker never registered:\n{}",
            m.worker_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first registration is out, unheard; now "the master" listens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut late = m
        .master
        .receiver(&[m.topics.status()], "late-master", StartAt::End)
        .await
        .expect("receiver");
    // One poll, so the receiver has its position before the master speaks.
    let early = late
        .recv_timeout(Duration::from_secs(1))
        .await
        .expect("recv");
    assert!(
        early.is_none(),
        "a record before the master spoke: {early:?}"
    );
    m.control(ControlMessage::Alive { version: 0 }).await;
    let spoke = Instant::now();
    let mut registered = false;
    while !registered && spoke.elapsed() < Duration::from_secs(60) {
        if let Some(d) = late
            .recv_timeout(Duration::from_millis(500))
            .await
            .expect("recv")
        {
            registered = matches!(
                d.decode::<StatusMessage>(LIMIT),
                Ok(StatusMessage::Register(_))
            );
        }
    }
    assert!(
        registered,
        "no registration within 60 s of the master's first word (the retry is 600 s):\n{}",
        m.worker_log()
    );
    eprintln!(
        "registered {:.2} s after the master's first alive",
        spoke.elapsed().as_secs_f64()
    );
}
