//! FedAdam (Reddi et al. 2021): Adam on the server, over the round's
//! pseudo-gradient; v ← β₂v + (1 − β₂)Δ².

use super::{FitResult, ServerOpt, Strategy, StrategyError};

/// Adam as the server optimizer.
#[derive(Debug, Clone)]
pub struct FedAdam(ServerOpt);

impl FedAdam {
    /// Server learning rate η, decays β₁ and β₂, adaptivity τ.
    pub fn new(eta: f64, beta_1: f64, beta_2: f64, tau: f64) -> Result<Self, StrategyError> {
        Ok(Self(ServerOpt::new(eta, beta_1, beta_2, tau)?))
    }
}

impl Strategy for FedAdam {
    fn name(&self) -> &'static str {
        "fedadam"
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
    ) -> Result<(), StrategyError> {
        self.0
            .step(global, results, |v, d2, b2| b2 * v + (1.0 - b2) * d2)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Two rounds, two trainers each: round 1's weighted mean is (1, −1)
    /// (0.5 × 10 + 1.25 × 20 = 30 = 1.0 × 30 examples), round 2's is
    /// (0.5, −0.5).
    pub fn two_rounds(s: &mut dyn Strategy) -> Vec<Vec<f32>> {
        let rounds: [[([f32; 2], u64); 2]; 2] = [
            [([0.5, -0.5], 10), ([1.25, -1.25], 20)],
            [([0.5, -0.5], 5), ([0.5, -0.5], 5)],
        ];
        let mut global = vec![0.0f32, 0.0];
        let mut seen = Vec::new();
        for round in &rounds {
            let results: Vec<FitResult<'_>> = round
                .iter()
                .map(|(p, n)| FitResult {
                    trainer: "t",
                    parameters: p,
                    examples: *n,
                })
                .collect();
            s.aggregate(&mut global, &results).unwrap();
            seen.push(global.clone());
        }
        seen
    }

    #[test]
    fn two_rounds_match_the_hand_computed_steps() {
        // η 0.1, β₁ 0.9, β₂ 0.99, τ 0.01, v₀ = τ² = 1e-4, global 0:
        // round 1: Δ = 1, m = 0.1, v = 0.99e-4 + 0.01 = 0.010099,
        //          w = 0.1 × 0.1 / (√0.010099 + 0.01) = 0.0905028;
        // round 2: Δ = 0.5 − 0.0905028 = 0.4094972,
        //          m = 0.09 + 0.1 × 0.4094972 = 0.1309497,
        //          v = 0.99 × 0.010099 + 0.01 × 0.4094972² = 0.0116749,
        //          w = 0.0905028 + 0.1 × 0.1309497 / (√0.0116749 + 0.01) = 0.2014298.
        let mut s = FedAdam::new(0.1, 0.9, 0.99, 0.01).unwrap();
        let seen = two_rounds(&mut s);
        for (got, want) in seen.iter().zip([0.0905028f32, 0.2014298]) {
            assert!((got[0] - want).abs() < 1e-6, "{got:?} vs {want}");
            assert!(
                (got[1] + want).abs() < 1e-6,
                "the mirrored coordinate: {got:?}"
            );
        }
    }
}
