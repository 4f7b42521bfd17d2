//! The CIFAR binary format (`data_batch_*.bin`, `test_batch.bin`).
//!
//! A file is a sequence of fixed-length records: the label byte(s), then
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each 32×32 row-major).
//! Samples get the shape `[3, 32, 32]`; values are raw bytes (0..=255).

use std::path::{Path, PathBuf};

use super::dataset::{check_labels, Dataset};
use super::error::{DataError, Result};
use super::source::{read_bounded, Limits};

/// Pixel bytes per CIFAR record.
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR binary layout the files use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarVariant {
    /// CIFAR-10: 1 label byte (0..10) + 3072 pixels.
    Cifar10,
    /// CIFAR-100 with its 100 fine labels: coarse byte, fine byte, pixels.
    Cifar100Fine,
    /// CIFAR-100 with its 20 coarse labels: coarse byte, fine byte, pixels.
    Cifar100Coarse,
}

impl CifarVariant {
    fn label_bytes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 1,
            _ => 2,
        }
    }

    /// Bytes per record.
    pub fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_PIXELS
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100Fine => 100,
            CifarVariant::Cifar100Coarse => 20,
        }
    }

    fn label_offset(self) -> usize {
        match self {
            CifarVariant::Cifar100Fine => 1,
            _ => 0,
        }
    }
}

/// Loads and concatenates CIFAR binary files (raw or gzipped), in the order
/// given. Each file's length must be a whole number of records.
pub fn load_cifar(paths: &[PathBuf], variant: CifarVariant, limits: &Limits) -> Result<Dataset> {
    if paths.is_empty() {
        return Err(DataError::InvalidArgument("no CIFAR files given".into()));
    }
    let record = variant.record_len();
    let num_classes = variant.num_classes();
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let origin = path.display().to_string();
        let bytes = read_bounded(path, limits)?;
        if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
            let whole = bytes.len() / record;
            return Err(DataError::truncated(
                &origin,
                &format!("record {} ({record}-byte CIFAR records)", whole + 1),
                ((whole + 1) * record) as u64,
                bytes.len() as u64,
            ));
        }
        let n = bytes.len() / record;
        limits.check_dims(&origin, labels.len() + n, CIFAR_PIXELS)?;
        let file_labels: Vec<i64> = bytes
            .chunks_exact(record)
            .map(|r| i64::from(r[variant.label_offset()]))
            .collect();
        check_labels(&origin, &file_labels, num_classes)?;
        labels.extend_from_slice(&file_labels);
        features.reserve(n * CIFAR_PIXELS);
        for r in bytes.chunks_exact(record) {
            features.extend(r[variant.label_bytes()..].iter().map(|&b| f32::from(b)));
        }
    }
    let origin = paths[0].display().to_string();
    Dataset::new(&origin, features, labels, vec![3, 32, 32], num_classes)
}

/// Loads CIFAR-10 from `dir` (or its `cifar-10-batches-bin` subfolder):
/// `data_batch_1.bin`..`data_batch_5.bin` for training, `test_batch.bin`
/// for test. Each name may also carry `.gz`.
pub fn load_cifar10_dir(dir: &Path, train: bool, limits: &Limits) -> Result<Dataset> {
    let base = if dir.join("cifar-10-batches-bin").is_dir() {
        dir.join("cifar-10-batches-bin")
    } else {
        dir.to_path_buf()
    };
    let names: Vec<String> = if train {
        (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
    } else {
        vec!["test_batch.bin".to_string()]
    };
    let mut paths = Vec::with_capacity(names.len());
    for name in names {
        let raw = base.join(&name);
        let gz = base.join(format!("{name}.gz"));
        if raw.is_file() {
            paths.push(raw);
        } else if gz.is_file() {
            paths.push(gz);
        } else {
            return Err(DataError::Io {
                path: raw,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "CIFAR-10 file missing"),
            });
        }
    }
    load_cifar(&paths, CifarVariant::Cifar10, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: &[u8], fill: u8) -> Vec<u8> {
        let mut r = label.to_vec();
        r.extend((0..CIFAR_PIXELS).map(|i| fill.wrapping_add(i as u8)));
        r
    }

    #[test]
    fn loads_and_concatenates_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        std::fs::write(&a, [record(&[3], 0), record(&[9], 1)].concat()).unwrap();
        std::fs::write(&b, record(&[0], 2)).unwrap();
        let ds = load_cifar(&[a, b], CifarVariant::Cifar10, &Limits::default()).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.sample_shape(), &[3, 32, 32]);
        assert_eq!(ds.labels(), &[3, 9, 0]);
        let s = ds.sample(2).unwrap();
        assert_eq!((s[0], s[1], s[1024]), (2.0, 3.0, 2.0));
    }

    #[test]
    fn cifar100_picks_fine_or_coarse_label() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c100.bin");
        std::fs::write(&p, record(&[19, 99], 0)).unwrap();
        let fine = load_cifar(
            std::slice::from_ref(&p),
            CifarVariant::Cifar100Fine,
            &Limits::default(),
        );
        assert_eq!(fine.unwrap().labels(), &[99]);
        let coarse = load_cifar(&[p], CifarVariant::Cifar100Coarse, &Limits::default());
        assert_eq!(coarse.unwrap().labels(), &[19]);
    }

    #[test]
    fn partial_record_is_truncation_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short.bin");
        let mut bytes = record(&[1], 0);
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&p, bytes).unwrap();
        let e = load_cifar(&[p], CifarVariant::Cifar10, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 6146,
                    actual: 3076,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("short.bin") && e.to_string().contains("record 2"));
        let empty = dir.path().join("empty.bin");
        std::fs::write(&empty, []).unwrap();
        assert!(load_cifar(&[empty], CifarVariant::Cifar10, &Limits::default()).is_err());
    }

    #[test]
    fn label_out_of_range_names_file_and_sample() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad_label.bin");
        std::fs::write(&p, [record(&[1], 0), record(&[10], 0)].concat()).unwrap();
        let e = load_cifar(&[p], CifarVariant::Cifar10, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    sample: 1,
                    label: 10,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("bad_label.bin"));
    }

    #[test]
    fn dir_loader_reports_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_batch.bin"), record(&[4], 0)).unwrap();
        let ds = load_cifar10_dir(dir.path(), false, &Limits::default()).unwrap();
        assert_eq!(ds.labels(), &[4]);
        let e = load_cifar10_dir(dir.path(), true, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("data_batch_1.bin"), "{e}");
        assert!(load_cifar(&[], CifarVariant::Cifar10, &Limits::default()).is_err());
    }
}
