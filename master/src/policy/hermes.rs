//! Hermes: workers gate their updates with the loss test; the master applies
//! every admitted delta as soon as it arrives, one new version per delta,
//! weighted by samples and loss and damped by staleness (see `aggregation`).
//! Nobody ever waits for anybody.

use anyhow::Result;

use super::{AcceptedUpdate, AppliedUpdate, ArrivalQueue, PolicyConfig, PolicyContext, SyncPolicy};
use crate::aggregation::AggregationConfig;

/// The Hermes policy.
#[derive(Debug)]
pub struct Hermes {
    aggregation: AggregationConfig,
    queue: ArrivalQueue,
}

/// Registry entry.
pub fn build(_: &PolicyConfig, aggregation: &AggregationConfig) -> Box<dyn SyncPolicy> {
    Box::new(Hermes {
        aggregation: aggregation.clone(),
        queue: ArrivalQueue::default(),
    })
}

impl SyncPolicy for Hermes {
    fn name(&self) -> &'static str {
        "hermes"
    }

    fn workers_gate_updates(&self) -> bool {
        true
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
        let config = &self.aggregation;
        self.queue.apply_oldest(ctx, global, |u, staleness| {
            (
                config.share_weight(u.samples, u.loss),
                config.damping(staleness),
            )
        })
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
    fn applies_each_update_alone_as_its_own_version() {
        let active = workers(&["a", "b"]);
        let mut policy = build("hermes");
        let mut global = vec![0.0_f32, 0.0];
        let mut version = 0;
        policy.on_update(
            &PolicyContext {
                version,
                active_workers: &active,
            },
            update("a", 1, 0, vec![2.0, 4.0]),
        );
        policy.on_update(
            &PolicyContext {
                version,
                active_workers: &active,
            },
            update("b", 1, 0, vec![4.0, -4.0]),
        );
        assert_eq!(policy.pending(), 2);
        let mut applied = Vec::new();
        while policy.ready_to_aggregate(&PolicyContext {
            version,
            active_workers: &active,
        }) {
            let ctx = PolicyContext {
                version,
                active_workers: &active,
            };
            let step = policy.aggregate(&ctx, &mut global).unwrap();
            assert_eq!(step.len(), 1, "one update per version");
            version += 1;
            applied.extend(step);
        }
        // a: fresh, full strength -> [2, 4]. b: based on 0, applied at version 1:
        // staleness 1, damping 1/sqrt(2) -> [2 + 2.828427, 4 - 2.828427].
        let h = std::f32::consts::SQRT_2 * 2.0;
        assert!(
            (global[0] - (2.0 + h)).abs() < 1e-6 && (global[1] - (4.0 - h)).abs() < 1e-6,
            "{global:?}"
        );
        assert_eq!(applied[0].staleness, 0);
        assert_eq!(applied[1].staleness, 1);
        assert!((applied[1].damping - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        // share weight 100 samples / (1 + loss 1) = 50
        assert!((applied[0].weight - 50.0).abs() < 1e-12);
        assert_eq!(version, 2);
        assert_eq!(policy.pending(), 0);
    }

    #[test]
    fn never_blocks_a_worker() {
        let active = workers(&["a", "b"]);
        let mut policy = build("hermes");
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        for _ in 0..10 {
            policy.on_round_end(&ctx, "a");
        }
        assert!(policy.may_start_round(&ctx, "a") && policy.may_start_round(&ctx, "b"));
    }

    #[test]
    fn failed_application_keeps_the_update_pending() {
        let active = workers(&["a"]);
        let mut policy = build("hermes");
        let ctx = PolicyContext {
            version: 0,
            active_workers: &active,
        };
        policy.on_update(&ctx, update("a", 1, 0, vec![1.0]));
        let mut wrong_size = vec![0.0_f32, 0.0];
        assert!(policy.aggregate(&ctx, &mut wrong_size).is_err());
        assert_eq!(policy.pending(), 1);
        assert_eq!(wrong_size, vec![0.0, 0.0]);
    }
}
