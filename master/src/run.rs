//! `master run`: the I/O shell around the [`Coordinator`].
//!
//! 1. Load the dataset, the artifacts and an evaluation engine; connect.
//! 2. Loop: turn deliveries (status, updates, logs) and a periodic tick
//!    (with a probe of the broker) into coordinator events, and carry out
//!    the actions it returns: welcome, package, shard, new version
//!    (evaluate, broadcast, checkpoint, commit the offsets, record), stop.
//! 3. Tell the workers to stop; write the summary and the plot. A run that
//!    could not make progress exits non-zero and says why.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{
    self, ControlMessage, LogBatch, LogRecord, StatusMessage, TrainingPlan, UpdateDelta,
};
use common::transport::{Delivery, Receiver, StartAt, Transport};
use tokio::sync::mpsc;

use crate::checkpoint;
use crate::config::MasterConfig;
pub use crate::coordinator::StopReason;
use crate::coordinator::{Action, Coordinator, Event};
use crate::run_outputs::{RunOutputs, SummaryInputs};
use crate::workload::{self, TestResult, Workload};

mod shipping;

/// Node id of the master in envelopes and logs.
pub const MASTER_ID: &str = "master";

/// Largest status or log message accepted (bytes).
const SMALL_LIMIT: u64 = 1024 * 1024;

/// Runs the master until the run ends.
///
/// A run folder with a checkpoint is resumed (the same run id continues
/// where its checkpoint and committed offsets say) unless `fresh`, which
/// moves the old folder aside and starts over.
pub async fn run(cfg: MasterConfig, fresh: bool) -> anyhow::Result<ExitCode> {
    let (log_tx, log_rx) = mpsc::channel::<LogRecord>(4096);
    common::logging::init(&cfg.logging.level, MASTER_ID, Some(log_tx));
    let mut master = Master::start(cfg, fresh, log_rx).await?;
    let outcome = master.run_to_end().await;
    master.finish(outcome).await
}

/// The shell's state: connections, data, the engine, outputs, and the coordinator.
struct Master {
    cfg: MasterConfig,
    /// Offers the run to agents while it lasts.
    announcer: Option<crate::agents::Announcer>,
    transport: Transport,
    rx: Receiver,
    log_rx: mpsc::Receiver<LogRecord>,
    workload: Workload,
    engine: common::engine::Engine,
    model_name: String,
    files: Vec<protocol::ArtifactFile>,
    plan: TrainingPlan,
    coord: Coordinator,
    outputs: RunOutputs,
    broker: Arc<BrokerHealth>,
    /// Failed probes already reported to the coordinator.
    failed_probes_seen: u64,
    last_status_write: Instant,
    /// When the last "alive" message went out.
    last_alive: Option<Instant>,
    /// Which version each worker was sent (`model_delivery`).
    deliveries: crate::delivery::Deliveries,
    /// What each worker's sample cache holds.
    samples: crate::samples::SampleMirrors,
    /// What judging the checkpointed version on resume asked for (a stop,
    /// when the dead master had reached its goal), done first.
    resumed_actions: Vec<Action>,
    /// The round-phase profile (`phases.csv`).
    phases: crate::phases::PhaseClock,
    /// Where the start-up went, until the first shards are out.
    startup: Option<Startup>,
}

/// The master's start-up, step by step (logged once the first shards are sent).
struct Startup {
    began: Instant,
    steps: Vec<(&'static str, Instant)>,
}

impl Startup {
    fn new() -> Self {
        Self {
            began: Instant::now(),
            steps: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str) {
        self.steps.push((name, Instant::now()));
    }

    /// `load 0.12 s, engine 0.05 s, ...` and the total.
    fn line(&self, end: Instant) -> String {
        let mut last = self.began;
        let mut parts = Vec::new();
        for (name, at) in &self.steps {
            parts.push(format!("{name} {:.3} s", (*at - last).as_secs_f64()));
            last = *at;
        }
        parts.push(format!("first shards {:.3} s", (end - last).as_secs_f64()));
        format!(
            "start-up: {:.3} s from the master's start to the first shards sent ({})",
            (end - self.began).as_secs_f64(),
            parts.join(", ")
        )
    }
}

/// What the background probe saw: whether the last probe got an answer,
/// and how many have failed so far (so an outage the loop did not see —
/// it may have been blocked in a send all along — is still reported).
#[derive(Default)]
struct BrokerHealth {
    up: AtomicBool,
    failed: std::sync::atomic::AtomicU64,
}

impl Master {
    async fn start(
        cfg: MasterConfig,
        fresh: bool,
        log_rx: mpsc::Receiver<LogRecord>,
    ) -> anyhow::Result<Self> {
        let mut startup = Startup::new();
        let workload = Workload::load(&cfg)?;
        startup.step("dataset");
        let mut engine = workload::evaluation_engine(&cfg)?;
        startup.step("engine");
        let (model_name, files) = workload::artifact_files(&cfg.model.artifacts)?;
        let initial = engine.parameters().to_vec();
        let run_dir = crate::outputs::run_dir(&cfg.data_dir, &cfg.run_id)?;
        let ckpt_path = run_dir.join(checkpoint::FILE);
        // A run that ended wrote its summary: the same id then starts anew
        // (its folder moved aside); one that did not is resumed.
        let ended = run_dir.join(crate::outputs::summary::SUMMARY_FILE).exists();
        let resume = !fresh && !ended && ckpt_path.exists();
        let coord = if resume {
            let ckpt = checkpoint::load(&ckpt_path).with_context(|| {
                format!(
                    "cannot resume run `{}` ({}); `--fresh` starts it anew (the old folder is moved aside)",
                    cfg.run_id,
                    ckpt_path.display()
                )
            })?;
            anyhow::ensure!(
                ckpt.parameters.len() == initial.len(),
                "{}: holds {} parameters, the model has {}",
                ckpt_path.display(),
                ckpt.parameters.len(),
                initial.len()
            );
            tracing::info!(
                run = %cfg.run_id,
                version = ckpt.version,
                applied = ckpt.ledger.len(),
                "resuming the run from its checkpoint; workers are asked to register again"
            );
            Coordinator::resume(cfg.clone(), ckpt, workload.train_len(), Instant::now())?
        } else {
            Coordinator::new(cfg.clone(), initial, workload.train_len(), Instant::now())?
        };
        engine.set_parameters(coord.global())?;
        let plan = TrainingPlan {
            epochs: cfg.training.epochs,
            batch_size: cfg.training.batch_size,
            optimizer_json: serde_json::to_string(&cfg.training.optimizer)?,
            gate: cfg.gate.clone(),
            gate_updates: coord.workers_gate_updates(),
            seed: cfg.training.seed,
        };
        let outputs = if resume {
            RunOutputs::resume(&cfg, coord.policy_name())?
        } else {
            RunOutputs::create(&cfg, coord.policy_name())?
        };
        let mut phases = crate::phases::PhaseClock::open(&outputs.run_dir(), resume)?;
        if resume {
            phases.training_started(Instant::now());
        }
        let keys = common::runkey::resolve(
            &cfg.kafka,
            std::path::Path::new(common::runkey::DEFAULT_KEY_FILE),
            common::runkey::WhenMissing::Create,
        )?;
        common::runkey::log_choice(&keys);
        startup.step("outputs and key");
        let transport =
            Transport::connect_with_keys(&cfg.kafka, &cfg.run_id, MASTER_ID, keys.clone())
                .await
                .context("connect to kafka")?;
        transport
            .create_run_topics()
            .await
            .context("create run topics")?;
        startup.step("connect and topics");
        let topics = transport.topics().clone();
        // Status and logs from now on (workers register again after a
        // restart); updates from the committed offsets when resuming, so
        // nothing accepted after the checkpoint is lost (the ledger refuses
        // what was applied already).
        let updates_from = if resume {
            StartAt::Committed
        } else {
            StartAt::End
        };
        let rx = transport
            .receiver_from(
                &[
                    (topics.status(), StartAt::End),
                    (topics.updates(), updates_from),
                    (topics.logs(), StartAt::End),
                ],
                &format!("master-{}", cfg.run_id),
            )
            .await
            .context("subscribe to status, updates and logs")?;
        tracing::info!(
            run = %cfg.run_id,
            policy = coord.policy_name(),
            model = %model_name,
            parameters = coord.global().len(),
            train = workload.train_len(),
            test = workload.test_len(),
            "master ready; waiting for {} worker(s)",
            cfg.min_workers
        );
        let broker = Arc::new(BrokerHealth {
            up: AtomicBool::new(true),
            ..Default::default()
        });
        spawn_broker_probe(&transport, broker.clone());
        // Receivers exist: a worker that joins on the offer is heard.
        startup.step("subscribe");
        let announcer = crate::agents::Announcer::start(&cfg, keys);
        let sample_len = workload.sample_len();
        let policy = coord.policy_name();
        let mut master = Self {
            announcer,
            transport,
            rx,
            log_rx,
            workload,
            engine,
            model_name,
            files,
            plan,
            coord,
            outputs,
            broker,
            failed_probes_seen: 0,
            last_status_write: Instant::now(),
            last_alive: None,
            deliveries: crate::delivery::Deliveries::new(cfg.model_delivery, policy),
            samples: crate::samples::SampleMirrors::new(cfg.cache_samples, sample_len),
            resumed_actions: Vec::new(),
            phases,
            startup: Some(startup),
            cfg,
        };
        // Workers get the current version in their packages.
        master.deliveries.broadcast_sent(master.coord.version());
        if resume {
            master.judge_checkpointed_version()?;
        }
        Ok(master)
    }

    /// The main loop; returns why it ended.
    async fn run_to_end(&mut self) -> anyhow::Result<StopReason> {
        let resumed = std::mem::take(&mut self.resumed_actions);
        if let Some(reason) = self.execute(resumed).await? {
            return Ok(reason);
        }
        let mut next_tick = Instant::now();
        loop {
            // The tick first: at start, the first "alive" goes out before
            // the first wait (workers that started first register at it).
            if Instant::now() >= next_tick || self.coord.training_started().is_none() {
                next_tick = Instant::now() + Duration::from_millis(200);
                let failed = self.broker.failed.load(Ordering::Relaxed);
                let mut ticks = Vec::new();
                if failed != self.failed_probes_seen {
                    self.failed_probes_seen = failed;
                    ticks.push(false);
                }
                ticks.push(self.broker.up.load(Ordering::Relaxed));
                for broker_reachable in ticks {
                    let actions = self
                        .coord
                        .handle(Event::Tick { broker_reachable }, Instant::now());
                    if let Some(reason) = self.execute(actions).await? {
                        return Ok(reason);
                    }
                }
                self.write_status(false);
                self.say_alive().await;
            }
            self.drain_own_logs();
            let wait = if self.coord.training_started().is_none() {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(200)
            };
            let delivery = tokio::select! {
                d = self.rx.recv_timeout(wait) => d.context("read status/updates/logs")?,
                _ = tokio::signal::ctrl_c() => return Ok(StopReason::Interrupted),
            };
            if let Some(d) = delivery {
                let received = Instant::now();
                if let Some(event) = self.event_of(d) {
                    let update = match &event {
                        Event::Update { sender, update, .. } => {
                            Some((sender.clone(), update.timing))
                        }
                        _ => None,
                    };
                    let actions = self.coord.handle(event, Instant::now());
                    if let Some((sender, timing)) = update {
                        let closed = actions
                            .iter()
                            .any(|a| matches!(a, Action::NewVersion { .. }));
                        self.phases.update_handled(
                            &sender,
                            timing,
                            received,
                            Instant::now(),
                            closed,
                        );
                    }
                    if let Some(reason) = self.execute(actions).await? {
                        return Ok(reason);
                    }
                }
            }
        }
    }

    /// Tells the workers the master is alive, every `alive_secs`, while the
    /// broker answers (a failure is logged; the next one tries again).
    async fn say_alive(&mut self) {
        let due = self
            .last_alive
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.cfg.alive_secs));
        if !due || !self.broker.up.load(Ordering::Relaxed) {
            return;
        }
        self.last_alive = Some(Instant::now());
        let msg = ControlMessage::Alive {
            version: self.coord.version(),
        };
        if let Err(e) = self.send_control(&msg).await {
            tracing::warn!("could not say alive: {e:#}");
        }
    }

    /// Decodes a delivery into an event; logs go straight to the central log.
    fn event_of(&mut self, d: Delivery) -> Option<Event> {
        let rejected = |e: protocol::ProtocolError, d: &Delivery| Event::Rejected {
            reason: e.reason().to_string(),
            sender: d.sender.clone(),
            detail: e.to_string(),
        };
        match d.kind {
            MessageKind::Status => Some(match d.decode::<StatusMessage>(SMALL_LIMIT) {
                Ok(msg) => Event::Status {
                    sender: d.sender.clone(),
                    msg,
                },
                Err(e) => rejected(e, &d),
            }),
            MessageKind::Update => {
                let limit = (self.coord.global().len() as u64) * 4 + 4096;
                Some(match d.decode::<UpdateDelta>(limit) {
                    Ok(update) => Event::Update {
                        sender: d.sender.clone(),
                        sequence: d.sequence,
                        position: position_of(&d),
                        update,
                    },
                    Err(e) => rejected(e, &d),
                })
            }
            MessageKind::Log => match d.decode::<LogBatch>(SMALL_LIMIT) {
                Ok(batch) => {
                    for mut record in batch {
                        // The envelope's sender is authenticated (with a key); the record's node field is not.
                        record.node = d.sender.clone();
                        self.outputs.central_log(&record);
                    }
                    None
                }
                Err(e) => Some(rejected(e, &d)),
            },
            other => Some(Event::Rejected {
                reason: "unexpected_kind".into(),
                sender: d.sender.clone(),
                detail: format!("{other:?} record on {}", d.topic),
            }),
        }
    }

    /// Carries out actions in order (a new version's evaluation may bring
    /// more); returns the first stop.
    async fn execute(&mut self, actions: Vec<Action>) -> anyhow::Result<Option<StopReason>> {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Stop(reason) => return Ok(Some(reason)),
                Action::Welcome {
                    worker_id,
                    incarnation,
                } => {
                    let msg = ControlMessage::Welcome {
                        worker_id,
                        incarnation,
                    };
                    self.send_control(&msg).await.context("send welcome")?;
                }
                Action::Unknown { worker_id } => {
                    self.send_control(&ControlMessage::Unknown { worker_id })
                        .await
                        .context("tell a worker to register again")?;
                }
                Action::RecordInitialVersion => {
                    if let Some(s) = self.startup.as_mut() {
                        s.step("registrations");
                    }
                    self.phases.training_started(Instant::now());
                    let test = self.evaluate()?;
                    tracing::info!(
                        workers = self.coord.workers().active_ids().len(),
                        "training starts: version 0 test accuracy {:.4}, loss {:.4}",
                        test.accuracy,
                        test.loss
                    );
                    self.record_version(test, "")?;
                    if let Some(s) = self.startup.as_mut() {
                        s.step("version 0 evaluated");
                    }
                    let _ = self.coord.evaluated(test, Instant::now());
                }
                Action::SendPackage { worker } => self.send_package(&worker).await?,
                Action::SendShard {
                    worker,
                    shard,
                    round,
                } => {
                    // The shards queued next to this one (allocation
                    // records between them are written on the way) go out
                    // together.
                    let mut batch = vec![(worker, shard, round)];
                    while matches!(
                        queue.front(),
                        Some(Action::SendShard { .. } | Action::RecordAllocations(_))
                    ) {
                        match queue.pop_front() {
                            Some(Action::SendShard {
                                worker,
                                shard,
                                round,
                            }) => batch.push((worker, shard, round)),
                            Some(Action::RecordAllocations(records)) => {
                                self.record_allocations(records)?
                            }
                            _ => {}
                        }
                    }
                    self.send_shards(batch).await?;
                }
                Action::RecordAllocations(records) => self.record_allocations(records)?,
                Action::ResendWhole { worker, shard_id } => {
                    self.resend_whole(worker, shard_id).await?
                }
                Action::NewVersion {
                    version,
                    by,
                    commit,
                } => {
                    let more = self.new_version(version, &by, commit).await?;
                    for (i, a) in more.into_iter().enumerate() {
                        queue.insert(i, a);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Evaluates, broadcasts and checkpoints a new version, then commits the
    /// offsets it covers and records it.
    async fn new_version(
        &mut self,
        version: u64,
        by: &[String],
        commit: Option<Delivery>,
    ) -> anyhow::Result<Vec<Action>> {
        let t0 = Instant::now();
        self.engine.set_parameters(self.coord.global())?;
        let test = self.evaluate()?;
        let evaluated = Instant::now();
        self.broadcast(version).await?;
        let checkpoint_start = Instant::now();
        checkpoint::save(&self.outputs.run_dir(), &self.coord.checkpoint())?;
        let checkpointed = Instant::now();
        if let Some(d) = commit {
            if let Err(e) = self.rx.commit(&d) {
                tracing::warn!("offset commit failed (will be retried with the next version): {e}");
            }
        }
        let by = by.join("+");
        self.record_version(test, &by)?;
        self.phases.version_done(
            version,
            t0,
            evaluated - t0,
            checkpointed - checkpoint_start,
            checkpointed.elapsed(),
        )?;
        tracing::info!(
            version,
            from = %by,
            "global version {version}: test accuracy {:.4}, loss {:.4}",
            test.accuracy,
            test.loss
        );
        Ok(self.coord.evaluated(test, Instant::now()))
    }

    fn record_version(&mut self, test: TestResult, by: &str) -> anyhow::Result<()> {
        self.outputs.record_version(
            self.coord.version(),
            test,
            self.transport.metrics().snapshot(),
            self.coord.accepted(),
            self.coord.rejected_total(),
            by,
        )
    }

    async fn send_control(&self, msg: &ControlMessage) -> anyhow::Result<()> {
        let topics = self.transport.topics().clone();
        self.transport
            .send(&topics.control(), MASTER_ID, MessageKind::Control, msg)
            .await?;
        Ok(())
    }

    /// On resume, evaluates the checkpointed global as if it were new: a
    /// crash between a version's checkpoint and its metrics row left that
    /// row missing (it is written now, so metrics.csv has every version
    /// once), and a master killed after reaching its goal but before
    /// writing the summary stops at once instead of waiting for workers
    /// it already sent home.
    fn judge_checkpointed_version(&mut self) -> anyhow::Result<()> {
        let version = self.coord.version();
        let test = self.evaluate()?;
        let missing = match self.outputs.last_recorded_version() {
            Some(last) => last < version,
            None => version > 0,
        };
        if missing {
            tracing::warn!(
                version,
                "version {version} was checkpointed but is not in metrics.csv (the master died in between): recording it now"
            );
            let by = self.coord.last_applied_by().unwrap_or_default();
            self.record_version(test, &by)?;
        }
        self.resumed_actions = self.coord.evaluated(test, Instant::now());
        Ok(())
    }

    fn evaluate(&mut self) -> anyhow::Result<TestResult> {
        let test = self
            .workload
            .evaluate(&mut self.engine, self.cfg.model.eval_batch_size)?;
        self.outputs.progress(
            self.coord.version(),
            test,
            self.coord.accepted(),
            self.coord.rejected_total(),
            &self.transport.metrics().snapshot(),
            self.coord.workers().active_ids().len(),
        );
        Ok(test)
    }

    fn record_allocations(
        &mut self,
        records: Vec<crate::allocation::AllocationRecord>,
    ) -> anyhow::Result<()> {
        for record in records {
            self.outputs.allocation(&record)?;
        }
        Ok(())
    }

    fn drain_own_logs(&mut self) {
        while let Ok(record) = self.log_rx.try_recv() {
            self.outputs.central_log(&record);
        }
    }

    fn write_status(&mut self, force: bool) {
        if !force && self.last_status_write.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_status_write = Instant::now();
        self.outputs
            .write_status(self.coord.workers(), self.coord.version());
    }

    /// Tells the workers to stop and writes the final outputs.
    async fn finish(&mut self, outcome: anyhow::Result<StopReason>) -> anyhow::Result<ExitCode> {
        let (reason, failure, failed) = match outcome {
            Ok(r) => (r.to_string(), None, r.is_failure()),
            Err(e) => (format!("error: {e:#}"), Some(e), true),
        };
        tracing::info!("run ends: {reason}");
        if let Some(a) = self.announcer.take() {
            a.close(Duration::from_secs(5)).await;
        }
        let topics = self.transport.topics().clone();
        let stop = ControlMessage::Stop {
            reason: reason.clone(),
        };
        if let Err(e) = self
            .transport
            .send(&topics.control(), MASTER_ID, MessageKind::Control, &stop)
            .await
        {
            tracing::warn!("could not tell workers to stop: {e}");
        }
        let _ = self.transport.flush(Duration::from_secs(10));
        // Give the workers a moment to forward their last log lines.
        let drain_until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < drain_until {
            match self.rx.recv_timeout(Duration::from_millis(200)).await {
                Ok(Some(d)) if d.kind == MessageKind::Log => {
                    let _ = self.event_of(d);
                }
                _ => {}
            }
        }
        self.drain_own_logs();
        self.write_status(true);
        let summary = SummaryInputs {
            cfg: &self.cfg,
            policy: self.coord.policy_name(),
            stop_reason: &reason,
            version: self.coord.version(),
            metrics: self.transport.metrics().snapshot(),
            rejected: self.coord.rejected(),
            accepted: self.coord.accepted(),
            workers: self.coord.workers(),
        };
        let paths = self.outputs.finish(summary)?;
        println!("{paths}");
        match failure {
            Some(e) => Err(e),
            None if reason == StopReason::Interrupted.to_string() => Ok(ExitCode::from(130)),
            None if failed => {
                eprintln!("master: the run failed: {reason}");
                Ok(ExitCode::from(2))
            }
            None => Ok(ExitCode::SUCCESS),
        }
    }
}

/// A delivery's position without its payload, for committing later.
fn position_of(d: &Delivery) -> Delivery {
    Delivery {
        payload: Vec::new(),
        sender: d.sender.clone(),
        topic: d.topic.clone(),
        ..*d
    }
}

/// Probes the broker every second in the background.
fn spawn_broker_probe(transport: &Transport, health: Arc<BrokerHealth>) {
    let probe = transport.probe();
    tokio::spawn(async move {
        loop {
            let ok = probe.reachable(Duration::from_secs(2)).await;
            if !ok {
                health.failed.fetch_add(1, Ordering::Relaxed);
            }
            health.up.store(ok, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
