//! The loss gate: decides after every local round whether the worker's
//! improvement is significant enough to publish a weight delta (*major*
//! round) or only a small round report (*minor* round).
//!
//! Two tests are available ([`GateKind`]):
//!
//! * **z-score** (default, as in the Hermes paper). The current validation
//!   loss `L` is compared with the window of the previous `W` losses — the
//!   window *before* `L` is added: `z = (L − mean) / std` with the sample
//!   standard deviation (n − 1). The round is major when `z ≤ z_thr`.
//!   `z_thr` starts at `alpha`; after `lambda` minor rounds in a row it is
//!   relaxed, `z_thr ← min(0, z_thr · (1 − beta))`, and it is reset to
//!   `alpha` after every major round. If every loss in the window is the same
//!   (`std = 0`) no z is defined: the round is major exactly when `L` is
//!   strictly below that constant loss.
//! * **Welch** (alternative). The window of the last `W` losses *including*
//!   the current one is split into an older and a newer half, and a
//!   one-sided Welch t-test (Welch–Satterthwaite degrees of freedom) asks
//!   whether the newer mean is lower. The round is major when the p-value is
//!   below `welch_p_threshold`. The current loss must be part of the sample,
//!   otherwise it could never influence its own decision. The threshold is
//!   not relaxed.
//!
//! Warm-up: until `min_history` earlier losses exist the test is not run.
//! The very first observed loss is major — the first round from the initial
//! model is the largest improvement a worker makes and the master should not
//! wait `W` rounds for its first update; the remaining warm-up rounds are
//! minor and do not count towards relaxation.
//!
//! Fixes over the original: the window and threshold logic are explicit and
//! unit-tested, a flat window never divides by zero, and a non-finite loss is
//! an error that leaves the gate untouched instead of poisoning the window.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use thiserror::Error;

/// Which statistical test the gate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// z-score of the current loss against the previous window (the paper's gate).
    #[default]
    ZScore,
    /// One-sided Welch t-test: newer half of the window against the older half.
    Welch,
}

/// Gate parameters (DESIGN §4). Every field has a default; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// The test to run: `"z_score"` (default) or `"welch"`.
    pub kind: GateKind,
    /// W: how many recent losses the window keeps (default 10, at least 2).
    pub window: usize,
    /// α: the starting (and reset) z threshold; a round is major when z ≤ threshold
    /// (default −1.3, must be ≤ 0).
    pub alpha: f64,
    /// β: relaxation factor, `threshold ← min(0, threshold · (1 − β))` (default 0.1, in [0, 1)).
    pub beta: f64,
    /// λ: number of consecutive minor rounds after which the threshold is relaxed
    /// (default 5, at least 1).
    pub lambda: u32,
    /// Welch gate only: the round is major when the one-sided p-value is below this
    /// (default 0.05, in (0, 1)).
    pub welch_p_threshold: f64,
    /// Earlier losses needed before the test runs (default 3; at least 2 for the
    /// z-score, at least 3 for Welch so each half has two values; at most `window`).
    pub min_history: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            kind: GateKind::ZScore,
            window: 10,
            alpha: -1.3,
            beta: 0.1,
            lambda: 5,
            welch_p_threshold: 0.05,
            min_history: 3,
        }
    }
}

impl GateConfig {
    /// Checks every field; the error names the field and the value that is wrong.
    pub fn validate(&self) -> Result<(), GateError> {
        let bad =
            |field: &'static str, reason: String| Err(GateError::InvalidConfig { field, reason });
        if self.window < 2 {
            return bad("window", format!("must be at least 2, got {}", self.window));
        }
        if !self.alpha.is_finite() || self.alpha > 0.0 {
            return bad(
                "alpha",
                format!("must be a finite value <= 0, got {}", self.alpha),
            );
        }
        if !(0.0..1.0).contains(&self.beta) {
            return bad("beta", format!("must be in [0, 1), got {}", self.beta));
        }
        if self.lambda == 0 {
            return bad("lambda", "must be at least 1, got 0".to_string());
        }
        if !(self.welch_p_threshold > 0.0 && self.welch_p_threshold < 1.0) {
            return bad(
                "welch_p_threshold",
                format!("must be in (0, 1), got {}", self.welch_p_threshold),
            );
        }
        let least = match self.kind {
            GateKind::ZScore => 2,
            GateKind::Welch => 3,
        };
        if self.min_history < least || self.min_history > self.window {
            return bad(
                "min_history",
                format!(
                    "must be in [{least}, window = {}] for the {:?} gate, got {}",
                    self.window, self.kind, self.min_history
                ),
            );
        }
        Ok(())
    }
}

/// Errors of the loss gate.
#[derive(Debug, Error, PartialEq)]
pub enum GateError {
    /// A configuration field is out of range.
    #[error("invalid gate config: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The observed loss is NaN or infinite; the gate state is unchanged.
    #[error("validation loss is not finite ({0}); the round cannot be judged")]
    NonFiniteLoss(f64),
}

/// Why the gate decided what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateReason {
    /// The very first loss: always major.
    FirstRound,
    /// Fewer than `min_history` earlier losses: minor, the test does not run yet.
    WarmingUp,
    /// The test ran and found a significant improvement.
    Significant,
    /// The test ran and found no significant improvement.
    NotSignificant,
    /// Every loss in the window is equal; major exactly when the loss dropped below it.
    FlatWindow,
}

/// The outcome of one [`LossGate::observe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    /// Publish a delta (true) or only a round report (false).
    pub major: bool,
    /// Why.
    pub reason: GateReason,
    /// z-score gate: the z of this loss (None during warm-up or for a flat window).
    pub z: Option<f64>,
    /// Welch gate: the Welch t statistic, positive when the newer half is lower.
    pub t: Option<f64>,
    /// Welch gate: the one-sided p-value.
    pub p_value: Option<f64>,
    /// The threshold this decision was judged against: z_thr for the z-score gate,
    /// the p-value threshold for Welch.
    pub threshold: f64,
    /// Consecutive minor rounds (of a running test) after this decision.
    pub minor_streak: u32,
}

/// The stateful gate one worker keeps across its rounds.
#[derive(Debug, Clone)]
pub struct LossGate {
    config: GateConfig,
    history: VecDeque<f64>,
    z_threshold: f64,
    minor_streak: u32,
    observed: u64,
}

impl LossGate {
    /// A fresh gate; fails when the config is out of range.
    pub fn new(config: GateConfig) -> Result<Self, GateError> {
        config.validate()?;
        Ok(Self {
            z_threshold: config.alpha,
            history: VecDeque::with_capacity(config.window + 1),
            minor_streak: 0,
            observed: 0,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// The z threshold the next z-score decision will use.
    pub fn z_threshold(&self) -> f64 {
        self.z_threshold
    }

    /// The losses currently in the window, oldest first.
    pub fn history(&self) -> impl Iterator<Item = f64> + '_ {
        self.history.iter().copied()
    }

    /// Judges this round's validation loss and then adds it to the window.
    pub fn observe(&mut self, loss: f64) -> Result<GateDecision, GateError> {
        if !loss.is_finite() {
            return Err(GateError::NonFiniteLoss(loss));
        }
        let decision = if self.observed == 0 {
            self.warm_up(true, GateReason::FirstRound)
        } else if self.history.len() < self.config.min_history {
            self.warm_up(false, GateReason::WarmingUp)
        } else {
            match self.config.kind {
                GateKind::ZScore => self.z_score(loss),
                GateKind::Welch => self.welch(loss),
            }
        };
        self.observed += 1;
        self.history.push_back(loss);
        while self.history.len() > self.config.window {
            self.history.pop_front();
        }
        Ok(decision)
    }

    fn warm_up(&mut self, major: bool, reason: GateReason) -> GateDecision {
        GateDecision {
            major,
            reason,
            z: None,
            t: None,
            p_value: None,
            threshold: self.current_threshold(),
            minor_streak: self.minor_streak,
        }
    }

    fn current_threshold(&self) -> f64 {
        match self.config.kind {
            GateKind::ZScore => self.z_threshold,
            GateKind::Welch => self.config.welch_p_threshold,
        }
    }

    fn z_score(&mut self, loss: f64) -> GateDecision {
        let (mean, var) = mean_and_sample_variance(self.history.iter().copied());
        let threshold = self.z_threshold;
        let std = var.sqrt();
        let (major, z, reason) = if std > 0.0 {
            let z = (loss - mean) / std;
            let major = z <= threshold;
            let reason = if major {
                GateReason::Significant
            } else {
                GateReason::NotSignificant
            };
            (major, Some(z), reason)
        } else {
            (loss < mean, None, GateReason::FlatWindow)
        };
        self.settle(major);
        GateDecision {
            major,
            reason,
            z,
            t: None,
            p_value: None,
            threshold,
            minor_streak: self.minor_streak,
        }
    }

    fn welch(&mut self, loss: f64) -> GateDecision {
        let mut sample: Vec<f64> = self.history.iter().copied().collect();
        sample.push(loss);
        let skip = sample.len().saturating_sub(self.config.window);
        let sample = &sample[skip..];
        let (older, newer) = sample.split_at(sample.len() / 2);
        let threshold = self.config.welch_p_threshold;
        let (mean_o, var_o) = mean_and_sample_variance(older.iter().copied());
        let (mean_n, var_n) = mean_and_sample_variance(newer.iter().copied());
        let a = var_o / older.len() as f64;
        let b = var_n / newer.len() as f64;
        let (major, t, p, reason) = if a + b > 0.0 {
            let t = (mean_o - mean_n) / (a + b).sqrt();
            let df = (a + b).powi(2)
                / (a * a / (older.len() - 1) as f64 + b * b / (newer.len() - 1) as f64);
            // df > 0 and finite because a + b > 0; StudentsT::new cannot fail then,
            // but stay defensive: no p-value means no significant improvement.
            let p = StudentsT::new(0.0, 1.0, df).map(|dist| dist.sf(t)).ok();
            let major = p.is_some_and(|p| p < threshold);
            let reason = if major {
                GateReason::Significant
            } else {
                GateReason::NotSignificant
            };
            (major, Some(t), p, reason)
        } else {
            (mean_n < mean_o, None, None, GateReason::FlatWindow)
        };
        self.settle(major);
        GateDecision {
            major,
            reason,
            z: None,
            t,
            p_value: p,
            threshold,
            minor_streak: self.minor_streak,
        }
    }

    /// Updates the threshold and the minor streak after a decided (non-warm-up) round.
    fn settle(&mut self, major: bool) {
        if major {
            self.z_threshold = self.config.alpha;
            self.minor_streak = 0;
            return;
        }
        self.minor_streak += 1;
        if self.minor_streak >= self.config.lambda {
            if self.config.kind == GateKind::ZScore {
                self.z_threshold = (self.z_threshold * (1.0 - self.config.beta)).min(0.0);
            }
            self.minor_streak = 0;
        }
    }
}

/// Mean and sample variance (n − 1 denominator); variance 0 for fewer than two values.
fn mean_and_sample_variance(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = values.clone().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = values.map(|v| (v - mean).powi(2)).sum();
    (mean, ss / (n - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-9;

    fn z_gate(window: usize) -> LossGate {
        LossGate::new(GateConfig {
            window,
            ..GateConfig::default()
        })
        .unwrap()
    }

    /// Feeds 1, 2, 3: the first round is major, the next two are warm-up minors.
    fn warmed_123(window: usize) -> LossGate {
        let mut gate = z_gate(window);
        let first = gate.observe(1.0).unwrap();
        assert!(first.major);
        assert_eq!(first.reason, GateReason::FirstRound);
        for l in [2.0, 3.0] {
            let d = gate.observe(l).unwrap();
            assert!(!d.major);
            assert_eq!(d.reason, GateReason::WarmingUp);
        }
        gate
    }

    #[test]
    fn fires_when_loss_is_far_below_window() {
        // window {1,2,3}: mean 2, sample std 1; L = 0.5 -> z = -1.5 <= -1.3
        let mut gate = warmed_123(10);
        let d = gate.observe(0.5).unwrap();
        assert!(d.major);
        assert_eq!(d.reason, GateReason::Significant);
        assert!((d.z.unwrap() + 1.5).abs() < EPS);
        assert!((d.threshold + 1.3).abs() < EPS);
    }

    #[test]
    fn does_not_fire_for_a_small_improvement() {
        // L = 1.0 -> z = -1.0 > -1.3
        let mut gate = warmed_123(10);
        let d = gate.observe(1.0).unwrap();
        assert!(!d.major);
        assert_eq!(d.reason, GateReason::NotSignificant);
        assert!((d.z.unwrap() + 1.0).abs() < EPS);
        assert_eq!(d.minor_streak, 1);
    }

    #[test]
    fn z_is_computed_against_the_window_before_the_current_loss() {
        // window {2,4,6} (W = 3 drops the first loss 0): mean 4, std 2; L = 1 -> z = -1.5.
        // Including L would give mean 3.25 and a different z.
        let mut gate = z_gate(3);
        for l in [0.0, 2.0, 4.0, 6.0] {
            gate.observe(l).unwrap();
        }
        assert_eq!(gate.history().collect::<Vec<_>>(), vec![2.0, 4.0, 6.0]);
        let d = gate.observe(1.0).unwrap();
        assert!((d.z.unwrap() + 1.5).abs() < EPS);
        assert_eq!(gate.history().collect::<Vec<_>>(), vec![4.0, 6.0, 1.0]);
    }

    #[test]
    fn relaxes_after_lambda_minor_rounds_and_resets_after_major() {
        // W = 3 and the cycle 1,2,3 keep the window a permutation of {1,2,3}
        // (mean 2, std 1), so loss 1 always has z = -1.
        let mut gate = warmed_123(3);
        let cycle = [1.0, 2.0, 3.0];
        let mut fed = 0;
        let mut expected = -1.3;
        for relaxations in 1..=3 {
            for _ in 0..5 {
                let d = gate.observe(cycle[fed % 3]).unwrap();
                fed += 1;
                assert!(
                    !d.major,
                    "round {fed} must be minor at threshold {}",
                    d.threshold
                );
                assert!((d.threshold - expected).abs() < EPS);
            }
            expected *= 0.9;
            assert!(
                (gate.z_threshold() - expected).abs() < EPS,
                "after {relaxations} relaxations"
            );
        }
        // -1.3 -> -1.17 -> -1.053 -> -0.9477
        assert!((gate.z_threshold() + 0.9477).abs() < EPS);
        // 15 losses fed; the next in the cycle is 1.0: z = -1 <= -0.9477 fires.
        let d = gate.observe(1.0).unwrap();
        assert!(d.major);
        assert!((d.z.unwrap() + 1.0).abs() < EPS);
        assert!((d.threshold + 0.9477).abs() < EPS);
        assert_eq!(d.minor_streak, 0);
        assert!(
            (gate.z_threshold() + 1.3).abs() < EPS,
            "reset to alpha after a major round"
        );
        // With the reset threshold the same z = -1 no longer fires.
        gate.observe(2.0).unwrap();
        gate.observe(3.0).unwrap();
        assert!(!gate.observe(1.0).unwrap().major);
    }

    #[test]
    fn threshold_never_becomes_positive() {
        let mut gate = LossGate::new(GateConfig {
            beta: 0.99,
            lambda: 1,
            ..GateConfig::default()
        })
        .unwrap();
        for i in 0..50 {
            gate.observe(10.0 + i as f64).unwrap();
            assert!(gate.z_threshold() <= 0.0);
        }
    }

    #[test]
    fn flat_window_does_not_divide_by_zero() {
        let mut gate = z_gate(3);
        for _ in 0..3 {
            gate.observe(0.5).unwrap();
        }
        let same = gate.observe(0.5).unwrap();
        assert!(!same.major);
        assert_eq!(same.reason, GateReason::FlatWindow);
        assert_eq!(same.z, None);
        let lower = gate.observe(0.4).unwrap();
        assert!(
            lower.major,
            "window {{0.5, 0.5, 0.5}} then 0.4 is a strict improvement"
        );
        assert_eq!(lower.reason, GateReason::FlatWindow);
    }

    #[test]
    fn non_finite_loss_is_an_error_and_leaves_state_untouched() {
        let mut gate = warmed_123(10);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                gate.observe(bad),
                Err(GateError::NonFiniteLoss(_))
            ));
        }
        assert_eq!(gate.history().collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
        assert!(gate.observe(0.5).unwrap().major);
    }

    #[test]
    fn invalid_config_names_the_field() {
        let cases = [
            GateConfig {
                window: 1,
                ..GateConfig::default()
            },
            GateConfig {
                alpha: 0.5,
                ..GateConfig::default()
            },
            GateConfig {
                beta: 1.0,
                ..GateConfig::default()
            },
            GateConfig {
                lambda: 0,
                ..GateConfig::default()
            },
            GateConfig {
                welch_p_threshold: 0.0,
                ..GateConfig::default()
            },
            GateConfig {
                min_history: 11,
                ..GateConfig::default()
            },
            GateConfig {
                kind: GateKind::Welch,
                min_history: 2,
                ..GateConfig::default()
            },
        ];
        let fields = [
            "window",
            "alpha",
            "beta",
            "lambda",
            "welch_p_threshold",
            "min_history",
            "min_history",
        ];
        for (config, field) in cases.into_iter().zip(fields) {
            match LossGate::new(config) {
                Err(GateError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_fields() {
        let c: GateConfig = serde_json::from_str(r#"{"kind":"welch","window":6}"#).unwrap();
        assert_eq!(c.kind, GateKind::Welch);
        assert_eq!(c.window, 6);
        assert_eq!(c.lambda, 5);
        assert!(serde_json::from_str::<GateConfig>(r#"{"windw":6}"#).is_err());
    }

    fn welch_gate(p: f64) -> LossGate {
        let config = GateConfig {
            kind: GateKind::Welch,
            window: 4,
            welch_p_threshold: p,
            ..GateConfig::default()
        };
        let mut gate = LossGate::new(config).unwrap();
        for l in [3.0, 2.0, 1.5] {
            gate.observe(l).unwrap();
        }
        gate
    }

    // Window [3, 2 | 1.5, 0.5]: means 2.5 and 1.0, both sample variances 0.5,
    // se = sqrt(0.25 + 0.25), t = 1.5 / sqrt(0.5) = 2.12132, df = 0.25 / 0.125 = 2.
    // For df = 2 the t CDF is 1/2 + t / (2 sqrt(2 + t^2)), so
    // p = 1/2 - 0.5 sqrt(4.5 / 6.5) = 0.0839749.
    const WELCH_T: f64 = 2.121_320_343_559_642;
    const WELCH_P: f64 = 0.083_974_862_327_18;

    #[test]
    fn welch_fires_below_the_p_threshold() {
        let d = welch_gate(0.1).observe(0.5).unwrap();
        assert!((d.t.unwrap() - WELCH_T).abs() < 1e-9);
        assert!(
            (d.p_value.unwrap() - WELCH_P).abs() < 1e-6,
            "p = {:?}",
            d.p_value
        );
        assert!(d.major);
        assert_eq!(d.reason, GateReason::Significant);
    }

    #[test]
    fn welch_does_not_fire_above_the_p_threshold() {
        let d = welch_gate(0.05).observe(0.5).unwrap();
        assert!((d.p_value.unwrap() - WELCH_P).abs() < 1e-6);
        assert!(!d.major);
        assert_eq!(d.reason, GateReason::NotSignificant);
    }

    #[test]
    fn welch_rising_losses_never_fire() {
        let d = welch_gate(0.5).observe(5.0).unwrap();
        assert!(d.t.unwrap() < 0.0);
        assert!(!d.major);
    }
}
