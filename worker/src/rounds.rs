//! The arithmetic of a worker's rounds, free of I/O so it can be tested by
//! hand: adopting a new global version, the delta to publish, and the
//! emulated slowdown.
//!
//! The worker keeps its *local* parameters (what it trains) and a *base*:
//! the parameters the master already knows about, with the global version
//! they belong to.
//!
//! * Adopting global version `g` (at a round boundary): `local += g − base`,
//!   then `base = g`. Progress the master has not seen (minor rounds) is
//!   kept on top of the new global.
//! * A major round publishes `delta = local − base` and then sets
//!   `base = local` (same version): the published progress is the master's
//!   now, so it is never sent twice, and the next adoption makes
//!   `local = g` exactly — the "after a major round, take the global" rule.

use std::time::Duration;

/// The parameters the master knows about and their global version.
#[derive(Clone, Debug, PartialEq)]
pub struct Base {
    /// The global version the base parameters come from.
    pub version: u64,
    /// The base parameters, flat, manifest order.
    pub params: Vec<f32>,
}

/// Why a global model cannot be adopted.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AdoptError {
    /// The global model has another parameter count than ours.
    #[error("global version {version} has {got} parameters, the model has {expected}")]
    Length {
        /// The offending version.
        version: u64,
        /// Its parameter count.
        got: usize,
        /// Ours.
        expected: usize,
    },
    /// A global value is NaN or infinite.
    #[error("global version {version}: value {value} at index {index} is not finite")]
    NonFinite {
        /// The offending version.
        version: u64,
        /// Where.
        index: usize,
        /// What.
        value: f32,
    },
}

/// Checks a global model against the expected parameter count and for
/// finite values.
pub fn check_global(version: u64, params: &[f32], expected: usize) -> Result<(), AdoptError> {
    if params.len() != expected {
        return Err(AdoptError::Length {
            version,
            got: params.len(),
            expected,
        });
    }
    if let Some(index) = params.iter().position(|v| !v.is_finite()) {
        return Err(AdoptError::NonFinite {
            version,
            index,
            value: params[index],
        });
    }
    Ok(())
}

/// Adopts global `version` with parameters `global`: `local += global − base`,
/// `base = global`. Nothing changes on error.
pub fn adopt(
    local: &mut [f32],
    base: &mut Base,
    version: u64,
    global: &[f32],
) -> Result<(), AdoptError> {
    check_global(version, global, base.params.len())?;
    if local.len() != base.params.len() {
        return Err(AdoptError::Length {
            version,
            got: local.len(),
            expected: base.params.len(),
        });
    }
    // `g + (l − b)` rather than `l + (g − b)`: with no unpublished progress
    // (l = b) the result is exactly g.
    for ((l, b), g) in local.iter_mut().zip(&base.params).zip(global) {
        *l = g + (*l - b);
    }
    base.params.copy_from_slice(global);
    base.version = version;
    Ok(())
}

/// `local − base`, element-wise.
pub fn delta(local: &[f32], base: &Base) -> Vec<f32> {
    local.iter().zip(&base.params).map(|(l, b)| l - b).collect()
}

/// After a major round was published: the base becomes the local model.
pub fn mark_published(local: &[f32], base: &mut Base) {
    base.params.clear();
    base.params.extend_from_slice(local);
}

/// How long to idle after `compute` to look `slowdown` times slower:
/// `(slowdown − 1) × compute` (zero for a slowdown of 1 or less, or not finite).
pub fn emulated_idle(compute: Duration, slowdown: f64) -> Duration {
    if !slowdown.is_finite() || slowdown <= 1.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(compute.as_secs_f64() * (slowdown - 1.0)).unwrap_or(Duration::ZERO)
}

/// The plain statement of an emulated slowdown, e.g.
/// `emulated slowdown 3.0x: idled 1.2 s after 0.6 s of compute`
/// (milliseconds below one second).
pub fn slowdown_statement(slowdown: f64, compute: Duration, idle: Duration) -> String {
    format!(
        "emulated slowdown {slowdown:.1}x: idled {} after {} of compute",
        human(idle),
        human(compute)
    )
}

/// `1.2 s`, or `35 ms` below one second.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(version: u64, params: &[f32]) -> Base {
        Base {
            version,
            params: params.to_vec(),
        }
    }

    #[test]
    fn minor_progress_is_kept_on_top_of_the_new_global() {
        // Base v3 = [1, 2]; local trained to [1.5, 1] (unpublished, minor).
        // Global v5 = [2, 2]: local = [1.5 + 1, 1 + 0] = [2.5, 1].
        let mut b = base(3, &[1.0, 2.0]);
        let mut local = vec![1.5, 1.0];
        adopt(&mut local, &mut b, 5, &[2.0, 2.0]).expect("adopted");
        assert_eq!(local, vec![2.5, 1.0]);
        assert_eq!(b, base(5, &[2.0, 2.0]));
        // The next delta is all the unpublished progress: [0.5, -1].
        assert_eq!(delta(&local, &b), vec![0.5, -1.0]);
    }

    #[test]
    fn after_a_major_round_the_global_is_taken_as_is() {
        let mut b = base(0, &[0.0, 0.0, 0.0]);
        let mut local = vec![0.25, -0.5, 1.0];
        let d = delta(&local, &b);
        assert_eq!(d, vec![0.25, -0.5, 1.0]);
        mark_published(&local, &mut b);
        assert_eq!(b.version, 0, "the version stays until a new global arrives");
        // Nothing new trained: the next delta is zero, never the same progress twice.
        assert_eq!(delta(&local, &b), vec![0.0, 0.0, 0.0]);
        adopt(&mut local, &mut b, 1, &[0.1, -0.2, 0.4]).expect("adopted");
        assert_eq!(local, vec![0.1, -0.2, 0.4]);
        assert_eq!(b.version, 1);
    }

    #[test]
    fn wrong_length_or_non_finite_global_changes_nothing() {
        let mut b = base(1, &[1.0, 1.0]);
        let mut local = vec![2.0, 2.0];
        let err = adopt(&mut local, &mut b, 2, &[1.0]).expect_err("length");
        assert_eq!(
            err,
            AdoptError::Length {
                version: 2,
                got: 1,
                expected: 2
            }
        );
        let err = adopt(&mut local, &mut b, 2, &[1.0, f32::NAN]).expect_err("nan");
        assert!(matches!(err, AdoptError::NonFinite { index: 1, .. }));
        assert_eq!(local, vec![2.0, 2.0]);
        assert_eq!(b, base(1, &[1.0, 1.0]));
    }

    #[test]
    fn idle_is_slowdown_minus_one_times_compute() {
        let compute = Duration::from_millis(600);
        assert_eq!(emulated_idle(compute, 3.0), Duration::from_millis(1200));
        assert_eq!(emulated_idle(compute, 1.5), Duration::from_millis(300));
        assert_eq!(emulated_idle(compute, 1.0), Duration::ZERO);
        assert_eq!(emulated_idle(compute, 0.5), Duration::ZERO);
        assert_eq!(emulated_idle(compute, f64::NAN), Duration::ZERO);
        assert_eq!(
            slowdown_statement(3.0, compute, Duration::from_millis(1200)),
            "emulated slowdown 3.0x: idled 1.2 s after 600 ms of compute"
        );
        assert_eq!(
            slowdown_statement(
                1.5,
                Duration::from_millis(35),
                Duration::from_micros(17_500)
            ),
            "emulated slowdown 1.5x: idled 17 ms after 35 ms of compute"
        );
    }
}
