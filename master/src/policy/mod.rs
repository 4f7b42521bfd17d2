//! Synchronisation policies: when the master folds worker deltas into the
//! global model and when a worker may start its next round.
//!
//! Like Flower's `Strategy`, the contract is one small trait, [`SyncPolicy`];
//! each policy is one file, and the master loop only talks to the trait:
//!
//! ```text
//! admitted update  -> policy.on_update(ctx, update)
//!                     while policy.ready_to_aggregate(ctx) {
//!                         applied = policy.aggregate(ctx, &mut global)?;  // one new version
//!                         version += 1; ledger.record_applied(..); broadcast
//!                     }
//! rejected update  -> policy.on_update_rejected(ctx, worker)
//! round report     -> policy.on_round_end(ctx, worker)
//! worker joins     -> policy.on_worker_joined(ctx, worker)
//! worker gone      -> policy.on_worker_gone(ctx, worker)   (then re-check ready_to_aggregate)
//! shard request    -> if policy.may_start_round(ctx, worker) { send shard } else { park it,
//!                     re-ask after the next event }
//! ```
//!
//! A new policy is one new file plus one line in [`POLICIES`].

mod asp;
mod bsp;
mod hermes;
mod ssp;

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::aggregation::{self, AggregationConfig, LedgerEntry, WeightedDelta};

/// Which policy runs, and the parameters only some policies use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policy name: `"hermes"` (default), `"asp"`, `"bsp"` or `"ssp"`.
    pub name: String,
    /// SSP only: a worker may run at most this many rounds ahead of the slowest
    /// active worker (default 3).
    pub staleness_bound: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            name: "hermes".to_string(),
            staleness_bound: 3,
        }
    }
}

/// What the master knows that a policy may consult.
#[derive(Debug, Clone, Copy)]
pub struct PolicyContext<'a> {
    /// The current global model version.
    pub version: u64,
    /// Workers currently alive (registered and not timed out).
    pub active_workers: &'a BTreeSet<String>,
}

/// An update that passed [`aggregation::admit_update`], handed to the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedUpdate {
    /// Sending worker.
    pub worker: String,
    /// The worker process's incarnation.
    pub incarnation: u64,
    /// The worker's sequence number of the update.
    pub sequence: u64,
    /// The global version the delta was computed against.
    pub base_version: u64,
    /// Training samples behind the delta.
    pub samples: u64,
    /// The worker's validation loss after the round.
    pub loss: f64,
    /// The weight delta, one value per model parameter.
    pub delta: Vec<f32>,
}

/// One update folded into the global model by [`SyncPolicy::aggregate`].
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedUpdate {
    /// Sending worker.
    pub worker: String,
    /// The worker process's incarnation.
    pub incarnation: u64,
    /// The worker's sequence number of the update.
    pub sequence: u64,
    /// The version the delta was based on.
    pub base_version: u64,
    /// Versions between base and the version it was applied to.
    pub staleness: u64,
    /// Share weight used.
    pub weight: f64,
    /// Staleness damping used.
    pub damping: f64,
}

impl AppliedUpdate {
    /// The ledger row, given the version the aggregation produced.
    pub fn ledger_entry(&self, applied_version: u64) -> LedgerEntry {
        LedgerEntry {
            worker: self.worker.clone(),
            incarnation: self.incarnation,
            sequence: self.sequence,
            base_version: self.base_version,
            staleness: self.staleness,
            weight: self.weight,
            damping: self.damping,
            applied_version,
        }
    }
}

/// A synchronisation policy (Hermes, ASP, BSP, SSP). See the module docs for the
/// order in which the master calls it.
pub trait SyncPolicy: Send {
    /// The name it is registered under.
    fn name(&self) -> &'static str;

    /// Whether workers run the loss gate (true) or publish a delta every round.
    fn workers_gate_updates(&self) -> bool;

    /// An admitted update arrived; the policy keeps it until it aggregates.
    fn on_update(&mut self, ctx: &PolicyContext<'_>, update: AcceptedUpdate);

    /// Whether [`SyncPolicy::aggregate`] should be called now.
    fn ready_to_aggregate(&self, ctx: &PolicyContext<'_>) -> bool;

    /// Folds (some of) the kept updates into `global`, producing exactly one new
    /// version, and returns what was applied. Called only when ready.
    fn aggregate(
        &mut self,
        ctx: &PolicyContext<'_>,
        global: &mut [f32],
    ) -> Result<Vec<AppliedUpdate>>;

    /// Whether `worker` may start its next round now (default: always).
    fn may_start_round(&self, _ctx: &PolicyContext<'_>, _worker: &str) -> bool {
        true
    }

    /// Whether a worker may hold its next shard while it trains (prefetch):
    /// not under a barrier or a staleness bound, where the next round's
    /// start is the policy's decision.
    fn allows_prefetch(&self) -> bool {
        true
    }

    /// A worker finished a round (major or minor) and reported it.
    fn on_round_end(&mut self, _ctx: &PolicyContext<'_>, _worker: &str) {}

    /// An update from `worker` was rejected: its round produced nothing to apply.
    fn on_update_rejected(&mut self, _ctx: &PolicyContext<'_>, _worker: &str) {}

    /// A worker registered (first time or after a restart).
    fn on_worker_joined(&mut self, _ctx: &PolicyContext<'_>, _worker: &str) {}

    /// A worker was declared gone; `ctx.active_workers` no longer contains it.
    fn on_worker_gone(&mut self, _ctx: &PolicyContext<'_>, _worker: &str) {}

    /// Updates kept and not yet applied.
    fn pending(&self) -> usize;
}

type Builder = fn(&PolicyConfig, &AggregationConfig) -> Box<dyn SyncPolicy>;

/// Every policy, by config name: one line each.
const POLICIES: &[(&str, Builder)] = &[
    ("hermes", hermes::build),
    ("asp", asp::build),
    ("bsp", bsp::build),
    ("ssp", ssp::build),
];

/// The names [`registry`] accepts.
pub fn policy_names() -> impl Iterator<Item = &'static str> {
    POLICIES.iter().map(|(name, _)| *name)
}

/// Builds the policy named in `config.name`; an unknown name is an error that lists
/// the known ones.
pub fn registry(
    config: &PolicyConfig,
    aggregation: &AggregationConfig,
) -> Result<Box<dyn SyncPolicy>> {
    aggregation.validate()?;
    match POLICIES.iter().find(|(name, _)| *name == config.name) {
        Some((_, build)) => Ok(build(config, aggregation)),
        None => bail!(
            "unknown sync policy {:?}; known policies: {}",
            config.name,
            policy_names().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Accepted updates applied one at a time in arrival order, each as its own
/// version (Hermes, ASP and SSP share this; they differ in weighting and in
/// who may start a round).
#[derive(Debug, Default)]
struct ArrivalQueue {
    pending: std::collections::VecDeque<AcceptedUpdate>,
}

impl ArrivalQueue {
    fn push(&mut self, update: AcceptedUpdate) {
        self.pending.push_back(update);
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn len(&self) -> usize {
        self.pending.len()
    }

    /// Applies the oldest update (weighted by `weigh`); it stays queued if
    /// applying it fails.
    fn apply_oldest(
        &mut self,
        ctx: &PolicyContext<'_>,
        global: &mut [f32],
        weigh: impl Fn(&AcceptedUpdate, u64) -> (f64, f64),
    ) -> Result<Vec<AppliedUpdate>> {
        let Some(first) = self.pending.front() else {
            return Ok(Vec::new());
        };
        let applied = apply_updates(ctx, global, std::slice::from_ref(first), weigh)?;
        self.pending.pop_front();
        Ok(applied)
    }
}

/// Applies `updates` to `global` as one aggregation step. `weigh` gives each
/// update's (share weight, damping) from the update and its staleness.
fn apply_updates(
    ctx: &PolicyContext<'_>,
    global: &mut [f32],
    updates: &[AcceptedUpdate],
    weigh: impl Fn(&AcceptedUpdate, u64) -> (f64, f64),
) -> Result<Vec<AppliedUpdate>> {
    let applied: Vec<AppliedUpdate> = updates
        .iter()
        .map(|u| {
            let staleness = ctx.version.saturating_sub(u.base_version);
            let (weight, damping) = weigh(u, staleness);
            AppliedUpdate {
                worker: u.worker.clone(),
                incarnation: u.incarnation,
                sequence: u.sequence,
                base_version: u.base_version,
                staleness,
                weight,
                damping,
            }
        })
        .collect();
    let deltas: Vec<WeightedDelta<'_>> = updates
        .iter()
        .zip(&applied)
        .map(|(u, a)| WeightedDelta {
            weight: a.weight,
            damping: a.damping,
            values: &u.delta,
        })
        .collect();
    aggregation::apply(global, &deltas)?;
    Ok(applied)
}

/// Plain ASP weighting: every delta applied in full.
fn unweighted(_: &AcceptedUpdate, _: u64) -> (f64, f64) {
    (1.0, 1.0)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn workers(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    pub fn update(
        worker: &str,
        sequence: u64,
        base_version: u64,
        delta: Vec<f32>,
    ) -> AcceptedUpdate {
        AcceptedUpdate {
            worker: worker.to_string(),
            incarnation: 1,
            sequence,
            base_version,
            samples: 100,
            loss: 1.0,
            delta,
        }
    }

    pub fn build(name: &str) -> Box<dyn SyncPolicy> {
        let config = PolicyConfig {
            name: name.to_string(),
            staleness_bound: 1,
        };
        registry(&config, &AggregationConfig::default()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_builds_every_listed_policy_under_its_name() {
        for name in policy_names() {
            let policy = test_support::build(name);
            assert_eq!(policy.name(), name);
            assert_eq!(policy.pending(), 0);
        }
        assert_eq!(policy_names().count(), 4);
    }

    #[test]
    fn unknown_policy_is_an_error_listing_the_known_ones() {
        let config = PolicyConfig {
            name: "fedavg".to_string(),
            ..PolicyConfig::default()
        };
        let err = registry(&config, &AggregationConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("fedavg") && err.contains("hermes") && err.contains("ssp"),
            "{err}"
        );
    }

    #[test]
    fn only_hermes_gates_updates() {
        let gating: Vec<&str> = policy_names()
            .filter(|n| test_support::build(n).workers_gate_updates())
            .collect();
        assert_eq!(gating, vec!["hermes"]);
    }

    #[test]
    fn ledger_entry_carries_the_applied_version() {
        let a = AppliedUpdate {
            worker: "w".into(),
            incarnation: 1,
            sequence: 4,
            base_version: 2,
            staleness: 1,
            weight: 50.0,
            damping: 0.5,
        };
        let e = a.ledger_entry(3);
        assert_eq!((e.sequence, e.base_version, e.applied_version), (4, 2, 3));
    }
}
