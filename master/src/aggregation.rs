//! Aggregation of weight deltas into the global model (DESIGN §4), the checks
//! an incoming update must pass, and the ledger of applied updates.
//!
//! # Weights
//!
//! Each accepted delta Δᵢ gets two numbers:
//!
//! * a **share weight** `wᵢ = samplesᵢ^sample_power · (1 + lossᵢ)^(−loss_power)`:
//!   more data and a lower validation loss give a larger share;
//! * a **staleness damping** `dᵢ = (1 + stalenessᵢ)^(−staleness_power)` with
//!   staleness = current version − the version the delta was based on
//!   (the polynomial staleness function of FedAsync, Xie et al. 2019).
//!
//! and `global ← global + Σ wᵢ·dᵢ·Δᵢ / Σ wᵢ`.
//!
//! For fresh deltas (d = 1) this is exactly DESIGN's `Σ wᵢΔᵢ / Σ wᵢ`. The
//! damping sits outside the normalisation on purpose: asynchronous policies
//! (Hermes, ASP) apply one delta at a time, and with a single delta any
//! normalised weight cancels to 1 — a stale delta would then be applied at
//! full strength. Kept outside, a delta 3 versions stale is applied at half
//! strength (power 0.5) whether it arrives alone or with others. Every power
//! can be set to 0 to switch its factor off.
//!
//! # Admission
//!
//! [`admit_update`] rejects, with a typed [`RejectReason`], a duplicate
//! (worker, incarnation, sequence), a wrong parameter count, non-finite values or loss, a
//! base version from the future, no samples, and staleness beyond
//! `max_staleness`. The run id is checked by the transport before this.
//! [`UpdateLedger`] remembers every admitted (worker, incarnation, sequence)
//! and records each applied update with its weight and the version it
//! produced. The incarnation (random per worker process start, from the
//! registration) keeps a restarted worker, whose sequence numbers start
//! again, from being refused as a duplicate.

use std::collections::HashSet;
use std::fmt;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Aggregation parameters; every field has a default, unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationConfig {
    /// Exponent of the sample count in the share weight (default 1: proportional
    /// to samples, as FedAvg; 0 ignores the sample count).
    pub sample_power: f64,
    /// Exponent of `1 / (1 + validation loss)` in the share weight (default 1;
    /// 0 ignores the loss).
    pub loss_power: f64,
    /// Exponent of `1 / (1 + staleness)` in the damping (default 0.5; 0 applies
    /// stale deltas at full strength).
    pub staleness_power: f64,
    /// Updates based on a version more than this many versions old are rejected
    /// (default 10).
    pub max_staleness: u64,
    /// Scale `max_staleness` per worker by how many typical rounds its own
    /// round lasts (1x to 20x; default true): a worker behind a slow link
    /// contributes damped updates instead of none.
    pub staleness_scales_with_cycle: bool,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        Self {
            sample_power: 1.0,
            loss_power: 1.0,
            staleness_power: 0.5,
            max_staleness: 10,
            staleness_scales_with_cycle: true,
        }
    }
}

impl AggregationConfig {
    /// Checks every field; the error names the field and the wrong value.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("sample_power", self.sample_power),
            ("loss_power", self.loss_power),
            ("staleness_power", self.staleness_power),
        ] {
            ensure!(
                v.is_finite() && v >= 0.0,
                "aggregation.{name} must be a finite value >= 0, got {v}"
            );
        }
        Ok(())
    }

    /// The share weight `samples^sample_power · (1 + loss)^(−loss_power)`.
    /// `loss` is clamped at 0 (a loss is never negative; this keeps the base positive).
    pub fn share_weight(&self, samples: u64, loss: f64) -> f64 {
        (samples as f64).powf(self.sample_power) * (1.0 + loss.max(0.0)).powf(-self.loss_power)
    }

    /// The staleness damping `(1 + staleness)^(−staleness_power)`, in (0, 1].
    pub fn damping(&self, staleness: u64) -> f64 {
        (1.0 + staleness as f64).powf(-self.staleness_power)
    }
}

/// One delta with its weights, as [`apply`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct WeightedDelta<'a> {
    /// Share weight wᵢ (> 0).
    pub weight: f64,
    /// Staleness damping dᵢ (in [0, 1] normally).
    pub damping: f64,
    /// The delta Δᵢ, as long as the global buffer.
    pub values: &'a [f32],
}

/// `global += Σ wᵢ·dᵢ·Δᵢ / Σ wᵢ`, accumulated in f64. Fails, leaving `global`
/// untouched, when there is no delta, a length differs, or a weight is not a
/// positive finite number.
pub fn apply(global: &mut [f32], deltas: &[WeightedDelta<'_>]) -> Result<()> {
    ensure!(!deltas.is_empty(), "nothing to aggregate: no deltas given");
    let mut total = 0.0;
    for (i, d) in deltas.iter().enumerate() {
        ensure!(
            d.values.len() == global.len(),
            "delta {i} has {} values but the global model has {}",
            d.values.len(),
            global.len()
        );
        ensure!(
            d.weight.is_finite() && d.weight > 0.0,
            "delta {i} has weight {}; must be > 0",
            d.weight
        );
        ensure!(
            d.damping.is_finite() && d.damping >= 0.0,
            "delta {i} has damping {}",
            d.damping
        );
        total += d.weight;
    }
    let coefficients: Vec<f64> = deltas
        .iter()
        .map(|d| d.weight * d.damping / total)
        .collect();
    let threads = fold_threads(global.len());
    if threads <= 1 {
        fold(global, 0, deltas, &coefficients);
        return Ok(());
    }
    let per = global.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, part) in global.chunks_mut(per).enumerate() {
            let coefficients = &coefficients;
            scope.spawn(move || fold(part, t * per, deltas, coefficients));
        }
    });
    Ok(())
}

/// Parameters below which one thread folds the whole model (a thread costs
/// tens of µs; a 1M-parameter fold a few ms).
const PARALLEL_FROM: usize = 1 << 20;
/// Parameters one block of the fold holds in its f64 accumulator (16 KiB,
/// well inside L1/L2 next to the deltas' blocks).
const BLOCK: usize = 2048;

/// Threads for a fold of `len` parameters: up to the available cores, each
/// with at least [`PARALLEL_FROM`] / 2 parameters.
fn fold_threads(len: usize) -> usize {
    if len < PARALLEL_FROM {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(len / (PARALLEL_FROM / 2)).max(1)
}

/// `part` (the parameters from `offset` on) `+= Σ cᵢ·Δᵢ`, block by block:
/// each block's terms are summed in an f64 buffer, delta after delta (a
/// contiguous multiply-add the compiler vectorizes), then added to the
/// parameters once — the same sums, in the same order, as one parameter at
/// a time.
fn fold(part: &mut [f32], offset: usize, deltas: &[WeightedDelta<'_>], coefficients: &[f64]) {
    let mut acc = [0f64; BLOCK];
    for (b, params) in part.chunks_mut(BLOCK).enumerate() {
        let start = offset + b * BLOCK;
        let acc = &mut acc[..params.len()];
        acc.fill(0.0);
        for (d, &c) in deltas.iter().zip(coefficients) {
            let values = &d.values[start..start + params.len()];
            for (a, &v) in acc.iter_mut().zip(values) {
                *a += c * f64::from(v);
            }
        }
        for (g, &step) in params.iter_mut().zip(acc.iter()) {
            *g = (f64::from(*g) + step) as f32;
        }
    }
}

/// Why an incoming update was refused; counted per [`RejectReason::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The delta's length differs from the model's parameter count.
    WrongParameterCount {
        /// The model's parameter count.
        expected: usize,
        /// The delta's length.
        got: usize,
    },
    /// A delta value or the reported loss is NaN or infinite.
    NonFinite,
    /// Based on a version more than `max_staleness` versions old.
    TooStale {
        /// current version − base version.
        staleness: u64,
        /// The configured bound.
        bound: u64,
    },
    /// This (worker, incarnation, sequence) was admitted before.
    Duplicate,
    /// Based on a version the master has not produced yet.
    FutureVersion {
        /// The version claimed by the update.
        base: u64,
        /// The master's current version.
        current: u64,
    },
    /// The update claims 0 training samples.
    NoSamples,
}

impl RejectReason {
    /// A short stable name for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::WrongParameterCount { .. } => "wrong_parameter_count",
            Self::NonFinite => "non_finite",
            Self::TooStale { .. } => "too_stale",
            Self::Duplicate => "duplicate",
            Self::FutureVersion { .. } => "future_version",
            Self::NoSamples => "no_samples",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongParameterCount { expected, got } => {
                write!(f, "delta has {got} parameters, the model has {expected}")
            }
            Self::NonFinite => write!(f, "delta or loss contains NaN or infinity"),
            Self::TooStale { staleness, bound } => {
                write!(
                    f,
                    "delta is {staleness} versions stale, the bound is {bound}"
                )
            }
            Self::Duplicate => write!(
                f,
                "this (worker, incarnation, sequence) was already admitted"
            ),
            Self::FutureVersion { base, current } => {
                write!(
                    f,
                    "delta is based on version {base} but the current version is {current}"
                )
            }
            Self::NoSamples => write!(f, "update reports 0 training samples"),
        }
    }
}

impl std::error::Error for RejectReason {}

/// What [`admit_update`] needs to know about an incoming update.
#[derive(Debug, Clone, Copy)]
pub struct UpdateHeader<'a> {
    /// Sending worker.
    pub worker: &'a str,
    /// The worker process's incarnation (from its registration).
    pub incarnation: u64,
    /// The worker's sequence number of this update.
    pub sequence: u64,
    /// The global version the delta was computed against.
    pub base_version: u64,
    /// Training samples behind the delta.
    pub samples: u64,
    /// The worker's validation loss after the round.
    pub loss: f64,
}

/// Checks an update against the current version and the model size, then admits
/// its (worker, incarnation, sequence) into the ledger. Returns the staleness on success.
/// A rejected update is not admitted, so it stays rejected if delivered again.
pub fn admit_update(
    config: &AggregationConfig,
    ledger: &mut UpdateLedger,
    current_version: u64,
    parameter_count: usize,
    header: &UpdateHeader<'_>,
    delta: &[f32],
) -> Result<u64, RejectReason> {
    if ledger.contains(header.worker, header.incarnation, header.sequence) {
        return Err(RejectReason::Duplicate);
    }
    if delta.len() != parameter_count {
        return Err(RejectReason::WrongParameterCount {
            expected: parameter_count,
            got: delta.len(),
        });
    }
    if !header.loss.is_finite() || delta.iter().any(|v| !v.is_finite()) {
        return Err(RejectReason::NonFinite);
    }
    if header.samples == 0 {
        return Err(RejectReason::NoSamples);
    }
    let staleness =
        current_version
            .checked_sub(header.base_version)
            .ok_or(RejectReason::FutureVersion {
                base: header.base_version,
                current: current_version,
            })?;
    if staleness > config.max_staleness {
        return Err(RejectReason::TooStale {
            staleness,
            bound: config.max_staleness,
        });
    }
    ledger.admitted.insert((
        header.worker.to_string(),
        header.incarnation,
        header.sequence,
    ));
    Ok(staleness)
}

/// One applied update, a row of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The worker that sent it.
    pub worker: String,
    /// The worker process's incarnation.
    pub incarnation: u64,
    /// Its sequence number.
    pub sequence: u64,
    /// The version its delta was based on.
    pub base_version: u64,
    /// Staleness when applied.
    pub staleness: u64,
    /// Share weight wᵢ.
    pub weight: f64,
    /// Staleness damping dᵢ.
    pub damping: f64,
    /// The global version its application produced.
    pub applied_version: u64,
}

/// Every admitted (worker, incarnation, sequence) and every applied update.
#[derive(Debug, Default)]
pub struct UpdateLedger {
    admitted: HashSet<(String, u64, u64)>,
    applied: Vec<LedgerEntry>,
}

impl UpdateLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this (worker, incarnation, sequence) was admitted already.
    pub fn contains(&self, worker: &str, incarnation: u64, sequence: u64) -> bool {
        // A tuple key holding a String cannot be looked up by &str; updates are
        // rare (one per major round), so the clone is irrelevant.
        self.admitted
            .contains(&(worker.to_string(), incarnation, sequence))
    }

    /// A ledger holding `applied` (from a checkpoint): exactly those count
    /// as admitted, so a replay of them is refused and anything admitted
    /// but not yet applied at the checkpoint is admitted again.
    pub fn from_applied(applied: Vec<LedgerEntry>) -> Self {
        let admitted = applied
            .iter()
            .map(|e| (e.worker.clone(), e.incarnation, e.sequence))
            .collect();
        Self { admitted, applied }
    }

    /// Records an applied update.
    pub fn record_applied(&mut self, entry: LedgerEntry) {
        self.applied.push(entry);
    }

    /// All applied updates, oldest first.
    pub fn applied(&self) -> &[LedgerEntry] {
        &self.applied
    }

    /// How many updates were admitted.
    pub fn admitted_count(&self) -> usize {
        self.admitted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    #[test]
    fn share_weight_grows_with_samples_and_falls_with_loss() {
        let c = AggregationConfig::default();
        // 100 samples, loss 1.0: 100 / 2 = 50; 300 samples, loss 0.5: 300 / 1.5 = 200.
        assert!((c.share_weight(100, 1.0) - 50.0).abs() < EPS);
        assert!((c.share_weight(300, 0.5) - 200.0).abs() < EPS);
        assert!(c.share_weight(100, 0.2) > c.share_weight(100, 0.8));
        let squared = AggregationConfig {
            loss_power: 2.0,
            ..c.clone()
        };
        assert!((squared.share_weight(100, 1.0) - 25.0).abs() < EPS);
        let plain = AggregationConfig {
            sample_power: 0.0,
            loss_power: 0.0,
            ..c
        };
        assert_eq!(plain.share_weight(100, 1.0), 1.0);
    }

    #[test]
    fn damping_falls_with_staleness() {
        let c = AggregationConfig::default();
        // (1 + s)^-0.5: s = 0 -> 1, s = 3 -> 1/2, s = 8 -> 1/3.
        assert_eq!(c.damping(0), 1.0);
        assert!((c.damping(3) - 0.5).abs() < EPS);
        assert!((c.damping(8) - 1.0 / 3.0).abs() < EPS);
        let off = AggregationConfig {
            staleness_power: 0.0,
            ..c
        };
        assert_eq!(off.damping(8), 1.0);
    }

    #[test]
    fn weighted_average_is_exact() {
        // w = 1 and 3, fresh: global += (1*[4, -8] + 3*[8, 4]) / 4 = [7, 1].
        let mut global = vec![1.0_f32, 2.0];
        let a = [4.0_f32, -8.0];
        let b = [8.0_f32, 4.0];
        apply(
            &mut global,
            &[
                WeightedDelta {
                    weight: 1.0,
                    damping: 1.0,
                    values: &a,
                },
                WeightedDelta {
                    weight: 3.0,
                    damping: 1.0,
                    values: &b,
                },
            ],
        )
        .unwrap();
        assert_eq!(global, vec![8.0, 3.0]);
    }

    #[test]
    fn stale_delta_is_damped_even_alone() {
        // One delta 3 versions stale: d = 0.5, the share weight cancels.
        let c = AggregationConfig::default();
        let mut global = vec![0.0_f32, 10.0];
        let delta = [2.0_f32, -4.0];
        let w = WeightedDelta {
            weight: c.share_weight(100, 1.0),
            damping: c.damping(3),
            values: &delta,
        };
        apply(&mut global, &[w]).unwrap();
        assert_eq!(global, vec![1.0, 8.0]);
    }

    #[test]
    fn staleness_and_loss_combine() {
        // A: 100 samples, loss 1 -> w 50, fresh; B: 300 samples, loss 0.5 -> w 200, 3 stale -> d 0.5.
        // global += (50*1*[10] + 200*0.5*[20]) / 250 = (500 + 2000) / 250 = 10.
        let c = AggregationConfig::default();
        let mut global = vec![0.0_f32];
        let (a, b) = ([10.0_f32], [20.0_f32]);
        apply(
            &mut global,
            &[
                WeightedDelta {
                    weight: c.share_weight(100, 1.0),
                    damping: c.damping(0),
                    values: &a,
                },
                WeightedDelta {
                    weight: c.share_weight(300, 0.5),
                    damping: c.damping(3),
                    values: &b,
                },
            ],
        )
        .unwrap();
        assert!((global[0] - 10.0).abs() < 1e-6, "{}", global[0]);
    }

    #[test]
    fn the_blocked_parallel_fold_equals_the_plain_sum_bit_for_bit() {
        // Over the threading threshold and not a multiple of the block.
        let n = PARALLEL_FROM + 2 * BLOCK + 123;
        let deltas: Vec<Vec<f32>> = (0..3)
            .map(|k| {
                (0..n)
                    .map(|j| ((j * (k + 3)) % 97) as f32 * 0.01 - 0.4)
                    .collect()
            })
            .collect();
        let weighted: Vec<WeightedDelta<'_>> = deltas
            .iter()
            .enumerate()
            .map(|(k, v)| WeightedDelta {
                weight: 1.0 + k as f64,
                damping: 1.0 / (1.0 + k as f64),
                values: v,
            })
            .collect();
        let start: Vec<f32> = (0..n).map(|j| (j % 13) as f32 * 0.5).collect();
        let total: f64 = weighted.iter().map(|d| d.weight).sum();
        let expected: Vec<f32> = (0..n)
            .map(|j| {
                let step: f64 = weighted
                    .iter()
                    .map(|d| d.weight * d.damping / total * f64::from(d.values[j]))
                    .sum();
                (f64::from(start[j]) + step) as f32
            })
            .collect();
        let mut global = start.clone();
        apply(&mut global, &weighted).unwrap();
        assert!(fold_threads(n) >= 1);
        let differ = global
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{differ} of {n} parameters differ");
    }

    #[test]
    fn apply_refuses_bad_input_without_touching_global() {
        let mut global = vec![1.0_f32, 2.0];
        let short = [1.0_f32];
        let ok = [1.0_f32, 1.0];
        assert!(apply(&mut global, &[]).is_err());
        assert!(apply(
            &mut global,
            &[WeightedDelta {
                weight: 1.0,
                damping: 1.0,
                values: &short
            }]
        )
        .is_err());
        assert!(apply(
            &mut global,
            &[WeightedDelta {
                weight: 0.0,
                damping: 1.0,
                values: &ok
            }]
        )
        .is_err());
        assert!(apply(
            &mut global,
            &[
                WeightedDelta {
                    weight: 1.0,
                    damping: 1.0,
                    values: &ok
                },
                WeightedDelta {
                    weight: f64::NAN,
                    damping: 1.0,
                    values: &ok
                }
            ]
        )
        .is_err());
        assert_eq!(global, vec![1.0, 2.0]);
    }

    fn header(worker: &str, sequence: u64, base_version: u64) -> UpdateHeader<'_> {
        UpdateHeader {
            worker,
            incarnation: 1,
            sequence,
            base_version,
            samples: 100,
            loss: 0.5,
        }
    }

    #[test]
    fn admits_a_good_update_and_refuses_its_duplicate() {
        let c = AggregationConfig::default();
        let mut ledger = UpdateLedger::new();
        let delta = [0.1_f32, 0.2, 0.3];
        assert_eq!(
            admit_update(&c, &mut ledger, 5, 3, &header("w1", 7, 3), &delta),
            Ok(2)
        );
        assert_eq!(
            admit_update(&c, &mut ledger, 6, 3, &header("w1", 7, 3), &delta),
            Err(RejectReason::Duplicate)
        );
        // Same sequence from another worker, or from a restarted w1, is a different update.
        assert_eq!(
            admit_update(&c, &mut ledger, 6, 3, &header("w2", 7, 6), &delta),
            Ok(0)
        );
        let restarted = UpdateHeader {
            incarnation: 2,
            ..header("w1", 7, 6)
        };
        assert_eq!(
            admit_update(&c, &mut ledger, 6, 3, &restarted, &delta),
            Ok(0)
        );
        assert_eq!(ledger.admitted_count(), 3);
    }

    #[test]
    fn refuses_wrong_count_nan_stale_future_and_empty() {
        let c = AggregationConfig {
            max_staleness: 4,
            ..AggregationConfig::default()
        };
        let mut ledger = UpdateLedger::new();
        let good = [0.0_f32; 3];
        let cases: Vec<(UpdateHeader<'_>, Vec<f32>, RejectReason)> = vec![
            (
                header("w", 1, 10),
                vec![0.0; 2],
                RejectReason::WrongParameterCount {
                    expected: 3,
                    got: 2,
                },
            ),
            (
                header("w", 2, 10),
                vec![0.0, f32::NAN, 0.0],
                RejectReason::NonFinite,
            ),
            (
                header("w", 3, 10),
                vec![f32::INFINITY, 0.0, 0.0],
                RejectReason::NonFinite,
            ),
            (
                UpdateHeader {
                    loss: f64::NAN,
                    ..header("w", 4, 10)
                },
                good.to_vec(),
                RejectReason::NonFinite,
            ),
            (
                header("w", 5, 5),
                good.to_vec(),
                RejectReason::TooStale {
                    staleness: 5,
                    bound: 4,
                },
            ),
            (
                header("w", 6, 11),
                good.to_vec(),
                RejectReason::FutureVersion {
                    base: 11,
                    current: 10,
                },
            ),
            (
                UpdateHeader {
                    samples: 0,
                    ..header("w", 7, 10)
                },
                good.to_vec(),
                RejectReason::NoSamples,
            ),
        ];
        for (h, delta, expected) in cases {
            assert_eq!(
                admit_update(&c, &mut ledger, 10, 3, &h, &delta),
                Err(expected)
            );
        }
        assert_eq!(
            ledger.admitted_count(),
            0,
            "rejected updates are never admitted"
        );
        // Exactly at the bound is still accepted.
        assert_eq!(
            admit_update(&c, &mut ledger, 10, 3, &header("w", 8, 6), &good),
            Ok(4)
        );
    }

    #[test]
    fn labels_are_distinct() {
        let all = [
            RejectReason::WrongParameterCount {
                expected: 1,
                got: 2,
            },
            RejectReason::NonFinite,
            RejectReason::TooStale {
                staleness: 1,
                bound: 0,
            },
            RejectReason::Duplicate,
            RejectReason::FutureVersion {
                base: 1,
                current: 0,
            },
            RejectReason::NoSamples,
        ];
        let labels: HashSet<&str> = all.iter().map(RejectReason::label).collect();
        assert_eq!(labels.len(), all.len());
        assert_eq!(RejectReason::Duplicate.label(), "duplicate");
    }

    #[test]
    fn config_rejects_negative_powers_and_unknown_fields() {
        assert!(AggregationConfig {
            loss_power: -1.0,
            ..AggregationConfig::default()
        }
        .validate()
        .is_err());
        let parsed: AggregationConfig = serde_json::from_str(r#"{"max_staleness": 3}"#).unwrap();
        assert_eq!(parsed.max_staleness, 3);
        assert_eq!(parsed.staleness_power, 0.5);
        assert!(serde_json::from_str::<AggregationConfig>(r#"{"max_stale": 3}"#).is_err());
    }
}
