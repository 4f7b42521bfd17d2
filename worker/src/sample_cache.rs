//! The worker's sample cache: training samples kept between shards, so that
//! a shard the master sends *by reference* (see
//! [`common::protocol::ShardAssignment`]) carries only the samples this
//! worker has not seen, not every sample of every round again.
//!
//! The master mirrors what it asked the worker to keep, within the capacity
//! the worker stated when it registered; the cache keeps exactly the samples
//! a shard marks `keep`, while room is left. Anything that breaks the mirror
//! (a shard lost on the way, a refused one) shows as a miss, which the
//! session reports and the master answers with the whole shard. A new model
//! package starts a new cache (it is part of the trainer).

use std::collections::HashMap;

use common::data::Dataset;
use thiserror::Error;

/// Why a by-reference shard could not be assembled.
#[derive(Debug, Error, PartialEq)]
pub enum ResolveError {
    /// Samples the shard names are neither in it nor in the cache.
    #[error("{missing} of the shard's {total} samples are not in the cache")]
    Missing {
        /// How many were missing.
        missing: usize,
        /// Samples in the shard.
        total: usize,
    },
    /// The shard contradicts itself or the cache.
    #[error("{0}")]
    Malformed(String),
}

/// Decoded samples by their position in the master's training set.
#[derive(Debug)]
pub struct SampleCache {
    capacity_bytes: u64,
    slots: HashMap<u32, usize>,
    features: Vec<f32>,
    labels: Vec<i64>,
    sample_shape: Vec<usize>,
    full_warned: bool,
}

impl SampleCache {
    /// An empty cache holding at most `capacity_bytes` of samples (0: none).
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            capacity_bytes,
            slots: HashMap::new(),
            features: Vec::new(),
            labels: Vec::new(),
            sample_shape: Vec::new(),
            full_warned: false,
        }
    }

    /// What one cached sample of `sample_len` values costs, as the master
    /// counts it: its features as f32 and its label.
    pub fn bytes_per_sample(sample_len: usize) -> u64 {
        sample_len as u64 * 4 + 8
    }

    /// Samples held.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The shard's dataset: `samples` in order, each taken from `fresh`
    /// (whose rows are the samples `fresh_ids`, in order) or from the cache.
    /// With `keep`, the fresh samples are cached first (while room is left),
    /// also when others are missing, so nothing that arrived is wasted.
    pub fn resolve(
        &mut self,
        origin: &str,
        samples: &[u32],
        fresh_ids: &[u32],
        fresh: Dataset,
        keep: bool,
    ) -> Result<Dataset, ResolveError> {
        if fresh_ids.len() != fresh.len() {
            return Err(ResolveError::Malformed(format!(
                "{origin}: names {} fresh samples but carries {}",
                fresh_ids.len(),
                fresh.len()
            )));
        }
        let d = fresh.sample_len();
        if !self.slots.is_empty() && self.sample_shape != fresh.sample_shape() {
            return Err(ResolveError::Malformed(format!(
                "{origin}: samples of shape {:?}, the cached ones have {:?}",
                fresh.sample_shape(),
                self.sample_shape
            )));
        }
        let fresh_rows: HashMap<u32, usize> = fresh_ids
            .iter()
            .enumerate()
            .map(|(row, &id)| (id, row))
            .collect();
        if keep {
            self.keep(&fresh, fresh_ids);
        }
        let missing = samples
            .iter()
            .filter(|id| !fresh_rows.contains_key(id) && !self.slots.contains_key(id))
            .count();
        if missing > 0 {
            return Err(ResolveError::Missing {
                missing,
                total: samples.len(),
            });
        }
        let mut features = Vec::with_capacity(samples.len() * d);
        let mut labels = Vec::with_capacity(samples.len());
        for id in samples {
            let (values, label) = match fresh_rows.get(id) {
                Some(&row) => (
                    &fresh.features()[row * d..(row + 1) * d],
                    fresh.labels()[row],
                ),
                None => {
                    let slot = self.slots[id];
                    (&self.features[slot * d..(slot + 1) * d], self.labels[slot])
                }
            };
            features.extend_from_slice(values);
            labels.push(label);
        }
        Dataset::new(
            origin,
            features,
            labels,
            fresh.sample_shape().to_vec(),
            fresh.num_classes(),
        )
        .map_err(|e| ResolveError::Malformed(e.to_string()))
    }

    fn keep(&mut self, fresh: &Dataset, ids: &[u32]) {
        let d = fresh.sample_len();
        let per = Self::bytes_per_sample(d);
        if self.slots.is_empty() {
            self.sample_shape = fresh.sample_shape().to_vec();
        }
        for (row, &id) in ids.iter().enumerate() {
            if self.slots.contains_key(&id) {
                continue;
            }
            if (self.slots.len() as u64 + 1) * per > self.capacity_bytes {
                if !self.full_warned {
                    self.full_warned = true;
                    tracing::warn!(
                        held = self.slots.len(),
                        capacity_bytes = self.capacity_bytes,
                        "sample cache full: the master was told it had room (it will resend)"
                    );
                }
                return;
            }
            let slot = self.labels.len();
            self.features
                .extend_from_slice(&fresh.features()[row * d..(row + 1) * d]);
            self.labels.push(fresh.labels()[row]);
            self.slots.insert(id, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples `ids` of a 2-value dataset where sample i is (i, -i), label i % 3.
    fn rows(ids: &[u32]) -> Dataset {
        let features = ids.iter().flat_map(|&i| [i as f32, -(i as f32)]).collect();
        let labels = ids.iter().map(|&i| i64::from(i % 3)).collect();
        Dataset::new("t", features, labels, vec![2], 3).unwrap()
    }

    #[test]
    fn a_shard_is_assembled_from_fresh_and_cached_samples_in_order() {
        let mut cache = SampleCache::new(1 << 20);
        let first = cache
            .resolve("s1", &[4, 1], &[4, 1], rows(&[4, 1]), true)
            .unwrap();
        assert_eq!(first, rows(&[4, 1]));
        assert_eq!(cache.len(), 2);
        let second = cache
            .resolve("s2", &[1, 7, 4], &[7], rows(&[7]), true)
            .unwrap();
        assert_eq!(second, rows(&[1, 7, 4]));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_sample_neither_sent_nor_cached_is_a_miss_and_fresh_ones_are_kept() {
        let mut cache = SampleCache::new(1 << 20);
        let err = cache
            .resolve("s", &[1, 2, 3], &[2], rows(&[2]), true)
            .unwrap_err();
        assert_eq!(
            err,
            ResolveError::Missing {
                missing: 2,
                total: 3
            }
        );
        assert_eq!(cache.len(), 1, "the sample that came is kept");
    }

    #[test]
    fn unkept_samples_are_used_but_not_cached() {
        let mut cache = SampleCache::new(1 << 20);
        cache.resolve("s", &[5], &[5], rows(&[5]), false).unwrap();
        assert_eq!(cache.len(), 0);
        assert!(matches!(
            cache.resolve("s", &[5], &[], rows(&[]), false),
            Err(ResolveError::Missing { .. })
        ));
    }

    #[test]
    fn the_capacity_bounds_what_is_kept() {
        // Two samples of 2 values fit in 2 × 16 bytes.
        let mut cache = SampleCache::new(2 * SampleCache::bytes_per_sample(2));
        cache
            .resolve("s", &[1, 2, 3], &[1, 2, 3], rows(&[1, 2, 3]), true)
            .unwrap();
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_shard_that_contradicts_itself_is_malformed() {
        let mut cache = SampleCache::new(1 << 20);
        assert!(matches!(
            cache.resolve("s", &[1, 2], &[1, 2], rows(&[1]), true),
            Err(ResolveError::Malformed(_))
        ));
        cache.resolve("s", &[1], &[1], rows(&[1]), true).unwrap();
        let other_shape = Dataset::new("t", vec![0.0; 3], vec![0], vec![3], 3).unwrap();
        assert!(matches!(
            cache.resolve("s", &[2], &[2], other_shape, true),
            Err(ResolveError::Malformed(_))
        ));
    }
}
