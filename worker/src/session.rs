//! A worker's life in a run: connect, register until welcomed, heartbeat,
//! stop when told to (or on Ctrl-C).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{ControlMessage, Registration, StatusMessage};
use common::transport::{StartAt, Transport};

use crate::config::WorkerConfig;

/// Largest control message accepted.
const CONTROL_LIMIT: u64 = 1024 * 1024;

/// Runs the worker until the master says stop or the process is interrupted.
pub async fn run(cfg: WorkerConfig) -> anyhow::Result<ExitCode> {
    common::logging::init(&cfg.logging.level, &cfg.worker_id, None);
    let transport = Transport::connect(&cfg.kafka, &cfg.run_id, &cfg.worker_id)
        .await
        .context("connect to kafka")?;
    transport
        .create_run_topics()
        .await
        .context("create run topics")?;
    let topics = transport.topics().clone();
    // Control is read from "now": a stale Stop from an earlier run must not end this one.
    let mut control = transport
        .receiver(
            &[topics.control()],
            &format!("worker-{}", cfg.worker_id),
            StartAt::End,
        )
        .await
        .context("subscribe to control topic")?;

    let registration = Registration {
        worker_id: cfg.worker_id.clone(),
        incarnation: rand::random(),
        hostname: hostname(),
        arch: std::env::consts::ARCH.to_string(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        slowdown: cfg.slowdown,
    };
    tracing::info!(
        worker = %cfg.worker_id,
        run = %cfg.run_id,
        slowdown = cfg.slowdown,
        "registering with the master"
    );

    let started = Instant::now();
    let mut welcomed = false;
    let mut next_register = Instant::now();
    let mut next_heartbeat = Instant::now();
    loop {
        let now = Instant::now();
        if !welcomed && now >= next_register {
            if cfg.master_wait_secs > 0
                && started.elapsed() > Duration::from_secs(cfg.master_wait_secs)
            {
                anyhow::bail!(
                    "no answer from the master within {} s (run `{}`)",
                    cfg.master_wait_secs,
                    cfg.run_id
                );
            }
            transport
                .send(
                    &topics.status(),
                    &cfg.worker_id,
                    MessageKind::Status,
                    &StatusMessage::Register(registration.clone()),
                )
                .await
                .context("send registration")?;
            next_register = now + Duration::from_secs(cfg.register_retry_secs.max(1));
        }
        if welcomed && now >= next_heartbeat {
            let hb = StatusMessage::Heartbeat {
                worker_id: cfg.worker_id.clone(),
                incarnation: registration.incarnation,
                model_version: 0,
            };
            transport
                .send(&topics.status(), &cfg.worker_id, MessageKind::Status, &hb)
                .await
                .context("send heartbeat")?;
            next_heartbeat = now + Duration::from_secs(cfg.heartbeat_secs);
        }
        let delivery = tokio::select! {
            d = control.recv_timeout(Duration::from_millis(500)) => d.context("read control topic")?,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; leaving the run");
                let bye = StatusMessage::Goodbye { worker_id: cfg.worker_id.clone(), reason: "interrupted".into() };
                let _ = transport.send(&topics.status(), &cfg.worker_id, MessageKind::Status, &bye).await;
                transport.flush(Duration::from_secs(5))?;
                return Ok(ExitCode::from(130));
            }
        };
        let Some(delivery) = delivery else { continue };
        if delivery.kind != MessageKind::Control {
            continue;
        }
        let msg: ControlMessage = match delivery.decode(CONTROL_LIMIT) {
            Ok(m) => m,
            Err(e) => {
                transport.metrics().reject(e.reason());
                tracing::warn!(sender = %delivery.sender, "ignored undecodable control message: {e}");
                continue;
            }
        };
        match msg {
            ControlMessage::Welcome {
                worker_id,
                incarnation,
            } if worker_id == cfg.worker_id && incarnation == registration.incarnation => {
                if !welcomed {
                    tracing::info!(master = %delivery.sender, "registered with the master");
                }
                welcomed = true;
            }
            ControlMessage::Welcome { .. } => {}
            ControlMessage::Stop { reason } => {
                tracing::info!(%reason, "master asked to stop");
                transport.flush(Duration::from_secs(10))?;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
