//! A seeded synthetic model of a fluctuating wireless link.
//!
//! **The traces this model makes are synthetic, not measurements.** They stand
//! in for recorded traces such as ROG's (MICRO 2022) outdoor Wi-Fi trace, with
//! the same shape: a usable link most of the time, and stretches of seconds
//! at a few Mbit/s or less.
//!
//! # The model
//!
//! One sample every `interval` seconds (0.5 s in the shipped traces), sample
//! `n` at time `n · interval`:
//!
//! * **State**: a Gilbert–Elliott two-state Markov chain, *good* or *bad*.
//!   Before every sample but the first, a good link turns bad with probability
//!   [`p_good_to_bad`](WirelessModel::p_good_to_bad) and a bad one turns good
//!   with probability [`p_bad_to_good`](WirelessModel::p_bad_to_good); so a
//!   good stretch lasts on average `interval / p_good_to_bad` seconds, a bad one
//!   `interval / p_bad_to_good`. The first state is drawn from the chain's
//!   stationary distribution (bad with probability `p_gb / (p_gb + p_bg)`).
//! * **Fluctuation**: a unit-variance AR(1) process
//!   `z[n] = φ·z[n−1] + √(1−φ²)·ε[n]`, `z[0] = ε[0]`, `ε` standard normal,
//!   shared by both states (a state change moves the median, the fading goes
//!   on).
//! * **Rate**: `median_s · exp(σ_s · z[n])` for the current state `s`, i.e. a
//!   log-normal fluctuation around the state's median with log-standard
//!   deviation `σ_s`; clamped to `[min_mbit, max_mbit]` and rounded to
//!   0.001 Mbit/s (1 kbit/s).
//!
//! # Same trace on every machine
//!
//! Randomness comes from [`ChaCha8Rng`] seeded with [`SeedableRng::seed_from_u64`],
//! read as raw `u64`s (uniforms are the top 53 bits), so it does not depend on
//! how a `rand` version maps bits to floats. The arithmetic uses only IEEE-754
//! operations that are exactly rounded everywhere (+, −, ×, ÷, √): `ε` is the
//! Irwin–Hall approximation of a standard normal (the sum of 12 uniforms
//! minus 6: mean 0, variance 1, bounded to ±6) and `exp` is computed here
//! ([`portable_exp`]) instead of by the platform's libm, whose last bit may
//! differ between systems. A seed thus gives the same file everywhere, which
//! the shipped traces' test relies on.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use super::format::{Sample, Trace};

/// Most samples [`synthesize`] makes: 10 million (58 days at 0.5 s).
pub const MAX_SYNTH_SAMPLES: u64 = 10_000_000;

/// Parameters of the synthetic wireless link model (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WirelessModel {
    /// Median rate in the good state, Mbit/s (> 0).
    pub good_median_mbit: f64,
    /// Log-standard deviation of the rate in the good state (≥ 0; 0.5 means
    /// one standard deviation is a factor e^0.5 ≈ 1.65).
    pub good_sigma: f64,
    /// Median rate in the bad state, Mbit/s (> 0).
    pub bad_median_mbit: f64,
    /// Log-standard deviation of the rate in the bad state (≥ 0).
    pub bad_sigma: f64,
    /// Probability per sample that a good link turns bad, in [0, 1].
    pub p_good_to_bad: f64,
    /// Probability per sample that a bad link turns good, in [0, 1].
    pub p_bad_to_good: f64,
    /// AR(1) coefficient φ of the fluctuation between consecutive samples, in
    /// [0, 1): 0 is independent samples, near 1 slow fading.
    pub ar_coefficient: f64,
    /// Lowest rate, Mbit/s (> 0).
    pub min_mbit: f64,
    /// Highest rate, Mbit/s (≥ `min_mbit`).
    pub max_mbit: f64,
}

/// A named parameter set of [`WirelessModel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// [`WirelessModel::outdoor`].
    Outdoor,
    /// [`WirelessModel::indoor`].
    Indoor,
}

impl Preset {
    /// The preset's parameters.
    pub fn model(self) -> WirelessModel {
        match self {
            Preset::Outdoor => WirelessModel::outdoor(),
            Preset::Indoor => WirelessModel::indoor(),
        }
    }

    /// The preset's name on the command line: `outdoor` or `indoor`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Outdoor => "outdoor",
            Preset::Indoor => "indoor",
        }
    }
}

/// A [`WirelessModel`] parameter, or a length, out of range.
#[derive(Error, Debug, Clone, PartialEq)]
pub enum SynthError {
    /// The parameter `name` is `value`, which breaks `requirement`.
    #[error("synthetic trace: {name} = {value} is invalid: it must be {requirement}")]
    Invalid {
        /// Which parameter.
        name: &'static str,
        /// What was given.
        value: f64,
        /// What it must be.
        requirement: &'static str,
    },
    /// Duration and interval give fewer than 2 or more than [`MAX_SYNTH_SAMPLES`] samples.
    #[error(
        "synthetic trace: {duration_secs} s every {interval_secs} s is {samples} samples; between 2 and {max} are allowed"
    )]
    SampleCount {
        /// The duration asked for.
        duration_secs: f64,
        /// The interval asked for.
        interval_secs: f64,
        /// The samples that would make.
        samples: f64,
        /// [`MAX_SYNTH_SAMPLES`].
        max: u64,
    },
}

impl WirelessModel {
    /// An outdoor link, shaped like ROG's outdoor trace (0–250 Mbit/s, median
    /// in the 30s): good state median 40 Mbit/s, σ 0.55 (90 % of good samples
    /// within 16–99 Mbit/s); bad state median 1.5 Mbit/s, σ 0.5 (mostly below
    /// 3 Mbit/s); good stretches of 50 s and bad ones of 10 s on average at
    /// 0.5 s sampling (bad about 1/6 of the time); φ = 0.9 (fading correlated
    /// over a few seconds); clamped to [0.1, 250] Mbit/s. Long-run median
    /// ≈ 35 Mbit/s.
    pub fn outdoor() -> Self {
        Self {
            good_median_mbit: 40.0,
            good_sigma: 0.55,
            bad_median_mbit: 1.5,
            bad_sigma: 0.5,
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.05,
            ar_coefficient: 0.9,
            min_mbit: 0.1,
            max_mbit: 250.0,
        }
    }

    /// An indoor link, steadier: good state median 10.5 Mbit/s, σ 0.18 (90 %
    /// within 7.8–14 Mbit/s); occasional drops to a median of 2 Mbit/s
    /// (σ 0.4) lasting 4 s on average, about one every two minutes (good
    /// stretches of 125 s on average; bad about 3 % of the time); φ = 0.8;
    /// clamped to [0.1, 40] Mbit/s. Long-run median ≈ 10.4 Mbit/s.
    pub fn indoor() -> Self {
        Self {
            good_median_mbit: 10.5,
            good_sigma: 0.18,
            bad_median_mbit: 2.0,
            bad_sigma: 0.4,
            p_good_to_bad: 0.004,
            p_bad_to_good: 0.125,
            ar_coefficient: 0.8,
            min_mbit: 0.1,
            max_mbit: 40.0,
        }
    }

    /// Checks every parameter's range (see the field docs).
    pub fn validate(&self) -> Result<(), SynthError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let probability = |v: f64| (0.0..=1.0).contains(&v);
        let checks: [(&'static str, f64, bool, &'static str); 9] = [
            (
                "good_median_mbit",
                self.good_median_mbit,
                positive(self.good_median_mbit),
                "finite and > 0",
            ),
            (
                "good_sigma",
                self.good_sigma,
                self.good_sigma.is_finite() && self.good_sigma >= 0.0,
                "finite and >= 0",
            ),
            (
                "bad_median_mbit",
                self.bad_median_mbit,
                positive(self.bad_median_mbit),
                "finite and > 0",
            ),
            (
                "bad_sigma",
                self.bad_sigma,
                self.bad_sigma.is_finite() && self.bad_sigma >= 0.0,
                "finite and >= 0",
            ),
            (
                "p_good_to_bad",
                self.p_good_to_bad,
                probability(self.p_good_to_bad),
                "in [0, 1]",
            ),
            (
                "p_bad_to_good",
                self.p_bad_to_good,
                probability(self.p_bad_to_good),
                "in [0, 1]",
            ),
            (
                "ar_coefficient",
                self.ar_coefficient,
                (0.0..1.0).contains(&self.ar_coefficient),
                "in [0, 1)",
            ),
            (
                "min_mbit",
                self.min_mbit,
                positive(self.min_mbit),
                "finite and > 0",
            ),
            (
                "max_mbit",
                self.max_mbit,
                self.max_mbit.is_finite() && self.max_mbit >= self.min_mbit,
                "finite and >= min_mbit",
            ),
        ];
        for (name, value, ok, requirement) in checks {
            if !ok {
                return Err(SynthError::Invalid {
                    name,
                    value,
                    requirement,
                });
            }
        }
        Ok(())
    }

    /// The parameters on one line, for a trace file's header.
    pub fn describe(&self) -> String {
        format!(
            "good median {} Mbit/s sigma {}, bad median {} Mbit/s sigma {}, \
             p(good->bad) {} p(bad->good) {} per sample, AR(1) phi {}, clamp [{}, {}] Mbit/s",
            self.good_median_mbit,
            self.good_sigma,
            self.bad_median_mbit,
            self.bad_sigma,
            self.p_good_to_bad,
            self.p_bad_to_good,
            self.ar_coefficient,
            self.min_mbit,
            self.max_mbit
        )
    }
}

/// A trace of `model` from `seed`: samples at `0, interval, 2·interval, …`
/// below `duration_secs` (times rounded to 1 µs), rates rounded to
/// 0.001 Mbit/s. The same arguments give the same trace on every machine.
pub fn synthesize(
    model: &WirelessModel,
    seed: u64,
    duration_secs: f64,
    interval_secs: f64,
) -> Result<Trace, SynthError> {
    model.validate()?;
    if !(interval_secs.is_finite() && interval_secs >= 1e-3) {
        return Err(SynthError::Invalid {
            name: "interval_secs",
            value: interval_secs,
            requirement: "finite and at least 0.001",
        });
    }
    if !(duration_secs.is_finite() && duration_secs > 0.0) {
        return Err(SynthError::Invalid {
            name: "duration_secs",
            value: duration_secs,
            requirement: "finite and > 0",
        });
    }
    // A tolerance so that 600 s / 0.1 s counts 6000 samples, not 5999.
    let samples = (duration_secs / interval_secs * (1.0 - 1e-12)).ceil();
    if !(2.0..=MAX_SYNTH_SAMPLES as f64).contains(&samples) {
        return Err(SynthError::SampleCount {
            duration_secs,
            interval_secs,
            samples,
            max: MAX_SYNTH_SAMPLES,
        });
    }
    let count = samples as u64;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p_bad = model.p_good_to_bad + model.p_bad_to_good;
    let stationary_bad = if p_bad > 0.0 {
        model.p_good_to_bad / p_bad
    } else {
        0.0
    };
    let mut bad = uniform(&mut rng) < stationary_bad;
    let mut z = normal(&mut rng);
    let phi = model.ar_coefficient;
    let innovation = (1.0 - phi * phi).sqrt();
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for n in 0..count {
        if n > 0 {
            let switch = if bad {
                model.p_bad_to_good
            } else {
                model.p_good_to_bad
            };
            if uniform(&mut rng) < switch {
                bad = !bad;
            }
            z = phi * z + innovation * normal(&mut rng);
        }
        let (median, sigma) = if bad {
            (model.bad_median_mbit, model.bad_sigma)
        } else {
            (model.good_median_mbit, model.good_sigma)
        };
        let rate = (median * portable_exp(sigma * z)).clamp(model.min_mbit, model.max_mbit);
        out.push(Sample {
            time_s: round_to(n as f64 * interval_secs, 1e6),
            rate_mbit: round_to(rate, 1e3),
        });
    }
    // Valid by construction; the check stays as a guard.
    Trace::from_samples(out, "synthetic trace").map_err(|_| SynthError::Invalid {
        name: "interval_secs",
        value: interval_secs,
        requirement: "large enough that rounded sample times stay distinct",
    })
}

/// `x` rounded to a multiple of `1 / per_unit`.
fn round_to(x: f64, per_unit: f64) -> f64 {
    (x * per_unit).round() / per_unit
}

/// A uniform in [0, 1) from the top 53 bits of the next `u64`.
fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (rng.next_u64() >> 11) as f64 * SCALE
}

/// An approximately standard normal variate: the Irwin–Hall sum of 12
/// uniforms minus 6 (mean 0, variance 1, within ±6).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let mut sum = 0.0;
    for _ in 0..12 {
        sum += uniform(rng);
    }
    sum - 6.0
}

/// `e^x` from exactly rounded IEEE operations only, so it is bit-identical on
/// every platform: `x = k·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-16 Taylor
/// polynomial for `e^r` (truncation error below 1e-22), times `2^k` built
/// from its bits. `x` is clamped to [−700, 700]. Accurate to a few ulps.
pub fn portable_exp(x: f64) -> f64 {
    let x = if x.is_nan() {
        0.0
    } else {
        x.clamp(-700.0, 700.0)
    };
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = x - k * std::f64::consts::LN_2;
    let mut p = 1.0;
    for n in (1..=16).rev() {
        p = 1.0 + r * p / f64::from(n);
    }
    // |k| <= 1010, so k + 1023 is a valid biased exponent of a normal number.
    let bits = ((k as i64 + 1023) as u64) << 52;
    p * f64::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(t: &Trace) -> Vec<f64> {
        t.samples().iter().map(|s| s.rate_mbit).collect()
    }

    fn median(xs: &[f64]) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn fraction_below(xs: &[f64], limit: f64) -> f64 {
        xs.iter().filter(|&&x| x < limit).count() as f64 / xs.len() as f64
    }

    /// Number of runs of at least `len` consecutive samples below `limit`.
    fn runs_below(xs: &[f64], limit: f64, len: usize) -> usize {
        let (mut runs, mut current) = (0, 0);
        for &x in xs.iter().chain([f64::INFINITY].iter()) {
            if x < limit {
                current += 1;
            } else {
                if current >= len {
                    runs += 1;
                }
                current = 0;
            }
        }
        runs
    }

    fn lag1_correlation(xs: &[f64]) -> f64 {
        let logs: Vec<f64> = xs.iter().map(|x| x.ln()).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let var: f64 = logs.iter().map(|x| (x - mean).powi(2)).sum();
        let cov: f64 = logs.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)).sum();
        cov / var
    }

    #[test]
    fn portable_exp_matches_libm() {
        for i in -2000..=2000 {
            let x = f64::from(i) * 0.01;
            let (ours, libm) = (portable_exp(x), x.exp());
            assert!(
                ((ours - libm) / libm).abs() < 1e-14,
                "exp({x}): {ours} vs {libm}"
            );
        }
        assert_eq!(portable_exp(0.0), 1.0);
        assert!(portable_exp(-1e9) > 0.0);
        assert!(portable_exp(1e9).is_finite());
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let m = WirelessModel::outdoor();
        let a = synthesize(&m, 7, 60.0, 0.5).expect("valid");
        let b = synthesize(&m, 7, 60.0, 0.5).expect("valid");
        let c = synthesize(&m, 8, 60.0, 0.5).expect("valid");
        assert_eq!(a, b);
        assert_ne!(rates(&a), rates(&c));
        assert_eq!(a.samples().len(), 120);
        assert_eq!(a.samples()[1].time_s, 0.5);
        assert_eq!(a.last_time(), 59.5);
        assert_eq!(a.period(), 60.0);
        // A longer trace from the same seed starts with the shorter one.
        let long = synthesize(&m, 7, 120.0, 0.5).expect("valid");
        assert_eq!(&long.samples()[..120], a.samples());
    }

    #[test]
    fn rates_are_clamped_and_rounded_to_kbit() {
        for preset in [Preset::Outdoor, Preset::Indoor] {
            let m = preset.model();
            let t = synthesize(&m, 3, 3600.0, 0.5).expect("valid");
            for r in rates(&t) {
                assert!((m.min_mbit..=m.max_mbit).contains(&r), "{r}");
                assert_eq!(round_to(r, 1e3), r);
            }
        }
    }

    #[test]
    fn sample_count_and_times() {
        let m = WirelessModel::indoor();
        assert_eq!(
            synthesize(&m, 1, 600.0, 0.1)
                .expect("valid")
                .samples()
                .len(),
            6000
        );
        assert_eq!(
            synthesize(&m, 1, 600.0, 0.5)
                .expect("valid")
                .samples()
                .len(),
            1200
        );
        assert_eq!(
            synthesize(&m, 1, 1.2, 0.5).expect("valid").samples().len(),
            3
        );
        let t = synthesize(&m, 1, 1.0, 0.1).expect("valid");
        let times: Vec<f64> = t.samples().iter().map(|s| s.time_s).collect();
        assert_eq!(
            times,
            vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let m = WirelessModel::outdoor();
        assert!(synthesize(&m, 1, 0.5, 0.5).is_err(), "one sample");
        assert!(synthesize(&m, 1, 0.0, 0.5).is_err());
        assert!(synthesize(&m, 1, 10.0, 0.0).is_err());
        assert!(synthesize(&m, 1, f64::INFINITY, 0.5).is_err());
        assert!(synthesize(&m, 1, 1e12, 0.5).is_err());
        let mut bad = m;
        bad.ar_coefficient = 1.0;
        let e = synthesize(&bad, 1, 10.0, 0.5).expect_err("phi = 1");
        assert!(e.to_string().contains("ar_coefficient = 1"), "{e}");
        let mut bad = m;
        bad.max_mbit = 0.05;
        assert!(bad.validate().is_err());
        let mut bad = m;
        bad.p_good_to_bad = 1.5;
        assert!(bad.validate().is_err());
        assert!(WirelessModel::outdoor().validate().is_ok());
        assert!(WirelessModel::indoor().validate().is_ok());
    }

    #[test]
    fn outdoor_statistics() {
        // Four hours from each of three seeds.
        for seed in 1..=3 {
            let t = synthesize(&WirelessModel::outdoor(), seed, 4.0 * 3600.0, 0.5).expect("valid");
            let r = rates(&t);
            let med = median(&r);
            assert!((28.0..=42.0).contains(&med), "seed {seed}: median {med}");
            let low = fraction_below(&r, 3.0);
            assert!(
                (0.08..=0.25).contains(&low),
                "seed {seed}: {low} below 3 Mbit/s"
            );
            // Bad stretches: many runs of >= 5 s below 3 Mbit/s.
            let runs = runs_below(&r, 3.0, 10);
            assert!(runs >= 50, "seed {seed}: {runs} runs of 5 s below 3 Mbit/s");
            let max = r.iter().copied().fold(0.0, f64::max);
            assert!((150.0..=250.0).contains(&max), "seed {seed}: max {max}");
            assert!(r.iter().all(|&x| (0.1..=250.0).contains(&x)));
            let rho = lag1_correlation(&r);
            assert!(rho > 0.8, "seed {seed}: lag-1 correlation {rho}");
        }
    }

    #[test]
    fn indoor_statistics() {
        for seed in 1..=3 {
            let t = synthesize(&WirelessModel::indoor(), seed, 4.0 * 3600.0, 0.5).expect("valid");
            let r = rates(&t);
            let med = median(&r);
            assert!((9.5..=11.5).contains(&med), "seed {seed}: median {med}");
            let low = fraction_below(&r, 5.0);
            assert!(
                (0.01..=0.06).contains(&low),
                "seed {seed}: {low} below 5 Mbit/s"
            );
            // Steady: most samples within a factor 1.5 of the median.
            let steady =
                r.iter().filter(|&&x| x > 7.0 && x < 15.75).count() as f64 / r.len() as f64;
            assert!(steady > 0.9, "seed {seed}: {steady} within 7-15.75 Mbit/s");
            // Occasional drops: some, but far fewer than outdoors.
            let drops = runs_below(&r, 5.0, 4);
            assert!((20..=200).contains(&drops), "seed {seed}: {drops} drops");
            assert!(r.iter().all(|&x| (0.1..=40.0).contains(&x)));
        }
    }

    #[test]
    fn presets_by_name() {
        assert_eq!(Preset::Outdoor.model(), WirelessModel::outdoor());
        assert_eq!(Preset::Indoor.model(), WirelessModel::indoor());
        assert_eq!(Preset::Outdoor.name(), "outdoor");
        assert_eq!(Preset::Indoor.name(), "indoor");
    }
}
