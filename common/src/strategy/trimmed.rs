//! Trimmed mean (Yin et al. 2018): per coordinate, drop the ⌊β·n⌋
//! smallest and largest values and average the rest, unweighted.

use super::{by_sorted_coordinate, FitResult, Strategy, StrategyError};

/// Coordinate-wise trimmed mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrimmedMean {
    beta: f64,
}

impl TrimmedMean {
    /// `beta` in [0, 0.5): the share cut from each end.
    pub fn new(beta: f64) -> Result<Self, StrategyError> {
        if !(beta.is_finite() && (0.0..0.5).contains(&beta)) {
            return Err(StrategyError::Config(format!(
                "trimmed mean: beta must be in [0, 0.5), got {beta}"
            )));
        }
        Ok(Self { beta })
    }
}

impl Strategy for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed_mean"
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
    ) -> Result<(), StrategyError> {
        let cut = (self.beta * results.len() as f64).floor() as usize;
        by_sorted_coordinate(global, results, |column| {
            let kept = &column[cut..column.len() - cut];
            let sum: f64 = kept.iter().map(|&v| f64::from(v)).sum();
            (sum / kept.len() as f64) as f32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extremes_are_cut_from_each_end() {
        let rows: [[f32; 1]; 5] = [[1.0], [2.0], [3.0], [4.0], [100.0]];
        let results: Vec<FitResult<'_>> = rows
            .iter()
            .map(|p| FitResult {
                trainer: "t",
                parameters: p,
                examples: 1,
            })
            .collect();
        let mut g = vec![0.0f32];
        TrimmedMean::new(0.2)
            .unwrap()
            .aggregate(&mut g, &results)
            .unwrap();
        assert_eq!(g, vec![3.0], "1 and 100 cut");
        TrimmedMean::new(0.0)
            .unwrap()
            .aggregate(&mut g, &results)
            .unwrap();
        assert_eq!(g, vec![22.0], "nothing cut: the mean");
        assert!(TrimmedMean::new(0.5).is_err());
    }
}
