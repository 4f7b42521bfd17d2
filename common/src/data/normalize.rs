//! Feature normalization: scaling raw values to `[0, 1]`, and mean/std
//! standardization (global or per channel) fitted on a training shard.

use super::dataset::Dataset;
use super::error::{DataError, Result};
use super::split::Shard;

impl Dataset {
    /// Divides every feature by `max_value` (e.g. 255 for pixel bytes), so
    /// that values in `[0, max_value]` land in `[0, 1]`. Refuses, without
    /// touching the data, when `max_value` is not a positive finite number
    /// or a feature lies outside `[0, max_value]`.
    pub fn scale_to_unit(&mut self, max_value: f32) -> Result<()> {
        if !(max_value.is_finite() && max_value > 0.0) {
            return Err(DataError::InvalidArgument(format!(
                "scale_to_unit needs a positive finite maximum, got {max_value}"
            )));
        }
        let d = self.sample_len();
        if let Some(at) = self
            .features()
            .iter()
            .position(|&v| !(0.0..=max_value).contains(&v))
        {
            return Err(DataError::InvalidArgument(format!(
                "sample {}, feature {}: value {} is outside [0, {max_value}]",
                at / d,
                at % d,
                self.features()[at]
            )));
        }
        for v in self.features_mut() {
            // Division (not multiplication by 1/max) keeps k/255 bit-identical
            // to what numpy and other tools compute.
            *v /= max_value;
        }
        Ok(())
    }
}

/// Mean and standard deviation per channel, to standardize features as
/// `(x - mean) / std`.
///
/// With one channel the statistics are global; with `C` channels the
/// sample is treated as `C` equal consecutive blocks (the `C` of a
/// `[C, H, W]` sample shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Standardizer {
    /// Known statistics, one value per channel. Every `std` must be positive
    /// and finite, every mean finite, and both of the same non-zero length.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let ok = !mean.is_empty()
            && mean.len() == std.len()
            && mean.iter().all(|m| m.is_finite())
            && std.iter().all(|s| s.is_finite() && *s > 0.0);
        if !ok {
            return Err(DataError::InvalidArgument(format!(
                "standardization needs equal-length finite means and positive stds, got {mean:?} / {std:?}"
            )));
        }
        Ok(Standardizer { mean, std })
    }

    /// Fits the statistics on the samples of `shard` (typically the training
    /// split, so test data does not leak into them). With `per_channel` and
    /// a sample shape of two or more dimensions, one mean/std per leading
    /// dimension; otherwise one global pair. A constant channel gets std 1.
    pub fn fit(dataset: &Dataset, shard: &Shard, per_channel: bool) -> Result<Self> {
        dataset.check_shard(shard)?;
        if shard.is_empty() {
            return Err(DataError::InvalidArgument(
                "cannot fit standardization on an empty shard".into(),
            ));
        }
        let shape = dataset.sample_shape();
        let channels = if per_channel && shape.len() >= 2 {
            shape[0]
        } else {
            1
        };
        let block = dataset.sample_len() / channels;
        let mut sum = vec![0f64; channels];
        let mut sum_sq = vec![0f64; channels];
        for &i in shard.indices() {
            let Some(sample) = dataset.sample(i) else {
                continue;
            };
            for (c, chunk) in sample.chunks_exact(block).enumerate() {
                for &v in chunk {
                    let v = f64::from(v);
                    sum[c] += v;
                    sum_sq[c] += v * v;
                }
            }
        }
        let count = (shard.len() * block) as f64;
        let mut mean = Vec::with_capacity(channels);
        let mut std = Vec::with_capacity(channels);
        for c in 0..channels {
            let m = sum[c] / count;
            let var = (sum_sq[c] / count - m * m).max(0.0);
            let s = var.sqrt();
            mean.push(m as f32);
            std.push(if s > 1e-12 { s as f32 } else { 1.0 });
        }
        Standardizer::new(mean, std)
    }

    /// Per-channel means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-channel standard deviations.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// Standardizes every sample of `dataset` in place. The dataset's sample
    /// length must be a multiple of the number of channels.
    pub fn apply(&self, dataset: &mut Dataset) -> Result<()> {
        let channels = self.mean.len();
        let d = dataset.sample_len();
        if !d.is_multiple_of(channels) {
            return Err(DataError::InvalidArgument(format!(
                "{channels} channels do not divide samples of {d} values"
            )));
        }
        let block = d / channels;
        for sample in dataset.features_mut().chunks_exact_mut(d) {
            for (c, chunk) in sample.chunks_exact_mut(block).enumerate() {
                let (m, inv) = (self.mean[c], 1.0 / self.std[c]);
                for v in chunk {
                    *v = (*v - m) * inv;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_to_unit_divides_and_checks_range() {
        let mut ds = Dataset::new("t", vec![0., 255., 51., 102.], vec![0, 1], vec![2], 2).unwrap();
        ds.scale_to_unit(255.0).unwrap();
        assert_eq!(ds.features(), &[0.0, 1.0, 0.2, 0.4]);
        let mut bad = Dataset::new("t", vec![-1., 2.], vec![0], vec![2], 1).unwrap();
        let before = bad.clone();
        assert!(bad.scale_to_unit(255.0).is_err());
        assert_eq!(bad, before, "a refused scaling must not touch the data");
        assert!(bad.scale_to_unit(0.0).is_err());
        assert!(bad.scale_to_unit(f32::NAN).is_err());
    }

    #[test]
    fn global_fit_gives_zero_mean_unit_std() {
        let mut ds =
            Dataset::new("t", vec![1., 2., 3., 4., 5., 6.], vec![0, 0, 0], vec![2], 1).unwrap();
        let st = Standardizer::fit(&ds, &Shard::all(3), true).unwrap();
        assert_eq!(st.mean(), &[3.5]);
        st.apply(&mut ds).unwrap();
        let n = ds.features().len() as f32;
        let mean: f32 = ds.features().iter().sum::<f32>() / n;
        let var: f32 = ds.features().iter().map(|v| v * v).sum::<f32>() / n;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }

    #[test]
    fn per_channel_fit_uses_leading_dimension_and_train_shard_only() {
        // Two samples of shape [2, 2]: channel 0 = [0, 2], channel 1 = [10, 10].
        let ds = Dataset::new(
            "t",
            vec![0., 2., 10., 10., 100., 100., 100., 100.],
            vec![0, 0],
            vec![2, 2],
            1,
        )
        .unwrap();
        let st = Standardizer::fit(&ds, &Shard::new(vec![0]), true).unwrap();
        assert_eq!(st.mean(), &[1.0, 10.0]);
        assert_eq!(st.std(), &[1.0, 1.0]); // constant channel 1 gets std 1
        assert!(Standardizer::fit(&ds, &Shard::new(vec![]), true).is_err());
        assert!(Standardizer::fit(&ds, &Shard::new(vec![2]), true).is_err());
    }

    #[test]
    fn known_statistics_are_validated() {
        assert!(Standardizer::new(vec![0.1307], vec![0.3081]).is_ok());
        assert!(Standardizer::new(vec![0.0], vec![0.0]).is_err());
        assert!(Standardizer::new(vec![0.0, 1.0], vec![1.0]).is_err());
        let st = Standardizer::new(vec![0.0; 3], vec![1.0; 3]).unwrap();
        let mut ds = Dataset::new("t", vec![0.; 4], vec![0], vec![4], 1).unwrap();
        assert!(st.apply(&mut ds).is_err());
    }
}
