//! [`Dataset`]: labelled samples in one contiguous `f32` buffer.

use super::error::{DataError, Result};
use super::split::Shard;

/// A labelled dataset held in memory.
///
/// Features are one contiguous row-major buffer of `len() * sample_len()`
/// values; sample `i` is `features()[i * d .. (i + 1) * d]` with
/// `d = sample_shape().iter().product()`. Labels are class indices in
/// `0..num_classes()`. Every constructor validates this, so code holding a
/// `Dataset` can rely on it: all features finite, every label in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<i64>,
    sample_shape: Vec<usize>,
    sample_len: usize,
    num_classes: usize,
}

impl Dataset {
    /// Builds a dataset, checking lengths, the shape, label range and that
    /// every feature is finite. `origin` names the source in errors.
    pub fn new(
        origin: &str,
        features: Vec<f32>,
        labels: Vec<i64>,
        sample_shape: Vec<usize>,
        num_classes: usize,
    ) -> Result<Self> {
        let sample_len = shape_len(origin, &sample_shape)?;
        if num_classes == 0 {
            return Err(DataError::format(origin, "number of classes is 0"));
        }
        let expected = labels.len().checked_mul(sample_len);
        if expected != Some(features.len()) {
            return Err(DataError::format(
                origin,
                format!(
                    "{} feature values do not make {} samples of shape {:?}",
                    features.len(),
                    labels.len(),
                    sample_shape
                ),
            ));
        }
        check_labels(origin, &labels, num_classes)?;
        check_finite(origin, &features, sample_len)?;
        Ok(Dataset {
            features,
            labels,
            sample_shape,
            sample_len,
            num_classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one sample, e.g. `[784]`, `[1, 28, 28]` or `[3, 32, 32]`.
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// Number of feature values per sample (product of the sample shape).
    pub fn sample_len(&self) -> usize {
        self.sample_len
    }

    /// Number of classes; every label is below it.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// All features, row-major, `len() * sample_len()` values.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// All labels.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The features of sample `i`; `None` when out of range.
    pub fn sample(&self, i: usize) -> Option<&[f32]> {
        let start = i.checked_mul(self.sample_len)?;
        self.features.get(start..start + self.sample_len)
    }

    /// The label of sample `i`; `None` when out of range.
    pub fn label(&self, i: usize) -> Option<i64> {
        self.labels.get(i).copied()
    }

    /// Number of samples of each class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            // Labels are validated on construction, so the index is in range.
            counts[l as usize] += 1;
        }
        counts
    }

    /// The same data viewed with another sample shape of the same size
    /// (e.g. `[784]` → `[1, 28, 28]` for a CNN).
    pub fn reshape(mut self, sample_shape: Vec<usize>) -> Result<Self> {
        let len = shape_len("reshape", &sample_shape)?;
        if len != self.sample_len {
            return Err(DataError::InvalidArgument(format!(
                "cannot reshape samples of shape {:?} ({} values) to {:?} ({} values)",
                self.sample_shape, self.sample_len, sample_shape, len
            )));
        }
        self.sample_shape = sample_shape;
        Ok(self)
    }

    /// Copies the samples named by `shard`, in its order, into a new dataset.
    pub fn subset(&self, shard: &Shard) -> Result<Dataset> {
        self.check_shard(shard)?;
        let d = self.sample_len;
        let mut features = Vec::with_capacity(shard.len() * d);
        let mut labels = Vec::with_capacity(shard.len());
        for &i in shard.indices() {
            features.extend_from_slice(&self.features[i * d..(i + 1) * d]);
            labels.push(self.labels[i]);
        }
        Ok(Dataset {
            features,
            labels,
            sample_shape: self.sample_shape.clone(),
            sample_len: d,
            num_classes: self.num_classes,
        })
    }

    /// Checks that every index of `shard` is a sample of this dataset.
    pub fn check_shard(&self, shard: &Shard) -> Result<()> {
        match shard.indices().iter().find(|&&i| i >= self.len()) {
            Some(&index) => Err(DataError::IndexOutOfRange {
                index,
                len: self.len(),
            }),
            None => Ok(()),
        }
    }

    /// Mutable access to the features for in-place transforms inside this
    /// module; callers must keep every value finite.
    pub(crate) fn features_mut(&mut self) -> &mut [f32] {
        &mut self.features
    }

    /// Splits the dataset into its parts: (features, labels, sample shape,
    /// number of classes).
    pub fn into_parts(self) -> (Vec<f32>, Vec<i64>, Vec<usize>, usize) {
        (
            self.features,
            self.labels,
            self.sample_shape,
            self.num_classes,
        )
    }
}

/// Product of a sample shape; refuses empty shapes, zero dimensions and
/// overflow.
pub(crate) fn shape_len(origin: &str, shape: &[usize]) -> Result<usize> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(DataError::format(
            origin,
            format!("sample shape {shape:?} is empty or has a zero dimension"),
        ));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::format(origin, format!("sample shape {shape:?} overflows")))
}

/// Checks every label is in `0..num_classes`.
pub(crate) fn check_labels(origin: &str, labels: &[i64], num_classes: usize) -> Result<()> {
    match labels
        .iter()
        .position(|&l| l < 0 || l as u64 >= num_classes as u64)
    {
        Some(sample) => Err(DataError::LabelOutOfRange {
            origin: origin.to_string(),
            sample,
            label: labels[sample],
            num_classes,
        }),
        None => Ok(()),
    }
}

/// Checks every feature is finite.
pub(crate) fn check_finite(origin: &str, features: &[f32], sample_len: usize) -> Result<()> {
    match features.iter().position(|v| !v.is_finite()) {
        Some(at) => Err(DataError::NonFinite {
            origin: origin.to_string(),
            sample: at / sample_len.max(1),
            feature: at % sample_len.max(1),
            value: features[at],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        Dataset::new(
            "tiny",
            vec![0., 1., 2., 3., 4., 5.],
            vec![0, 1, 1],
            vec![2],
            2,
        )
        .unwrap()
    }

    #[test]
    fn accessors_see_rows() {
        let ds = tiny();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.sample_len(), 2);
        assert_eq!(ds.sample(1), Some(&[2., 3.][..]));
        assert_eq!(ds.sample(3), None);
        assert_eq!(ds.label(2), Some(1));
        assert_eq!(ds.class_counts(), vec![1, 2]);
    }

    #[test]
    fn construction_rejects_bad_input() {
        let e = Dataset::new("t", vec![0.; 5], vec![0, 0, 0], vec![2], 2).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }), "{e}");
        let e = Dataset::new("t", vec![0.; 6], vec![0, 2, 0], vec![2], 2).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    sample: 1,
                    label: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = Dataset::new("t", vec![0.; 6], vec![0, -1, 0], vec![2], 2).unwrap_err();
        assert!(matches!(e, DataError::LabelOutOfRange { label: -1, .. }));
        let mut f = vec![0.; 6];
        f[3] = f32::NAN;
        let e = Dataset::new("t", f, vec![0, 0, 0], vec![2], 2).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::NonFinite {
                    sample: 1,
                    feature: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("t: "), "{e}");
        let e = Dataset::new("t", vec![], vec![], vec![0], 2).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }));
        let e = Dataset::new("t", vec![0.; 6], vec![0, 0, 0], vec![2], 0).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }));
    }

    #[test]
    fn reshape_keeps_data_and_checks_size() {
        let ds = Dataset::new("t", vec![0.5; 8], vec![0, 1], vec![4], 2).unwrap();
        let r = ds.clone().reshape(vec![1, 2, 2]).unwrap();
        assert_eq!(r.sample_shape(), &[1, 2, 2]);
        assert_eq!(r.features(), ds.features());
        assert!(ds.reshape(vec![3]).is_err());
    }

    #[test]
    fn subset_copies_in_shard_order_and_checks_indices() {
        let ds = tiny();
        let s = ds.subset(&Shard::new(vec![2, 0])).unwrap();
        assert_eq!(s.features(), &[4., 5., 0., 1.]);
        assert_eq!(s.labels(), &[1, 0]);
        let e = ds.subset(&Shard::new(vec![3])).unwrap_err();
        assert!(matches!(e, DataError::IndexOutOfRange { index: 3, len: 3 }));
    }
}
