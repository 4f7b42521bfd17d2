//! Choosing the trainers of a federated round: k = ⌈N × fraction⌉ of the
//! live trainers (at least `min`, at most N), drawn without replacement,
//! uniformly or by EdgeTB's rule — probability ∝ 1/√(train time + send
//! time), from times *measured* each round, not configured.
//!
//! Draws follow numpy's `choice(p=…, replace=False)`, which EdgeTB uses:
//! one trainer at a time, each with probability proportional to its
//! weight among those not drawn yet.

use rand::Rng;
use thiserror::Error;

/// How trainers are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every trainer alike (Flower's default).
    Uniform,
    /// ∝ 1/√(train + send seconds), EdgeTB's `customized_selection`: a fast
    /// trainer is picked more often, a slow one still now and then.
    InverseSqrtTime,
}

/// Why a round's trainers cannot be chosen.
#[derive(Debug, Error, PartialEq)]
pub enum SamplingError {
    /// The fraction is not in (0, 1].
    #[error("trainer fraction {0} is not in (0, 1]")]
    BadFraction(f64),
    /// Fewer live trainers than the round needs.
    #[error("{live} live trainer(s), the round needs at least {min}")]
    TooFewTrainers {
        /// Trainers available.
        live: usize,
        /// Trainers required.
        min: usize,
    },
}

/// How many of `live` trainers a round takes: ⌈live × fraction⌉, at least
/// `min` (an error when fewer are live), at most `live`.
pub fn round_size(live: usize, fraction: f64, min: usize) -> Result<usize, SamplingError> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(SamplingError::BadFraction(fraction));
    }
    let min = min.max(1);
    if live < min {
        return Err(SamplingError::TooFewTrainers { live, min });
    }
    let k = (live as f64 * fraction).ceil() as usize;
    Ok(k.clamp(min, live))
}

/// Each trainer's weight under `rule`; `secs[i]` is trainer i's measured
/// train + send time (`None`, or not a positive finite number: not
/// measured yet, weighted as the mean of the measured ones, or 1 when none
/// is).
pub fn weights(rule: Rule, secs: &[Option<f64>]) -> Vec<f64> {
    match rule {
        Rule::Uniform => vec![1.0; secs.len()],
        Rule::InverseSqrtTime => {
            let of = |s: &Option<f64>| {
                s.filter(|t| t.is_finite() && *t > 0.0)
                    .map(|t| 1.0 / t.sqrt())
            };
            let known: Vec<f64> = secs.iter().filter_map(of).collect();
            let fallback = if known.is_empty() {
                1.0
            } else {
                known.iter().sum::<f64>() / known.len() as f64
            };
            secs.iter().map(|s| of(s).unwrap_or(fallback)).collect()
        }
    }
}

/// Draws `k` distinct indices into `weights` (all positive), one at a time,
/// each in proportion to its weight among those left.
pub fn choose<R: Rng + ?Sized>(rng: &mut R, weights: &[f64], k: usize) -> Vec<usize> {
    let mut left: Vec<(usize, f64)> = weights.iter().copied().enumerate().collect();
    let mut chosen = Vec::with_capacity(k.min(left.len()));
    while chosen.len() < k && !left.is_empty() {
        let total: f64 = left.iter().map(|(_, w)| w).sum();
        let mut x = rng.random::<f64>() * total;
        let mut pick = left.len() - 1;
        for (i, (_, w)) in left.iter().enumerate() {
            if x < *w {
                pick = i;
                break;
            }
            x -= w;
        }
        chosen.push(left.swap_remove(pick).0);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use statrs::distribution::{ChiSquared, ContinuousCDF};

    fn chi_square_p(observed: &[f64], expected: &[f64]) -> f64 {
        let stat: f64 = observed
            .iter()
            .zip(expected)
            .map(|(o, e)| (o - e) * (o - e) / e)
            .sum();
        let dist = ChiSquared::new((observed.len() - 1) as f64).unwrap();
        1.0 - dist.cdf(stat)
    }

    #[test]
    fn the_round_size_follows_the_fraction_and_its_bounds() {
        assert_eq!(round_size(10, 0.5, 1), Ok(5));
        assert_eq!(round_size(10, 0.25, 1), Ok(3), "ceil");
        assert_eq!(round_size(10, 0.01, 4), Ok(4), "at least min");
        assert_eq!(round_size(3, 1.0, 1), Ok(3));
        assert_eq!(
            round_size(2, 0.5, 3),
            Err(SamplingError::TooFewTrainers { live: 2, min: 3 })
        );
        assert_eq!(round_size(5, 0.0, 1), Err(SamplingError::BadFraction(0.0)));
        assert!(round_size(5, f64::NAN, 1).is_err());
        assert!(round_size(5, 1.5, 1).is_err());
    }

    #[test]
    fn weights_follow_the_measured_times() {
        let w = weights(
            Rule::InverseSqrtTime,
            &[Some(4.0), Some(1.0), None, Some(-1.0)],
        );
        assert_eq!(&w[..2], &[0.5, 1.0]);
        assert_eq!(w[2], 0.75, "unmeasured: the mean of the measured");
        assert_eq!(w[3], 0.75, "a bad time counts as unmeasured");
        assert_eq!(
            weights(Rule::InverseSqrtTime, &[None, None]),
            vec![1.0, 1.0]
        );
        assert_eq!(weights(Rule::Uniform, &[Some(9.0), None]), vec![1.0, 1.0]);
    }

    #[test]
    fn single_draws_over_1000_rounds_match_the_rule() {
        let secs = [Some(1.0), Some(2.0), Some(4.0), Some(8.0), Some(16.0)];
        for rule in [Rule::InverseSqrtTime, Rule::Uniform] {
            let w = weights(rule, &secs);
            let total: f64 = w.iter().sum();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            let mut counts = [0.0; 5];
            for _ in 0..1000 {
                counts[choose(&mut rng, &w, 1)[0]] += 1.0;
            }
            let expected: Vec<f64> = w.iter().map(|x| 1000.0 * x / total).collect();
            let p = chi_square_p(&counts, &expected);
            assert!(
                p > 0.01,
                "{rule:?}: counts {counts:?}, expected {expected:?}, p {p}"
            );
        }
    }

    #[test]
    fn pairs_drawn_without_replacement_match_their_exact_probabilities() {
        // 4 trainers, k = 2: P({i, j}) = p_i p_j / (1 − p_i) + p_j p_i / (1 − p_j).
        let w = weights(
            Rule::InverseSqrtTime,
            &[Some(1.0), Some(2.0), Some(5.0), Some(10.0)],
        );
        let total: f64 = w.iter().sum();
        let p: Vec<f64> = w.iter().map(|x| x / total).collect();
        let pairs: Vec<(usize, usize)> = (0..4)
            .flat_map(|i| (i + 1..4).map(move |j| (i, j)))
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut counts = vec![0.0; pairs.len()];
        for _ in 0..1000 {
            let mut c = choose(&mut rng, &w, 2);
            assert_eq!(c.len(), 2);
            assert_ne!(c[0], c[1], "without replacement");
            c.sort_unstable();
            let at = pairs
                .iter()
                .position(|&(i, j)| (i, j) == (c[0], c[1]))
                .unwrap();
            counts[at] += 1.0;
        }
        let expected: Vec<f64> = pairs
            .iter()
            .map(|&(i, j)| 1000.0 * (p[i] * p[j] / (1.0 - p[i]) + p[j] * p[i] / (1.0 - p[j])))
            .collect();
        let chi = chi_square_p(&counts, &expected);
        assert!(
            chi > 0.01,
            "counts {counts:?}, expected {expected:?}, p {chi}"
        );
    }

    #[test]
    fn asking_for_more_than_there_are_gives_everyone_once() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut c = choose(&mut rng, &[1.0, 2.0, 3.0], 5);
        c.sort_unstable();
        assert_eq!(c, vec![0, 1, 2]);
    }
}
