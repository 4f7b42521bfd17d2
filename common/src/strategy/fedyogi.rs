//! FedYogi (Reddi et al. 2021): Yogi on the server; v ← v − (1 − β₂)Δ²
//! sign(v − Δ²), which grows v more slowly than Adam when Δ² jumps.

use super::{FitResult, ServerOpt, Strategy, StrategyError};

/// Yogi as the server optimizer.
#[derive(Debug, Clone)]
pub struct FedYogi(ServerOpt);

impl FedYogi {
    /// Server learning rate η, decays β₁ and β₂, adaptivity τ.
    pub fn new(eta: f64, beta_1: f64, beta_2: f64, tau: f64) -> Result<Self, StrategyError> {
        Ok(Self(ServerOpt::new(eta, beta_1, beta_2, tau)?))
    }
}

impl Strategy for FedYogi {
    fn name(&self) -> &'static str {
        "fedyogi"
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
    ) -> Result<(), StrategyError> {
        self.0.step(global, results, |v, d2, b2| {
            v - (1.0 - b2) * d2 * (v - d2).signum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_rounds_match_the_hand_computed_steps() {
        // As FedAdam's example, with v₀ = 1e-4 and sign(v − Δ²) = −1 both rounds:
        // round 1: v = 1e-4 + 0.01 × 1 = 0.0101, w = 0.01 / (√0.0101 + 0.01) = 0.0904988;
        // round 2: Δ = 0.4095012, m = 0.1309501,
        //          v = 0.0101 + 0.01 × 0.4095012² = 0.0117769,
        //          w = 0.0904988 + 0.01309501 / (√0.0117769 + 0.01) = 0.2009852.
        let mut s = FedYogi::new(0.1, 0.9, 0.99, 0.01).unwrap();
        let seen = crate::strategy::fedadam::tests::two_rounds(&mut s);
        for (got, want) in seen.iter().zip([0.0904988f32, 0.2009852]) {
            assert!((got[0] - want).abs() < 1e-6, "{got:?} vs {want}");
            assert!((got[1] + want).abs() < 1e-6, "{got:?}");
        }
    }
}
