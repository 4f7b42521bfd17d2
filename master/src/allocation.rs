//! Dynamic dataset allocation (DESIGN §4): size every worker's next shard so
//! that each round takes about the same target time, and draw shards from the
//! training set without replacement per pass.
//!
//! * Throughput: an exponential moving average of `shard samples / round
//!   seconds` per worker (the first measurement is taken as is).
//! * Target round time T: a fixed value from config, or the median of the
//!   most recent round times of all workers (a sliding window), re-estimated
//!   after every round rather than frozen after the first.
//! * Next shard size: `round(throughput × T)` clamped to
//!   `[min_shard, max_shard]` and to the training-set size; a worker with no
//!   measurement yet gets `initial_shard`. Stragglers therefore get less data
//!   and fast workers more.
//! * Sampling: a seeded permutation (ChaCha8) of all indices is consumed
//!   shard by shard; when it runs out a new pass starts with a new
//!   permutation. Indices of shards given back (worker gone) are handed out
//!   first. A shard never holds the same index twice.
//!
//! Every decision is recorded as an [`AllocationRecord`] for `allocation.csv`.
//!
//! **Communication-aware sizing** (`mode: comm_aware`, the default): a round
//! is a fixed cost c (the shard's and global's way down, the update's way
//! up, waits: the round's cycle as the master measures it, less the
//! worker's compute) plus n / r (r: samples per second of *compute*). The
//! throughput rule above folds c into the rate, so a worker behind a slow
//! link looks slow and gets the smallest shard, which makes its rounds all
//! communication. Here the next shard is the larger of the throughput
//! rule's and `r × min_compute_share × c`: never less than the throughput
//! rule gives (a compute-bound straggler still gets less data, and the
//! others' rounds stay equal), and for a worker whose transfers dominate at
//! least `min_compute_share` seconds of compute per second of transfer —
//! more local work per transfer.
//!
//! An earlier form, `r × max(T − c, share × c)`, measured badly: with a
//! model whose compute is tiny next to the coordination (the MLP) every
//! shard ran to the dataset's size on `hetero4`, losing the straggler
//! adaptation; before the sample cache the shard's own download also
//! counted as c and grew the next shard (README, "Communication-aware
//! allocation").
//!
//! Fixes over the original: the target time is not frozen after the first
//! round, sizes are bounded, and sampling is without replacement so no sample
//! is trained on twice in a pass while another is never seen.

use std::collections::{BTreeMap, HashSet, VecDeque};

use anyhow::{bail, ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How shard sizes follow the measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationMode {
    /// Shard = (samples / round time) × T: transfer time counts as slowness.
    Throughput,
    /// Shard = max(the throughput rule's, compute rate × share × fixed cost).
    CommAware,
}

/// What one round cost a worker, as the master measured it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundCost {
    /// The worker's compute (and emulated idle), seconds.
    pub compute_secs: f64,
    /// The whole cycle: shard issued → round ended, seconds (≥ compute).
    pub cycle_secs: f64,
}

/// Allocation parameters; every field has a default, unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationConfig {
    /// Shard size for a worker whose throughput has not been measured yet (default 500).
    pub initial_shard: usize,
    /// n_min: the smallest shard ever handed out (default 64).
    pub min_shard: usize,
    /// n_max: the largest shard ever handed out (default 5000).
    pub max_shard: usize,
    /// Weight of the newest throughput sample in the moving average, in (0, 1]
    /// (default 0.5; 1 = use only the latest round).
    pub throughput_smoothing: f64,
    /// A fixed target round time in seconds; when absent (default) T is the median
    /// of the recent round times.
    pub target_round_secs: Option<f64>,
    /// How many recent round times (all workers together) the median is taken over
    /// (default 20).
    pub round_time_window: usize,
    /// Seed of the sampling permutations (default 42).
    pub seed: u64,
    /// `comm_aware` (default) or `throughput` (the paper's rule; see the module docs).
    pub mode: AllocationMode,
    /// Under `comm_aware`: seconds of compute a round gets at least per
    /// second of its fixed (transfer) cost (default 1.0).
    pub min_compute_share: f64,
}

impl Default for AllocationConfig {
    fn default() -> Self {
        Self {
            initial_shard: 500,
            min_shard: 64,
            max_shard: 5000,
            throughput_smoothing: 0.5,
            target_round_secs: None,
            round_time_window: 20,
            seed: 42,
            mode: AllocationMode::CommAware,
            min_compute_share: 1.0,
        }
    }
}

impl AllocationConfig {
    /// Checks every field; the error names the field and the wrong value.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.min_shard >= 1,
            "allocation.min_shard must be at least 1, got 0"
        );
        ensure!(
            self.max_shard >= self.min_shard,
            "allocation.max_shard ({}) must be >= allocation.min_shard ({})",
            self.max_shard,
            self.min_shard
        );
        ensure!(
            (self.min_shard..=self.max_shard).contains(&self.initial_shard),
            "allocation.initial_shard ({}) must lie in [min_shard {}, max_shard {}]",
            self.initial_shard,
            self.min_shard,
            self.max_shard
        );
        ensure!(
            self.throughput_smoothing > 0.0 && self.throughput_smoothing <= 1.0,
            "allocation.throughput_smoothing must be in (0, 1], got {}",
            self.throughput_smoothing
        );
        if let Some(t) = self.target_round_secs {
            ensure!(
                t.is_finite() && t > 0.0,
                "allocation.target_round_secs must be a positive number of seconds, got {t}"
            );
        }
        ensure!(
            self.round_time_window >= 1,
            "allocation.round_time_window must be at least 1, got 0"
        );
        ensure!(
            self.min_compute_share.is_finite() && self.min_compute_share >= 0.0,
            "allocation.min_compute_share must be a finite value >= 0, got {}",
            self.min_compute_share
        );
        Ok(())
    }
}

/// One shard handed to a worker: indices into the training set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Sequential id of this shard within the run.
    pub id: u64,
    /// The worker it was given to.
    pub worker: String,
    /// The pass over the training set its last index was drawn from (0-based).
    pub pass: u64,
    /// Training-set indices, all distinct.
    pub indices: Vec<u32>,
}

/// One allocation decision, a row of `allocation.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// The worker the shard went to.
    pub worker: String,
    /// The worker's round the shard is for.
    pub round: u64,
    /// The shard's id.
    pub shard_id: u64,
    /// Smoothed throughput (shard samples per second) used, if measured.
    pub throughput: Option<f64>,
    /// Target round time T in seconds used, if known.
    pub target_time: Option<f64>,
    /// The worker's measured fixed cost per round (transfer, waits),
    /// seconds, if known (`comm_aware`).
    pub fixed_secs: Option<f64>,
    /// The shard size handed out.
    pub size: usize,
    /// Pass over the training set.
    pub pass: u64,
}

impl AllocationRecord {
    /// Header line matching [`AllocationRecord::csv_row`].
    pub const CSV_HEADER: &'static str =
        "worker,round,shard_id,throughput,target_time,size,pass,fixed_secs";

    /// The record as one CSV line (no newline); unknown values are empty fields.
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        let worker = if self.worker.contains([',', '"', '\n']) {
            format!("\"{}\"", self.worker.replace('"', "\"\""))
        } else {
            self.worker.clone()
        };
        format!(
            "{worker},{},{},{},{},{},{},{}",
            self.round,
            self.shard_id,
            opt(self.throughput),
            opt(self.target_time),
            self.size,
            self.pass,
            opt(self.fixed_secs)
        )
    }
}

/// Sizes and draws shards for all workers of a run.
#[derive(Debug)]
pub struct ShardAllocator {
    config: AllocationConfig,
    dataset_len: usize,
    rng: ChaCha8Rng,
    permutation: Vec<u32>,
    cursor: usize,
    pass: u64,
    returned: VecDeque<u32>,
    throughput: BTreeMap<String, f64>,
    /// Smoothed samples per second of compute.
    compute_rate: BTreeMap<String, f64>,
    /// Smoothed fixed cost per round, seconds.
    fixed_cost: BTreeMap<String, f64>,
    /// Smoothed cycle per round, seconds.
    cycle: BTreeMap<String, f64>,
    round_times: VecDeque<f64>,
    /// Shards out with each worker, oldest first (more than one with prefetch).
    outstanding: BTreeMap<String, VecDeque<Shard>>,
    next_shard_id: u64,
    records: Vec<AllocationRecord>,
}

/// What an allocator learned, for a checkpoint: measured throughputs, recent
/// round times, the pass and shard counters. (The sample order of the
/// current pass is drawn afresh on resume.)
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AllocatorSnapshot {
    /// Smoothed samples/s per worker.
    pub throughput: BTreeMap<String, f64>,
    /// Recent round times (s).
    pub round_times: Vec<f64>,
    /// Passes over the training set so far.
    pub pass: u64,
    /// The next shard id.
    pub next_shard_id: u64,
    /// Smoothed samples per second of compute per worker.
    #[serde(default)]
    pub compute_rate: BTreeMap<String, f64>,
    /// Smoothed fixed cost per round per worker, seconds.
    #[serde(default)]
    pub fixed_cost: BTreeMap<String, f64>,
    /// Smoothed cycle per round per worker, seconds.
    #[serde(default)]
    pub cycle: BTreeMap<String, f64>,
}

impl ShardAllocator {
    /// What this allocator learned (see [`AllocatorSnapshot`]).
    pub fn snapshot(&self) -> AllocatorSnapshot {
        AllocatorSnapshot {
            throughput: self.throughput.clone(),
            round_times: self.round_times.iter().copied().collect(),
            pass: self.pass,
            next_shard_id: self.next_shard_id,
            compute_rate: self.compute_rate.clone(),
            fixed_cost: self.fixed_cost.clone(),
            cycle: self.cycle.clone(),
        }
    }

    /// Takes over what a checkpointed allocator had learned.
    pub fn restore(&mut self, s: AllocatorSnapshot) {
        self.throughput = s.throughput;
        self.round_times = s.round_times.into_iter().collect();
        self.pass = s.pass;
        self.next_shard_id = s.next_shard_id;
        self.compute_rate = s.compute_rate;
        self.fixed_cost = s.fixed_cost;
        self.cycle = s.cycle;
    }

    /// An allocator over a training set of `dataset_len` samples.
    pub fn new(config: AllocationConfig, dataset_len: usize) -> Result<Self> {
        config.validate()?;
        ensure!(
            dataset_len > 0,
            "cannot allocate shards of an empty training set"
        );
        ensure!(
            u32::try_from(dataset_len).is_ok(),
            "training set of {dataset_len} samples exceeds the u32 index range"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let permutation = shuffled(dataset_len, &mut rng);
        Ok(Self {
            config,
            dataset_len,
            rng,
            permutation,
            cursor: 0,
            pass: 0,
            returned: VecDeque::new(),
            throughput: BTreeMap::new(),
            compute_rate: BTreeMap::new(),
            fixed_cost: BTreeMap::new(),
            cycle: BTreeMap::new(),
            round_times: VecDeque::new(),
            outstanding: BTreeMap::new(),
            next_shard_id: 0,
            records: Vec::new(),
        })
    }

    /// Records a finished round: `samples` is the shard size the worker trained on
    /// (not multiplied by epochs), `round_secs` the round's wall time (all
    /// compute: no fixed cost is learned).
    pub fn record_round(&mut self, worker: &str, samples: usize, round_secs: f64) -> Result<()> {
        self.record_round_cost(
            worker,
            samples,
            RoundCost {
                compute_secs: round_secs,
                cycle_secs: round_secs,
            },
        )
    }

    /// Records a finished round with its compute and its whole cycle.
    pub fn record_round_cost(
        &mut self,
        worker: &str,
        samples: usize,
        cost: RoundCost,
    ) -> Result<()> {
        if samples == 0 {
            bail!("round report of worker {worker} has 0 samples; throughput not updated");
        }
        let RoundCost {
            compute_secs,
            cycle_secs,
        } = cost;
        if !(cycle_secs.is_finite() && cycle_secs > 0.0) {
            bail!("round of worker {worker} took {cycle_secs} s; throughput not updated");
        }
        if !(compute_secs.is_finite() && compute_secs > 0.0) {
            bail!("round report of worker {worker} has compute time {compute_secs} s; throughput not updated");
        }
        // A worker's compute cannot exceed its cycle (clocks of two machines
        // are never compared: both come from the master or both from the worker).
        let compute_secs = compute_secs.min(cycle_secs);
        let s = self.config.throughput_smoothing;
        let ema = |map: &mut BTreeMap<String, f64>, sample: f64| {
            map.entry(worker.to_string())
                .and_modify(|ema| *ema = s * sample + (1.0 - s) * *ema)
                .or_insert(sample);
        };
        ema(&mut self.throughput, samples as f64 / cycle_secs);
        ema(&mut self.compute_rate, samples as f64 / compute_secs);
        ema(&mut self.fixed_cost, cycle_secs - compute_secs);
        ema(&mut self.cycle, cycle_secs);
        let round_secs = cycle_secs;
        self.round_times.push_back(round_secs);
        while self.round_times.len() > self.config.round_time_window {
            self.round_times.pop_front();
        }
        Ok(())
    }

    /// The worker's smoothed fixed cost per round (seconds), if measured.
    pub fn fixed_cost(&self, worker: &str) -> Option<f64> {
        self.fixed_cost.get(worker).copied()
    }

    /// The worker's smoothed cycle per round (seconds), if measured.
    pub fn cycle(&self, worker: &str) -> Option<f64> {
        self.cycle.get(worker).copied()
    }

    /// The worker's smoothed throughput in samples per second, if measured.
    pub fn throughput(&self, worker: &str) -> Option<f64> {
        self.throughput.get(worker).copied()
    }

    /// The target round time T in seconds: the configured value, else the median of
    /// the recent round times, else None before any round was reported.
    pub fn target_round_secs(&self) -> Option<f64> {
        if let Some(t) = self.config.target_round_secs {
            return Some(t);
        }
        if self.round_times.is_empty() {
            return None;
        }
        let mut times: Vec<f64> = self.round_times.iter().copied().collect();
        times.sort_by(f64::total_cmp);
        let mid = times.len() / 2;
        Some(if times.len() % 2 == 1 {
            times[mid]
        } else {
            (times[mid - 1] + times[mid]) / 2.0
        })
    }

    /// The size the worker's next shard would get now.
    pub fn planned_size(&self, worker: &str) -> usize {
        let Some(t) = self.target_round_secs() else {
            return self.config.initial_shard.min(self.dataset_len);
        };
        let by_throughput = self.throughput(worker).map(|r| r * t);
        let by_link = match self.config.mode {
            AllocationMode::Throughput => None,
            AllocationMode::CommAware => self.compute_rate.get(worker).map(|&r| {
                r * self.config.min_compute_share * self.fixed_cost(worker).unwrap_or(0.0)
            }),
        };
        let size = match (by_throughput, by_link) {
            (None, _) => self.config.initial_shard,
            (Some(n), link) => {
                let raw = n.max(link.unwrap_or(0.0)).round();
                // `as` saturates for huge floats; clamping follows anyway.
                (raw as usize).clamp(self.config.min_shard, self.config.max_shard)
            }
        };
        size.min(self.dataset_len)
    }

    /// Draws the worker's shard for `round`. The worker's previous shard counts as
    /// done: it asked for more data, so it trained on it.
    pub fn next_shard(&mut self, worker: &str, round: u64) -> Shard {
        self.next_shard_keeping(worker, round, 0)
    }

    /// Draws the worker's shard for `round` while `in_flight` of its earlier
    /// shards are still being trained (prefetch): those stay outstanding
    /// (given back if the worker goes), older ones count as done.
    pub fn next_shard_keeping(&mut self, worker: &str, round: u64, in_flight: usize) -> Shard {
        let size = self.planned_size(worker);
        let indices = self.draw(size);
        let shard = Shard {
            id: self.next_shard_id,
            worker: worker.to_string(),
            pass: self.pass,
            indices,
        };
        self.next_shard_id += 1;
        self.records.push(AllocationRecord {
            worker: worker.to_string(),
            round,
            shard_id: shard.id,
            throughput: self.throughput(worker),
            target_time: self.target_round_secs(),
            fixed_secs: self.fixed_cost(worker),
            size,
            pass: shard.pass,
        });
        let out = self.outstanding.entry(worker.to_string()).or_default();
        while out.len() > in_flight {
            out.pop_front();
        }
        out.push_back(shard.clone());
        shard
    }

    /// The worker is gone: its outstanding shard goes back to the pool and will be
    /// handed out first. Returns how many indices were returned (0 if none).
    pub fn release_worker(&mut self, worker: &str) -> usize {
        match self.outstanding.remove(worker) {
            Some(shards) => {
                let mut n = 0;
                for shard in shards {
                    n += shard.indices.len();
                    self.returned.extend(shard.indices);
                }
                n
            }
            None => 0,
        }
    }

    /// The worker's newest shard, if any.
    pub fn outstanding(&self, worker: &str) -> Option<&Shard> {
        self.outstanding.get(worker).and_then(|q| q.back())
    }

    /// The current pass over the training set (0-based).
    pub fn pass(&self) -> u64 {
        self.pass
    }

    /// Every allocation decision so far, oldest first.
    pub fn records(&self) -> &[AllocationRecord] {
        &self.records
    }

    /// Takes the decisions recorded since the last call (for appending to a CSV file).
    pub fn drain_records(&mut self) -> Vec<AllocationRecord> {
        std::mem::take(&mut self.records)
    }

    fn draw(&mut self, size: usize) -> Vec<u32> {
        let mut indices = Vec::with_capacity(size);
        let mut in_shard = HashSet::with_capacity(size);
        // Returned indices first; one already in this shard (possible when shards
        // from different passes were returned) waits for a later shard.
        let mut deferred = Vec::new();
        while indices.len() < size {
            let Some(i) = self.returned.pop_front() else {
                break;
            };
            if in_shard.insert(i) {
                indices.push(i);
            } else {
                deferred.push(i);
            }
        }
        for i in deferred.into_iter().rev() {
            self.returned.push_front(i);
        }
        while indices.len() < size {
            if self.cursor == self.permutation.len() {
                self.start_pass(&in_shard);
            }
            let i = self.permutation[self.cursor];
            self.cursor += 1;
            // start_pass moved every index of this shard to the end of the new
            // permutation, and size <= dataset_len, so no duplicate is reached here.
            in_shard.insert(i);
            indices.push(i);
        }
        indices
    }

    /// Starts a new pass; indices already in the shard being drawn go to the end of
    /// the new permutation so the shard gets no duplicate and each index still
    /// appears exactly once in the pass.
    fn start_pass(&mut self, in_shard: &HashSet<u32>) {
        let mut next = shuffled(self.dataset_len, &mut self.rng);
        if !in_shard.is_empty() {
            let (mut fresh, taken): (Vec<u32>, Vec<u32>) =
                next.into_iter().partition(|i| !in_shard.contains(i));
            fresh.extend(taken);
            next = fresh;
        }
        self.permutation = next;
        self.cursor = 0;
        self.pass += 1;
    }
}

fn shuffled(len: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    // len fits in u32: checked in ShardAllocator::new.
    let mut v: Vec<u32> = (0..len as u32).collect();
    v.shuffle(rng);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AllocationConfig {
        AllocationConfig {
            initial_shard: 100,
            min_shard: 50,
            max_shard: 400,
            throughput_smoothing: 0.5,
            target_round_secs: None,
            round_time_window: 5,
            seed: 7,
            ..AllocationConfig::default()
        }
    }

    #[test]
    fn unmeasured_worker_gets_the_initial_size() {
        let mut a = ShardAllocator::new(config(), 1000).unwrap();
        let s = a.next_shard("w1", 0);
        assert_eq!(s.indices.len(), 100);
        let r = &a.records()[0];
        assert_eq!((r.throughput, r.target_time, r.size), (None, None, 100));
    }

    #[test]
    fn throughput_is_an_exponential_moving_average() {
        let mut a = ShardAllocator::new(config(), 1000).unwrap();
        a.record_round("w1", 100, 1.0).unwrap(); // 100/s
        assert_eq!(a.throughput("w1"), Some(100.0));
        a.record_round("w1", 100, 2.0).unwrap(); // 50/s -> 0.5*50 + 0.5*100
        assert_eq!(a.throughput("w1"), Some(75.0));
    }

    #[test]
    fn straggler_gets_less_data_than_fast_worker() {
        let mut a = ShardAllocator::new(config(), 10_000).unwrap();
        // fast: 100 samples in 1 s; slow: 100 samples in 4 s -> 25/s.
        a.record_round("fast", 100, 1.0).unwrap();
        a.record_round("slow", 100, 4.0).unwrap();
        // T = median{1, 4} = 2.5 s: fast 100*2.5 = 250, slow 25*2.5 = 62.5 -> 63.
        assert_eq!(a.target_round_secs(), Some(2.5));
        assert_eq!(a.next_shard("fast", 1).indices.len(), 250);
        assert_eq!(a.next_shard("slow", 1).indices.len(), 63);
        let sizes: Vec<usize> = a.records().iter().map(|r| r.size).collect();
        assert_eq!(sizes, vec![250, 63]);
        assert_eq!(a.records()[1].throughput, Some(25.0));
    }

    #[test]
    fn sizes_are_clamped_to_bounds_and_dataset() {
        let mut a = ShardAllocator::new(config(), 10_000).unwrap();
        a.record_round("huge", 100, 0.01).unwrap(); // 10 000/s
        a.record_round("tiny", 10, 10.0).unwrap(); // 1/s
                                                   // T = median{0.01, 10} = 5.005 s; huge -> 50 050 -> 400, tiny -> 5 -> 50.
        assert_eq!(a.planned_size("huge"), 400);
        assert_eq!(a.planned_size("tiny"), 50);
        let small = ShardAllocator::new(config(), 80).unwrap();
        assert_eq!(
            small.planned_size("new"),
            80,
            "never more than the training set"
        );
    }

    #[test]
    fn target_time_is_re_estimated_from_recent_rounds() {
        let mut a = ShardAllocator::new(config(), 10_000).unwrap();
        for t in [1.0, 2.0, 3.0] {
            a.record_round("w", 100, t).unwrap();
        }
        assert_eq!(a.target_round_secs(), Some(2.0));
        // After 6 rounds the window of 5 holds {2, 3, 10, 10, 10}: median 10.
        for _ in 0..3 {
            a.record_round("w", 100, 10.0).unwrap();
        }
        assert_eq!(a.target_round_secs(), Some(10.0));
        let fixed = ShardAllocator::new(
            AllocationConfig {
                target_round_secs: Some(3.0),
                ..config()
            },
            100,
        )
        .unwrap();
        assert_eq!(fixed.target_round_secs(), Some(3.0));
    }

    #[test]
    fn every_index_exactly_once_per_pass() {
        let n = 1000;
        let mut a = ShardAllocator::new(config(), n).unwrap();
        // Sizes 100 and 63 do not divide 1000, so shards cross pass boundaries.
        a.record_round("slow", 100, 4.0).unwrap();
        a.record_round("fast", 100, 1.0).unwrap();
        let mut drawn = Vec::new();
        for round in 0..40 {
            for w in ["fast", "slow"] {
                let s = a.next_shard(w, round);
                let unique: HashSet<u32> = s.indices.iter().copied().collect();
                assert_eq!(unique.len(), s.indices.len(), "no duplicate inside a shard");
                drawn.extend(s.indices);
            }
        }
        let passes = drawn.len() / n;
        assert!(passes >= 3, "drew {} indices", drawn.len());
        for p in 0..passes {
            let mut chunk = drawn[p * n..(p + 1) * n].to_vec();
            chunk.sort_unstable();
            assert_eq!(chunk, (0..n as u32).collect::<Vec<_>>(), "pass {p}");
        }
        assert_eq!(a.pass() as usize, drawn.len().div_ceil(n) - 1);
    }

    #[test]
    fn different_passes_use_different_permutations() {
        let mut a = ShardAllocator::new(
            AllocationConfig {
                initial_shard: 100,
                ..config()
            },
            100,
        )
        .unwrap();
        let first = a.next_shard("w", 0).indices;
        let second = a.next_shard("w", 1).indices;
        assert_ne!(first, second);
        let mut sorted = second.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
    }

    #[test]
    fn shards_of_a_gone_worker_are_handed_out_first() {
        let mut a = ShardAllocator::new(config(), 1000).unwrap();
        let lost = a.next_shard("gone", 0);
        assert_eq!(a.release_worker("gone"), 100);
        assert_eq!(a.release_worker("gone"), 0, "nothing outstanding any more");
        let next = a.next_shard("other", 0);
        assert_eq!(next.indices, lost.indices);
        // Coverage still holds: the 900 never-drawn indices plus the reissued 100.
        let mut seen: HashSet<u32> = next.indices.iter().copied().collect();
        for r in 1..10 {
            seen.extend(a.next_shard("other", r).indices);
        }
        assert_eq!(seen.len(), 1000);
        assert_eq!(a.pass(), 0);
    }

    #[test]
    fn bad_round_reports_and_configs_are_rejected() {
        let mut a = ShardAllocator::new(config(), 100).unwrap();
        assert!(a.record_round("w", 0, 1.0).is_err());
        assert!(a.record_round("w", 10, 0.0).is_err());
        assert!(a.record_round("w", 10, f64::NAN).is_err());
        assert_eq!(a.throughput("w"), None);
        assert!(ShardAllocator::new(config(), 0).is_err());
        let err = ShardAllocator::new(
            AllocationConfig {
                max_shard: 10,
                ..config()
            },
            100,
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_shard"), "{err}");
        assert!(ShardAllocator::new(
            AllocationConfig {
                throughput_smoothing: 0.0,
                ..config()
            },
            100
        )
        .is_err());
    }

    #[test]
    fn a_slow_link_gets_more_work_per_transfer_not_less() {
        let cfg = AllocationConfig {
            throughput_smoothing: 1.0,
            min_shard: 64,
            max_shard: 5000,
            round_time_window: 20,
            ..config()
        };
        let mut comm = ShardAllocator::new(
            AllocationConfig {
                mode: AllocationMode::CommAware,
                ..cfg.clone()
            },
            100_000,
        )
        .unwrap();
        let mut old = ShardAllocator::new(
            AllocationConfig {
                mode: AllocationMode::Throughput,
                ..cfg
            },
            100_000,
        )
        .unwrap();
        // Equal compute (1000 samples/s); "fast" has no transfer cost,
        // "link" spends 4 s per round on its link.
        for a in [&mut comm, &mut old] {
            for _ in 0..3 {
                let cost = |fixed: f64| RoundCost {
                    compute_secs: 0.5,
                    cycle_secs: 0.5 + fixed,
                };
                a.record_round_cost("fast", 500, cost(0.0)).unwrap();
                a.record_round_cost("fast", 500, cost(0.0)).unwrap();
                a.record_round_cost("link", 500, cost(4.0)).unwrap();
            }
        }
        // T = the median cycle, 0.5 s.
        assert_eq!(comm.target_round_secs(), Some(0.5));
        assert_eq!(comm.planned_size("fast"), 500);
        // Comm-aware: as long computing as transferring: 1000/s x 4 s.
        assert_eq!(comm.planned_size("link"), 4000);
        assert_eq!(comm.fixed_cost("link"), Some(4.0));
        // The throughput rule sees 500 samples per 4.5 s and shrinks it.
        assert_eq!(old.planned_size("link"), 64, "min_shard");
        assert_eq!(old.planned_size("fast"), 500);
        // A compute-bound straggler (4x slower compute, no link cost) still
        // gets the throughput rule's smaller shard, under both rules.
        for a in [&mut comm, &mut old] {
            for _ in 0..3 {
                a.record_round_cost(
                    "slow",
                    500,
                    RoundCost {
                        compute_secs: 2.0,
                        cycle_secs: 2.0,
                    },
                )
                .unwrap();
            }
        }
        assert_eq!(comm.planned_size("slow"), old.planned_size("slow"));
        assert!(comm.planned_size("slow") < comm.planned_size("fast"));
        // With no fixed cost both rules agree.
        let mut a = ShardAllocator::new(config(), 10_000).unwrap();
        a.record_round("w", 100, 1.0).unwrap();
        assert_eq!(a.fixed_cost("w"), Some(0.0));
        // A compute longer than the cycle is capped at the cycle; bad numbers are refused.
        assert!(a
            .record_round_cost(
                "w",
                10,
                RoundCost {
                    compute_secs: f64::NAN,
                    cycle_secs: 1.0
                }
            )
            .is_err());
        assert!(a
            .record_round_cost(
                "w",
                10,
                RoundCost {
                    compute_secs: 1.0,
                    cycle_secs: -1.0
                }
            )
            .is_err());
        a.record_round_cost(
            "w",
            100,
            RoundCost {
                compute_secs: 9.0,
                cycle_secs: 1.0,
            },
        )
        .unwrap();
        assert!(a.fixed_cost("w").unwrap() >= 0.0);
    }

    #[test]
    fn prefetched_shards_stay_outstanding_until_done() {
        let mut a = ShardAllocator::new(config(), 1000).unwrap();
        let s1 = a.next_shard_keeping("w", 1, 0);
        let s2 = a.next_shard_keeping("w", 2, 1);
        assert_eq!(a.outstanding("w"), Some(&s2));
        // Round 1 ended: round 3 is drawn while round 2 trains; s1 is done.
        let s3 = a.next_shard_keeping("w", 3, 1);
        assert_eq!(
            a.release_worker("w"),
            s2.indices.len() + s3.indices.len(),
            "both in flight go back, the finished one does not ({} samples)",
            s1.indices.len()
        );
    }

    #[test]
    fn csv_row_matches_header() {
        let r = AllocationRecord {
            worker: "w1".into(),
            round: 3,
            shard_id: 9,
            throughput: Some(25.0),
            target_time: None,
            size: 63,
            pass: 0,
            fixed_secs: Some(1.5),
        };
        assert_eq!(r.csv_row(), "w1,3,9,25.000000,,63,0,1.500000");
        assert_eq!(
            AllocationRecord::CSV_HEADER.split(',').count(),
            r.csv_row().split(',').count()
        );
    }
}
