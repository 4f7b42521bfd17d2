//! How global versions and shards reach the workers (`model_delivery`).
//!
//! With `targeted` delivery a worker gets the newest global on its own
//! stream just before a shard, and only when it has an older one (from its
//! package or an earlier send). Each worker's records go in order (the
//! global completes before its shard, so the worker trains from it); the
//! workers of one batch (after a BSP barrier, say) are served at once.

use std::collections::HashMap;

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{Assignment, GlobalModel, ShardAssignment};
use common::transport::Transport;

use crate::config::ModelDelivery;

/// Which version each worker was sent last.
#[derive(Debug)]
pub struct Deliveries {
    mode: ModelDelivery,
    sent: HashMap<String, u64>,
}

impl Deliveries {
    /// Nothing sent yet.
    pub fn new(mode: ModelDelivery) -> Self {
        Self {
            mode,
            sent: HashMap::new(),
        }
    }

    /// Whether new versions go on the shared model topic.
    pub fn broadcasts(&self) -> bool {
        self.mode == ModelDelivery::Broadcast
    }

    /// `worker` got a package holding `version`.
    pub fn package_sent(&mut self, worker: &str, version: u64) {
        self.sent.insert(worker.to_string(), version);
    }

    /// The records for one shard: with targeted delivery the global
    /// (`version`, `global`) first when the worker has an older one.
    pub fn for_shard(
        &mut self,
        worker: &str,
        version: u64,
        global: &[f32],
        shard: ShardAssignment,
    ) -> Vec<Assignment> {
        let mut out = Vec::with_capacity(2);
        if self.mode == ModelDelivery::Targeted
            && self.sent.get(worker).is_some_and(|&v| v < version)
        {
            out.push(Assignment::Global(GlobalModel {
                version,
                parameters: global.to_vec(),
            }));
            self.sent.insert(worker.to_string(), version);
        }
        out.push(Assignment::Shard(shard));
        out
    }
}

/// Sends each (topic, records) in order, all topics at once; the first
/// failure is the error.
pub async fn send_all(
    transport: &Transport,
    sender: &str,
    batch: Vec<(String, Vec<Assignment>)>,
) -> anyhow::Result<()> {
    let sends = batch.into_iter().map(|(topic, records)| async move {
        for record in &records {
            transport
                .send(&topic, sender, MessageKind::Shard, record)
                .await
                .with_context(|| format!("send {} to `{topic}`", what(record)))?;
        }
        anyhow::Ok(())
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}

fn what(a: &Assignment) -> &'static str {
    match a {
        Assignment::Package(_) => "the model package",
        Assignment::Shard(_) => "a shard",
        Assignment::Global(_) => "the global model",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: u64) -> ShardAssignment {
        ShardAssignment {
            shard_id: id,
            round: id,
            data: vec![],
        }
    }

    #[test]
    fn targeted_sends_only_a_newer_version_once() {
        let mut d = Deliveries::new(ModelDelivery::Targeted);
        d.package_sent("w", 2);
        // Not newer than the package's: the shard alone.
        assert_eq!(d.for_shard("w", 2, &[0.0], shard(1)).len(), 1);
        // Versions 3..7 were made while it trained: only 7 goes.
        let recs = d.for_shard("w", 7, &[1.0], shard(2));
        assert!(matches!(&recs[0], Assignment::Global(g) if g.version == 7));
        assert!(matches!(&recs[1], Assignment::Shard(s) if s.shard_id == 2));
        assert_eq!(d.for_shard("w", 7, &[1.0], shard(3)).len(), 1);
        assert!(!d.broadcasts());
    }

    #[test]
    fn broadcast_never_sends_globals_with_shards() {
        let mut d = Deliveries::new(ModelDelivery::Broadcast);
        d.package_sent("w", 0);
        assert_eq!(d.for_shard("w", 9, &[0.0], shard(1)).len(), 1);
        assert!(d.broadcasts());
    }
}
