//! FedAvg (McMahan et al. 2017): the new global is the mean of the
//! trainers' parameters, weighted by the examples each trained on — or,
//! as EdgeTB's aggregators do, unweighted (an option, not the default).

use super::{check, FitResult, Strategy, StrategyError};

/// The example-weighted (or plain) mean of the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FedAvg {
    weighted: bool,
}

impl FedAvg {
    /// Weighted by examples (Flower's FedAvg).
    pub fn weighted() -> Self {
        Self { weighted: true }
    }

    /// Every result counts alike (EdgeTB's `avg_weights`).
    pub fn unweighted() -> Self {
        Self { weighted: false }
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
    ) -> Result<(), StrategyError> {
        let mean = weighted_mean(global.len(), results, self.weighted)?;
        for (g, m) in global.iter_mut().zip(mean) {
            *g = m as f32;
        }
        Ok(())
    }
}

/// The mean of the results in f64 (weighted by examples when `weighted`),
/// after [`check`].
pub fn weighted_mean(
    len: usize,
    results: &[FitResult<'_>],
    weighted: bool,
) -> Result<Vec<f64>, StrategyError> {
    check(len, results, weighted)?;
    let weight = |r: &FitResult<'_>| if weighted { r.examples as f64 } else { 1.0 };
    let total: f64 = results.iter().map(weight).sum();
    let mut sum = vec![0.0f64; len];
    for r in results {
        let w = weight(r);
        for (s, &p) in sum.iter_mut().zip(r.parameters) {
            *s += w * f64::from(p);
        }
    }
    sum.iter_mut().for_each(|s| *s /= total);
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_is_weighted_by_examples_or_not() {
        let (a, b) = ([1.0f32, 0.0], [4.0f32, 3.0]);
        let results = [
            FitResult {
                trainer: "a",
                parameters: &a,
                examples: 2,
            },
            FitResult {
                trainer: "b",
                parameters: &b,
                examples: 1,
            },
        ];
        let mut g = vec![9.0f32, 9.0];
        FedAvg::weighted().aggregate(&mut g, &results).unwrap();
        assert_eq!(g, vec![2.0, 1.0]);
        FedAvg::unweighted().aggregate(&mut g, &results).unwrap();
        assert_eq!(g, vec![2.5, 1.5]);
    }
}
