//! ASP (asynchronous parallel): workers publish a delta every round and the
//! master applies each one in full the moment it arrives — no gate, no
//! weighting, no damping, no waiting. The classic baseline.

use anyhow::Result;

use super::{
    unweighted, AcceptedUpdate, AppliedUpdate, ArrivalQueue, PolicyConfig, PolicyContext,
    SyncPolicy,
};
use crate::aggregation::AggregationConfig;

/// The ASP policy.
#[derive(Debug, Default)]
pub struct Asp {
    queue: ArrivalQueue,
}

/// Registry entry.
pub fn build(_: &PolicyConfig, _: &AggregationConfig) -> Box<dyn SyncPolicy> {
    Box::new(Asp::default())
}

impl SyncPolicy for Asp {
    fn name(&self) -> &'static str {
        "asp"
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

    fn pending(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{build, update, workers};
    use super::*;

    #[test]
    fn applies_stale_updates_in_full_one_at_a_time() {
        let active = workers(&["a", "b"]);
        let mut policy = build("asp");
        let mut global = vec![1.0_f32];
        policy.on_update(
            &PolicyContext {
                version: 5,
                active_workers: &active,
            },
            update("a", 1, 0, vec![2.0]),
        );
        policy.on_update(
            &PolicyContext {
                version: 5,
                active_workers: &active,
            },
            update("b", 1, 5, vec![3.0]),
        );
        let ctx = PolicyContext {
            version: 5,
            active_workers: &active,
        };
        let first = policy.aggregate(&ctx, &mut global).unwrap();
        assert_eq!((first[0].staleness, first[0].damping), (5, 1.0));
        assert_eq!(global, vec![3.0]);
        let ctx = PolicyContext {
            version: 6,
            active_workers: &active,
        };
        assert!(policy.ready_to_aggregate(&ctx));
        policy.aggregate(&ctx, &mut global).unwrap();
        assert_eq!(global, vec![6.0]);
        assert!(!policy.ready_to_aggregate(&ctx));
    }
}
