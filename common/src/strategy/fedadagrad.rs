//! FedAdagrad (Reddi et al. 2021): Adagrad on the server; v ← v + Δ².

use super::{FitResult, ServerOpt, Strategy, StrategyError};

/// Adagrad as the server optimizer.
#[derive(Debug, Clone)]
pub struct FedAdagrad(ServerOpt);

impl FedAdagrad {
    /// Server learning rate η, first-moment decay β₁, adaptivity τ.
    pub fn new(eta: f64, beta_1: f64, tau: f64) -> Result<Self, StrategyError> {
        Ok(Self(ServerOpt::new(eta, beta_1, 0.0, tau)?))
    }
}

impl Strategy for FedAdagrad {
    fn name(&self) -> &'static str {
        "fedadagrad"
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
    ) -> Result<(), StrategyError> {
        self.0.step(global, results, |v, d2, _| v + d2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_rounds_match_the_hand_computed_steps() {
        // v₀ = 1e-4; round 1: v = 1.0001, w = 0.01 / (√1.0001 + 0.01) = 0.0099005;
        // round 2: Δ = 0.4900995, m = 0.1390100, v = 1.0001 + 0.2401975 = 1.2402975,
        //          w = 0.0099005 + 0.0139010 / (√1.2402975 + 0.01) = 0.0222714.
        let mut s = FedAdagrad::new(0.1, 0.9, 0.01).unwrap();
        let seen = crate::strategy::fedadam::tests::two_rounds(&mut s);
        for (got, want) in seen.iter().zip([0.0099005f32, 0.0222714]) {
            assert!((got[0] - want).abs() < 1e-6, "{got:?} vs {want}");
        }
    }
}
