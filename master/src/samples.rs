//! What each worker holds in its sample cache, as far as the master knows:
//! a shard then names its samples and carries only those the worker has not
//! been sent (see [`common::protocol::ShardAssignment`]). After the first
//! pass over its data a worker's shards are a list of positions — a few KB —
//! instead of every sample again (an MNIST shard of 1,334 samples: 1.05 MB).
//!
//! The mirror is reset whenever the worker gets a model package (its cache
//! is part of the loaded package), and on a cache miss, after which the
//! shard goes whole. It never asks a worker to keep more than the capacity
//! it stated when it registered.

use std::collections::{HashMap, HashSet, VecDeque};

use common::protocol::ShardAssignment;

use crate::workload::Workload;

/// How one shard travels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardPlan {
    /// The samples in training order (empty: the shard goes whole).
    pub samples: Vec<u32>,
    /// The samples to send, in order (all of them when whole).
    pub fresh: Vec<u32>,
    /// Whether the worker caches the fresh ones.
    pub keep: bool,
}

/// A shard sent lately, kept to resend it whole after a miss.
#[derive(Clone, Debug, PartialEq)]
pub struct SentShard {
    /// The shard id.
    pub shard_id: u64,
    /// Its round.
    pub round: u64,
    /// Its samples.
    pub indices: Vec<u32>,
}

#[derive(Debug, Default)]
struct Mirror {
    capacity: usize,
    held: HashSet<u32>,
    recent: VecDeque<SentShard>,
}

/// The mirrors of every worker's cache.
#[derive(Debug)]
pub struct SampleMirrors {
    enabled: bool,
    bytes_per_sample: u64,
    workers: HashMap<String, Mirror>,
}

impl SampleMirrors {
    /// Shards sent lately, kept per worker (more than prefetch holds out).
    const RECENT: usize = 4;

    /// No worker known; `bytes_per_sample` is what one cached sample costs a
    /// worker (its features as f32 and its label). Disabled: every shard
    /// goes whole.
    pub fn new(enabled: bool, sample_len: usize) -> Self {
        Self {
            enabled,
            bytes_per_sample: sample_len as u64 * 4 + 8,
            workers: HashMap::new(),
        }
    }

    /// `worker` got a model package: its cache starts empty, with room for
    /// `capacity_bytes`.
    pub fn package_sent(&mut self, worker: &str, capacity_bytes: u64) {
        let capacity = if self.enabled {
            usize::try_from(capacity_bytes / self.bytes_per_sample.max(1)).unwrap_or(usize::MAX)
        } else {
            0
        };
        self.workers.insert(
            worker.to_string(),
            Mirror {
                capacity,
                ..Mirror::default()
            },
        );
    }

    /// How the shard `indices` goes to `worker`; records what the worker
    /// will hold and remembers the shard.
    pub fn plan(&mut self, worker: &str, shard_id: u64, round: u64, indices: &[u32]) -> ShardPlan {
        let Some(m) = self.workers.get_mut(worker) else {
            return whole(indices);
        };
        m.recent.push_back(SentShard {
            shard_id,
            round,
            indices: indices.to_vec(),
        });
        while m.recent.len() > Self::RECENT {
            m.recent.pop_front();
        }
        if m.capacity == 0 {
            return whole(indices);
        }
        let mut seen = HashSet::new();
        let fresh: Vec<u32> = indices
            .iter()
            .copied()
            .filter(|i| !m.held.contains(i) && seen.insert(*i))
            .collect();
        let keep = m.held.len() + fresh.len() <= m.capacity;
        if keep {
            m.held.extend(fresh.iter().copied());
        }
        ShardPlan {
            samples: indices.to_vec(),
            fresh,
            keep,
        }
    }

    /// The assignment of shard `shard_id` (`indices`, for `round`, to train
    /// from global `min_version` or newer) to `worker`, by reference where
    /// its cache allows (see [`Self::plan`]).
    pub fn assignment(
        &mut self,
        workload: &Workload,
        worker: &str,
        shard_id: u64,
        round: u64,
        min_version: u64,
        indices: &[u32],
    ) -> anyhow::Result<ShardAssignment> {
        let plan = self.plan(worker, shard_id, round, indices);
        Ok(ShardAssignment {
            shard_id,
            round,
            data: workload.shard_bytes(&plan.fresh)?,
            samples: plan.samples,
            fresh: plan.fresh,
            keep: plan.keep,
            min_version,
        })
    }

    /// `worker` could not assemble `shard_id`: forget what it holds and
    /// return the shard to send whole (if it is one of the recent ones).
    pub fn missed(&mut self, worker: &str, shard_id: u64) -> Option<SentShard> {
        let m = self.workers.get_mut(worker)?;
        m.held.clear();
        m.recent.iter().find(|s| s.shard_id == shard_id).cloned()
    }

    /// Samples `worker` holds, as far as the master knows.
    #[cfg(test)]
    fn held(&self, worker: &str) -> usize {
        self.workers.get(worker).map_or(0, |m| m.held.len())
    }
}

fn whole(indices: &[u32]) -> ShardPlan {
    ShardPlan {
        samples: Vec::new(),
        fresh: indices.to_vec(),
        keep: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_sent_once_then_referenced() {
        let mut m = SampleMirrors::new(true, 2);
        m.package_sent("w", 1 << 20);
        let first = m.plan("w", 1, 1, &[3, 1, 2]);
        assert_eq!(first.samples, vec![3, 1, 2]);
        assert_eq!(first.fresh, vec![3, 1, 2]);
        assert!(first.keep);
        let second = m.plan("w", 2, 2, &[2, 5, 3, 5]);
        assert_eq!(second.fresh, vec![5], "only the new one, once");
        assert_eq!(m.held("w"), 4);
    }

    #[test]
    fn a_package_or_a_miss_starts_over() {
        let mut m = SampleMirrors::new(true, 2);
        m.package_sent("w", 1 << 20);
        m.plan("w", 1, 1, &[1, 2]);
        m.package_sent("w", 1 << 20);
        assert_eq!(m.plan("w", 2, 2, &[1, 2]).fresh, vec![1, 2]);
        let again = m.missed("w", 2).expect("recent");
        assert_eq!((again.round, again.indices), (2, vec![1, 2]));
        assert_eq!(m.held("w"), 0);
        assert_eq!(m.missed("w", 99), None, "not a recent shard");
    }

    #[test]
    fn beyond_the_capacity_samples_are_sent_but_not_kept() {
        // Room for 2 samples of 2 values (16 bytes each).
        let mut m = SampleMirrors::new(true, 2);
        m.package_sent("w", 32);
        assert!(m.plan("w", 1, 1, &[1, 2]).keep);
        let over = m.plan("w", 2, 2, &[1, 3]);
        assert_eq!((over.fresh.clone(), over.keep), (vec![3], false));
        assert_eq!(m.plan("w", 3, 3, &[3]).fresh, vec![3], "still not held");
    }

    #[test]
    fn disabled_unknown_or_cacheless_workers_get_whole_shards() {
        let mut off = SampleMirrors::new(false, 2);
        off.package_sent("w", 1 << 20);
        assert_eq!(off.plan("w", 1, 1, &[1]).samples, Vec::<u32>::new());
        let mut on = SampleMirrors::new(true, 2);
        assert!(on.plan("nobody", 1, 1, &[1]).samples.is_empty());
        on.package_sent("w", 0);
        let p = on.plan("w", 1, 1, &[1, 2]);
        assert!(p.samples.is_empty() && p.fresh == vec![1, 2]);
    }
}
