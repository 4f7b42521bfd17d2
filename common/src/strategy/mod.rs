//! Server-side aggregation strategies for federated rounds, one file each,
//! on Flower's contract: a strategy folds one round's fit results (each
//! trainer's parameters after its local epochs, and how many examples it
//! trained on) into the global model.
//!
//! * [`fedavg::FedAvg`] — the mean weighted by examples (or EdgeTB's
//!   unweighted mean).
//! * [`fedadam::FedAdam`], [`fedyogi::FedYogi`], [`fedadagrad::FedAdagrad`] —
//!   server optimizers on the pseudo-gradient Δ = FedAvg(results) − global
//!   (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm
//!   2, without bias correction): m ← β₁m + (1 − β₁)Δ, v by the strategy's
//!   rule, global ← global + η · m / (√v + τ).
//! * [`fedmedian::FedMedian`], [`trimmed::TrimmedMean`] — robust
//!   coordinate-wise aggregation.
//!
//! Every input is checked before the global changes: a result of the
//! wrong length, with a non-finite value, or with no examples is an error
//! naming it, and the global is left as it was.

pub mod fedadagrad;
pub mod fedadam;
pub mod fedavg;
pub mod fedmedian;
pub mod fedyogi;
pub mod trimmed;

use thiserror::Error;

/// One trainer's result of a round.
#[derive(Debug, Clone, Copy)]
pub struct FitResult<'a> {
    /// Who trained (for errors).
    pub trainer: &'a str,
    /// Its parameters after local training, flat, in manifest order.
    pub parameters: &'a [f32],
    /// Examples it trained on.
    pub examples: u64,
}

/// Why a round could not be aggregated.
#[derive(Debug, Error, PartialEq)]
pub enum StrategyError {
    /// No results.
    #[error("no fit results to aggregate")]
    Empty,
    /// A result's length differs from the model's.
    #[error("{trainer}: {got} parameters, the model has {want}")]
    WrongLength {
        /// The trainer.
        trainer: String,
        /// Its length.
        got: usize,
        /// The model's.
        want: usize,
    },
    /// A result holds NaN or infinity.
    #[error("{trainer}: a non-finite parameter")]
    NotFinite {
        /// The trainer.
        trainer: String,
    },
    /// A result trained on no examples (weighted strategies).
    #[error("{trainer}: trained on 0 examples")]
    NoExamples {
        /// The trainer.
        trainer: String,
    },
    /// A strategy parameter out of range.
    #[error("{0}")]
    Config(String),
}

/// Folds a round's results into the global model.
pub trait Strategy: Send {
    /// The name, as configured.
    fn name(&self) -> &'static str;

    /// `global` after the round; unchanged on an error.
    fn aggregate(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
    ) -> Result<(), StrategyError>;
}

/// Checks every result against the model's length, for finiteness, and
/// (when `weighted`) for examples.
pub fn check(len: usize, results: &[FitResult<'_>], weighted: bool) -> Result<(), StrategyError> {
    if results.is_empty() {
        return Err(StrategyError::Empty);
    }
    for r in results {
        if r.parameters.len() != len {
            return Err(StrategyError::WrongLength {
                trainer: r.trainer.to_string(),
                got: r.parameters.len(),
                want: len,
            });
        }
        if r.parameters.iter().any(|v| !v.is_finite()) {
            return Err(StrategyError::NotFinite {
                trainer: r.trainer.to_string(),
            });
        }
        if weighted && r.examples == 0 {
            return Err(StrategyError::NoExamples {
                trainer: r.trainer.to_string(),
            });
        }
    }
    Ok(())
}

/// The robust strategies' loop: each coordinate of `global` becomes
/// `of(the results' values there, sorted ascending)`, after [`check`]
/// (unweighted).
pub fn by_sorted_coordinate(
    global: &mut [f32],
    results: &[FitResult<'_>],
    of: impl Fn(&[f32]) -> f32,
) -> Result<(), StrategyError> {
    check(global.len(), results, false)?;
    let mut column = Vec::with_capacity(results.len());
    for (i, g) in global.iter_mut().enumerate() {
        column.clear();
        column.extend(results.iter().map(|r| r.parameters[i]));
        column.sort_by(f32::total_cmp);
        *g = of(&column);
    }
    Ok(())
}

/// The adaptive server optimizers' shared state and step: the
/// pseudo-gradient Δ = weighted mean − global, the first moment m, and the
/// update global += η m / (√v + τ); `second` updates v from Δ.
#[derive(Debug, Clone)]
pub struct ServerOpt {
    /// Server learning rate η.
    pub eta: f64,
    /// First-moment decay β₁.
    pub beta_1: f64,
    /// Second-moment decay β₂ (Adam, Yogi).
    pub beta_2: f64,
    /// Adaptivity τ (also v's starting value, τ², as in Reddi et al.).
    pub tau: f64,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl ServerOpt {
    /// A fresh optimizer (moments created at the first round).
    pub fn new(eta: f64, beta_1: f64, beta_2: f64, tau: f64) -> Result<Self, StrategyError> {
        let ok = |x: f64| x.is_finite();
        if !(ok(eta) && eta > 0.0) {
            return Err(StrategyError::Config(format!("eta must be > 0, got {eta}")));
        }
        for (name, b) in [("beta_1", beta_1), ("beta_2", beta_2)] {
            if !(ok(b) && (0.0..1.0).contains(&b)) {
                return Err(StrategyError::Config(format!(
                    "{name} must be in [0, 1), got {b}"
                )));
            }
        }
        if !(ok(tau) && tau > 0.0) {
            return Err(StrategyError::Config(format!("tau must be > 0, got {tau}")));
        }
        Ok(Self {
            eta,
            beta_1,
            beta_2,
            tau,
            m: Vec::new(),
            v: Vec::new(),
        })
    }

    /// One round: `second(v, Δ², β₂)` gives the new v for one coordinate.
    pub fn step(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
        second: impl Fn(f64, f64, f64) -> f64,
    ) -> Result<(), StrategyError> {
        let mean = fedavg::weighted_mean(global.len(), results, true)?;
        if self.m.len() != global.len() {
            self.m = vec![0.0; global.len()];
            self.v = vec![self.tau * self.tau; global.len()];
        }
        for (i, g) in global.iter_mut().enumerate() {
            let delta = mean[i] - f64::from(*g);
            self.m[i] = self.beta_1 * self.m[i] + (1.0 - self.beta_1) * delta;
            self.v[i] = second(self.v[i], delta * delta, self.beta_2);
            *g = (f64::from(*g) + self.eta * self.m[i] / (self.v[i].sqrt() + self.tau)) as f32;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_results_are_named_and_leave_the_global_alone() {
        let good = [1.0f32, 2.0];
        let short = [1.0f32];
        let nan = [1.0f32, f32::NAN];
        let cases: [(&[f32], u64, &str); 3] = [(&short, 1, "b"), (&nan, 1, "b"), (&good, 0, "b")];
        for (params, examples, _) in cases {
            let results = [
                FitResult {
                    trainer: "a",
                    parameters: &good,
                    examples: 1,
                },
                FitResult {
                    trainer: "b",
                    parameters: params,
                    examples,
                },
            ];
            let strategies: Vec<Box<dyn Strategy>> = vec![
                Box::new(fedavg::FedAvg::weighted()),
                Box::new(fedadam::FedAdam::new(0.1, 0.9, 0.99, 1e-3).unwrap()),
                Box::new(fedyogi::FedYogi::new(0.1, 0.9, 0.99, 1e-3).unwrap()),
                Box::new(fedadagrad::FedAdagrad::new(0.1, 0.9, 1e-3).unwrap()),
                Box::new(fedmedian::FedMedian),
                Box::new(trimmed::TrimmedMean::new(0.1).unwrap()),
            ];
            for mut s in strategies {
                let mut global = vec![0.5f32, 0.5];
                let err = s.aggregate(&mut global, &results);
                if examples == 0 && matches!(s.name(), "fedmedian" | "trimmed_mean") {
                    // Unweighted: examples do not matter.
                    assert!(err.is_ok(), "{}", s.name());
                    continue;
                }
                let err = err.expect_err(s.name());
                assert!(err.to_string().starts_with("b:"), "{}: {err}", s.name());
                assert_eq!(global, vec![0.5, 0.5], "{}", s.name());
            }
        }
        let mut g = vec![0.0f32];
        assert_eq!(
            fedavg::FedAvg::weighted().aggregate(&mut g, &[]),
            Err(StrategyError::Empty)
        );
        assert!(ServerOpt::new(0.0, 0.9, 0.99, 1e-3).is_err());
        assert!(ServerOpt::new(0.1, 1.0, 0.99, 1e-3).is_err());
        assert!(ServerOpt::new(0.1, 0.9, 0.99, 0.0).is_err());
    }
}
