//! Index-based subsets ([`Shard`]) and deterministic train/validation/test
//! splits ([`Split`]).
//!
//! Nothing here copies features: a shard is a list of sample indices into a
//! [`Dataset`](super::Dataset). All randomness comes from a `u64` seed through
//! ChaCha8, so the same seed gives the same split on every machine.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};

/// An ordered list of sample indices into a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Shard {
    indices: Vec<usize>,
}

impl Shard {
    /// A shard of the given indices, in that order.
    pub fn new(indices: Vec<usize>) -> Self {
        Shard { indices }
    }

    /// All samples `0..n`, in order.
    pub fn all(n: usize) -> Self {
        Shard {
            indices: (0..n).collect(),
        }
    }

    /// Number of samples in the shard.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when the shard is empty.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The indices, in order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The same indices in an order drawn from `seed`.
    pub fn shuffled(&self, seed: u64) -> Shard {
        let mut indices = self.indices.clone();
        indices.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        Shard { indices }
    }

    /// The sub-shard of positions `start..start + len` (not sample indices:
    /// positions within this shard).
    pub fn slice(&self, start: usize, len: usize) -> Result<Shard> {
        let end = start.checked_add(len).filter(|&e| e <= self.len());
        match end {
            Some(end) => Ok(Shard::new(self.indices[start..end].to_vec())),
            None => Err(DataError::InvalidArgument(format!(
                "slice {start}+{len} of a shard of {} samples",
                self.len()
            ))),
        }
    }

    /// Cuts the shard into consecutive pieces of the given sizes; the sizes
    /// must not add up to more than the shard holds (the rest is dropped).
    pub fn partition(&self, sizes: &[usize]) -> Result<Vec<Shard>> {
        let mut start = 0usize;
        let mut out = Vec::with_capacity(sizes.len());
        for &size in sizes {
            out.push(self.slice(start, size)?);
            start += size;
        }
        Ok(out)
    }

    /// Cuts the shard into `parts` consecutive pieces whose sizes differ by
    /// at most one (the first pieces get the extra samples).
    pub fn split_even(&self, parts: usize) -> Result<Vec<Shard>> {
        if parts == 0 {
            return Err(DataError::InvalidArgument(
                "cannot split a shard into 0 parts".into(),
            ));
        }
        let base = self.len() / parts;
        let extra = self.len() % parts;
        let sizes: Vec<usize> = (0..parts).map(|i| base + usize::from(i < extra)).collect();
        self.partition(&sizes)
    }
}

impl From<Vec<usize>> for Shard {
    fn from(indices: Vec<usize>) -> Self {
        Shard::new(indices)
    }
}

/// How many samples go to each part of a [`Split`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitSpec {
    /// Exact counts; they must add up to at most the dataset size (the rest
    /// is left out).
    Counts {
        /// Training samples.
        train: usize,
        /// Validation samples.
        validation: usize,
        /// Test samples.
        test: usize,
    },
    /// Fractions of the dataset for validation and test (each rounded to the
    /// nearest sample); training gets the rest.
    Fractions {
        /// Validation fraction in `[0, 1]`.
        validation: f64,
        /// Test fraction in `[0, 1]`.
        test: f64,
    },
}

impl SplitSpec {
    /// Resolves the spec to `(train, validation, test)` counts for `n` samples.
    pub fn counts(&self, n: usize) -> Result<(usize, usize, usize)> {
        match *self {
            SplitSpec::Counts {
                train,
                validation,
                test,
            } => {
                let total = train
                    .checked_add(validation)
                    .and_then(|v| v.checked_add(test));
                if total.is_none_or(|t| t > n) {
                    return Err(DataError::InvalidArgument(format!(
                        "split {train}/{validation}/{test} needs more than the {n} samples there are"
                    )));
                }
                Ok((train, validation, test))
            }
            SplitSpec::Fractions { validation, test } => {
                let ok = |f: f64| (0.0..=1.0).contains(&f);
                if !ok(validation) || !ok(test) || validation + test > 1.0 {
                    return Err(DataError::InvalidArgument(format!(
                        "split fractions validation={validation} test={test} must be in [0, 1] and sum to at most 1"
                    )));
                }
                let v = ((validation * n as f64).round() as usize).min(n);
                let t = ((test * n as f64).round() as usize).min(n - v);
                Ok((n - v - t, v, t))
            }
        }
    }
}

/// Disjoint train, validation and test shards of one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training samples.
    pub train: Shard,
    /// Validation samples (may be empty).
    pub validation: Shard,
    /// Test samples.
    pub test: Shard,
}

impl Split {
    /// A uniformly random split of `n` samples drawn from `seed`.
    pub fn random(n: usize, spec: SplitSpec, seed: u64) -> Result<Split> {
        let (train, validation, test) = spec.counts(n)?;
        let order = Shard::all(n).shuffled(seed);
        Split::from_order(&order, train, validation, test, seed)
    }

    /// A split that keeps the class proportions of `labels` in every part
    /// (to within one sample per class), drawn from `seed`.
    ///
    /// Each class is shuffled, then all samples are ordered by their relative
    /// position within their class, so every prefix of that order is
    /// class-balanced; test, validation and train are taken from it in turn.
    pub fn stratified(labels: &[i64], spec: SplitSpec, seed: u64) -> Result<Split> {
        let n = labels.len();
        let (train, validation, test) = spec.counts(n)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
        for (i, &l) in labels.iter().enumerate() {
            by_class.entry(l).or_default().push(i);
        }
        // (rank, class size, class label, index): the key is (2*rank+1)/size.
        let mut keyed = Vec::with_capacity(n);
        for (&label, members) in by_class.iter_mut() {
            members.shuffle(&mut rng);
            let size = members.len() as u128;
            for (rank, &i) in members.iter().enumerate() {
                keyed.push((2 * rank as u128 + 1, size, label, i));
            }
        }
        keyed.sort_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)));
        let order = Shard::new(keyed.into_iter().map(|k| k.3).collect());
        Split::from_order(&order, train, validation, test, seed)
    }

    /// Takes test, validation then train from `order`, and shuffles each part
    /// so no part keeps the class-interleaved order.
    fn from_order(
        order: &Shard,
        train: usize,
        validation: usize,
        test: usize,
        seed: u64,
    ) -> Result<Split> {
        let parts = order.partition(&[test, validation, train])?;
        let mix = seed ^ 0x5eed_5eed_5eed_5eed;
        Ok(Split {
            test: parts[0].shuffled(mix),
            validation: parts[1].shuffled(mix.wrapping_add(1)),
            train: parts[2].shuffled(mix.wrapping_add(2)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn disjoint(split: &Split) -> usize {
        let mut seen = HashSet::new();
        for s in [&split.train, &split.validation, &split.test] {
            for &i in s.indices() {
                assert!(seen.insert(i), "index {i} appears twice");
            }
        }
        seen.len()
    }

    #[test]
    fn random_split_has_the_requested_sizes_and_is_deterministic() {
        let spec = SplitSpec::Counts {
            train: 70,
            validation: 10,
            test: 20,
        };
        let a = Split::random(100, spec, 7).unwrap();
        assert_eq!(
            (a.train.len(), a.validation.len(), a.test.len()),
            (70, 10, 20)
        );
        assert_eq!(disjoint(&a), 100);
        assert_eq!(a, Split::random(100, spec, 7).unwrap());
        assert_ne!(a, Split::random(100, spec, 8).unwrap());
    }

    #[test]
    fn fractions_resolve_to_counts() {
        let spec = SplitSpec::Fractions {
            validation: 0.1,
            test: 0.2,
        };
        assert_eq!(spec.counts(5000).unwrap(), (3500, 500, 1000));
        assert_eq!(spec.counts(0).unwrap(), (0, 0, 0));
        let bad = SplitSpec::Fractions {
            validation: 0.7,
            test: 0.5,
        };
        assert!(bad.counts(10).is_err());
        let nan = SplitSpec::Fractions {
            validation: f64::NAN,
            test: 0.0,
        };
        assert!(nan.counts(10).is_err());
    }

    #[test]
    fn too_large_counts_are_refused() {
        let spec = SplitSpec::Counts {
            train: 90,
            validation: 0,
            test: 20,
        };
        assert!(matches!(
            Split::random(100, spec, 0),
            Err(DataError::InvalidArgument(_))
        ));
        let overflow = SplitSpec::Counts {
            train: usize::MAX,
            validation: 1,
            test: 0,
        };
        assert!(Split::random(100, overflow, 0).is_err());
    }

    #[test]
    fn stratified_split_keeps_class_proportions() {
        // 3 classes of 60, 30 and 10 samples, sorted by class.
        let labels: Vec<i64> = (0..100)
            .map(|i| {
                if i < 60 {
                    0
                } else if i < 90 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let spec = SplitSpec::Counts {
            train: 70,
            validation: 10,
            test: 20,
        };
        let s = Split::stratified(&labels, spec, 3).unwrap();
        assert_eq!(disjoint(&s), 100);
        let count = |sh: &Shard, c: i64| sh.indices().iter().filter(|&&i| labels[i] == c).count();
        assert_eq!(
            [count(&s.test, 0), count(&s.test, 1), count(&s.test, 2)],
            [12, 6, 2]
        );
        assert_eq!(
            [
                count(&s.validation, 0),
                count(&s.validation, 1),
                count(&s.validation, 2)
            ],
            [6, 3, 1]
        );
        assert_eq!(s, Split::stratified(&labels, spec, 3).unwrap());
        assert_ne!(s, Split::stratified(&labels, spec, 4).unwrap());
    }

    #[test]
    fn shard_slicing_and_partitioning() {
        let s = Shard::all(10);
        assert_eq!(s.slice(2, 3).unwrap().indices(), &[2, 3, 4]);
        assert!(s.slice(8, 3).is_err());
        assert!(s.slice(usize::MAX, 2).is_err());
        let parts = s.split_even(3).unwrap();
        let sizes: Vec<usize> = parts.iter().map(Shard::len).collect();
        assert_eq!(sizes, vec![4, 3, 3]);
        assert!(s.split_even(0).is_err());
        assert!(s.partition(&[5, 6]).is_err());
        let sh = s.shuffled(1);
        assert_ne!(sh, s);
        let mut sorted = sh.indices().to_vec();
        sorted.sort();
        assert_eq!(sorted, s.indices());
    }
}
