//! Mini-batches over a [`Shard`] of a [`Dataset`], optionally reshuffled
//! every epoch from a seed.
//!
//! A batch whose samples are consecutive in the dataset (no shuffling over a
//! contiguous shard, or a materialized shard received from the master)
//! borrows the dataset's buffer; otherwise its samples are copied into a
//! small buffer of `batch_size * sample_len` values. [`Batches::next_into`]
//! reuses caller-owned buffers so a training loop allocates nothing per
//! step.

use std::borrow::Cow;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::split::Shard;

/// How to cut a shard into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle the shard each epoch with this seed; `None` keeps its order.
    pub shuffle_seed: Option<u64>,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl BatchOptions {
    /// Batches of `batch_size` in shard order, keeping the last short batch.
    pub fn sequential(batch_size: usize) -> Self {
        BatchOptions {
            batch_size,
            shuffle_seed: None,
            drop_last: false,
        }
    }

    /// Batches of `batch_size`, reshuffled every epoch from `seed`.
    pub fn shuffled(batch_size: usize, seed: u64) -> Self {
        BatchOptions {
            batch_size,
            shuffle_seed: Some(seed),
            drop_last: false,
        }
    }
}

/// One mini-batch: `len()` samples, features row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<'a> {
    features: Cow<'a, [f32]>,
    labels: Cow<'a, [i64]>,
    sample_shape: &'a [usize],
}

impl Batch<'_> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the batch holds no samples (never yielded by [`Batches`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features, `len() * sample_len` values.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// Labels.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Tensor shape of the features: `[len(), ...sample_shape]`.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = Vec::with_capacity(self.sample_shape.len() + 1);
        s.push(self.len());
        s.extend_from_slice(self.sample_shape);
        s
    }

    /// True when the features borrow the dataset instead of a copy.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.features, Cow::Borrowed(_))
    }
}

/// Iterator over the batches of one epoch.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    order: Vec<usize>,
    pos: usize,
    batch_size: usize,
    drop_last: bool,
}

impl<'a> Batches<'a> {
    /// The batches of epoch `epoch` over `shard`. With a shuffle seed, the
    /// order depends only on `(seed, epoch)`.
    pub fn new(
        dataset: &'a Dataset,
        shard: &Shard,
        options: BatchOptions,
        epoch: u64,
    ) -> Result<Self> {
        if options.batch_size == 0 {
            return Err(DataError::InvalidArgument("batch size must be > 0".into()));
        }
        dataset.check_shard(shard)?;
        let mut order = shard.indices().to_vec();
        if let Some(seed) = options.shuffle_seed {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(epoch);
            order.shuffle(&mut rng);
        }
        Ok(Batches {
            dataset,
            order,
            pos: 0,
            batch_size: options.batch_size,
            drop_last: options.drop_last,
        })
    }

    /// Batches over the whole dataset.
    pub fn over(dataset: &'a Dataset, options: BatchOptions, epoch: u64) -> Result<Self> {
        Batches::new(dataset, &Shard::all(dataset.len()), options, epoch)
    }

    /// Number of batches this epoch yields in total.
    pub fn num_batches(&self) -> usize {
        let n = self.order.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The sample indices of the next batch, advancing past it.
    fn next_indices(&mut self) -> Option<&[usize]> {
        let remaining = self.order.len() - self.pos;
        let take = remaining.min(self.batch_size);
        if take == 0 || (self.drop_last && take < self.batch_size) {
            return None;
        }
        let start = self.pos;
        self.pos += take;
        Some(&self.order[start..start + take])
    }

    /// Copies the next batch into `features` and `labels` (cleared first,
    /// capacity reused) and returns its size; `None` at the end of the epoch.
    pub fn next_into(&mut self, features: &mut Vec<f32>, labels: &mut Vec<i64>) -> Option<usize> {
        let dataset = self.dataset;
        let idx = self.next_indices()?;
        features.clear();
        labels.clear();
        gather(dataset, idx, features, labels);
        Some(idx.len())
    }
}

/// Appends the samples `idx` of `dataset` (indices already checked).
fn gather(dataset: &Dataset, idx: &[usize], features: &mut Vec<f32>, labels: &mut Vec<i64>) {
    let d = dataset.sample_len();
    let all = dataset.features();
    features.reserve(idx.len() * d);
    for &i in idx {
        features.extend_from_slice(&all[i * d..(i + 1) * d]);
        labels.push(dataset.labels()[i]);
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Batch<'a>;

    fn next(&mut self) -> Option<Batch<'a>> {
        let dataset = self.dataset;
        let idx = self.next_indices()?;
        let sample_shape = dataset.sample_shape();
        let first = idx[0];
        let contiguous = idx.windows(2).all(|w| w[1] == w[0] + 1);
        if contiguous {
            let d = dataset.sample_len();
            let end = first + idx.len();
            return Some(Batch {
                features: Cow::Borrowed(&dataset.features()[first * d..end * d]),
                labels: Cow::Borrowed(&dataset.labels()[first..end]),
                sample_shape,
            });
        }
        let mut features = Vec::new();
        let mut labels = Vec::with_capacity(idx.len());
        gather(dataset, idx, &mut features, &mut labels);
        Some(Batch {
            features: Cow::Owned(features),
            labels: Cow::Owned(labels),
            sample_shape,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.order.len() - self.pos;
        let n = if self.drop_last {
            remaining / self.batch_size
        } else {
            remaining.div_ceil(self.batch_size)
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(n: usize) -> Dataset {
        let features = (0..n * 2).map(|v| v as f32).collect();
        let labels = (0..n as i64).map(|i| i % 3).collect();
        Dataset::new("t", features, labels, vec![2], 3).unwrap()
    }

    #[test]
    fn sequential_batches_borrow_and_cover_everything() {
        let d = ds(10);
        let batches: Vec<Batch> = Batches::over(&d, BatchOptions::sequential(4), 0)
            .unwrap()
            .collect();
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(Batch::is_borrowed));
        assert_eq!(batches[2].len(), 2);
        assert_eq!(batches[2].shape(), vec![2, 2]);
        assert_eq!(
            batches[1].features(),
            &[8., 9., 10., 11., 12., 13., 14., 15.]
        );
        assert_eq!(batches[1].labels(), &[1, 2, 0, 1]);
        let dropped = BatchOptions {
            drop_last: true,
            ..BatchOptions::sequential(4)
        };
        let it = Batches::over(&d, dropped, 0).unwrap();
        assert_eq!(it.num_batches(), 2);
        assert_eq!(it.count(), 2);
    }

    #[test]
    fn shuffled_epochs_are_deterministic_and_differ() {
        let d = ds(50);
        let order = |seed, epoch| -> Vec<i64> {
            Batches::over(&d, BatchOptions::shuffled(8, seed), epoch)
                .unwrap()
                .flat_map(|b| {
                    b.features()
                        .iter()
                        .step_by(2)
                        .map(|&f| f as i64 / 2)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let e0 = order(1, 0);
        assert_eq!(e0, order(1, 0));
        assert_ne!(e0, order(1, 1));
        assert_ne!(e0, order(2, 0));
        let mut sorted = e0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn features_match_labels_in_copied_batches() {
        let d = ds(20);
        for b in Batches::over(&d, BatchOptions::shuffled(6, 9), 3).unwrap() {
            for (row, &label) in b.features().chunks(2).zip(b.labels()) {
                let i = row[0] as usize / 2;
                assert_eq!(label, d.label(i).unwrap());
                assert_eq!(row, d.sample(i).unwrap());
            }
        }
    }

    #[test]
    fn next_into_reuses_buffers_over_a_shard() {
        let d = ds(10);
        let shard = Shard::new(vec![9, 3, 4]);
        let mut it = Batches::new(&d, &shard, BatchOptions::sequential(2), 0).unwrap();
        let (mut f, mut l) = (Vec::new(), Vec::new());
        assert_eq!(it.next_into(&mut f, &mut l), Some(2));
        assert_eq!(
            (f.as_slice(), l.as_slice()),
            (&[18., 19., 6., 7.][..], &[0, 0][..])
        );
        assert_eq!(it.next_into(&mut f, &mut l), Some(1));
        assert_eq!(l, vec![1]);
        assert_eq!(it.next_into(&mut f, &mut l), None);
    }

    #[test]
    fn bad_arguments() {
        let d = ds(3);
        assert!(Batches::over(&d, BatchOptions::sequential(0), 0).is_err());
        let e = Batches::new(&d, &Shard::new(vec![3]), BatchOptions::sequential(1), 0).unwrap_err();
        assert!(matches!(e, DataError::IndexOutOfRange { index: 3, len: 3 }));
    }
}
