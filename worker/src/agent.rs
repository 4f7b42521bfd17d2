//! The worker process: serves one run (one-shot) or run after run
//! (`--agent`), taking the run from the master unless it is pinned.
//!
//! * Pinned (`run_id` in the config or `HERMES_RUN_ID`): the session joins
//!   that run directly; an agent joins it again after each end.
//! * Not pinned: the process opens the agents channel
//!   ([`common::agents`]), announces itself, and joins the first run a
//!   master offers it (run id and configuration overrides from the offer).
//!   An agent goes back to idle when the run ends and takes the next offer;
//!   it never rejoins the offer it served (a later master of the same run
//!   id is a new offer). While idle it only announces itself every
//!   [`ANNOUNCE_EVERY`] and waits; the Kafka client reconnects by itself
//!   when the broker comes back.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use common::agents::{self, AgentAnnounce, AgentControl, AgentStatus, RunOpen, Side};
use common::envelope::MessageKind;
use common::transport::{Receiver, Transport};
use tokio::sync::{mpsc, Notify};

use crate::config::WorkerConfig;
use crate::logs::SharedLogs;
use crate::session::{self, Joined, SessionEnd};

/// Seconds between an agent's announcements.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// Pause after a run that failed, before the next offer is taken.
const AFTER_FAILURE: Duration = Duration::from_secs(3);
/// Pause between attempts to open the agents channel.
const RETRY_OPEN: Duration = Duration::from_secs(5);
/// Offers served or closed that are remembered (oldest forgotten first).
const REMEMBERED_OFFERS: usize = 256;

/// One run, or run after run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve one run, then exit with its outcome.
    Once,
    /// Serve runs until SIGTERM or Ctrl-C (`--agent`).
    Agent,
}

/// Runs the process in `mode`; the exit code follows the last session.
pub async fn serve(
    cfg: WorkerConfig,
    mode: Mode,
    logs: Option<SharedLogs>,
) -> anyhow::Result<ExitCode> {
    let state_cfg = cfg.clone();
    write_state(&state_cfg, mode, "idle", None);
    let result = match cfg.run_id.clone() {
        Some(run) => serve_pinned(cfg, run, mode, logs).await,
        None => serve_offers(cfg, mode, logs).await,
    };
    write_state(&state_cfg, mode, "exited", None);
    result
}

/// What the state file says (see `common::config::WORKER_STATE_FILE`).
#[derive(serde::Serialize)]
struct StateFile<'a> {
    worker_id: &'a str,
    mode: &'a str,
    /// `idle`, `serving` or `exited`.
    state: &'a str,
    run_id: Option<&'a str>,
    pid: u32,
    updated_at_ms: u64,
}

/// Writes the state file (atomically; a failure is only logged).
fn write_state(cfg: &WorkerConfig, mode: Mode, state: &str, run: Option<&str>) {
    let dir = cfg.work_dir();
    let doc = StateFile {
        worker_id: &cfg.worker_id,
        mode: match mode {
            Mode::Once => "once",
            Mode::Agent => "agent",
        },
        state,
        run_id: run,
        pid: std::process::id(),
        updated_at_ms: common::protocol::now_ms(),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(common::config::WORKER_STATE_FILE);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::debug!("state file in {}: {e}", dir.display());
    }
}

fn exit_code(end: SessionEnd) -> ExitCode {
    match end {
        SessionEnd::Stopped | SessionEnd::Terminated => ExitCode::SUCCESS,
        SessionEnd::Interrupted => ExitCode::from(130),
    }
}

async fn serve_pinned(
    cfg: WorkerConfig,
    run: String,
    mode: Mode,
    logs: Option<SharedLogs>,
) -> anyhow::Result<ExitCode> {
    loop {
        write_state(&cfg, mode, "serving", Some(&run));
        let end = session::run(cfg.clone(), run.clone(), logs.clone(), Joined::Pinned).await;
        write_state(&cfg, mode, "idle", None);
        match (end, mode) {
            (Ok(end), Mode::Once) => return Ok(exit_code(end)),
            (Err(e), Mode::Once) => return Err(e),
            (Ok(SessionEnd::Stopped), Mode::Agent) => {
                tracing::info!(run = %run, "run ended; waiting for the next run `{run}` (pinned)")
            }
            (Ok(end), Mode::Agent) => return Ok(exit_code(end)),
            (Err(e), Mode::Agent) => {
                tracing::error!(run = %run, "run failed: {e:#}; joining again");
                tokio::time::sleep(AFTER_FAILURE).await;
            }
        }
    }
}

/// What the announcer says.
#[derive(Debug, Default)]
struct State {
    serving: Option<String>,
    declined: Option<(String, String)>,
}

async fn serve_offers(
    cfg: WorkerConfig,
    mode: Mode,
    logs: Option<SharedLogs>,
) -> anyhow::Result<ExitCode> {
    let keys = common::runkey::wait_for(
        &cfg.kafka,
        std::path::Path::new(common::runkey::DEFAULT_KEY_FILE),
        Duration::from_secs(cfg.kafka.connect_timeout_secs),
    )
    .await?;
    let (transport, receiver) = match open_until_up(&cfg, keys, mode).await? {
        Some(c) => c,
        None => return Ok(ExitCode::SUCCESS),
    };
    let transport = Arc::new(transport);
    let state = Arc::new(Mutex::new(State::default()));
    let poke = Arc::new(Notify::new());
    let incarnation: u64 = rand::random();
    let announcer = tokio::spawn(announce_loop(
        Arc::clone(&transport),
        cfg.worker_id.clone(),
        incarnation,
        Arc::clone(&state),
        Arc::clone(&poke),
    ));
    let (offers_tx, mut offers) = mpsc::channel(64);
    let reader = tokio::spawn(read_offers(receiver, offers_tx));
    tracing::info!(
        agent = %cfg.worker_id,
        mode = ?mode,
        "waiting for a master to open a run (agents channel `{}`)",
        transport.topics().control()
    );
    let result = take_offers(&cfg, mode, logs, &state, &poke, &mut offers).await;
    announcer.abort();
    reader.abort();
    result
}

/// Opens the agents channel. An agent keeps trying while the broker is
/// away (it may start before the broker does); `None` when it is told to
/// stop meanwhile. A one-shot worker fails at once.
async fn open_until_up(
    cfg: &WorkerConfig,
    keys: common::runkey::RunKeys,
    mode: Mode,
) -> anyhow::Result<Option<(Transport, Receiver)>> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    let mut reported = false;
    loop {
        match agents::open_channel(&cfg.kafka, &cfg.worker_id, keys.clone(), Side::Agent).await {
            Ok(c) => {
                if reported {
                    tracing::info!("the agents channel is open");
                }
                return Ok(Some(c));
            }
            Err(e) if mode == Mode::Agent => {
                if !reported {
                    tracing::warn!(
                        "cannot open the agents channel yet (trying again every {} s): {e}",
                        RETRY_OPEN.as_secs()
                    );
                    reported = true;
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("open the agents channel")),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_OPEN) => {}
            _ = sigterm.recv() => return Ok(None),
            _ = tokio::signal::ctrl_c() => return Ok(None),
        }
    }
}

/// The offer loop: idle, join, serve, idle again.
async fn take_offers(
    cfg: &WorkerConfig,
    mode: Mode,
    logs: Option<SharedLogs>,
    state: &Mutex<State>,
    poke: &Notify,
    offers: &mut mpsc::Receiver<AgentControl>,
) -> anyhow::Result<ExitCode> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    let mut done: VecDeque<(String, u64)> = VecDeque::new();
    let remember = |done: &mut VecDeque<(String, u64)>, key: (String, u64)| {
        if !done.contains(&key) {
            if done.len() >= REMEMBERED_OFFERS {
                done.pop_front();
            }
            done.push_back(key);
        }
    };
    loop {
        let msg = tokio::select! {
            m = offers.recv() => match m {
                Some(m) => m,
                None => anyhow::bail!("the agents channel reader stopped"),
            },
            _ = sigterm.recv() => {
                tracing::info!("terminated (SIGTERM) while idle");
                return Ok(ExitCode::SUCCESS);
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::from(130)),
        };
        let open = match msg {
            AgentControl::RunClosed {
                run_id,
                master_incarnation,
            } => {
                remember(&mut done, (run_id, master_incarnation));
                continue;
            }
            AgentControl::RunOpen(open) => open,
        };
        let key = (open.run_id.clone(), open.master_incarnation);
        if !open.invites(&cfg.worker_id) || done.contains(&key) {
            continue;
        }
        let per_agent = open
            .per_agent_json
            .iter()
            .find(|(id, _)| *id == cfg.worker_id)
            .map(|(_, o)| o.as_str());
        let run_cfg = match cfg.for_offer(&open.run_id, &open.overrides_json, per_agent) {
            Ok(c) => c,
            Err(e) => {
                decline(state, poke, &open, format!("{e:#}"));
                remember(&mut done, key);
                continue;
            }
        };
        tracing::info!(
            run = %open.run_id,
            policy = %open.policy.escape_debug(),
            "joining run `{}` opened by a master",
            open.run_id
        );
        set_serving(state, poke, Some(open.run_id.clone()));
        write_state(cfg, mode, "serving", Some(&open.run_id));
        let end = session::run(run_cfg, open.run_id.clone(), logs.clone(), Joined::Offered).await;
        set_serving(state, poke, None);
        write_state(cfg, mode, "idle", None);
        // Offers that queued up while the run went on are old news; the
        // idle announcement brings fresh ones.
        while offers.try_recv().is_ok() {}
        match end {
            Ok(SessionEnd::Stopped) => {
                remember(&mut done, key);
                if mode == Mode::Once {
                    return Ok(ExitCode::SUCCESS);
                }
                tracing::info!(run = %open.run_id, "run ended; idle, waiting for the next run");
            }
            Ok(end) => return Ok(exit_code(end)),
            Err(e) if mode == Mode::Once => return Err(e),
            Err(e) => {
                tracing::error!(run = %open.run_id, "run failed: {e:#}; idle, waiting for the next run");
                tokio::time::sleep(AFTER_FAILURE).await;
                while offers.try_recv().is_ok() {}
                poke.notify_one();
            }
        }
    }
}

fn decline(state: &Mutex<State>, poke: &Notify, open: &RunOpen, reason: String) {
    tracing::warn!(run = %open.run_id, "declined the offer of run `{}`: {reason}", open.run_id);
    if let Ok(mut s) = state.lock() {
        s.declined = Some((open.run_id.clone(), reason));
    }
    poke.notify_one();
}

fn set_serving(state: &Mutex<State>, poke: &Notify, run: Option<String>) {
    if let Ok(mut s) = state.lock() {
        s.serving = run;
    }
    poke.notify_one();
}

/// Announces the agent every [`ANNOUNCE_EVERY`] and whenever poked.
async fn announce_loop(
    transport: Arc<Transport>,
    agent_id: String,
    incarnation: u64,
    state: Arc<Mutex<State>>,
    poke: Arc<Notify>,
) {
    let topic = agents::send_topic(&transport, Side::Agent);
    let mut failing = false;
    loop {
        let msg = {
            let s = match state.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            AgentStatus::Announce(AgentAnnounce {
                agent_id: agent_id.clone(),
                incarnation,
                hostname: session::hostname(),
                arch: std::env::consts::ARCH.to_string(),
                cores: std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1),
                version: env!("CARGO_PKG_VERSION").to_string(),
                serving: s.serving.clone(),
                declined: s.declined.clone(),
            })
        };
        match transport
            .send(&topic, &agent_id, MessageKind::Status, &msg)
            .await
        {
            Ok(_) if failing => {
                tracing::info!("announcing on the agents channel again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!("could not announce this agent (will keep trying): {e}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            _ = poke.notified() => {}
        }
    }
}

/// Decodes the masters' messages; anything else is counted and skipped.
async fn read_offers(mut receiver: Receiver, tx: mpsc::Sender<AgentControl>) {
    loop {
        let d = match receiver.recv_timeout(Duration::from_millis(500)).await {
            Ok(Some(d)) => d,
            Ok(None) if tx.is_closed() => return,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("agents channel: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if d.kind != MessageKind::Control {
            tracing::warn!(sender = %d.sender, "agents channel: ignored a {:?} record", d.kind);
            continue;
        }
        match d.decode::<AgentControl>(agents::MESSAGE_LIMIT) {
            // A full queue means an offer storm; dropping is harmless (offers repeat).
            Ok(m) => {
                let _ = tx.try_send(m);
            }
            Err(e) => {
                tracing::warn!(sender = %d.sender, "agents channel: ignored an undecodable message: {e}")
            }
        }
    }
}
