//! BSP (bulk synchronous parallel): every active worker contributes one round
//! to a barrier; when all have (or were rejected, or left), the master folds
//! all their deltas into one new version with the configured weights and the
//! barrier opens. A worker that has contributed waits at the barrier.

use std::collections::BTreeSet;

use anyhow::Result;

use super::{
    apply_updates, AcceptedUpdate, AppliedUpdate, PolicyConfig, PolicyContext, SyncPolicy,
};
use crate::aggregation::AggregationConfig;

/// The BSP policy.
#[derive(Debug)]
pub struct Bsp {
    aggregation: AggregationConfig,
    pending: Vec<AcceptedUpdate>,
    /// Workers done with the current barrier (with an update or a rejected one).
    arrived: BTreeSet<String>,
}

/// Registry entry.
pub fn build(_: &PolicyConfig, aggregation: &AggregationConfig) -> Box<dyn SyncPolicy> {
    Box::new(Bsp {
        aggregation: aggregation.clone(),
        pending: Vec::new(),
        arrived: BTreeSet::new(),
    })
}

impl SyncPolicy for Bsp {
    fn name(&self) -> &'static str {
        "bsp"
    }

    fn workers_gate_updates(&self) -> bool {
        false
    }

    fn on_update(&mut self, _ctx: &PolicyContext<'_>, update: AcceptedUpdate) {
        self.arrived.insert(update.worker.clone());
        self.pending.push(update);
    }

    fn on_update_rejected(&mut self, _ctx: &PolicyContext<'_>, worker: &str) {
        // Its round yields nothing, but waiting for it would stall everyone.
        self.arrived.insert(worker.to_string());
    }

    fn ready_to_aggregate(&self, ctx: &PolicyContext<'_>) -> bool {
        !self.pending.is_empty() && ctx.active_workers.iter().all(|w| self.arrived.contains(w))
    }

    fn aggregate(
        &mut self,
        ctx: &PolicyContext<'_>,
        global: &mut [f32],
    ) -> Result<Vec<AppliedUpdate>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let config = &self.aggregation;
        let applied = apply_updates(ctx, global, &self.pending, |u, staleness| {
            (
                config.share_weight(u.samples, u.loss),
                config.damping(staleness),
            )
        })?;
        self.pending.clear();
        self.arrived.clear();
        Ok(applied)
    }

    fn allows_prefetch(&self) -> bool {
        false
    }

    fn may_start_round(&self, _ctx: &PolicyContext<'_>, worker: &str) -> bool {
        !self.arrived.contains(worker)
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{build, update, workers};
    use super::*;

    #[test]
    fn waits_for_every_active_worker_then_averages() {
        let active = workers(&["a", "b", "c"]);
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        let mut policy = build("bsp");
        let mut global = vec![0.0_f32];
        policy.on_update(&ctx, update("a", 1, 0, vec![3.0]));
        assert!(!policy.ready_to_aggregate(&ctx));
        assert!(!policy.may_start_round(&ctx, "a"), "a waits at the barrier");
        assert!(policy.may_start_round(&ctx, "b"));
        policy.on_update(&ctx, update("b", 1, 0, vec![6.0]));
        policy.on_update_rejected(&ctx, "c");
        assert!(policy.ready_to_aggregate(&ctx));
        let applied = policy.aggregate(&ctx, &mut global).unwrap();
        // equal weights (100 samples, loss 1), fresh: (3 + 6) / 2
        assert_eq!(global, vec![4.5]);
        assert_eq!(applied.len(), 2);
        let next = PolicyContext {
            version: 1,
            active_workers: &active,
        };
        assert!(policy.may_start_round(&next, "a") && policy.may_start_round(&next, "c"));
        assert!(!policy.ready_to_aggregate(&next));
    }

    #[test]
    fn a_gone_worker_no_longer_holds_the_barrier() {
        let mut active = workers(&["a", "b"]);
        let mut policy = build("bsp");
        policy.on_update(
            &PolicyContext {
                version: 0,
                active_workers: &active,
            },
            update("a", 1, 0, vec![1.0]),
        );
        assert!(!policy.ready_to_aggregate(&PolicyContext {
            version: 0,
            active_workers: &active
        }));
        active.remove("b");
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        policy.on_worker_gone(&ctx, "b");
        assert!(policy.ready_to_aggregate(&ctx));
    }

    #[test]
    fn weights_follow_samples_and_loss() {
        let active = workers(&["a", "b"]);
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        let mut policy = build("bsp");
        // a: 100 samples, loss 1 -> 50; b: 300 samples, loss 0.5 -> 200.
        policy.on_update(&ctx, update("a", 1, 0, vec![10.0]));
        let mut b = update("b", 1, 0, vec![20.0]);
        (b.samples, b.loss) = (300, 0.5);
        policy.on_update(&ctx, b);
        let mut global = vec![0.0_f32];
        policy.aggregate(&ctx, &mut global).unwrap();
        // (50 * 10 + 200 * 20) / 250 = 18
        assert!((global[0] - 18.0).abs() < 1e-6, "{global:?}");
    }
}
