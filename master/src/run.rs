//! `master run`: the parameter server's event loop.
//!
//! 1. Load the dataset, the artifacts and an evaluation engine; connect.
//! 2. Wait for `min_workers` registrations (timeout from config).
//! 3. Give every worker its package (artifacts, global weights, plan,
//!    validation split) and a first shard; from then on, react to events:
//!    registrations, heartbeats, round reports (→ next shard, sized by the
//!    allocator, when the policy allows), updates (→ admitted, handed to the
//!    policy, aggregated into new versions, evaluated, broadcast,
//!    checkpointed, then the offset committed), logs (→ centralized log).
//! 4. Stop on target accuracy, patience, max versions, wall-clock budget or
//!    Ctrl-C; tell the workers; write the summary and the plot.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{
    self, Assignment, ControlMessage, GlobalModel, LogBatch, LogRecord, ModelPackage, Registration,
    RoundReport, ShardAssignment, StatusMessage, TrainingPlan, UpdateDelta,
};
use common::transport::{Delivery, Receiver, StartAt, Transport};
use tokio::sync::mpsc;

use crate::aggregation::{admit_update, UpdateHeader, UpdateLedger};
use crate::allocation::ShardAllocator;
use crate::checkpoint;
use crate::config::MasterConfig;
use crate::policy::{registry as policy_registry, AcceptedUpdate, PolicyContext, SyncPolicy};
use crate::registry::{Joined, WorkerRegistry};
use crate::run_outputs::{RunOutputs, SummaryInputs};
use crate::workload::{self, TestResult, Workload};

/// Node id of the master in envelopes and logs.
pub const MASTER_ID: &str = "master";

/// Largest status or log message accepted (bytes).
const SMALL_LIMIT: u64 = 1024 * 1024;

/// Runs the master until the run ends.
pub async fn run(cfg: MasterConfig) -> anyhow::Result<ExitCode> {
    let (log_tx, log_rx) = mpsc::channel::<LogRecord>(4096);
    common::logging::init(&cfg.logging.level, MASTER_ID, Some(log_tx));
    let mut master = Master::start(cfg, log_rx).await?;
    let outcome = master.run_to_end().await;
    master.finish(outcome).await
}

/// Why the run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// Test accuracy reached the target.
    TargetReached,
    /// Test loss did not improve for the patience.
    Patience,
    /// Max versions reached.
    MaxVersions,
    /// Wall-clock budget spent.
    WallClock,
    /// No worker left for too long.
    NoWorkers,
    /// Ctrl-C.
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::TargetReached => "target accuracy reached",
            StopReason::Patience => "no test-loss improvement within patience",
            StopReason::MaxVersions => "max versions reached",
            StopReason::WallClock => "wall-clock budget spent",
            StopReason::NoWorkers => "no active workers",
            StopReason::Interrupted => "interrupted",
        })
    }
}

/// The master's state during a run.
struct Master {
    cfg: MasterConfig,
    transport: Transport,
    rx: Receiver,
    log_rx: mpsc::Receiver<LogRecord>,
    workload: Workload,
    engine: common::engine::Engine,
    model_name: String,
    files: Vec<protocol::ArtifactFile>,
    plan: TrainingPlan,
    workers: WorkerRegistry,
    allocator: ShardAllocator,
    policy: Box<dyn SyncPolicy>,
    ledger: UpdateLedger,
    global: Vec<f32>,
    version: u64,
    outputs: RunOutputs,
    training_started: Option<Instant>,
    best_loss: f64,
    best_loss_version: u64,
    last_test: Option<TestResult>,
    rejected: BTreeMap<String, u64>,
    accepted: u64,
    /// Workers that finished a round the policy does not let start the next one yet.
    parked: BTreeSet<String>,
    /// The newest update delivery not yet committed (committed after the
    /// version it went into is checkpointed).
    uncommitted: Option<Delivery>,
    last_status_write: Instant,
}

impl Master {
    async fn start(cfg: MasterConfig, log_rx: mpsc::Receiver<LogRecord>) -> anyhow::Result<Self> {
        let workload = Workload::load(&cfg)?;
        let mut engine = workload::evaluation_engine(&cfg)?;
        let (model_name, files) = workload::artifact_files(&cfg.model.artifacts)?;
        let global = engine.parameters().to_vec();
        engine.set_parameters(&global)?;
        let policy = policy_registry(&cfg.policy, &cfg.aggregation)?;
        let allocator = ShardAllocator::new(cfg.allocation.clone(), workload.train_len())?;
        let plan = TrainingPlan {
            epochs: cfg.training.epochs,
            batch_size: cfg.training.batch_size,
            optimizer_json: serde_json::to_string(&cfg.training.optimizer)?,
            gate: cfg.gate.clone(),
            gate_updates: policy.workers_gate_updates(),
            seed: cfg.training.seed,
        };
        let outputs = RunOutputs::create(&cfg, policy.name())?;
        let transport = Transport::connect(&cfg.kafka, &cfg.run_id, MASTER_ID)
            .await
            .context("connect to kafka")?;
        transport
            .create_run_topics()
            .await
            .context("create run topics")?;
        let topics = transport.topics().clone();
        // From "now": a restarted master starts a new run; records of an
        // earlier run under the same id are not replayed.
        let rx = transport
            .receiver(
                &[topics.status(), topics.updates(), topics.logs()],
                &format!("master-{}", cfg.run_id),
                StartAt::End,
            )
            .await
            .context("subscribe to status, updates and logs")?;
        tracing::info!(
            run = %cfg.run_id,
            policy = policy.name(),
            model = %model_name,
            parameters = global.len(),
            train = workload.train_len(),
            test = workload.test_len(),
            "master ready; waiting for {} worker(s)",
            cfg.min_workers
        );
        Ok(Self {
            transport,
            rx,
            log_rx,
            workload,
            engine,
            model_name,
            files,
            plan,
            workers: WorkerRegistry::default(),
            allocator,
            policy,
            ledger: UpdateLedger::new(),
            global,
            version: 0,
            outputs,
            training_started: None,
            best_loss: f64::INFINITY,
            best_loss_version: 0,
            last_test: None,
            rejected: BTreeMap::new(),
            accepted: 0,
            parked: BTreeSet::new(),
            uncommitted: None,
            last_status_write: Instant::now(),
            cfg,
        })
    }

    /// The main loop; returns why it ended.
    async fn run_to_end(&mut self) -> anyhow::Result<StopReason> {
        let registration_deadline =
            Instant::now() + Duration::from_secs(self.cfg.registration_timeout_secs);
        let mut last_worker_seen = Instant::now();
        loop {
            self.drain_own_logs();
            let delivery = tokio::select! {
                d = self.rx.recv_timeout(Duration::from_millis(200)) => d.context("read status/updates/logs")?,
                _ = tokio::signal::ctrl_c() => return Ok(StopReason::Interrupted),
            };
            if let Some(d) = delivery {
                if let Some(reason) = self.handle(d).await? {
                    return Ok(reason);
                }
            }
            if self.training_started.is_none() {
                if self.workers.active_ids().len() >= self.cfg.min_workers {
                    self.begin_training().await?;
                } else if Instant::now() >= registration_deadline {
                    anyhow::bail!(
                        "only {} of {} workers registered within {} s",
                        self.workers.active_ids().len(),
                        self.cfg.min_workers,
                        self.cfg.registration_timeout_secs
                    );
                }
                continue;
            }
            self.check_liveness().await?;
            self.resume_parked().await?;
            self.write_status(false);
            if !self.workers.active_ids().is_empty() {
                last_worker_seen = Instant::now();
            } else if last_worker_seen.elapsed()
                > Duration::from_secs(self.cfg.registration_timeout_secs)
            {
                return Ok(StopReason::NoWorkers);
            }
            if let Some(t) = self.training_started {
                if t.elapsed() > Duration::from_secs(self.cfg.stop.max_wall_secs) {
                    return Ok(StopReason::WallClock);
                }
            }
        }
    }

    /// Sends packages and first shards to every registered worker.
    async fn begin_training(&mut self) -> anyhow::Result<()> {
        self.training_started = Some(Instant::now());
        let test = self.evaluate()?;
        tracing::info!(
            workers = self.workers.active_ids().len(),
            "training starts: version 0 test accuracy {:.4}, loss {:.4}",
            test.accuracy,
            test.loss
        );
        self.outputs.record_version(
            self.version,
            test,
            self.transport.metrics().snapshot(),
            self.accepted,
            self.rejected_total(),
            "",
        )?;
        for id in self.workers.active_ids() {
            self.send_package(&id).await?;
            self.send_next_shard(&id).await?;
        }
        Ok(())
    }

    fn ctx_workers(&self) -> BTreeSet<String> {
        self.workers.active_ids()
    }

    /// Dispatches one delivery. Returns a stop reason when the run should end.
    async fn handle(&mut self, d: Delivery) -> anyhow::Result<Option<StopReason>> {
        match d.kind {
            MessageKind::Status => {
                match d.decode::<StatusMessage>(SMALL_LIMIT) {
                    Ok(msg) => self.on_status(&d.sender, msg).await?,
                    Err(e) => self.reject(e.reason(), &d.sender, &e.to_string()),
                }
                Ok(None)
            }
            MessageKind::Update => {
                let limit = (self.global.len() as u64) * 4 + 4096;
                match d.decode::<UpdateDelta>(limit) {
                    Ok(update) => self.on_update(&d, update).await,
                    Err(e) => {
                        self.reject(e.reason(), &d.sender, &e.to_string());
                        Ok(None)
                    }
                }
            }
            MessageKind::Log => {
                match d.decode::<LogBatch>(SMALL_LIMIT) {
                    Ok(batch) => {
                        for mut record in batch {
                            // The envelope's sender is authenticated (with a key); the record's node field is not.
                            record.node = d.sender.clone();
                            self.outputs.central_log(&record);
                        }
                    }
                    Err(e) => self.reject(e.reason(), &d.sender, &e.to_string()),
                }
                Ok(None)
            }
            other => {
                self.reject(
                    "unexpected_kind",
                    &d.sender,
                    &format!("{other:?} record on {}", d.topic),
                );
                Ok(None)
            }
        }
    }

    async fn on_status(&mut self, sender: &str, msg: StatusMessage) -> anyhow::Result<()> {
        match msg {
            StatusMessage::Register(reg) => self.on_register(sender, reg).await,
            StatusMessage::Heartbeat {
                worker_id,
                incarnation,
                ..
            } => {
                if worker_id != sender || !self.workers.touch(&worker_id, incarnation) {
                    // A heartbeat from an unknown or old incarnation: it must register again.
                    tracing::debug!(worker = %worker_id, "heartbeat from an unregistered incarnation");
                }
                Ok(())
            }
            StatusMessage::RoundReport(report) => {
                if report.worker_id != sender {
                    self.reject("sender_mismatch", sender, "round report for another worker");
                    return Ok(());
                }
                self.on_round_report(report).await
            }
            StatusMessage::Goodbye { worker_id, reason } => {
                if worker_id == sender {
                    tracing::info!(worker = %worker_id, %reason, "worker left");
                    self.worker_gone(&worker_id);
                }
                Ok(())
            }
        }
    }

    async fn on_register(&mut self, sender: &str, reg: Registration) -> anyhow::Result<()> {
        if reg.worker_id != sender {
            self.reject(
                "sender_mismatch",
                sender,
                &format!("registration for `{}`", reg.worker_id),
            );
            return Ok(());
        }
        if !(reg.slowdown.is_finite() && reg.slowdown >= 1.0) {
            self.reject(
                "bad_registration",
                sender,
                &format!("slowdown {}", reg.slowdown),
            );
            return Ok(());
        }
        let id = reg.worker_id.clone();
        let incarnation = reg.incarnation;
        let joined = self.workers.register(reg.clone());
        let welcome = ControlMessage::Welcome {
            worker_id: id.clone(),
            incarnation,
        };
        let topics = self.transport.topics().clone();
        self.transport
            .send(&topics.control(), MASTER_ID, MessageKind::Control, &welcome)
            .await
            .context("send welcome")?;
        if joined == Joined::Repeat {
            return Ok(());
        }
        tracing::info!(
            worker = %id,
            host = %reg.hostname,
            arch = %reg.arch,
            cores = reg.cores,
            slowdown = reg.slowdown,
            "worker {}: {}",
            if joined == Joined::New { "registered" } else { "rejoined" },
            id
        );
        let ctx_workers = self.ctx_workers();
        let ctx = PolicyContext {
            version: self.version,
            active_workers: &ctx_workers,
        };
        if joined == Joined::Rejoined {
            let returned = self.allocator.release_worker(&id);
            if returned > 0 {
                tracing::info!(worker = %id, samples = returned, "shard of the previous incarnation returned to the pool");
            }
            self.policy.on_worker_gone(&ctx, &id);
        }
        self.policy.on_worker_joined(&ctx, &id);
        self.parked.remove(&id);
        if self.training_started.is_some() {
            self.send_package(&id).await?;
            self.send_next_shard(&id).await?;
        }
        Ok(())
    }

    async fn on_round_report(&mut self, report: RoundReport) -> anyhow::Result<()> {
        if self
            .workers
            .current(&report.worker_id, report.incarnation)
            .is_none()
        {
            self.reject(
                "unknown_incarnation",
                &report.worker_id,
                "round report from an unregistered incarnation",
            );
            return Ok(());
        }
        if !(report.round_secs.is_finite()
            && report.round_secs >= 0.0
            && report.validation_loss.is_finite())
        {
            self.reject(
                "bad_report",
                &report.worker_id,
                "non-finite numbers in round report",
            );
            return Ok(());
        }
        self.workers.record_round(&report);
        if let Err(e) = self.allocator.record_round(
            &report.worker_id,
            report.samples as usize,
            report.round_secs,
        ) {
            tracing::warn!(worker = %report.worker_id, "round not used for allocation: {e:#}");
        }
        tracing::info!(
            worker = %report.worker_id,
            round = report.round,
            samples = report.samples,
            round_secs = format!("{:.2}", report.round_secs),
            loss = format!("{:.4}", report.validation_loss),
            major = report.major,
            "round report"
        );
        let ctx_workers = self.ctx_workers();
        let ctx = PolicyContext {
            version: self.version,
            active_workers: &ctx_workers,
        };
        self.policy.on_round_end(&ctx, &report.worker_id);
        if self.policy.may_start_round(&ctx, &report.worker_id) {
            self.send_next_shard(&report.worker_id).await?;
        } else {
            self.parked.insert(report.worker_id.clone());
        }
        Ok(())
    }

    async fn on_update(
        &mut self,
        d: &Delivery,
        update: UpdateDelta,
    ) -> anyhow::Result<Option<StopReason>> {
        if update.worker_id != d.sender {
            self.reject("sender_mismatch", &d.sender, "update for another worker");
            return Ok(None);
        }
        if self
            .workers
            .current(&update.worker_id, update.incarnation)
            .is_none()
        {
            self.reject(
                "unknown_incarnation",
                &d.sender,
                "update from an unregistered incarnation",
            );
            return Ok(None);
        }
        let header = UpdateHeader {
            worker: &update.worker_id,
            incarnation: update.incarnation,
            sequence: d.sequence,
            base_version: update.base_version,
            samples: update.samples,
            loss: update.validation_loss,
        };
        let ctx_workers = self.ctx_workers();
        match admit_update(
            &self.cfg.aggregation,
            &mut self.ledger,
            self.version,
            self.global.len(),
            &header,
            &update.delta,
        ) {
            Err(reason) => {
                let detail = format!(
                    "update of round {} (incarnation {}, sequence {}, base version {}): {reason}",
                    update.round, update.incarnation, d.sequence, update.base_version
                );
                self.reject(reason.label(), &d.sender, &detail);
                if let Some(w) = self.workers.get_mut(&update.worker_id) {
                    w.stats.updates_rejected += 1;
                }
                let ctx = PolicyContext {
                    version: self.version,
                    active_workers: &ctx_workers,
                };
                self.policy.on_update_rejected(&ctx, &update.worker_id);
            }
            Ok(staleness) => {
                // One line per admitted update: with the rejections above,
                // every update the master read is accounted for by round.
                tracing::info!(
                    worker = %update.worker_id,
                    incarnation = update.incarnation,
                    round = update.round,
                    sequence = d.sequence,
                    base_version = update.base_version,
                    staleness,
                    "update admitted"
                );
                let ctx = PolicyContext {
                    version: self.version,
                    active_workers: &ctx_workers,
                };
                self.policy.on_update(
                    &ctx,
                    AcceptedUpdate {
                        worker: update.worker_id.clone(),
                        incarnation: update.incarnation,
                        sequence: d.sequence,
                        base_version: update.base_version,
                        samples: update.samples,
                        loss: update.validation_loss,
                        delta: update.delta,
                    },
                );
                self.uncommitted = Some(position_of(d));
            }
        }
        self.aggregate_ready().await
    }

    /// Aggregates while the policy is ready; each aggregation is one version.
    async fn aggregate_ready(&mut self) -> anyhow::Result<Option<StopReason>> {
        loop {
            let ctx_workers = self.ctx_workers();
            let ctx = PolicyContext {
                version: self.version,
                active_workers: &ctx_workers,
            };
            if !self.policy.ready_to_aggregate(&ctx) {
                return Ok(None);
            }
            let applied = self.policy.aggregate(&ctx, &mut self.global)?;
            self.version += 1;
            let mut by = Vec::new();
            for a in &applied {
                self.ledger.record_applied(a.ledger_entry(self.version));
                if let Some(w) = self.workers.get_mut(&a.worker) {
                    w.stats.updates_accepted += 1;
                }
                self.accepted += 1;
                by.push(a.worker.clone());
            }
            self.engine.set_parameters(&self.global)?;
            let test = self.evaluate()?;
            let global = GlobalModel {
                version: self.version,
                parameters: self.global.clone(),
            };
            let topics = self.transport.topics().clone();
            self.transport
                .send(&topics.model(), MASTER_ID, MessageKind::Model, &global)
                .await
                .context("broadcast global model")?;
            checkpoint::save(&self.outputs.run_dir(), self.version, &self.global)?;
            if let Some(d) = self.uncommitted.take() {
                if let Err(e) = self.rx.commit(&d) {
                    tracing::warn!(
                        "offset commit failed (will be retried with the next version): {e}"
                    );
                }
            }
            self.outputs.record_version(
                self.version,
                test,
                self.transport.metrics().snapshot(),
                self.accepted,
                self.rejected_total(),
                &by.join("+"),
            )?;
            tracing::info!(
                version = self.version,
                from = %by.join("+"),
                "global version {}: test accuracy {:.4}, loss {:.4}",
                self.version,
                test.accuracy,
                test.loss
            );
            if let Some(reason) = self.stop_reason(test) {
                return Ok(Some(reason));
            }
        }
    }

    fn stop_reason(&mut self, test: TestResult) -> Option<StopReason> {
        if test.loss < self.best_loss {
            self.best_loss = test.loss;
            self.best_loss_version = self.version;
        }
        let stop = &self.cfg.stop;
        if stop.target_accuracy.is_some_and(|t| test.accuracy >= t) {
            return Some(StopReason::TargetReached);
        }
        if stop
            .patience_versions
            .is_some_and(|p| self.version - self.best_loss_version >= p)
        {
            return Some(StopReason::Patience);
        }
        if self.version >= stop.max_versions {
            return Some(StopReason::MaxVersions);
        }
        None
    }

    fn evaluate(&mut self) -> anyhow::Result<TestResult> {
        let test = self
            .workload
            .evaluate(&mut self.engine, self.cfg.model.eval_batch_size)?;
        self.last_test = Some(test);
        self.outputs.progress(
            self.version,
            test,
            self.accepted,
            self.rejected_total(),
            &self.transport.metrics().snapshot(),
            self.workers.active_ids().len(),
        );
        Ok(test)
    }

    async fn send_package(&mut self, id: &str) -> anyhow::Result<()> {
        let topics = self.transport.topics().clone();
        let shard_topic = topics.shard(id);
        self.transport
            .create_topics(&[self.transport.topic_spec(shard_topic.clone(), 1)])
            .await
            .context("create shard topic")?;
        let package = Assignment::Package(ModelPackage {
            model: self.model_name.clone(),
            files: self.files.clone(),
            global: GlobalModel {
                version: self.version,
                parameters: self.global.clone(),
            },
            plan: self.plan.clone(),
            validation: self.workload.validation_bytes(id)?,
        });
        let report = self
            .transport
            .send(&shard_topic, MASTER_ID, MessageKind::Shard, &package)
            .await
            .context("send model package")?;
        tracing::info!(worker = %id, bytes = report.bytes, records = report.records, version = self.version, "model package sent");
        Ok(())
    }

    async fn send_next_shard(&mut self, id: &str) -> anyhow::Result<()> {
        let Some(round) = self
            .workers
            .get_mut(id)
            .filter(|w| w.active)
            .map(|w| w.next_round)
        else {
            return Ok(());
        };
        let shard = self.allocator.next_shard(id, round);
        for record in self.allocator.drain_records() {
            self.outputs.allocation(&record)?;
        }
        let data = self.workload.shard_bytes(&shard.indices)?;
        let size = shard.indices.len() as u64;
        let msg = Assignment::Shard(ShardAssignment {
            shard_id: shard.id,
            round,
            data,
        });
        let topics = self.transport.topics().clone();
        self.transport
            .send(&topics.shard(id), MASTER_ID, MessageKind::Shard, &msg)
            .await
            .context("send shard")?;
        if let Some(w) = self.workers.get_mut(id) {
            w.busy = true;
            w.stats.shards_received += 1;
            w.stats.shard_samples_total += size;
        }
        self.parked.remove(id);
        Ok(())
    }

    async fn resume_parked(&mut self) -> anyhow::Result<()> {
        if self.parked.is_empty() {
            return Ok(());
        }
        let ctx_workers = self.ctx_workers();
        let ready: Vec<String> = {
            let ctx = PolicyContext {
                version: self.version,
                active_workers: &ctx_workers,
            };
            self.parked
                .iter()
                .filter(|w| ctx_workers.contains(*w) && self.policy.may_start_round(&ctx, w))
                .cloned()
                .collect()
        };
        for id in ready {
            self.send_next_shard(&id).await?;
        }
        self.parked.retain(|w| ctx_workers.contains(w));
        Ok(())
    }

    async fn check_liveness(&mut self) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(self.cfg.heartbeat_timeout_secs);
        for id in self.workers.silent(timeout) {
            tracing::warn!(worker = %id, "no heartbeat for {} s: worker marked gone, its shard returns to the pool", timeout.as_secs());
            self.worker_gone(&id);
        }
        // BSP may now be able to aggregate without the lost worker.
        if let Some(reason) = self.aggregate_ready().await? {
            tracing::info!("{reason}");
        }
        Ok(())
    }

    fn worker_gone(&mut self, id: &str) {
        if !self.workers.mark_gone(id) {
            return;
        }
        let returned = self.allocator.release_worker(id);
        let ctx_workers = self.ctx_workers();
        let ctx = PolicyContext {
            version: self.version,
            active_workers: &ctx_workers,
        };
        self.policy.on_worker_gone(&ctx, id);
        self.parked.remove(id);
        tracing::info!(worker = %id, returned_samples = returned, "worker gone");
    }

    fn reject(&mut self, reason: &str, sender: &str, detail: &str) {
        *self.rejected.entry(reason.to_string()).or_insert(0) += 1;
        tracing::warn!(sender, reason, "rejected: {detail}");
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
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
        self.outputs.write_status(&self.workers, self.version);
    }

    /// Tells the workers to stop and writes the final outputs.
    async fn finish(&mut self, outcome: anyhow::Result<StopReason>) -> anyhow::Result<ExitCode> {
        let (reason, failure) = match outcome {
            Ok(r) => (r.to_string(), None),
            Err(e) => (format!("error: {e:#}"), Some(e)),
        };
        tracing::info!("run ends: {reason}");
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
                    let _ = self.handle(d).await;
                }
                _ => {}
            }
        }
        self.drain_own_logs();
        self.write_status(true);
        let summary = SummaryInputs {
            cfg: &self.cfg,
            policy: self.policy.name(),
            stop_reason: &reason,
            version: self.version,
            metrics: self.transport.metrics().snapshot(),
            rejected: &self.rejected,
            accepted: self.accepted,
            workers: &self.workers,
        };
        let paths = self.outputs.finish(summary)?;
        println!("{paths}");
        match failure {
            Some(e) => Err(e),
            None if reason == StopReason::Interrupted.to_string() => Ok(ExitCode::from(130)),
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
