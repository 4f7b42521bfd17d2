//! The agents channel: how long-lived workers (`worker --agent`) and masters
//! find each other without sharing a run id in advance.
//!
//! The channel is two topics outside every run, `<prefix>._agents.control`
//! (masters → agents) and `<prefix>._agents.status` (agents → masters),
//! carried in the same authenticated envelopes as a run's records (the
//! channel's "run id" is [`CHANNEL`], which no run may use).
//!
//! * An agent says [`AgentStatus::Announce`] when it starts and every few
//!   seconds after: who it is and which run it serves, if any.
//! * A master opens its run with [`AgentControl::RunOpen`]: at start, every
//!   `alive_secs`, and at once when an idle agent announces itself. An idle
//!   agent that is invited joins: it takes the run id and the configuration
//!   overrides from the offer and registers with that run as any worker does.
//! * When the run ends the master says [`AgentControl::RunClosed`].

use serde::{Deserialize, Serialize};

use crate::config::KafkaConfig;
use crate::runkey::RunKeys;
use crate::transport::{Receiver, StartAt, Transport, TransportError};

/// The pseudo run id of the agents channel (no run may be called so).
pub const CHANNEL: &str = "_agents";

/// Largest agents-channel message accepted (bytes).
pub const MESSAGE_LIMIT: u64 = 256 * 1024;

/// Longest run id a master may open (Kafka topic names are at most 249
/// characters, and the run id is one part of them).
pub const MAX_RUN_ID_LEN: usize = 100;

/// Which end of the channel a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Sends on status, listens on control.
    Agent,
    /// Sends on control, listens on status.
    Master,
}

/// Connects to the agents channel as `sender`, creates its two topics and
/// listens, from now on, to the other side's topic.
pub async fn open_channel(
    cfg: &KafkaConfig,
    sender: &str,
    keys: RunKeys,
    side: Side,
) -> Result<(Transport, Receiver), TransportError> {
    let transport = Transport::connect_with_keys(cfg, CHANNEL, sender, keys).await?;
    let topics = transport.topics().clone();
    transport
        .create_topics(&[
            transport.topic_spec(topics.control(), 1),
            transport.topic_spec(topics.status(), 1),
        ])
        .await?;
    let listen = match side {
        Side::Agent => topics.control(),
        Side::Master => topics.status(),
    };
    let receiver = transport
        .receiver(&[listen], &format!("agents-{sender}"), StartAt::End)
        .await?;
    Ok((transport, receiver))
}

/// The topic a side sends on.
pub fn send_topic(transport: &Transport, side: Side) -> String {
    match side {
        Side::Agent => transport.topics().status(),
        Side::Master => transport.topics().control(),
    }
}

/// Masters → agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentControl {
    /// A run that agents may join.
    RunOpen(RunOpen),
    /// The run ended; nobody should join it any more.
    RunClosed {
        /// The run that ended.
        run_id: String,
        /// The master process that ran it (see [`RunOpen::master_incarnation`]).
        master_incarnation: u64,
    },
}

/// A master's offer of its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOpen {
    /// The run to join (its topics and envelopes use this id).
    pub run_id: String,
    /// Random per master process: an agent that served a run to its end
    /// does not join the same offer again, but does join the same run id
    /// opened anew by a later master.
    pub master_incarnation: u64,
    /// Agent ids invited; empty = any idle agent.
    pub invite: Vec<String>,
    /// Worker configuration fields for every joining agent, as a JSON
    /// object (deep-merged into the agent's own configuration).
    pub overrides_json: String,
    /// Per-agent fields on top of `overrides_json`: (agent id, JSON object).
    pub per_agent_json: Vec<(String, String)>,
    /// The master's policy, for the agent's log.
    pub policy: String,
}

impl RunOpen {
    /// Whether `agent_id` is invited.
    pub fn invites(&self, agent_id: &str) -> bool {
        self.invite.is_empty() || self.invite.iter().any(|a| a == agent_id)
    }
}

/// Agents → masters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentStatus {
    /// An agent's sign of life.
    Announce(AgentAnnounce),
}

/// Who an agent is and what it does now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentAnnounce {
    /// The agent's worker id (kept across runs and restarts).
    pub agent_id: String,
    /// Random per agent process start.
    pub incarnation: u64,
    /// Host name of the device.
    pub hostname: String,
    /// CPU architecture.
    pub arch: String,
    /// Logical CPU cores.
    pub cores: u32,
    /// The agent's program version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The run it serves now; `None` = idle.
    pub serving: Option<String>,
    /// The last offer it declined, and why: (run id, reason).
    pub declined: Option<(String, String)>,
}

/// Why a run id cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunIdError {
    /// Empty.
    #[error("the run id is empty")]
    Empty,
    /// Longer than [`MAX_RUN_ID_LEN`].
    #[error("the run id is {0} characters long (at most {MAX_RUN_ID_LEN})")]
    TooLong(usize),
    /// Starts with `_` (reserved for channels such as [`CHANNEL`]).
    #[error("run ids starting with `_` are reserved (`{CHANNEL}` is the agents channel)")]
    Reserved,
    /// A character other than `[A-Za-z0-9._-]`.
    #[error("the run id has the character {0:?}; use letters, digits, `.`, `_` and `-`")]
    BadChar(char),
}

/// Checks that `run_id` names a run: 1 to [`MAX_RUN_ID_LEN`] characters of
/// `[A-Za-z0-9._-]`, not starting with `_`.
pub fn check_run_id(run_id: &str) -> Result<(), RunIdError> {
    if run_id.is_empty() {
        return Err(RunIdError::Empty);
    }
    let len = run_id.chars().count();
    if len > MAX_RUN_ID_LEN {
        return Err(RunIdError::TooLong(len));
    }
    if run_id.starts_with('_') {
        return Err(RunIdError::Reserved);
    }
    if let Some(c) = run_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(RunIdError::BadChar(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, encode};

    #[test]
    fn messages_round_trip() {
        let open = AgentControl::RunOpen(RunOpen {
            run_id: "exp-3".into(),
            master_incarnation: 5,
            invite: vec!["pi-1".into()],
            overrides_json: r#"{"slowdown": 2.0}"#.into(),
            per_agent_json: vec![("pi-1".into(), "{}".into())],
            policy: "hermes".into(),
        });
        assert_eq!(
            decode::<AgentControl>(&encode(&open).unwrap(), MESSAGE_LIMIT).unwrap(),
            open
        );
        let hello = AgentStatus::Announce(AgentAnnounce {
            agent_id: "pi-1".into(),
            incarnation: 9,
            hostname: "pi".into(),
            arch: "aarch64".into(),
            cores: 4,
            version: "0.1.0".into(),
            serving: Some("exp-3".into()),
            declined: None,
        });
        assert_eq!(
            decode::<AgentStatus>(&encode(&hello).unwrap(), MESSAGE_LIMIT).unwrap(),
            hello
        );
    }

    #[test]
    fn invitations() {
        let mut open = RunOpen {
            run_id: "r".into(),
            master_incarnation: 1,
            invite: vec![],
            overrides_json: "{}".into(),
            per_agent_json: vec![],
            policy: "bsp".into(),
        };
        assert!(open.invites("anyone"));
        open.invite = vec!["a".into(), "b".into()];
        assert!(open.invites("b"));
        assert!(!open.invites("c"));
    }

    #[test]
    fn run_ids() {
        assert_eq!(check_run_id("exp-1.a_b"), Ok(()));
        assert_eq!(check_run_id(""), Err(RunIdError::Empty));
        assert_eq!(check_run_id("_agents"), Err(RunIdError::Reserved));
        assert_eq!(check_run_id("a/b"), Err(RunIdError::BadChar('/')));
        assert_eq!(
            check_run_id(&"x".repeat(101)),
            Err(RunIdError::TooLong(101))
        );
    }
}
