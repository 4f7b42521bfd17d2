//! Ring all-reduce of a flat model: which chunk each node sends at each
//! step, and what a receiver does with it (EdgeTB's `ra` role, with its
//! tail bug fixed).
//!
//! The model's `len` values are cut into `n` contiguous chunks that cover
//! every element (sizes differ by at most one: the first `len mod n` chunks
//! are one longer). EdgeTB cuts `⌊len/n⌋`-element chunks and never
//! exchanges the `len mod n` tail, which it still divides by n.
//!
//! Node p sends to node `(p + 1) mod n`. In the reduce-scatter stage, at
//! step s (0-based, n − 1 steps) node p sends chunk `(p − s) mod n` and the
//! receiver adds it to its own; afterwards node p holds the full sum of
//! chunk `(p + 1) mod n`. In the all-gather stage, at step s node p sends
//! chunk `(p + 1 − s) mod n` and the receiver overwrites its own; afterwards
//! every node holds every summed chunk, and dividing by n gives the mean.
//! 2(n − 1) steps, each moving `len / n` values per node.

use std::ops::Range;

use thiserror::Error;

/// Why a ring cannot be planned or a chunk not applied.
#[derive(Debug, Error, PartialEq)]
pub enum RingError {
    /// A ring needs two nodes at least.
    #[error("a ring of {0} node(s): all-reduce needs at least 2")]
    TooFewNodes(usize),
    /// A node position outside the ring.
    #[error("node {node} is not in a ring of {size}")]
    NoSuchNode {
        /// The position given.
        node: usize,
        /// The ring's size.
        size: usize,
    },
    /// A step outside the stage.
    #[error("step {step} of a stage of {steps}")]
    NoSuchStep {
        /// The step given.
        step: usize,
        /// Steps per stage.
        steps: usize,
    },
    /// A received chunk of the wrong length (from the network: untrusted).
    #[error("chunk {chunk} has {got} values, the plan says {want}")]
    WrongLength {
        /// The chunk.
        chunk: usize,
        /// Values received.
        got: usize,
        /// Values expected.
        want: usize,
    },
    /// A received chunk with a NaN or infinite value.
    #[error("chunk {chunk} holds a non-finite value")]
    NotFinite {
        /// The chunk.
        chunk: usize,
    },
}

/// The two stages of a ring all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The receiver adds the chunk to its own.
    ReduceScatter,
    /// The receiver replaces its own chunk with it.
    AllGather,
}

/// The plan of one all-reduce over `size` nodes of a `len`-value model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingPlan {
    size: usize,
    len: usize,
}

impl RingPlan {
    /// A plan for `size` nodes (at least 2) and `len` values.
    pub fn new(size: usize, len: usize) -> Result<Self, RingError> {
        if size < 2 {
            return Err(RingError::TooFewNodes(size));
        }
        Ok(Self { size, len })
    }

    /// Nodes in the ring.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Steps per stage (`size − 1`).
    pub fn steps(&self) -> usize {
        self.size - 1
    }

    /// The values of chunk `j` (every element is in exactly one chunk).
    pub fn chunk(&self, j: usize) -> Range<usize> {
        let (base, extra) = (self.len / self.size, self.len % self.size);
        let start = j * base + j.min(extra);
        let end = start + base + usize::from(j < extra);
        start.min(self.len)..end.min(self.len)
    }

    /// Where node `p` sends.
    pub fn next(&self, p: usize) -> usize {
        (p + 1) % self.size
    }

    /// Where node `p` receives from.
    pub fn previous(&self, p: usize) -> usize {
        (p + self.size - 1) % self.size
    }

    /// The chunk node `p` sends at `step` of `stage`.
    pub fn send_chunk(&self, p: usize, stage: Stage, step: usize) -> Result<usize, RingError> {
        self.check(p, step)?;
        let n = self.size;
        Ok(match stage {
            Stage::ReduceScatter => (p + n - step % n) % n,
            Stage::AllGather => (p + 1 + n - step % n) % n,
        })
    }

    /// The chunk node `p` receives at `step` of `stage` (what its previous
    /// node sends).
    pub fn receive_chunk(&self, p: usize, stage: Stage, step: usize) -> Result<usize, RingError> {
        self.check(p, step)?;
        self.send_chunk(self.previous(p), stage, step)
    }

    /// Applies a received chunk `j` to `own` (the node's whole model):
    /// added in the reduce-scatter stage, copied in the all-gather stage.
    /// The chunk's length and values are checked first; nothing changes on
    /// an error.
    pub fn apply(
        &self,
        stage: Stage,
        own: &mut [f32],
        j: usize,
        values: &[f32],
    ) -> Result<(), RingError> {
        if own.len() != self.len || j >= self.size {
            return Err(RingError::WrongLength {
                chunk: j,
                got: own.len(),
                want: self.len,
            });
        }
        let range = self.chunk(j);
        if values.len() != range.len() {
            return Err(RingError::WrongLength {
                chunk: j,
                got: values.len(),
                want: range.len(),
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(RingError::NotFinite { chunk: j });
        }
        let dst = &mut own[range];
        match stage {
            Stage::ReduceScatter => dst.iter_mut().zip(values).for_each(|(d, v)| *d += v),
            Stage::AllGather => dst.copy_from_slice(values),
        }
        Ok(())
    }

    /// After both stages: the sum becomes the mean.
    pub fn finish(&self, own: &mut [f32]) {
        let n = self.size as f32;
        own.iter_mut().for_each(|v| *v /= n);
    }

    fn check(&self, p: usize, step: usize) -> Result<(), RingError> {
        if p >= self.size {
            return Err(RingError::NoSuchNode {
                node: p,
                size: self.size,
            });
        }
        if step >= self.steps() {
            return Err(RingError::NoSuchStep {
                step,
                steps: self.steps(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Runs the whole exchange in memory, each step's sends taken before
    /// any is applied (as on a network).
    fn all_reduce(models: &mut [Vec<f32>]) {
        let plan = RingPlan::new(models.len(), models[0].len()).unwrap();
        for stage in [Stage::ReduceScatter, Stage::AllGather] {
            for step in 0..plan.steps() {
                let sends: Vec<(usize, usize, Vec<f32>)> = (0..plan.size())
                    .map(|p| {
                        let j = plan.send_chunk(p, stage, step).unwrap();
                        (plan.next(p), j, models[p][plan.chunk(j)].to_vec())
                    })
                    .collect();
                for (to, j, values) in sends {
                    assert_eq!(plan.receive_chunk(to, stage, step).unwrap(), j);
                    plan.apply(stage, &mut models[to], j, &values).unwrap();
                }
            }
        }
        for m in models.iter_mut() {
            plan.finish(m);
        }
    }

    #[test]
    fn chunks_cover_every_element_once_also_the_tail() {
        for (n, len) in [(4, 1003), (3, 10), (5, 5), (4, 2), (7, 0), (2, 101_770)] {
            let plan = RingPlan::new(n, len).unwrap();
            let mut next = 0;
            for j in 0..n {
                let r = plan.chunk(j);
                assert_eq!(r.start, next, "n {n}, len {len}, chunk {j}");
                assert!(r.len() <= len / n + 1);
                next = r.end;
            }
            assert_eq!(next, len, "n {n}, len {len}: the tail is covered");
        }
    }

    #[test]
    fn every_node_ends_with_the_element_wise_mean() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (n, len) in [(4, 1003), (3, 7), (5, 2), (2, 9), (6, 101_770)] {
            let mut models: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..len).map(|_| rng.random_range(-3.0..3.0)).collect())
                .collect();
            let mean: Vec<f64> = (0..len)
                .map(|i| models.iter().map(|m| f64::from(m[i])).sum::<f64>() / n as f64)
                .collect();
            all_reduce(&mut models);
            for (p, m) in models.iter().enumerate() {
                for (i, (&got, &want)) in m.iter().zip(&mean).enumerate() {
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "n {n}, len {len}, node {p}, element {i}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_ring_of_one_bad_positions_and_bad_chunks_are_refused() {
        assert_eq!(RingPlan::new(1, 10), Err(RingError::TooFewNodes(1)));
        let plan = RingPlan::new(3, 10).unwrap();
        assert!(matches!(
            plan.send_chunk(3, Stage::AllGather, 0),
            Err(RingError::NoSuchNode { .. })
        ));
        assert!(matches!(
            plan.send_chunk(0, Stage::AllGather, 2),
            Err(RingError::NoSuchStep { .. })
        ));
        let mut own = vec![1.0; 10];
        let before = own.clone();
        assert!(matches!(
            plan.apply(Stage::ReduceScatter, &mut own, 0, &[1.0; 3]),
            Err(RingError::WrongLength { want: 4, .. })
        ));
        assert_eq!(
            plan.apply(Stage::ReduceScatter, &mut own, 1, &[1.0, f32::NAN, 0.0]),
            Err(RingError::NotFinite { chunk: 1 })
        );
        assert!(plan
            .apply(Stage::AllGather, &mut own[..9], 1, &[0.0; 3])
            .is_err());
        assert_eq!(own, before, "nothing changed on an error");
    }
}
