//! The model as rows, ROG's unit of transfer (MICRO 2022): a tensor with
//! one dimension, or with fewer than [`ROW_SPLIT_MIN`] values, is one row;
//! any other is cut along its first dimension into `shape[0]` rows of
//! `numel / shape[0]` contiguous values (a linear layer's output neuron, a
//! convolution's output channel). Rows are numbered in parameter order.
//!
//! Also here: ROG's mandatory fraction P(S), the share of rows every
//! transmission must carry for a per-row staleness threshold S.

use std::ops::Range;

use thiserror::Error;

use crate::engine::manifest::ParameterSpec;

/// Tensors with fewer values than this are one row, whatever their shape.
pub const ROW_SPLIT_MIN: usize = 1000;

/// Why a layout or a partial update is refused.
#[derive(Debug, Error, PartialEq)]
pub enum RowError {
    /// The parameters do not tile the flat model.
    #[error("parameter `{name}`: offset {offset}, expected {expected} (parameters must tile the model in order)")]
    NotContiguous {
        /// The parameter.
        name: String,
        /// Its offset.
        offset: usize,
        /// Where it should start.
        expected: usize,
    },
    /// A shape that does not hold the parameter's values.
    #[error("parameter `{name}`: shape {shape:?} does not hold {numel} values")]
    BadShape {
        /// The parameter.
        name: String,
        /// Its shape.
        shape: Vec<i64>,
        /// Its value count.
        numel: usize,
    },
    /// A row id beyond the layout.
    #[error("row {row} of a model with {rows} rows")]
    NoSuchRow {
        /// The id.
        row: u32,
        /// Rows in the layout.
        rows: usize,
    },
    /// Values that do not fit the row.
    #[error("row {row}: {got} values, the row has {want}")]
    WrongLength {
        /// The id.
        row: u32,
        /// Values given.
        got: usize,
        /// The row's length.
        want: usize,
    },
    /// A NaN or infinite value.
    #[error("row {row}: a non-finite value")]
    NotFinite {
        /// The id.
        row: u32,
    },
    /// The same row twice in one update.
    #[error("row {row} is in the update twice")]
    Duplicate {
        /// The id.
        row: u32,
    },
}

/// One row: which tensor it belongs to and its values in the flat model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Index of the tensor in the parameter list.
    pub tensor: usize,
    /// The row's values in the flat model.
    pub range: Range<usize>,
}

/// Every row of a model, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLayout {
    rows: Vec<Row>,
    len: usize,
}

impl RowLayout {
    /// The layout of `parameters` (a manifest's list, in order).
    pub fn new(parameters: &[ParameterSpec]) -> Result<Self, RowError> {
        let mut rows = Vec::new();
        let mut next = 0;
        for (tensor, p) in parameters.iter().enumerate() {
            if p.offset != next {
                return Err(RowError::NotContiguous {
                    name: p.name.clone(),
                    offset: p.offset,
                    expected: next,
                });
            }
            let dims: Option<Vec<usize>> =
                p.shape.iter().map(|&d| usize::try_from(d).ok()).collect();
            let product = dims
                .as_ref()
                .and_then(|d| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b)));
            if product != Some(p.numel) {
                return Err(RowError::BadShape {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    numel: p.numel,
                });
            }
            let first = dims.as_ref().and_then(|d| d.first().copied()).unwrap_or(1);
            let split = p.shape.len() > 1 && p.numel >= ROW_SPLIT_MIN && first > 0;
            if split {
                let per = p.numel / first;
                for r in 0..first {
                    let start = p.offset + r * per;
                    rows.push(Row {
                        tensor,
                        range: start..start + per,
                    });
                }
            } else {
                rows.push(Row {
                    tensor,
                    range: p.offset..p.offset + p.numel,
                });
            }
            next = p.offset + p.numel;
        }
        Ok(Self { rows, len: next })
    }

    /// Rows in the model.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the model has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Values in the model.
    pub fn values(&self) -> usize {
        self.len
    }

    /// Row `id`.
    pub fn row(&self, id: u32) -> Result<&Row, RowError> {
        self.rows.get(id as usize).ok_or(RowError::NoSuchRow {
            row: id,
            rows: self.rows.len(),
        })
    }

    /// The rows, in order.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Adds a partial update — some rows, each with its values — to
    /// `model`. Everything is checked first: on an error `model` is
    /// unchanged.
    pub fn add_rows(&self, model: &mut [f32], update: &[(u32, &[f32])]) -> Result<(), RowError> {
        if model.len() != self.len {
            return Err(RowError::WrongLength {
                row: 0,
                got: model.len(),
                want: self.len,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for &(id, values) in update {
            let row = self.row(id)?;
            if values.len() != row.range.len() {
                return Err(RowError::WrongLength {
                    row: id,
                    got: values.len(),
                    want: row.range.len(),
                });
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(RowError::NotFinite { row: id });
            }
            if !seen.insert(id) {
                return Err(RowError::Duplicate { row: id });
            }
        }
        for &(id, values) in update {
            let range = self.rows[id as usize].range.clone();
            model[range]
                .iter_mut()
                .zip(values)
                .for_each(|(m, v)| *m += v);
        }
        Ok(())
    }
}

/// ROG's mandatory fraction P(S) for a per-row staleness threshold S: the
/// root in (0, 1) of (1 − P)^(S − 1) = P (S ≤ 1: 1, everything is
/// mandatory). ROG's table lists S = 4 as 0.32; the root is 0.3177.
pub fn mandatory_fraction(threshold: u32) -> f64 {
    if threshold <= 1 {
        return 1.0;
    }
    let f = |p: f64| (1.0 - p).powi(threshold as i32 - 1) - p;
    // f(0) = 1 > 0, f(1) = −1 < 0, and f falls: bisection.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if f(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, shape: &[i64], offset: usize) -> ParameterSpec {
        ParameterSpec {
            name: name.into(),
            shape: shape.to_vec(),
            offset,
            numel: shape.iter().product::<i64>() as usize,
        }
    }

    fn tile(shapes: &[(&str, &[i64])]) -> Vec<ParameterSpec> {
        let mut offset = 0;
        shapes
            .iter()
            .map(|(n, s)| {
                let p = spec(n, s, offset);
                offset += p.numel;
                p
            })
            .collect()
    }

    /// The MLP of `examples/artifacts/mlp`.
    fn mlp() -> Vec<ParameterSpec> {
        tile(&[
            ("fc1.weight", &[128, 784]),
            ("fc1.bias", &[128]),
            ("fc2.weight", &[64, 128]),
            ("fc2.bias", &[64]),
            ("fc3.weight", &[10, 64]),
            ("fc3.bias", &[10]),
        ])
    }

    /// The CNN of `examples/artifacts/cnn`.
    fn cnn() -> Vec<ParameterSpec> {
        tile(&[
            ("conv1.weight", &[8, 1, 3, 3]),
            ("conv1.bias", &[8]),
            ("conv2.weight", &[16, 8, 3, 3]),
            ("conv2.bias", &[16]),
            ("fc.weight", &[10, 784]),
            ("fc.bias", &[10]),
        ])
    }

    #[test]
    fn the_mlp_and_cnn_layouts_follow_the_rule() {
        // MLP: fc1.weight 128 rows of 784; fc1.bias 1; fc2.weight (8,192
        // values) 64 rows of 128; fc2.bias 1; fc3.weight (640 < 1000) 1;
        // fc3.bias 1: 196 rows.
        let m = RowLayout::new(&mlp()).unwrap();
        assert_eq!(m.len(), 128 + 1 + 64 + 1 + 1 + 1);
        assert_eq!(m.values(), 109_386);
        assert_eq!(m.row(0).unwrap().range, 0..784);
        assert_eq!(m.row(128).unwrap().range, 100_352..100_480, "fc1.bias");
        assert_eq!(
            m.row(129).unwrap().range,
            100_480..100_608,
            "fc2.weight row 0"
        );
        assert_eq!(
            m.row(194).unwrap().range,
            108_736..109_376,
            "fc3.weight whole"
        );
        // CNN: conv1.weight (72) 1; conv1.bias 1; conv2.weight (1,152) 16
        // rows of 72; conv2.bias 1; fc.weight 10 rows of 784; fc.bias 1: 30.
        let c = RowLayout::new(&cnn()).unwrap();
        assert_eq!(c.len(), 1 + 1 + 16 + 1 + 10 + 1);
        assert_eq!(c.row(2).unwrap().range.len(), 72);
        assert_eq!(c.row(2).unwrap().tensor, 2);
        // Every value is in exactly one row, in order.
        for layout in [&m, &c] {
            let mut next = 0;
            for r in layout.rows() {
                assert_eq!(r.range.start, next);
                next = r.range.end;
            }
            assert_eq!(next, layout.values());
        }
        // The manifests the artifact tool wrote, where they are built.
        for (name, want) in [("mlp", &m), ("cnn", &c)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/artifacts")
                .join(name);
            if let Ok(manifest) = crate::engine::Manifest::load(&dir) {
                assert_eq!(
                    &RowLayout::new(&manifest.parameters).unwrap(),
                    want,
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn a_partial_update_changes_exactly_its_rows() {
        let layout = RowLayout::new(&cnn()).unwrap();
        let mut model: Vec<f32> = (0..layout.values()).map(|i| i as f32).collect();
        let before = model.clone();
        let ones = vec![1.0f32; 72];
        let bias = vec![0.5f32; 10];
        layout
            .add_rows(&mut model, &[(2, &ones), (29, &bias)])
            .unwrap();
        let changed: Vec<usize> = (0..model.len())
            .filter(|&i| model[i] != before[i])
            .collect();
        let mut want: Vec<usize> = layout.row(2).unwrap().range.clone().collect();
        want.extend(layout.row(29).unwrap().range.clone());
        assert_eq!(changed, want);
        assert_eq!(model[want[0]], before[want[0]] + 1.0);
        // Refused whole, model untouched.
        let snapshot = model.clone();
        for bad in [
            vec![(2u32, &ones[..71])],
            vec![(30, &ones[..])],
            vec![(2, &ones[..]), (2, &ones[..])],
        ] {
            assert!(layout.add_rows(&mut model, &bad).is_err());
        }
        let nan = vec![f32::NAN; 10];
        assert_eq!(
            layout.add_rows(&mut model, &[(2, &ones), (29, &nan)]),
            Err(RowError::NotFinite { row: 29 })
        );
        assert_eq!(model, snapshot);
    }

    #[test]
    fn parameters_that_do_not_tile_are_refused() {
        let mut p = mlp();
        p[1].offset += 1;
        assert!(matches!(
            RowLayout::new(&p),
            Err(RowError::NotContiguous { .. })
        ));
        let mut p = mlp();
        p[0].shape = vec![128, 783];
        assert!(matches!(RowLayout::new(&p), Err(RowError::BadShape { .. })));
        let mut p = mlp();
        p[0].shape = vec![-128, -784];
        assert!(matches!(RowLayout::new(&p), Err(RowError::BadShape { .. })));
    }

    #[test]
    fn the_mandatory_fraction_matches_rogs_table() {
        for (s, p) in [(4, 0.3177), (20, 0.1098), (30, 0.0825), (40, 0.0670)] {
            let got = mandatory_fraction(s);
            assert!((got - p).abs() < 5e-5, "S={s}: {got}");
        }
        assert_eq!(mandatory_fraction(0), 1.0);
        assert_eq!(mandatory_fraction(1), 1.0);
        assert!((mandatory_fraction(2) - 0.5).abs() < 1e-12);
        assert!((mandatory_fraction(3) - 0.381_966).abs() < 1e-6);
    }
}
