//! Opening the run to agents (`worker --agent`, see `common::agents`).
//!
//! A background task on its own connection to the agents channel (opened
//! there, so the master's start never waits for it): it offers the run
//! every `alive_secs` and at once to an idle invited agent that announces
//! itself, logs the agents it hears and an agent that declines the offer,
//! and says the run closed when the master ends it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::agents::{self, AgentAnnounce, AgentControl, AgentStatus, RunOpen, Side};
use common::envelope::MessageKind;
use common::runkey::RunKeys;
use common::transport::{Receiver, Transport};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::MasterConfig;

/// Shortest gap between two offers (an announcing crowd gets one offer).
const MIN_GAP: Duration = Duration::from_millis(500);
/// Most agents whose changes are logged.
const MAX_AGENTS: usize = 4096;

/// The running announcer.
pub struct Announcer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Announcer {
    /// Starts offering the run; `None` when `agents.announce` is off. A
    /// channel that cannot be opened is a warning (pinned workers still
    /// join), not an error.
    pub fn start(cfg: &MasterConfig, keys: RunKeys) -> Option<Self> {
        if !cfg.agents.announce {
            return None;
        }
        let offer = match offer_of(cfg) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("not announcing the run to agents: {e:#}");
                return None;
            }
        };
        let sender = format!("master@{}", cfg.run_id);
        let kafka = cfg.kafka.clone();
        let every = Duration::from_secs(cfg.alive_secs.max(1));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            match agents::open_channel(&kafka, &sender, keys, Side::Master).await {
                Ok((transport, receiver)) => {
                    offer_loop(transport, receiver, sender, offer, every, stopped).await
                }
                Err(e) => tracing::warn!(
                    "cannot open the agents channel; agents will not be offered this run: {e}"
                ),
            }
        });
        Some(Self { stop, task })
    }

    /// Says the run is closed and stops (waiting at most `timeout`).
    pub async fn close(self, timeout: Duration) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

/// The run's offer from the configuration.
fn offer_of(cfg: &MasterConfig) -> anyhow::Result<RunOpen> {
    Ok(RunOpen {
        run_id: cfg.run_id.clone(),
        master_incarnation: rand::random(),
        invite: cfg.agents.invite.clone(),
        overrides_json: serde_json::to_string(&cfg.agents.overrides)?,
        per_agent_json: cfg
            .agents
            .per_agent
            .iter()
            .map(|(id, o)| Ok((id.clone(), serde_json::to_string(o)?)))
            .collect::<anyhow::Result<_>>()?,
        policy: cfg.policy.name.clone(),
    })
}

async fn offer_loop(
    transport: Transport,
    mut receiver: Receiver,
    sender: String,
    offer: RunOpen,
    every: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let topic = agents::send_topic(&transport, Side::Master);
    let open = AgentControl::RunOpen(offer.clone());
    let mut last_offer: Option<Instant> = None;
    let mut declined_logged: BTreeMap<String, String> = BTreeMap::new();
    // Agent id → the run it served when last heard (`None` = idle).
    let mut heard: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut failing = false;
    loop {
        let due = last_offer.is_none_or(|t| t.elapsed() >= every);
        if due {
            last_offer = Some(Instant::now());
            match transport
                .send(&topic, &sender, MessageKind::Control, &open)
                .await
            {
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!("could not offer the run to agents (will keep trying): {e}");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        let wait = last_offer.map_or(Duration::ZERO, |t| every.saturating_sub(t.elapsed()));
        let d = tokio::select! {
            d = receiver.recv_timeout(wait.max(Duration::from_millis(50))) => d,
            _ = &mut stopped => break,
        };
        let Ok(Some(d)) = d else { continue };
        if d.kind != MessageKind::Status {
            continue;
        }
        let AgentStatus::Announce(a) = match d.decode::<AgentStatus>(agents::MESSAGE_LIMIT) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(sender = %d.sender, "agents channel: ignored an undecodable message: {e}");
                continue;
            }
        };
        if a.agent_id != d.sender {
            tracing::warn!(sender = %d.sender, "agents channel: ignored an announcement for `{}`", a.agent_id.escape_debug());
            continue;
        }
        if let Some((run, reason)) = &a.declined {
            if *run == offer.run_id && declined_logged.get(&a.agent_id) != Some(reason) {
                tracing::warn!(agent = %a.agent_id, "agent {} declined this run: {reason}", a.agent_id);
                declined_logged.insert(a.agent_id.clone(), reason.clone());
            }
        }
        let idle_and_invited = a.serving.is_none() && offer.invites(&a.agent_id);
        record(&mut heard, &a);
        // An idle invited agent gets the offer now, not at the next period.
        if idle_and_invited && last_offer.is_none_or(|t| t.elapsed() >= MIN_GAP) {
            last_offer = None;
        }
    }
    let closed = AgentControl::RunClosed {
        run_id: offer.run_id.clone(),
        master_incarnation: offer.master_incarnation,
    };
    if let Err(e) = transport
        .send(&topic, &sender, MessageKind::Control, &closed)
        .await
    {
        tracing::warn!("could not tell agents the run closed: {e}");
    }
    let _ = transport.flush(Duration::from_secs(5));
}

/// Logs an agent heard for the first time, or whose run changed.
fn record(heard: &mut BTreeMap<String, Option<String>>, a: &AgentAnnounce) {
    if heard.get(&a.agent_id) == Some(&a.serving) {
        return;
    }
    if heard.len() >= MAX_AGENTS && !heard.contains_key(&a.agent_id) {
        return;
    }
    tracing::info!(
        agent = %a.agent_id,
        host = %a.hostname.escape_debug(),
        arch = %a.arch.escape_debug(),
        "agent {}: {}",
        a.agent_id,
        a.serving
            .as_ref()
            .map_or("idle".to_string(), |r| format!("serving run {r}"))
    );
    heard.insert(a.agent_id.clone(), a.serving.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_carries_the_runs_invitations_and_overrides() {
        let mut cfg = MasterConfig {
            run_id: "exp-9".into(),
            ..Default::default()
        };
        cfg.policy.name = "bsp".into();
        cfg.agents.invite = vec!["a1".into()];
        cfg.agents.overrides = serde_json::json!({"slowdown": 2.0});
        cfg.agents
            .per_agent
            .insert("a1".into(), serde_json::json!({"heartbeat_secs": 1}));
        let o = offer_of(&cfg).unwrap();
        assert_eq!(o.run_id, "exp-9");
        assert_eq!(o.policy, "bsp");
        assert!(o.invites("a1") && !o.invites("a2"));
        assert_eq!(o.overrides_json, r#"{"slowdown":2.0}"#);
        assert_eq!(
            o.per_agent_json,
            vec![("a1".into(), r#"{"heartbeat_secs":1}"#.into())]
        );
        assert_ne!(
            offer_of(&cfg).unwrap().master_incarnation,
            o.master_incarnation
        );
    }
}
