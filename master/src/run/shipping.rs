//! What the master ships to workers: model packages, shards (by reference
//! to a worker's sample cache where it can, see [`crate::samples`]), the
//! globals that go with them, and broadcasts on the model topic.

use std::time::{Duration, Instant};

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{Assignment, GlobalModel, ModelPackage};
use common::transport::Transport;

use super::{Master, MASTER_ID};

impl Master {
    pub(super) async fn send_package(&mut self, id: &str) -> anyhow::Result<()> {
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
                version: self.coord.version(),
                parameters: self.coord.global().to_vec(),
            },
            plan: self.plan.clone(),
            validation: self.workload.validation_bytes(id)?,
        });
        let report = self
            .transport
            .send(&shard_topic, MASTER_ID, MessageKind::Shard, &package)
            .await
            .context("send model package")?;
        tracing::info!(worker = %id, bytes = report.bytes, records = report.records, version = self.coord.version(), "model package sent");
        self.deliveries.package_sent(id, self.coord.version());
        let cache = self
            .coord
            .workers()
            .get(id)
            .map_or(0, |w| w.registration.sample_cache_bytes);
        self.samples.package_sent(id, cache);
        Ok(())
    }

    /// Sends a batch of shards (with their globals, see
    /// [`crate::delivery`]): each worker's in order, the workers at once.
    pub(super) async fn send_shards(
        &mut self,
        batch: Vec<(String, crate::allocation::Shard, u64)>,
    ) -> anyhow::Result<()> {
        let topics = self.transport.topics().clone();
        let version = self.coord.version();
        let started = Instant::now();
        // The worker with the longest rounds first: its records lead the
        // producer's queue, and the round waits for it.
        let mut batch = batch;
        let cycle = |id: &str| {
            self.coord
                .workers()
                .get(id)
                .and_then(|w| w.last_cycle)
                .map_or(f64::INFINITY, |(_, secs)| secs)
        };
        batch.sort_by(|a, b| cycle(&b.0).total_cmp(&cycle(&a.0)));
        let workers: Vec<String> = batch.iter().map(|(id, _, _)| id.clone()).collect();
        let mut records = Vec::with_capacity(batch.len());
        for (id, shard, round) in batch {
            let assignment = self.samples.assignment(
                &self.workload,
                &id,
                shard.id,
                round,
                version,
                &shard.indices,
            )?;
            let recs = self
                .deliveries
                .for_shard(&id, version, self.coord.global(), assignment)?;
            records.push((topics.shard(&id), recs));
        }
        let encoded = Instant::now();
        // With broadcast delivery the version the shards train from goes
        // with them (a worker holds a shard until its version arrives).
        let due = self.deliveries.broadcast_due(version);
        let broadcast = broadcast_global(&self.transport, due, version, self.coord.global());
        let (broadcast, shards) = tokio::join!(
            broadcast,
            crate::delivery::send_all(&self.transport, MASTER_ID, records)
        );
        shards?;
        if let Some(took) = broadcast? {
            self.phases.broadcast(took);
        }
        let done = Instant::now();
        if let Some(s) = self.startup.take() {
            tracing::info!("{}", s.line(done));
        }
        tracing::debug!(
            encode_ms = (encoded - started).as_secs_f64() * 1e3,
            send_ms = (done - encoded).as_secs_f64() * 1e3,
            "shards sent"
        );
        self.phases
            .shards_sent(workers.iter().map(String::as_str), done, done - started);
        Ok(())
    }

    /// `worker` could not assemble `shard_id` from its cache: the shard
    /// again, whole (the mirror of its cache starts over).
    pub(super) async fn resend_whole(
        &mut self,
        worker: String,
        shard_id: u64,
    ) -> anyhow::Result<()> {
        let Some(sent) = self.samples.missed(&worker, shard_id) else {
            tracing::warn!(worker = %worker, shard = shard_id, "cannot resend shard: it is not one of the worker's recent shards");
            return Ok(());
        };
        let shard = crate::allocation::Shard {
            id: sent.shard_id,
            worker: worker.clone(),
            pass: 0,
            indices: sent.indices,
        };
        self.send_shards(vec![(worker, shard, sent.round)]).await
    }

    /// With broadcast delivery, puts `version` on the model topic unless it
    /// is there already.
    pub(super) async fn broadcast(&mut self, version: u64) -> anyhow::Result<()> {
        let due = self.deliveries.broadcast_due(version);
        if let Some(took) =
            broadcast_global(&self.transport, due, version, self.coord.global()).await?
        {
            self.phases.broadcast(took);
        }
        Ok(())
    }
}

/// Sends global `version` on the model topic when `due`; how long it took.
async fn broadcast_global(
    transport: &Transport,
    due: bool,
    version: u64,
    parameters: &[f32],
) -> anyhow::Result<Option<Duration>> {
    if !due {
        return Ok(None);
    }
    let started = Instant::now();
    let global = GlobalModel {
        version,
        parameters: parameters.to_vec(),
    };
    transport
        .send(
            &transport.topics().model(),
            MASTER_ID,
            MessageKind::Model,
            &global,
        )
        .await
        .context("broadcast global model")?;
    Ok(Some(started.elapsed()))
}
