//! SSP (stale synchronous parallel): ASP's immediate, unweighted application,
//! plus a bound s on how far workers drift apart: a worker that has completed
//! more than s rounds beyond the slowest active worker waits.
//!
//! Clocks count reported rounds. A worker that joins (or rejoins after a
//! restart) starts at the slowest active clock, so it neither blocks the others
//! nor gets to run far ahead.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{
    unweighted, AcceptedUpdate, AppliedUpdate, ArrivalQueue, PolicyConfig, PolicyContext,
    SyncPolicy,
};
use crate::aggregation::AggregationConfig;

/// The SSP policy.
#[derive(Debug)]
pub struct Ssp {
    bound: u64,
    queue: ArrivalQueue,
    clocks: BTreeMap<String, u64>,
}

/// Registry entry.
pub fn build(config: &PolicyConfig, _: &AggregationConfig) -> Box<dyn SyncPolicy> {
    Box::new(Ssp {
        bound: config.staleness_bound,
        queue: ArrivalQueue::default(),
        clocks: BTreeMap::new(),
    })
}

impl Ssp {
    fn slowest(&self, ctx: &PolicyContext<'_>, except: Option<&str>) -> Option<u64> {
        ctx.active_workers
            .iter()
            .filter(|w| Some(w.as_str()) != except)
            .filter_map(|w| self.clocks.get(w).copied())
            .min()
    }
}

impl SyncPolicy for Ssp {
    fn name(&self) -> &'static str {
        "ssp"
    }

    fn workers_gate_updates(&self) -> bool {
        false
    }

    fn on_update(&mut self, _ctx: &PolicyContext<'_>, update: AcceptedUpdate) {
        self.queue.push(update);
    }

    fn ready_to_aggregate(&self, _ctx: &PolicyContext<'_>) -> bool {
        !self.queue.is_empty()
    }

    fn aggregate(
        &mut self,
        ctx: &PolicyContext<'_>,
        global: &mut [f32],
    ) -> Result<Vec<AppliedUpdate>> {
        self.queue.apply_oldest(ctx, global, unweighted)
    }

    fn allows_prefetch(&self) -> bool {
        false
    }

    fn may_start_round(&self, ctx: &PolicyContext<'_>, worker: &str) -> bool {
        let own = self.clocks.get(worker).copied().unwrap_or(0);
        match self.slowest(ctx, None) {
            Some(slowest) => own <= slowest + self.bound,
            None => true,
        }
    }

    fn on_round_end(&mut self, ctx: &PolicyContext<'_>, worker: &str) {
        if !self.clocks.contains_key(worker) {
            self.on_worker_joined(ctx, worker);
        }
        if let Some(clock) = self.clocks.get_mut(worker) {
            *clock += 1;
        }
    }

    fn on_worker_joined(&mut self, ctx: &PolicyContext<'_>, worker: &str) {
        let start = self.slowest(ctx, Some(worker)).unwrap_or(0);
        self.clocks.insert(worker.to_string(), start);
    }

    fn on_worker_gone(&mut self, _ctx: &PolicyContext<'_>, worker: &str) {
        self.clocks.remove(worker);
    }

    fn pending(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{build, update, workers};
    use super::*;

    #[test]
    fn fast_worker_waits_beyond_the_bound() {
        // bound s = 1 (test_support); fast may be at most 1 round ahead of slow.
        let active = workers(&["fast", "slow"]);
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        let mut policy = build("ssp");
        policy.on_worker_joined(&ctx, "fast");
        policy.on_worker_joined(&ctx, "slow");
        policy.on_round_end(&ctx, "fast"); // fast 1, slow 0
        assert!(policy.may_start_round(&ctx, "fast"));
        policy.on_round_end(&ctx, "fast"); // fast 2, slow 0
        assert!(!policy.may_start_round(&ctx, "fast"));
        assert!(policy.may_start_round(&ctx, "slow"));
        policy.on_round_end(&ctx, "slow"); // fast 2, slow 1
        assert!(policy.may_start_round(&ctx, "fast"));
    }

    #[test]
    fn gone_worker_releases_the_bound_and_rejoiner_starts_at_the_slowest() {
        let mut active = workers(&["fast", "slow"]);
        let mut policy = build("ssp");
        {
            let ctx = PolicyContext {
                version: 0,
                active_workers: &active,
            };
            policy.on_worker_joined(&ctx, "fast");
            policy.on_worker_joined(&ctx, "slow");
            for _ in 0..2 {
                policy.on_round_end(&ctx, "fast");
            }
            assert!(!policy.may_start_round(&ctx, "fast"));
        }
        active.remove("slow");
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        policy.on_worker_gone(&ctx, "slow");
        assert!(policy.may_start_round(&ctx, "fast"));
        active.insert("slow".to_string());
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        policy.on_worker_joined(&ctx, "slow"); // starts at fast's clock 2
        assert!(policy.may_start_round(&ctx, "fast") && policy.may_start_round(&ctx, "slow"));
    }

    #[test]
    fn applies_updates_immediately_and_unweighted() {
        let active = workers(&["a"]);
        let ctx = PolicyContext {
            version: 3,
            active_workers: &active,
        };
        let mut policy = build("ssp");
        let mut global = vec![0.5_f32];
        policy.on_update(&ctx, update("a", 1, 1, vec![0.25]));
        assert!(policy.ready_to_aggregate(&ctx));
        let applied = policy.aggregate(&ctx, &mut global).unwrap();
        assert_eq!(global, vec![0.75]);
        assert_eq!((applied[0].staleness, applied[0].damping), (2, 1.0));
    }
}
