//! `master run`: connect, wait for workers to register, welcome them, and
//! (until the training loop lands) end the round trip with a broadcast Stop.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{ControlMessage, Registration, StatusMessage};
use common::transport::{StartAt, Transport};

use crate::config::MasterConfig;

/// Largest status message accepted.
const STATUS_LIMIT: u64 = 1024 * 1024;

/// Node id of the master in envelopes and logs.
pub const MASTER_ID: &str = "master";

/// Runs the master until the run ends.
pub async fn run(cfg: MasterConfig) -> anyhow::Result<ExitCode> {
    common::logging::init(&cfg.logging.level, MASTER_ID, None);
    let transport = Transport::connect(&cfg.kafka, &cfg.run_id, MASTER_ID)
        .await
        .context("connect to kafka")?;
    transport
        .create_run_topics()
        .await
        .context("create run topics")?;
    let topics = transport.topics().clone();
    let mut status = transport
        .receiver(&[topics.status()], "master", StartAt::End)
        .await
        .context("subscribe to status topic")?;
    tracing::info!(run = %cfg.run_id, min_workers = cfg.min_workers, "waiting for workers to register");

    let mut workers: BTreeMap<String, Registration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(cfg.registration_timeout_secs);
    while workers.len() < cfg.min_workers {
        if Instant::now() >= deadline {
            anyhow::bail!(
                "only {} of {} workers registered within {} s",
                workers.len(),
                cfg.min_workers,
                cfg.registration_timeout_secs
            );
        }
        let delivery = tokio::select! {
            d = status.recv_timeout(Duration::from_millis(500)) => d.context("read status topic")?,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted");
                return Ok(ExitCode::from(130));
            }
        };
        let Some(delivery) = delivery else { continue };
        if delivery.kind != MessageKind::Status {
            transport.metrics().reject("unexpected_kind");
            continue;
        }
        let msg: StatusMessage = match delivery.decode(STATUS_LIMIT) {
            Ok(m) => m,
            Err(e) => {
                transport.metrics().reject(e.reason());
                tracing::warn!(sender = %delivery.sender, "ignored undecodable status message: {e}");
                continue;
            }
        };
        if let StatusMessage::Register(reg) = msg {
            if reg.worker_id != delivery.sender {
                transport.metrics().reject("sender_mismatch");
                tracing::warn!(sender = %delivery.sender, claimed = %reg.worker_id, "registration for another worker ignored");
                continue;
            }
            let welcome = ControlMessage::Welcome {
                worker_id: reg.worker_id.clone(),
                incarnation: reg.incarnation,
            };
            transport
                .send(&topics.control(), MASTER_ID, MessageKind::Control, &welcome)
                .await
                .context("send welcome")?;
            if workers.insert(reg.worker_id.clone(), reg.clone()).is_none() {
                tracing::info!(
                    worker = %reg.worker_id,
                    host = %reg.hostname,
                    arch = %reg.arch,
                    cores = reg.cores,
                    slowdown = reg.slowdown,
                    "worker registered: {}",
                    reg.worker_id
                );
            }
        }
    }
    tracing::info!(
        workers = workers.len(),
        "all workers registered; ending the round trip"
    );
    transport
        .send(
            &topics.control(),
            MASTER_ID,
            MessageKind::Control,
            &ControlMessage::Stop {
                reason: "hello round trip complete".into(),
            },
        )
        .await
        .context("send stop")?;
    transport.flush(Duration::from_secs(10))?;
    Ok(ExitCode::SUCCESS)
}
