//! A worker's life in one run: connect, register until welcomed, receive the
//! model package and shards, train rounds on a blocking thread while
//! heartbeats and Kafka polling go on, publish updates and round reports,
//! stop when told to (or on Ctrl-C / SIGTERM).
//!
//! Message order the worker expects from the master: `Welcome` on control
//! (after our `Register` on status), then on `shard.<id>` a `Package`
//! followed by `Shard`s (each answered by an `UpdateDelta` on major rounds
//! and always a `RoundReport`), new `GlobalModel`s on model at any time
//! (adopted at the next round boundary), `Stop` on control.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{
    Assignment, ControlMessage, GlobalModel, ModelPackage, Registration, ShardAssignment,
    StatusMessage,
};
use common::transport::{Delivery, Receiver, StartAt, Topics, Transport};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::WorkerConfig;
use crate::logs::{LogForwarder, SharedLogs};
use crate::rounds;
use crate::trainer::{Identity, RoundError, RoundOutcome, Trainer};

/// Largest control message accepted.
const CONTROL_LIMIT: u64 = 1024 * 1024;
/// Shards queued while a round runs; more are refused.
const MAX_QUEUED_SHARDS: usize = 16;
/// How long a shard waits for the global version it is for (broadcast
/// delivery) before the worker trains it from the version it has.
const GLOBAL_WAIT: Duration = Duration::from_secs(10);

/// How a session ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The master said stop: the run is over.
    Stopped,
    /// SIGTERM (e.g. `master deploy stop`): the process should exit.
    Terminated,
    /// Ctrl-C: the process should exit (130).
    Interrupted,
}

/// How the worker came to this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// The run id is pinned in the worker's configuration.
    Pinned,
    /// A master offered the run on the agents channel (so a master that
    /// never answers is given up on after [`OFFERED_MASTER_WAIT`]).
    Offered,
}

/// How long a worker that joined an offered run waits for the master's
/// welcome when `master_wait_secs` is 0 (forever would hang an agent on a
/// run whose master is gone).
pub const OFFERED_MASTER_WAIT: Duration = Duration::from_secs(60);

/// Serves one run until the master says stop or the process is signalled.
pub async fn run(
    cfg: WorkerConfig,
    run_id: String,
    logs: Option<SharedLogs>,
    joined: Joined,
) -> anyhow::Result<SessionEnd> {
    let keys = common::runkey::wait_for(
        &cfg.kafka,
        std::path::Path::new(common::runkey::DEFAULT_KEY_FILE),
        Duration::from_secs(cfg.kafka.connect_timeout_secs),
    )
    .await?;
    common::runkey::log_choice(&keys);
    let transport = Arc::new(
        Transport::connect_with_keys(&cfg.kafka, &run_id, &cfg.worker_id, keys)
            .await
            .context("connect to kafka")?,
    );
    transport
        .create_run_topics()
        .await
        .context("create run topics")?;
    let topics = transport.topics().clone();
    transport
        .create_topics(&[transport.topic_spec(topics.shard(&cfg.worker_id), 1)])
        .await
        .context("create this worker's shard topic")?;
    let forwarder = match (&logs, cfg.log_forwarding) {
        (Some(rx), true) => Some(LogForwarder::spawn(
            Arc::clone(&transport),
            Arc::clone(rx),
            cfg.worker_id.clone(),
        )),
        _ => None,
    };

    // Everything is read from "now" (receivers exist before we register): a
    // stale Stop or package from an earlier run must not reach this one.
    // Control has a consumer (and a broker connection) of its own, so a
    // stop or welcome never waits behind a fetch of bulk model and shard
    // data on a slow link.
    let control = transport
        .receiver(
            &[topics.control()],
            &format!("worker-{}-control", cfg.worker_id),
            StartAt::End,
        )
        .await
        .context("subscribe to the control topic")?;
    let data = transport
        .receiver(
            &[topics.model(), topics.shard(&cfg.worker_id)],
            &format!("worker-{}", cfg.worker_id),
            StartAt::End,
        )
        .await
        .context("subscribe to the model and shard topics")?;
    let (inbound_tx, inbound) = mpsc::channel(8);
    let readers = [
        tokio::spawn(read_loop(control, inbound_tx.clone())),
        tokio::spawn(read_loop(data, inbound_tx)),
    ];

    let master_wait = match (cfg.master_wait_secs, joined) {
        (0, Joined::Offered) => Some(OFFERED_MASTER_WAIT),
        (0, Joined::Pinned) => None,
        (s, _) => Some(Duration::from_secs(s)),
    };
    let mut worker = Worker::new(cfg, run_id, master_wait, Arc::clone(&transport), topics);
    let result = worker.run(inbound).await;
    worker.cancel_job();
    for r in &readers {
        r.abort();
    }
    if let Some(f) = forwarder {
        f.finish(Duration::from_secs(5)).await;
    }
    if let Err(e) = transport.flush(Duration::from_secs(10)) {
        eprintln!("worker: flush before exit: {e}");
    }
    result
}

/// Polls the receiver on its own task, so Kafka is read while the session
/// is busy (sending an update, starting a round).
async fn read_loop(mut receiver: Receiver, tx: mpsc::Sender<anyhow::Result<Delivery>>) {
    loop {
        match receiver.recv_timeout(Duration::from_millis(500)).await {
            Ok(Some(d)) => {
                if tx.send(Ok(d)).await.is_err() {
                    return;
                }
            }
            Ok(None) if tx.is_closed() => return,
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Err(anyhow::Error::new(e))).await;
                return;
            }
        }
    }
}

/// What a blocking job hands back.
enum JobResult {
    /// A package was (or failed to be) loaded.
    Loaded(Box<anyhow::Result<Trainer>>),
    /// A round ended; the trainer comes back with it.
    Round(Box<(Trainer, Result<RoundOutcome, RoundError>)>),
}

/// A job on a blocking thread.
struct Job {
    handle: JoinHandle<JobResult>,
    cancel: Arc<AtomicBool>,
    is_round: bool,
}

struct Worker {
    cfg: WorkerConfig,
    /// The run served.
    run_id: String,
    /// How long to wait for the master's welcome (`None` = forever).
    master_wait: Option<Duration>,
    transport: Arc<Transport>,
    topics: Topics,
    who: Identity,
    registration: Registration,
    welcomed: bool,
    trainer: Option<Trainer>,
    /// The running job (its trainer is inside it).
    job: Option<Job>,
    /// Parameter count of the loaded model (known while the trainer is busy).
    param_count: Option<usize>,
    /// The global version the local model is based on.
    base_version: u64,
    /// The newest global received and not adopted yet.
    latest_global: Option<GlobalModel>,
    pending_package: Option<ModelPackage>,
    /// Shards waiting for the trainer, with when each arrived.
    shards: VecDeque<(ShardAssignment, Instant)>,
    /// When the master was last heard (any control, model or shard record).
    last_heard: Instant,
    /// The current silence was reported already.
    silence_reported: bool,
    /// When to send the next registration (until welcomed); brought
    /// forward when the master is first heard, so a worker that started
    /// before the master registers as soon as the master listens.
    next_register: Instant,
}

impl Worker {
    fn new(
        cfg: WorkerConfig,
        run_id: String,
        master_wait: Option<Duration>,
        transport: Arc<Transport>,
        topics: Topics,
    ) -> Self {
        let registration = Registration {
            worker_id: cfg.worker_id.clone(),
            incarnation: rand::random(),
            hostname: hostname(),
            arch: std::env::consts::ARCH.to_string(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            slowdown: cfg.slowdown,
            emulation: cfg.emulation.clone().unwrap_or_default(),
            sample_cache_bytes: cfg.sample_cache_mb.saturating_mul(1 << 20),
        };
        let who = Identity {
            worker_id: cfg.worker_id.clone(),
            incarnation: registration.incarnation,
            slowdown: cfg.slowdown,
        };
        Self {
            cfg,
            run_id,
            master_wait,
            transport,
            topics,
            who,
            registration,
            welcomed: false,
            trainer: None,
            job: None,
            param_count: None,
            base_version: 0,
            latest_global: None,
            pending_package: None,
            shards: VecDeque::new(),
            last_heard: Instant::now(),
            silence_reported: false,
            next_register: Instant::now(),
        }
    }

    async fn run(
        &mut self,
        mut inbound: mpsc::Receiver<anyhow::Result<Delivery>>,
    ) -> anyhow::Result<SessionEnd> {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("install the SIGTERM handler")?;
        tracing::info!(
            worker = %self.cfg.worker_id,
            run = %self.run_id,
            slowdown = self.cfg.slowdown,
            "registering with the master"
        );
        if self.cfg.slowdown > 1.0 {
            tracing::info!(
                "emulating a device {:.1}x slower: after each round's compute the worker idles {:.1}x its compute time",
                self.cfg.slowdown,
                self.cfg.slowdown - 1.0
            );
        }
        let started = Instant::now();
        let mut next_heartbeat = Instant::now();
        loop {
            let now = Instant::now();
            if !self.welcomed && now >= self.next_register {
                if let Some(wait) = self.master_wait.filter(|w| started.elapsed() > *w) {
                    anyhow::bail!(
                        "no answer from the master within {} s (run `{}`)",
                        wait.as_secs(),
                        self.run_id
                    );
                }
                let msg = StatusMessage::Register(self.registration.clone());
                self.send_status(&msg, "registration").await;
                self.next_register = now + Duration::from_secs(self.cfg.register_retry_secs.max(1));
            }
            self.check_master_silence(now)?;
            if self.welcomed && now >= next_heartbeat {
                let hb = StatusMessage::Heartbeat {
                    worker_id: self.cfg.worker_id.clone(),
                    incarnation: self.registration.incarnation,
                    model_version: self.base_version,
                    rejected: self
                        .transport
                        .metrics()
                        .snapshot()
                        .rejected
                        .into_iter()
                        .collect(),
                };
                self.send_status(&hb, "heartbeat").await;
                next_heartbeat = now + Duration::from_secs(self.cfg.heartbeat_secs);
            }
            self.start_job();
            let wake = if self.welcomed {
                next_heartbeat
            } else {
                self.next_register
            };
            let job = &mut self.job;
            let job_done = async {
                match job.as_mut() {
                    Some(j) => (&mut j.handle).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                d = inbound.recv() => match d {
                    Some(Ok(d)) => {
                        if let Some(exit) = self.handle_delivery(d) {
                            return self.leave(exit).await;
                        }
                    }
                    Some(Err(e)) => return Err(e.context("read control, model and shard topics")),
                    None => anyhow::bail!("the Kafka reader stopped"),
                },
                r = job_done => {
                    self.job = None;
                    match r {
                        Ok(result) => self.finish_job(result).await,
                        Err(e) => {
                            tracing::error!("training thread failed: {e}; waiting for a new model package");
                            self.trainer = None;
                            self.param_count = None;
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = sigterm.recv() => return self.leave(SessionEnd::Terminated).await,
                _ = tokio::signal::ctrl_c() => return self.leave(SessionEnd::Interrupted).await,
            }
        }
    }

    /// Says goodbye when leaving on our own.
    async fn leave(&mut self, end: SessionEnd) -> anyhow::Result<SessionEnd> {
        self.cancel_job();
        let reason = match end {
            SessionEnd::Stopped => return Ok(end),
            SessionEnd::Terminated => "terminated (SIGTERM)",
            SessionEnd::Interrupted => "interrupted",
        };
        tracing::info!("{reason}; leaving the run");
        let bye = StatusMessage::Goodbye {
            worker_id: self.cfg.worker_id.clone(),
            reason: reason.into(),
        };
        self.send_status(&bye, "goodbye").await;
        Ok(end)
    }

    /// Asks a running job to stop at its next check.
    fn cancel_job(&self) {
        if let Some(job) = &self.job {
            job.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Sends a status message; a failure is logged, not fatal (the next
    /// heartbeat or registration tries again).
    async fn send_status(&self, msg: &StatusMessage, what: &str) -> Option<usize> {
        match self
            .transport
            .send(
                &self.topics.status(),
                &self.cfg.worker_id,
                MessageKind::Status,
                msg,
            )
            .await
        {
            Ok(r) => Some(r.bytes),
            Err(e) => {
                tracing::warn!("could not send the {what}: {e}");
                None
            }
        }
    }

    /// Handles one message; `Some` when the session must end.
    fn handle_delivery(&mut self, d: Delivery) -> Option<SessionEnd> {
        let expected = if d.topic == self.topics.control() {
            MessageKind::Control
        } else if d.topic == self.topics.model() {
            MessageKind::Model
        } else {
            MessageKind::Shard
        };
        if d.kind != expected {
            self.transport.metrics().reject("unexpected_kind");
            tracing::warn!(
                topic = %d.topic,
                sender = %d.sender,
                "ignored a {:?} message on the {:?} stream",
                d.kind,
                expected
            );
            return None;
        }
        self.heard_master();
        match expected {
            MessageKind::Control => return self.handle_control(&d),
            MessageKind::Model => self.handle_global(&d),
            _ => self.handle_assignment(&d),
        }
        None
    }

    /// The master spoke: the silence, if any, is over.
    fn heard_master(&mut self) {
        if self.silence_reported {
            tracing::info!(
                "the master is heard again after {:.0} s of silence; carrying on",
                self.last_heard.elapsed().as_secs_f64()
            );
            self.silence_reported = false;
        }
        self.last_heard = Instant::now();
    }

    /// Warns once when a registered worker has not heard the master for a
    /// while, and gives up after `master_timeout_secs`.
    fn check_master_silence(&mut self, now: Instant) -> anyhow::Result<()> {
        let limit = self.cfg.master_timeout_secs;
        if !self.welcomed || limit == 0 {
            return Ok(());
        }
        let silent = now.duration_since(self.last_heard);
        if silent >= Duration::from_secs(limit) {
            anyhow::bail!(
                "the master of run `{}` has been silent for {} s (no liveness, model or control message; master_timeout_secs): giving up",
                self.run_id,
                silent.as_secs()
            );
        }
        let warn_after = Duration::from_secs((limit / 4).clamp(1, 30));
        if silent >= warn_after && !self.silence_reported {
            tracing::warn!(
                "no word from the master for {} s: keeping this worker's state and waiting (a restarted master asks it to register again; giving up after {limit} s)",
                silent.as_secs()
            );
            self.silence_reported = true;
        }
        Ok(())
    }

    fn handle_control(&mut self, d: &Delivery) -> Option<SessionEnd> {
        let msg: ControlMessage = match d.decode(CONTROL_LIMIT) {
            Ok(m) => m,
            Err(e) => {
                self.transport.metrics().reject(e.reason());
                tracing::warn!(sender = %d.sender, "ignored undecodable control message: {e}");
                return None;
            }
        };
        match msg {
            ControlMessage::Welcome {
                worker_id,
                incarnation,
            } if worker_id == self.cfg.worker_id
                && incarnation == self.registration.incarnation =>
            {
                if !self.welcomed {
                    tracing::info!(master = %d.sender, "registered with the master");
                }
                self.welcomed = true;
                None
            }
            ControlMessage::Welcome { .. } => None,
            ControlMessage::Unknown { worker_id } if worker_id == self.cfg.worker_id => {
                if self.welcomed {
                    tracing::warn!(master = %d.sender, "the master does not know this worker (declared gone, or restarted): registering again");
                }
                self.welcomed = false;
                None
            }
            ControlMessage::Alive { .. } if !self.welcomed => {
                // The master listens now: a registration sent before it
                // started was lost, so register again at once.
                self.next_register = Instant::now();
                None
            }
            ControlMessage::Unknown { .. } | ControlMessage::Alive { .. } => None,
            ControlMessage::Stop { reason } => {
                tracing::info!(%reason, "master asked to stop");
                Some(SessionEnd::Stopped)
            }
        }
    }

    fn handle_global(&mut self, d: &Delivery) {
        let limit = self.cfg.kafka.max_payload_bytes;
        let global: GlobalModel = match d.decode(limit) {
            Ok(g) => g,
            Err(e) => {
                self.transport.metrics().reject(e.reason());
                tracing::warn!(sender = %d.sender, "ignored undecodable global model: {e}");
                return;
            }
        };
        self.take_global(global, &d.sender);
    }

    /// Keeps `global` as the newest version received, when it checks out.
    fn take_global(&mut self, global: GlobalModel, sender: &str) {
        let expected = self.param_count.unwrap_or(global.parameters.len());
        if let Err(e) = rounds::check_global(global.version, &global.parameters, expected) {
            self.transport.metrics().reject(match e {
                rounds::AdoptError::Length { .. } => "bad_parameter_count",
                rounds::AdoptError::NonFinite { .. } => "non_finite",
            });
            tracing::warn!(sender = %sender, "ignored global model: {e}");
            return;
        }
        // Only the newest version is kept; it is adopted at the next round
        // boundary if it is newer than the base.
        if self
            .latest_global
            .as_ref()
            .is_none_or(|g| global.version > g.version)
        {
            tracing::debug!(version = global.version, "global model received");
            self.latest_global = Some(global);
        }
    }

    fn handle_assignment(&mut self, d: &Delivery) {
        let limit = self.cfg.kafka.max_payload_bytes;
        let msg: Assignment = match d.decode(limit) {
            Ok(m) => m,
            Err(e) => {
                self.transport.metrics().reject(e.reason());
                tracing::warn!(sender = %d.sender, "ignored undecodable shard-topic message: {e}");
                return;
            }
        };
        match msg {
            Assignment::Package(p) => {
                tracing::info!(
                    model = %p.model.escape_debug(),
                    files = p.files.len(),
                    global_version = p.global.version,
                    "model package received"
                );
                // Packages go to registered workers only: a lost Welcome must
                // not keep us re-registering (which could bring another package).
                if !self.welcomed {
                    tracing::info!("registered with the master (package received)");
                    self.welcomed = true;
                }
                // Everything before the package belongs to the previous one.
                let dropped = self.shards.len();
                self.shards.clear();
                if dropped > 0 {
                    tracing::info!("dropped {dropped} queued shard(s) of the previous package");
                }
                self.latest_global = None;
                self.param_count = None;
                if self.job.as_ref().is_some_and(|j| j.is_round) {
                    tracing::info!("aborting the current round for the new package");
                    self.cancel_job();
                }
                self.pending_package = Some(p);
            }
            Assignment::Shard(s) => {
                if self.shards.len() >= MAX_QUEUED_SHARDS {
                    self.transport.metrics().reject("shard_queue_full");
                    tracing::warn!(
                        shard = s.shard_id,
                        "refused a shard: {MAX_QUEUED_SHARDS} are already waiting"
                    );
                    return;
                }
                tracing::debug!(
                    shard = s.shard_id,
                    round = s.round,
                    bytes = s.data.len(),
                    "shard received"
                );
                self.shards.push_back((s, Instant::now()));
            }
            Assignment::Global(g) => self.take_global(g, &d.sender),
        }
    }

    /// Starts the next job when none runs: a pending package first, then the
    /// next shard once a model is loaded.
    fn start_job(&mut self) {
        if self.job.is_some() {
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        if let Some(package) = self.pending_package.take() {
            let root = self.cfg.work_dir().join("artifacts");
            let engine = self.cfg.engine.clone();
            let id = self.cfg.worker_id.clone();
            let cache_bytes = self.registration.sample_cache_bytes;
            let handle = tokio::task::spawn_blocking(move || {
                JobResult::Loaded(Box::new(Trainer::from_package(
                    package,
                    &root,
                    &engine,
                    &id,
                    cache_bytes,
                )))
            });
            self.job = Some(Job {
                handle,
                cancel,
                is_round: false,
            });
            return;
        }
        let Some(base) = self.trainer.as_ref().map(Trainer::base_version) else {
            return;
        };
        let Some((next, arrived)) = self.shards.front() else {
            return;
        };
        // A shard is for the version the master had when it sent it; with
        // broadcast delivery that version may still be on its way.
        let have = self
            .latest_global
            .as_ref()
            .map_or(base, |g| g.version.max(base));
        if next.min_version > have {
            if arrived.elapsed() < GLOBAL_WAIT {
                return;
            }
            tracing::warn!(
                shard = next.shard_id,
                "global version {} has not arrived in {} s: training from version {have}",
                next.min_version,
                GLOBAL_WAIT.as_secs()
            );
        }
        let Some((shard, arrived)) = self.shards.pop_front() else {
            return;
        };
        let Some(mut trainer) = self.trainer.take() else {
            return;
        };
        let newer = self
            .latest_global
            .take()
            .filter(|g| g.version > trainer.base_version());
        let who = self.who.clone();
        let flag = Arc::clone(&cancel);
        let handle = tokio::task::spawn_blocking(move || {
            let result = trainer.run_round(shard, arrived, newer, &who, &flag);
            JobResult::Round(Box::new((trainer, result)))
        });
        self.job = Some(Job {
            handle,
            cancel,
            is_round: true,
        });
    }

    async fn finish_job(&mut self, result: JobResult) {
        match result {
            JobResult::Loaded(loaded) => match *loaded {
                Ok(t) => {
                    let plan = t.plan();
                    tracing::info!(
                        "model `{}` ready: {} parameters, {} validation samples, global version {}; plan: {} epoch(s), batch {}, gate {:?} ({})",
                        t.model(),
                        t.parameter_count(),
                        t.validation_len(),
                        t.base_version(),
                        plan.epochs,
                        plan.batch_size,
                        plan.gate.kind,
                        if plan.gate_updates { "gating updates" } else { "every round sends an update" }
                    );
                    self.base_version = t.base_version();
                    self.param_count = Some(t.parameter_count());
                    if let Some(g) = &self.latest_global {
                        if g.parameters.len() != t.parameter_count() {
                            self.transport.metrics().reject("bad_parameter_count");
                            tracing::warn!(
                                "ignored global version {}: {} parameters, the model has {}",
                                g.version,
                                g.parameters.len(),
                                t.parameter_count()
                            );
                            self.latest_global = None;
                        }
                    }
                    self.trainer = Some(t);
                }
                Err(e) => {
                    self.transport.metrics().reject("bad_package");
                    tracing::warn!("rejected the model package: {e:#}");
                }
            },
            JobResult::Round(done) => {
                let (trainer, outcome) = *done;
                self.base_version = trainer.base_version();
                self.trainer = Some(trainer);
                match outcome {
                    Ok(o) => self.publish(o).await,
                    Err(RoundError::BadShard { shard_id, reason }) => {
                        self.transport.metrics().reject("bad_shard");
                        tracing::warn!("rejected shard {shard_id}: {reason}");
                    }
                    Err(RoundError::CacheMiss { shard_id, missing }) => {
                        tracing::info!(
                            "shard {shard_id}: {missing} samples not in the cache; asking for it whole"
                        );
                        let msg = StatusMessage::CacheMiss {
                            worker_id: self.who.worker_id.clone(),
                            incarnation: self.who.incarnation,
                            shard_id,
                            missing: missing as u64,
                        };
                        self.send_status(&msg, "cache miss").await;
                    }
                    Err(RoundError::Cancelled) => tracing::info!("round aborted"),
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
    }

    /// Sends the update of a major round and the round report, and logs the round.
    async fn publish(&mut self, outcome: RoundOutcome) {
        let RoundOutcome {
            mut report,
            update,
            decision,
            started,
        } = outcome;
        if let Some(update) = update {
            let upload = Instant::now();
            match self
                .transport
                .send(
                    &self.topics.updates(),
                    &self.cfg.worker_id,
                    MessageKind::Update,
                    &update,
                )
                .await
            {
                Ok(r) => {
                    report.update_bytes = r.bytes as u64;
                    report.upload_secs = upload.elapsed().as_secs_f64();
                }
                Err(e) => {
                    tracing::warn!("could not send the update of round {}: {e}", report.round)
                }
            }
        }
        report.round_secs = started.elapsed().as_secs_f64();
        let gate = match &decision {
            Some(d) => match (d.z, d.t, d.p_value) {
                (Some(z), _, _) => format!("z {z:.3} vs threshold {:.3}", d.threshold),
                (_, Some(t), Some(p)) => format!("t {t:.3}, p {p:.4} vs {:.4}", d.threshold),
                _ => format!("{:?} (threshold {:.3})", d.reason, d.threshold),
            },
            None => "no gate statistic".into(),
        };
        tracing::info!(
            "round {} {}: validation loss {:.4}, accuracy {:.2}%, {gate}; shard {} of {} samples x {} epoch(s), compute {:.2} s, round {:.2} s, base version {}, update {} bytes",
            report.round,
            if report.major { "major" } else { "minor" },
            report.validation_loss,
            report.validation_accuracy * 100.0,
            report.shard_id,
            report.samples,
            report.epochs,
            report.compute_secs,
            report.round_secs,
            report.base_version,
            report.update_bytes
        );
        self.send_status(&StatusMessage::RoundReport(report), "round report")
            .await;
    }
}

/// This device's host name (`unknown` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
