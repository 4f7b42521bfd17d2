//! FedMedian (Yin et al. 2018): the coordinate-wise median of the
//! results, unweighted — one trainer sending garbage cannot move it.

use super::{by_sorted_coordinate, FitResult, Strategy, StrategyError};

/// Coordinate-wise median (the mean of the two middle values for an even count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FedMedian;

impl Strategy for FedMedian {
    fn name(&self) -> &'static str {
        "fedmedian"
    }

    fn aggregate(
        &mut self,
        global: &mut [f32],
        results: &[FitResult<'_>],
    ) -> Result<(), StrategyError> {
        by_sorted_coordinate(global, results, |column| {
            let mid = column.len() / 2;
            if column.len() % 2 == 1 {
                column[mid]
            } else {
                ((f64::from(column[mid - 1]) + f64::from(column[mid])) / 2.0) as f32
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outlier_does_not_move_the_median() {
        let (a, b, c) = ([1.0f32, 5.0], [2.0f32, 6.0], [1e6f32, -1e6]);
        let results = [
            FitResult {
                trainer: "a",
                parameters: &a,
                examples: 1,
            },
            FitResult {
                trainer: "b",
                parameters: &b,
                examples: 1,
            },
            FitResult {
                trainer: "c",
                parameters: &c,
                examples: 1,
            },
        ];
        let mut g = vec![0.0f32; 2];
        FedMedian.aggregate(&mut g, &results).unwrap();
        assert_eq!(g, vec![2.0, 5.0]);
        FedMedian.aggregate(&mut g, &results[..2]).unwrap();
        assert_eq!(g, vec![1.5, 5.5]);
    }
}
