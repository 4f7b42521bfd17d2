//! How global versions and shards reach the workers (`model_delivery`).
//!
//! With `targeted` delivery a worker gets the newest global on its own
//! stream just before a shard, and only when it has an older one (from its
//! package or an earlier send). Each worker's records go in order (the
//! global completes before its shard, so the worker trains from it); the
//! workers of one batch (after a BSP barrier, say) are served at once.
//! A version is copied and encoded once, however many workers it goes to.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use common::envelope::MessageKind;
use common::protocol::{self, Assignment, GlobalModel, ProtocolError, ShardAssignment};
use common::transport::Transport;

use crate::config::ModelDelivery;

/// One encoded record for a worker's stream.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// What it is, for errors.
    pub what: &'static str,
    /// The encoded [`Assignment`] (a global's bytes are shared).
    pub payload: Arc<Vec<u8>>,
}

/// Which version each worker was sent last.
#[derive(Debug)]
pub struct Deliveries {
    mode: ModelDelivery,
    sent: HashMap<String, u64>,
    /// The newest version's `Assignment::Global`, encoded once.
    encoded: Option<(u64, Arc<Vec<u8>>)>,
    /// The newest version on the model topic (or that every worker has
    /// from its package).
    broadcast: u64,
}

impl Deliveries {
    /// Nothing sent yet; `mode` as configured, for `policy` (`auto` is
    /// resolved here).
    pub fn new(mode: ModelDelivery, policy: &str) -> Self {
        Self {
            mode: mode.under(policy),
            sent: HashMap::new(),
            encoded: None,
            broadcast: 0,
        }
    }

    /// With broadcast delivery, whether `version` still has to go on the
    /// model topic (then it counts as sent): it goes once, ahead of the
    /// first shards that train from it, or when it is made if none do.
    pub fn broadcast_due(&mut self, version: u64) -> bool {
        let due = self.broadcasts() && version > self.broadcast;
        if due {
            self.broadcast = version;
        }
        due
    }

    /// Versions up to `version` need no broadcast (a resumed run's
    /// workers get it in their packages).
    pub fn broadcast_sent(&mut self, version: u64) {
        self.broadcast = self.broadcast.max(version);
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
    ) -> Result<Vec<Outgoing>, ProtocolError> {
        let mut out = Vec::with_capacity(2);
        if self.mode == ModelDelivery::Targeted
            && self.sent.get(worker).is_some_and(|&v| v < version)
        {
            out.push(Outgoing {
                what: "the global model",
                payload: self.encoded_global(version, global)?,
            });
            self.sent.insert(worker.to_string(), version);
        }
        out.push(Outgoing {
            what: "a shard",
            payload: Arc::new(protocol::encode(&Assignment::Shard(shard))?),
        });
        Ok(out)
    }

    /// `Assignment::Global` of `version`, encoded the first time it is asked for.
    fn encoded_global(
        &mut self,
        version: u64,
        global: &[f32],
    ) -> Result<Arc<Vec<u8>>, ProtocolError> {
        match &self.encoded {
            Some((v, bytes)) if *v == version => Ok(Arc::clone(bytes)),
            _ => {
                let bytes = Arc::new(protocol::encode(&Assignment::Global(GlobalModel {
                    version,
                    parameters: global.to_vec(),
                }))?);
                self.encoded = Some((version, Arc::clone(&bytes)));
                Ok(bytes)
            }
        }
    }
}

/// Sends each (topic, records) in order, all topics at once; the first
/// failure is the error.
pub async fn send_all(
    transport: &Transport,
    sender: &str,
    batch: Vec<(String, Vec<Outgoing>)>,
) -> anyhow::Result<()> {
    let sends = batch.into_iter().map(|(topic, records)| async move {
        // One worker's records are pipelined (queued in order, then awaited
        // together): its shard does not wait a broker round trip for its global.
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
        transport
            .send_payloads(&topic, sender, MessageKind::Shard, &payloads)
            .await
            .with_context(|| {
                let what: Vec<&str> = records.iter().map(|r| r.what).collect();
                format!("send {} to `{topic}`", what.join(" and "))
            })?;
        anyhow::Ok(())
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: u64) -> ShardAssignment {
        ShardAssignment::whole(id, id, vec![])
    }

    fn decode(o: &Outgoing) -> Assignment {
        protocol::decode(&o.payload, 1 << 20).expect("decodes")
    }

    #[test]
    fn targeted_sends_only_a_newer_version_once() {
        let mut d = Deliveries::new(ModelDelivery::Targeted, "hermes");
        d.package_sent("w", 2);
        // Not newer than the package's: the shard alone.
        assert_eq!(d.for_shard("w", 2, &[0.0], shard(1)).unwrap().len(), 1);
        // Versions 3..7 were made while it trained: only 7 goes.
        let recs = d.for_shard("w", 7, &[1.0], shard(2)).unwrap();
        assert!(matches!(decode(&recs[0]), Assignment::Global(g) if g.version == 7));
        assert!(matches!(decode(&recs[1]), Assignment::Shard(s) if s.shard_id == 2));
        assert_eq!(d.for_shard("w", 7, &[1.0], shard(3)).unwrap().len(), 1);
        assert!(!d.broadcasts());
    }

    #[test]
    fn a_version_is_encoded_once_for_every_worker_and_as_the_protocol_does() {
        let mut d = Deliveries::new(ModelDelivery::Targeted, "hermes");
        d.package_sent("a", 0);
        d.package_sent("b", 0);
        let a = d.for_shard("a", 3, &[0.5, -1.0], shard(1)).unwrap();
        let b = d.for_shard("b", 3, &[0.5, -1.0], shard(2)).unwrap();
        assert!(Arc::ptr_eq(&a[0].payload, &b[0].payload));
        let global = Assignment::Global(GlobalModel {
            version: 3,
            parameters: vec![0.5, -1.0],
        });
        assert_eq!(*a[0].payload, protocol::encode(&global).unwrap());
        assert_eq!(
            *a[1].payload,
            protocol::encode(&Assignment::Shard(shard(1))).unwrap()
        );
    }

    #[test]
    fn auto_broadcasts_under_bsp_only_and_each_version_once() {
        assert!(Deliveries::new(ModelDelivery::Auto, "bsp").broadcasts());
        for policy in ["hermes", "asp", "ssp"] {
            assert!(!Deliveries::new(ModelDelivery::Auto, policy).broadcasts());
        }
        let mut d = Deliveries::new(ModelDelivery::Auto, "bsp");
        d.broadcast_sent(2);
        assert!(!d.broadcast_due(2), "the packages carry version 2");
        assert!(d.broadcast_due(3));
        assert!(!d.broadcast_due(3), "once");
        let mut t = Deliveries::new(ModelDelivery::Targeted, "bsp");
        assert!(!t.broadcast_due(5), "targeted never broadcasts");
    }

    #[test]
    fn broadcast_never_sends_globals_with_shards() {
        let mut d = Deliveries::new(ModelDelivery::Broadcast, "hermes");
        d.package_sent("w", 0);
        assert_eq!(d.for_shard("w", 9, &[0.0], shard(1)).unwrap().len(), 1);
        assert!(d.broadcasts());
    }
}
