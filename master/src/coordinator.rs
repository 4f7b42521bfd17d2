//! The master's decisions as a state machine: events in, actions out, no
//! broker, no files, no clock of its own (time comes in with the events).
//!
//! [`crate::run`] is the I/O shell around it: it turns Kafka deliveries into
//! [`Event`]s, carries out the [`Action`]s (send, evaluate, broadcast,
//! checkpoint, commit, record) and reports evaluations back. Everything a
//! run decides — who is registered and alive, which shard goes where, which
//! update is admitted, when a version is made, when the run ends — is
//! decided here, so it is tested without a broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::protocol::{Registration, RoundReport, StatusMessage, UpdateDelta};
use common::transport::Delivery;

use crate::aggregation::{admit_update, UpdateHeader, UpdateLedger};
use crate::allocation::{AllocationMode, AllocationRecord, RoundCost, Shard, ShardAllocator};
use crate::config::MasterConfig;
use crate::policy::{registry as policy_registry, AcceptedUpdate, PolicyContext, SyncPolicy};
use crate::registry::{Joined, WorkerRegistry};
use crate::workload::TestResult;

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
    /// No new version for `stop.no_progress_secs` while workers were
    /// expected to make one.
    NoProgress {
        /// Seconds without a new version.
        secs: u64,
        /// What the master saw meanwhile.
        detail: String,
    },
    /// Too few workers registered in time.
    RegistrationTimeout {
        /// Workers that registered.
        registered: usize,
        /// Workers needed.
        needed: usize,
    },
    /// Ctrl-C.
    Interrupted,
}

impl StopReason {
    /// Whether the run ended as configured (exit 0) or failed to make
    /// progress (non-zero exit).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            StopReason::NoProgress { .. }
                | StopReason::NoWorkers
                | StopReason::RegistrationTimeout { .. }
        )
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::TargetReached => f.write_str("target accuracy reached"),
            StopReason::Patience => f.write_str("no test-loss improvement within patience"),
            StopReason::MaxVersions => f.write_str("max versions reached"),
            StopReason::WallClock => f.write_str("wall-clock budget spent"),
            StopReason::NoWorkers => f.write_str("no active workers"),
            StopReason::NoProgress { secs, detail } => {
                write!(
                    f,
                    "no progress: no new global version for {secs} s ({detail})"
                )
            }
            StopReason::RegistrationTimeout { registered, needed } => write!(
                f,
                "only {registered} of {needed} workers registered in time"
            ),
            StopReason::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// Something that happened, as the shell saw it.
#[derive(Debug)]
pub enum Event {
    /// A decoded status message from `sender` (the envelope's sender).
    Status {
        /// Authenticated sender.
        sender: String,
        /// The message.
        msg: StatusMessage,
    },
    /// A decoded update from `sender`.
    Update {
        /// Authenticated sender.
        sender: String,
        /// The envelope's sequence number.
        sequence: u64,
        /// The delivery's position (committed once the update is in a checkpoint).
        position: Delivery,
        /// The update.
        update: UpdateDelta,
    },
    /// A record the shell could not use (decode error, wrong kind...).
    Rejected {
        /// Counting label.
        reason: String,
        /// Who sent it.
        sender: String,
        /// What was wrong.
        detail: String,
    },
    /// Time passes; `broker_reachable` is the shell's latest probe.
    Tick {
        /// Whether the master can reach the broker.
        broker_reachable: bool,
    },
}

/// What the shell must do, in order.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Tell `worker_id` its registration was accepted.
    Welcome {
        /// The worker.
        worker_id: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// Tell `worker_id` the master does not know this incarnation: it must
    /// register again.
    Unknown {
        /// The worker.
        worker_id: String,
    },
    /// Evaluate version 0 and record it (training starts).
    RecordInitialVersion,
    /// Send the model package (artifacts, current global, plan, validation split).
    SendPackage {
        /// The worker.
        worker: String,
    },
    /// Send a data shard for `round`.
    SendShard {
        /// The worker.
        worker: String,
        /// The samples.
        shard: Shard,
        /// The round it is for.
        round: u64,
    },
    /// `worker` could not assemble `shard_id` from its sample cache: send
    /// that shard again, whole (see [`crate::samples`]).
    ResendWhole {
        /// The worker.
        worker: String,
        /// The shard.
        shard_id: u64,
    },
    /// Append allocation decisions to allocation.csv.
    RecordAllocations(Vec<AllocationRecord>),
    /// A new global version exists: evaluate it, broadcast it, checkpoint
    /// it, commit the offsets up to it, record it — then report the
    /// evaluation with [`Coordinator::evaluated`].
    NewVersion {
        /// The version.
        version: u64,
        /// Workers whose updates went into it.
        by: Vec<String>,
        /// Update position to commit after the checkpoint.
        commit: Option<Delivery>,
    },
    /// End the run.
    Stop(StopReason),
}

/// The master's decisions and the state they need.
pub struct Coordinator {
    cfg: MasterConfig,
    workers: WorkerRegistry,
    allocator: ShardAllocator,
    policy: Box<dyn SyncPolicy>,
    ledger: UpdateLedger,
    global: Vec<f32>,
    version: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    /// Workers that finished a round the policy does not let start the next one yet.
    parked: BTreeSet<String>,
    /// The newest update delivery not yet committed.
    uncommitted: Option<Delivery>,
    started: Instant,
    training_started: Option<Instant>,
    last_worker_seen: Instant,
    last_progress: Instant,
    best_loss: f64,
    best_loss_version: u64,
    broker_reachable: bool,
    /// The time of the event being handled.
    now: Instant,
}

impl Coordinator {
    /// A coordinator for `cfg` starting from `global` (version 0).
    pub fn new(
        cfg: MasterConfig,
        global: Vec<f32>,
        train_len: usize,
        now: Instant,
    ) -> anyhow::Result<Self> {
        let policy = policy_registry(&cfg.policy, &cfg.aggregation)?;
        let allocator = ShardAllocator::new(cfg.allocation.clone(), train_len)?;
        Ok(Self {
            cfg,
            workers: WorkerRegistry::default(),
            allocator,
            policy,
            ledger: UpdateLedger::new(),
            global,
            version: 0,
            accepted: 0,
            rejected: BTreeMap::new(),
            parked: BTreeSet::new(),
            uncommitted: None,
            started: now,
            training_started: None,
            last_worker_seen: now,
            last_progress: now,
            best_loss: f64::INFINITY,
            best_loss_version: 0,
            broker_reachable: true,
            now,
        })
    }

    /// The state a checkpoint holds (see [`crate::checkpoint::Checkpoint`]).
    pub fn checkpoint(&self) -> crate::checkpoint::Checkpoint {
        crate::checkpoint::Checkpoint {
            version: self.version,
            parameters: self.global.clone(),
            ledger: self.ledger.applied().to_vec(),
            workers: self.workers.snapshot(),
            allocator: self.allocator.snapshot(),
            accepted: self.accepted,
            rejected: self.rejected.clone(),
            best_loss: self.best_loss,
            best_loss_version: self.best_loss_version,
        }
    }

    /// A coordinator carrying on from `ckpt` (a restarted master): the
    /// version, weights, ledger, counters and what the allocator learned come
    /// back; every known worker must register again, keeping its id and
    /// statistics; training counts as started. Updates admitted but not yet
    /// applied at the checkpoint are read again from Kafka's committed
    /// offsets and admitted again; applied ones are refused by the ledger.
    pub fn resume(
        cfg: MasterConfig,
        ckpt: crate::checkpoint::Checkpoint,
        train_len: usize,
        now: Instant,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !ckpt.parameters.is_empty(),
            "the checkpoint holds no parameters"
        );
        let mut c = Self::new(cfg, ckpt.parameters, train_len, now)?;
        c.version = ckpt.version;
        c.ledger = UpdateLedger::from_applied(ckpt.ledger);
        c.workers = WorkerRegistry::restore(ckpt.workers, now);
        c.allocator.restore(ckpt.allocator);
        c.accepted = ckpt.accepted;
        c.rejected = ckpt.rejected;
        c.best_loss = ckpt.best_loss;
        c.best_loss_version = ckpt.best_loss_version;
        c.training_started = Some(now);
        Ok(c)
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Whether workers gate their updates (Hermes).
    pub fn workers_gate_updates(&self) -> bool {
        self.policy.workers_gate_updates()
    }

    /// The global parameters.
    pub fn global(&self) -> &[f32] {
        &self.global
    }

    /// The worker of the last applied update (who made the current
    /// version under hermes, ASP and SSP; the last of several under BSP).
    pub fn last_applied_by(&self) -> Option<String> {
        self.ledger.applied().last().map(|e| e.worker.clone())
    }

    /// The current global version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Updates applied so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Rejections by reason.
    pub fn rejected(&self) -> &BTreeMap<String, u64> {
        &self.rejected
    }

    /// Rejections, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// The workers.
    pub fn workers(&self) -> &WorkerRegistry {
        &self.workers
    }

    /// When training started.
    pub fn training_started(&self) -> Option<Instant> {
        self.training_started
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        match event {
            Event::Status { sender, msg } => self.on_status(&sender, msg, now, &mut out),
            Event::Update {
                sender,
                sequence,
                position,
                update,
            } => self.on_update(&sender, sequence, position, update, &mut out),
            Event::Rejected {
                reason,
                sender,
                detail,
            } => self.reject(&reason, &sender, &detail),
            Event::Tick { broker_reachable } => self.on_tick(broker_reachable, now, &mut out),
        }
        out
    }

    /// The evaluation of the newest version; returns what follows (another
    /// version if the policy is ready again, or the end of the run).
    pub fn evaluated(&mut self, test: TestResult, now: Instant) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        if test.loss < self.best_loss {
            self.best_loss = test.loss;
            self.best_loss_version = self.version;
        }
        if self.version == 0 {
            return out;
        }
        self.last_progress = now;
        let stop = &self.cfg.stop;
        let reason = if stop.target_accuracy.is_some_and(|t| test.accuracy >= t) {
            Some(StopReason::TargetReached)
        } else if stop
            .patience_versions
            .is_some_and(|p| self.version - self.best_loss_version >= p)
        {
            Some(StopReason::Patience)
        } else if self.version >= stop.max_versions {
            Some(StopReason::MaxVersions)
        } else {
            None
        };
        match reason {
            Some(r) => out.push(Action::Stop(r)),
            None => self.aggregate_next(&mut out),
        }
        out
    }

    fn on_tick(&mut self, broker_reachable: bool, now: Instant, out: &mut Vec<Action>) {
        if !broker_reachable {
            if self.broker_reachable {
                tracing::warn!("the broker is unreachable: nobody is declared gone while the master itself cannot hear them");
            }
            self.broker_reachable = false;
            return;
        }
        if !self.broker_reachable {
            // Back: what could not be heard meanwhile is not anyone's silence.
            tracing::info!("the broker is reachable again; liveness and progress clocks restart");
            self.workers.touch_all(now);
            self.last_progress = now;
            self.last_worker_seen = now;
            self.broker_reachable = true;
        }
        let Some(t0) = self.training_started else {
            if self.workers.active_ids().len() >= self.cfg.min_workers {
                self.begin_training(now, out);
            } else if now.duration_since(self.started)
                > Duration::from_secs(self.cfg.registration_timeout_secs)
            {
                out.push(Action::Stop(StopReason::RegistrationTimeout {
                    registered: self.workers.active_ids().len(),
                    needed: self.cfg.min_workers,
                }));
            }
            return;
        };
        let timeout = Duration::from_secs(self.cfg.heartbeat_timeout_secs);
        for id in self.workers.silent_at(now, timeout) {
            tracing::warn!(worker = %id, "no heartbeat for {} s: worker marked gone, its shard returns to the pool", timeout.as_secs());
            self.worker_gone(&id);
        }
        // BSP may now be able to aggregate without the lost worker.
        self.aggregate_next(out);
        if out.iter().any(|a| matches!(a, Action::NewVersion { .. })) {
            return;
        }
        self.resume_parked(out);
        if !self.workers.active_ids().is_empty() {
            self.last_worker_seen = now;
        } else if now.duration_since(self.last_worker_seen)
            > Duration::from_secs(self.cfg.registration_timeout_secs)
        {
            out.push(Action::Stop(StopReason::NoWorkers));
            return;
        }
        if now.duration_since(t0) > Duration::from_secs(self.cfg.stop.max_wall_secs) {
            out.push(Action::Stop(StopReason::WallClock));
            return;
        }
        let quiet = now.duration_since(self.last_progress);
        if self.cfg.stop.no_progress_secs > 0
            && quiet > Duration::from_secs(self.cfg.stop.no_progress_secs)
        {
            let active = self.workers.active_ids();
            let busy = self
                .workers
                .all()
                .filter(|(_, w)| w.active && w.busy)
                .count();
            out.push(Action::Stop(StopReason::NoProgress {
                secs: quiet.as_secs(),
                detail: format!(
                    "{} active worker(s), {busy} with a shard out, {} update(s) pending in the policy, version {}",
                    active.len(),
                    self.policy.pending(),
                    self.version
                ),
            }));
        }
    }

    fn begin_training(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.training_started = Some(now);
        self.last_progress = now;
        out.push(Action::RecordInitialVersion);
        for id in self.workers.active_ids() {
            self.send_package(&id, out);
            self.fill_shards(&id, out);
        }
    }

    fn ctx_workers(&self) -> BTreeSet<String> {
        self.workers.active_ids()
    }

    fn on_status(&mut self, sender: &str, msg: StatusMessage, now: Instant, out: &mut Vec<Action>) {
        match msg {
            StatusMessage::Register(reg) => self.on_register(sender, reg, now, out),
            StatusMessage::Heartbeat {
                worker_id,
                incarnation,
                rejected,
                ..
            } => {
                if worker_id != sender {
                    self.reject("sender_mismatch", sender, "heartbeat for another worker");
                } else if self.workers.touch_at(&worker_id, incarnation, now) {
                    self.workers
                        .record_worker_rejections(&worker_id, incarnation, &rejected);
                } else {
                    // An incarnation we do not know (gone, or the master
                    // restarted): it must register again.
                    tracing::info!(worker = %worker_id, "heartbeat from an unregistered incarnation: telling it to register");
                    out.push(Action::Unknown { worker_id });
                }
            }
            StatusMessage::RoundReport(report) => {
                if report.worker_id != sender {
                    self.reject("sender_mismatch", sender, "round report for another worker");
                } else {
                    self.on_round_report(report, out);
                }
            }
            StatusMessage::CacheMiss {
                worker_id,
                incarnation,
                shard_id,
                missing,
            } => {
                if worker_id != sender {
                    self.reject("sender_mismatch", sender, "cache miss for another worker");
                } else if self.workers.current(&worker_id, incarnation).is_some() {
                    tracing::info!(worker = %worker_id, shard = shard_id, missing, "worker missed cached samples: resending the shard whole");
                    out.push(Action::ResendWhole {
                        worker: worker_id,
                        shard_id,
                    });
                } else {
                    out.push(Action::Unknown { worker_id });
                }
            }
            StatusMessage::Goodbye { worker_id, reason } => {
                if worker_id == sender {
                    tracing::info!(worker = %worker_id, %reason, "worker left");
                    self.worker_gone(&worker_id);
                }
            }
        }
    }

    fn on_register(
        &mut self,
        sender: &str,
        reg: Registration,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if reg.worker_id != sender {
            self.reject(
                "sender_mismatch",
                sender,
                &format!("registration for `{}`", reg.worker_id),
            );
            return;
        }
        if !(reg.slowdown.is_finite() && reg.slowdown >= 1.0) {
            self.reject(
                "bad_registration",
                sender,
                &format!("slowdown {}", reg.slowdown),
            );
            return;
        }
        let id = reg.worker_id.clone();
        let incarnation = reg.incarnation;
        let joined = self.workers.register_at(reg.clone(), now);
        out.push(Action::Welcome {
            worker_id: id.clone(),
            incarnation,
        });
        if joined == Joined::Repeat {
            return;
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
            self.send_package(&id, out);
            self.fill_shards(&id, out);
        }
    }

    fn on_round_report(&mut self, report: RoundReport, out: &mut Vec<Action>) {
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
            out.push(Action::Unknown {
                worker_id: report.worker_id.clone(),
            });
            return;
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
            return;
        }
        self.workers.record_round(&report);
        let recorded = match self.cfg.allocation.mode {
            AllocationMode::Throughput => self.allocator.record_round(
                &report.worker_id,
                report.samples as usize,
                report.round_secs,
            ),
            AllocationMode::CommAware => {
                // With prefetch a shard may wait at the worker behind the
                // round before it: that wait is not this round's cost.
                let queued = report.timing.queued_secs;
                let queued = if queued.is_finite() && queued > 0.0 {
                    queued
                } else {
                    0.0
                };
                let cycle = self
                    .round_cycle(&report.worker_id, report.incarnation, report.round)
                    .map(|c| (c - queued).max(0.0));
                self.allocator.record_round_cost(
                    &report.worker_id,
                    report.samples as usize,
                    RoundCost {
                        compute_secs: report.compute_secs + report.emulated_idle_secs,
                        cycle_secs: cycle.unwrap_or(report.round_secs),
                    },
                )
            }
        };
        if let Err(e) = recorded {
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
        self.end_round(&report.worker_id, report.incarnation, report.round, out);
    }

    /// A worker's round is over (its update or its report said so, whichever
    /// came first): the policy hears of it once, and the worker gets its
    /// next shard at once or waits (parked) until the policy lets it.
    fn end_round(&mut self, id: &str, incarnation: u64, round: u64, out: &mut Vec<Action>) {
        if !self.workers.end_round(id, incarnation, round, self.now) {
            return;
        }
        let ctx_workers = self.ctx_workers();
        let ctx = PolicyContext {
            version: self.version,
            active_workers: &ctx_workers,
        };
        self.policy.on_round_end(&ctx, id);
        if self.policy.may_start_round(&ctx, id) {
            self.fill_shards(id, out);
        } else {
            self.parked.insert(id.to_string());
        }
    }

    /// Shards a worker holds at once: one, or two with prefetch (the next
    /// one arrives while it trains on the current one).
    fn shards_per_worker(&self) -> usize {
        if self.cfg.prefetch && self.policy.allows_prefetch() {
            2
        } else {
            1
        }
    }

    /// Issues shards until the worker holds [`Self::shards_per_worker`].
    fn fill_shards(&mut self, id: &str, out: &mut Vec<Action>) {
        let want = self.shards_per_worker();
        for _ in 0..want {
            let held = self
                .workers
                .get(id)
                .filter(|w| w.active)
                .map(|w| w.in_flight());
            match held {
                Some(n) if n < want => self.next_shard(id, out),
                _ => break,
            }
        }
    }

    fn on_update(
        &mut self,
        sender: &str,
        sequence: u64,
        position: Delivery,
        update: UpdateDelta,
        out: &mut Vec<Action>,
    ) {
        if update.worker_id != sender {
            self.reject("sender_mismatch", sender, "update for another worker");
            return;
        }
        if self
            .workers
            .current(&update.worker_id, update.incarnation)
            .is_none()
        {
            self.reject(
                "unknown_incarnation",
                sender,
                "update from an unregistered incarnation",
            );
            out.push(Action::Unknown {
                worker_id: update.worker_id.clone(),
            });
            return;
        }
        let header = UpdateHeader {
            worker: &update.worker_id,
            incarnation: update.incarnation,
            sequence,
            base_version: update.base_version,
            samples: update.samples,
            loss: update.validation_loss,
        };
        let ctx_workers = self.ctx_workers();
        let ctx = PolicyContext {
            version: self.version,
            active_workers: &ctx_workers,
        };
        let aggregation = crate::aggregation::AggregationConfig {
            max_staleness: self.allowed_staleness(&update.worker_id, update.round),
            ..self.cfg.aggregation.clone()
        };
        match admit_update(
            &aggregation,
            &mut self.ledger,
            self.version,
            self.global.len(),
            &header,
            &update.delta,
        ) {
            Err(reason) => {
                let detail = format!(
                    "update of round {} (incarnation {}, sequence {sequence}, base version {}): {reason}",
                    update.round, update.incarnation, update.base_version
                );
                self.reject(reason.label(), sender, &detail);
                if let Some(w) = self.workers.get_mut(&update.worker_id) {
                    w.stats.updates_rejected += 1;
                }
                self.policy.on_update_rejected(&ctx, &update.worker_id);
            }
            Ok(staleness) => {
                // One line per admitted update: with the rejections above,
                // every update the master read is accounted for by round.
                tracing::info!(
                    worker = %update.worker_id,
                    incarnation = update.incarnation,
                    round = update.round,
                    sequence,
                    base_version = update.base_version,
                    staleness,
                    "update admitted"
                );
                self.policy.on_update(
                    &ctx,
                    AcceptedUpdate {
                        worker: update.worker_id.clone(),
                        incarnation: update.incarnation,
                        sequence,
                        base_version: update.base_version,
                        samples: update.samples,
                        loss: update.validation_loss,
                        delta: update.delta,
                    },
                );
                self.uncommitted = Some(position);
            }
        }
        // The update ends its round (its report, later, only adds
        // statistics), after the version it may complete: the worker's next
        // shard carries that version, and a barrier that just opened lets
        // it go with the others. The version's bookkeeping (evaluation,
        // checkpoint) comes after every shard, off their path.
        let mut made = Vec::new();
        self.aggregate_next(&mut made);
        self.end_round(
            &update.worker_id,
            update.incarnation,
            update.round,
            &mut made,
        );
        made.sort_by_key(|a| matches!(a, Action::NewVersion { .. }));
        out.extend(made);
    }

    /// Makes one version if the policy is ready.
    fn aggregate_next(&mut self, out: &mut Vec<Action>) {
        let ctx_workers = self.ctx_workers();
        let ctx = PolicyContext {
            version: self.version,
            active_workers: &ctx_workers,
        };
        if !self.policy.ready_to_aggregate(&ctx) {
            return;
        }
        let applied = match self.policy.aggregate(&ctx, &mut self.global) {
            Ok(a) => a,
            Err(e) => {
                // A delta that cannot be applied was admitted: count it, never crash.
                self.reject("aggregation_failed", "master", &format!("{e:#}"));
                return;
            }
        };
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
        // Workers the policy held back (a BSP barrier) get their next shard
        // (with this version) first: their round runs while the master
        // evaluates and checkpoints the version.
        self.resume_parked(out);
        out.push(Action::NewVersion {
            version: self.version,
            by,
            commit: self.uncommitted.take(),
        });
    }

    /// The cycle of `round` (its shard issued → its end, master's clock):
    /// as measured when it ended, or up to now when this report ends it.
    /// `None` for a round that went with a package, or one not known.
    fn round_cycle(&mut self, id: &str, incarnation: u64, round: u64) -> Option<f64> {
        let now = self.now;
        let w = self.workers.current(id, incarnation)?;
        if let Some((r, secs)) = w.last_cycle {
            if r == round {
                return Some(secs);
            }
        }
        if w.ended_round >= round {
            return None;
        }
        w.cycle_until(round, now)
    }

    /// The package goes first; the round of the shard that follows it is
    /// not a measure of the worker's cost.
    fn send_package(&mut self, id: &str, out: &mut Vec<Action>) {
        if let Some(w) = self.workers.get_mut(id) {
            w.package_round = w.next_round;
        }
        out.push(Action::SendPackage {
            worker: id.to_string(),
        });
    }

    /// How stale an update of `worker`'s `round` may be:
    /// `aggregation.max_staleness`, scaled (`staleness_scales_with_cycle`)
    /// by how many typical rounds (the allocator's T) this round lasted, at
    /// most 20x: a worker behind a slow link sees more versions go by per
    /// round than the rest, and its update is damped by its staleness
    /// rather than thrown away.
    fn allowed_staleness(&self, worker: &str, round: u64) -> u64 {
        let base = self.cfg.aggregation.max_staleness;
        if !self.cfg.aggregation.staleness_scales_with_cycle {
            return base;
        }
        let own = self
            .workers
            .get(worker)
            .and_then(|w| w.issued_at(round))
            .map(|at| self.now.saturating_duration_since(at).as_secs_f64())
            .or_else(|| self.allocator.cycle(worker));
        match (own, self.allocator.target_round_secs()) {
            (Some(own), Some(typical)) if typical > 0.0 && own.is_finite() => {
                let factor = (own / typical).clamp(1.0, 20.0);
                (base as f64 * factor).ceil() as u64
            }
            _ => base,
        }
    }

    fn next_shard(&mut self, id: &str, out: &mut Vec<Action>) {
        // Every shard gets a round number of its own: a shard issued again
        // (the worker came back after its round report was lost) is a new
        // round, so (worker, incarnation, round) names one update at most.
        let now = self.now;
        let Some((round, in_flight)) = self.workers.get_mut(id).filter(|w| w.active).map(|w| {
            let in_flight = w.in_flight();
            let round = w.next_round;
            w.next_round = round + 1;
            w.issue(round, now);
            (round, in_flight)
        }) else {
            return;
        };
        let shard = self.allocator.next_shard_keeping(id, round, in_flight);
        let records = self.allocator.drain_records();
        if !records.is_empty() {
            out.push(Action::RecordAllocations(records));
        }
        let size = shard.indices.len() as u64;
        if let Some(w) = self.workers.get_mut(id) {
            w.busy = true;
            w.stats.shards_received += 1;
            w.stats.shard_samples_total += size;
        }
        self.parked.remove(id);
        out.push(Action::SendShard {
            worker: id.to_string(),
            shard,
            round,
        });
    }

    fn resume_parked(&mut self, out: &mut Vec<Action>) {
        if self.parked.is_empty() {
            return;
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
            self.next_shard(&id, out);
        }
        self.parked.retain(|w| ctx_workers.contains(w));
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
}

#[cfg(test)]
mod tests;
