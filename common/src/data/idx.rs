//! The IDX format of MNIST (and Fashion-MNIST, EMNIST...): raw or gzipped.
//!
//! An IDX file is a 4-byte magic `00 00 <type> <ndims>`, then `ndims`
//! big-endian `u32` dimensions, then the values, big-endian, row-major. The
//! value count implied by the dimensions must match the bytes that follow
//! exactly; anything else is an error naming the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dataset::{check_labels, Dataset};
use super::error::{DataError, Result};
use super::source::{read_bounded, Limits};

/// The element type of an IDX file (third magic byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxType {
    /// `0x08`: unsigned byte.
    U8,
    /// `0x09`: signed byte.
    I8,
    /// `0x0B`: big-endian i16.
    I16,
    /// `0x0C`: big-endian i32.
    I32,
    /// `0x0D`: big-endian f32.
    F32,
    /// `0x0E`: big-endian f64.
    F64,
}

impl IdxType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => IdxType::U8,
            0x09 => IdxType::I8,
            0x0B => IdxType::I16,
            0x0C => IdxType::I32,
            0x0D => IdxType::F32,
            0x0E => IdxType::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            IdxType::U8 | IdxType::I8 => 1,
            IdxType::I16 => 2,
            IdxType::I32 | IdxType::F32 => 4,
            IdxType::F64 => 8,
        }
    }

    fn is_integer(self) -> bool {
        !matches!(self, IdxType::F32 | IdxType::F64)
    }
}

/// A parsed IDX file: its type, dimensions and (borrowed) value bytes.
#[derive(Debug, Clone)]
pub struct IdxTensor<'a> {
    /// Element type.
    pub kind: IdxType,
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    data: &'a [u8],
}

impl<'a> IdxTensor<'a> {
    /// Parses and checks an IDX header and its length against `bytes`.
    pub fn parse(origin: &str, bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < 4 {
            return Err(DataError::truncated(
                origin,
                "IDX magic",
                4,
                bytes.len() as u64,
            ));
        }
        let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = IdxType::from_code(bytes[2]);
        let ndims = bytes[3] as usize;
        let (kind, ndims) = match kind {
            Some(kind) if bytes[0] == 0 && bytes[1] == 0 && ndims >= 1 => (kind, ndims),
            _ => {
                return Err(DataError::BadMagic {
                    origin: origin.to_string(),
                    found: magic,
                    expected: "IDX 0x0000TTNN (TT in 08,09,0B,0C,0D,0E; NN >= 1 dimensions)".into(),
                })
            }
        };
        let header_len = 4 + 4 * ndims;
        if bytes.len() < header_len {
            return Err(DataError::truncated(
                origin,
                "IDX dimensions",
                header_len as u64,
                bytes.len() as u64,
            ));
        }
        let dims: Vec<usize> = bytes[4..header_len]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        let data = &bytes[header_len..];
        let expected = dims
            .iter()
            .try_fold(kind.size() as u64, |acc, &d| acc.checked_mul(d as u64));
        match expected {
            Some(e) if e == data.len() as u64 => Ok(IdxTensor { kind, dims, data }),
            Some(e) if e > data.len() as u64 => Err(DataError::truncated(
                origin,
                &format!("data for dimensions {dims:?}"),
                e,
                data.len() as u64,
            )),
            Some(e) => Err(DataError::format(
                origin,
                format!(
                    "dimensions {dims:?} need {e} data bytes but {} follow the header",
                    data.len()
                ),
            )),
            None => Err(DataError::format(
                origin,
                format!("dimensions {dims:?} overflow"),
            )),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.kind.size()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// All values as `f32` (f64 values are rounded).
    pub fn to_f32(&self) -> Vec<f32> {
        let c = self.data.chunks_exact(self.kind.size());
        match self.kind {
            IdxType::U8 => self.data.iter().map(|&b| f32::from(b)).collect(),
            IdxType::I8 => self.data.iter().map(|&b| f32::from(b as i8)).collect(),
            IdxType::I16 => c
                .map(|b| f32::from(i16::from_be_bytes([b[0], b[1]])))
                .collect(),
            IdxType::I32 => c
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f32)
                .collect(),
            IdxType::F32 => c
                .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            IdxType::F64 => c
                .map(|b| {
                    f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
        }
    }

    /// All values as integer labels; float files are refused.
    pub fn to_labels(&self, origin: &str) -> Result<Vec<i64>> {
        if !self.kind.is_integer() {
            return Err(DataError::format(
                origin,
                format!("labels must be an integer IDX type, found {:?}", self.kind),
            ));
        }
        let c = self.data.chunks_exact(self.kind.size());
        Ok(match self.kind {
            IdxType::U8 => self.data.iter().map(|&b| i64::from(b)).collect(),
            IdxType::I8 => self.data.iter().map(|&b| i64::from(b as i8)).collect(),
            IdxType::I16 => c
                .map(|b| i64::from(i16::from_be_bytes([b[0], b[1]])))
                .collect(),
            _ => c
                .map(|b| i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        })
    }
}

/// Loads an images file and a labels file into a [`Dataset`].
///
/// The images file has dimensions `[n, ...]`; a 3-dimensional file
/// `[n, h, w]` (MNIST) gets the sample shape `[1, h, w]` (one channel, ready
/// for a CNN; use [`Dataset::reshape`] to get `[h * w]` for an MLP), any
/// other gets `dims[1..]` (or `[1]` for a 1-dimensional file). The labels
/// file must be 1-dimensional with `n` integer labels in `0..num_classes`.
/// Pixel values are returned raw (0..=255 for bytes); see
/// [`Dataset::scale_to_unit`].
pub fn load_idx(
    images: &Path,
    labels: &Path,
    num_classes: usize,
    limits: &Limits,
) -> Result<Dataset> {
    let img_origin = images.display().to_string();
    let lab_origin = labels.display().to_string();
    let img_bytes = read_bounded(images, limits)?;
    let img = IdxTensor::parse(&img_origin, &img_bytes)?;
    let lab_bytes = read_bounded(labels, limits)?;
    let lab = IdxTensor::parse(&lab_origin, &lab_bytes)?;

    let n = img.dims[0];
    let sample_shape = match img.dims.len() {
        1 => vec![1],
        3 => vec![1, img.dims[1], img.dims[2]],
        _ => img.dims[1..].to_vec(),
    };
    let d = img.len().checked_div(n).unwrap_or(0);
    limits.check_dims(&img_origin, n, d)?;
    if lab.dims.len() != 1 {
        return Err(DataError::format(
            &lab_origin,
            format!(
                "labels must be 1-dimensional, found dimensions {:?}",
                lab.dims
            ),
        ));
    }
    if lab.dims[0] != n {
        return Err(DataError::format(
            &lab_origin,
            format!("{} labels for {n} images in {img_origin}", lab.dims[0]),
        ));
    }
    let labels_vec = lab.to_labels(&lab_origin)?;
    check_labels(&lab_origin, &labels_vec, num_classes)?;
    Dataset::new(
        &img_origin,
        img.to_f32(),
        labels_vec,
        sample_shape,
        num_classes,
    )
}

/// Which half of MNIST to load from a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MnistPart {
    /// `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` (60,000 samples).
    Train,
    /// `t10k-images-idx3-ubyte` + `t10k-labels-idx1-ubyte` (10,000 samples).
    Test,
}

/// Loads MNIST (10 classes) from `dir`, accepting the usual file names with
/// `-idx3-ubyte` or `.idx3-ubyte`, raw or with `.gz`.
pub fn load_mnist_dir(dir: &Path, part: MnistPart, limits: &Limits) -> Result<Dataset> {
    let prefix = match part {
        MnistPart::Train => "train",
        MnistPart::Test => "t10k",
    };
    let images = find_file(dir, prefix, "images", "idx3-ubyte")?;
    let labels = find_file(dir, prefix, "labels", "idx1-ubyte")?;
    load_idx(&images, &labels, 10, limits)
}

fn find_file(dir: &Path, prefix: &str, what: &str, suffix: &str) -> Result<PathBuf> {
    let mut tried = Vec::new();
    for sep in ['-', '.'] {
        for gz in ["", ".gz"] {
            let p = dir.join(format!("{prefix}-{what}{sep}{suffix}{gz}"));
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    Err(DataError::Io {
        path: tried.swap_remove(0),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {prefix} {what} file (raw or .gz) in {}", dir.display()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_bytes(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, code, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn loads_a_tiny_byte_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..12).collect();
        let img = write(dir.path(), "img", &idx_bytes(8, &[3, 2, 2], &pixels));
        let lab = write(dir.path(), "lab", &idx_bytes(8, &[3], &[2, 0, 1]));
        let ds = load_idx(&img, &lab, 3, &Limits::default()).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.sample_shape(), &[1, 2, 2]);
        assert_eq!(ds.sample(1), Some(&[4., 5., 6., 7.][..]));
        assert_eq!(ds.labels(), &[2, 0, 1]);
    }

    #[test]
    fn reads_wider_types_big_endian() {
        let mut data = Vec::new();
        for v in [1.5f32, -2.0] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        let bytes = idx_bytes(0x0D, &[2], &data);
        let t = IdxTensor::parse("f", &bytes).unwrap();
        assert_eq!(t.to_f32(), vec![1.5, -2.0]);
        assert!(t.to_labels("f").is_err());
        let bytes = idx_bytes(0x0B, &[2], &[0x01, 0x00, 0xff, 0xfe]);
        let t = IdxTensor::parse("s", &bytes).unwrap();
        assert_eq!(t.to_labels("s").unwrap(), vec![256, -2]);
    }

    #[test]
    fn header_errors_name_the_file() {
        let bad_magic = idx_bytes(0x07, &[1], &[0]);
        let e = IdxTensor::parse("a.idx", &bad_magic).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("a.idx"));
        let e = IdxTensor::parse("a.idx", &[0, 0, 8]).unwrap_err();
        assert!(matches!(e, DataError::Truncated { .. }), "{e}");
        let e = IdxTensor::parse("a.idx", &[0, 0, 8, 3, 0, 0, 0, 1]).unwrap_err();
        assert!(matches!(e, DataError::Truncated { .. }), "{e}");
        let e = IdxTensor::parse("a.idx", &[0, 0, 8, 0]).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
    }

    #[test]
    fn lying_dimensions_are_caught_without_allocating() {
        // Claims 2^32-1 x 2^32-1 x 2^32-1 bytes, holds 4.
        let huge = idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[0; 4]);
        let e = IdxTensor::parse("h", &huge).unwrap_err();
        assert!(
            matches!(e, DataError::Truncated { .. } | DataError::Format { .. }),
            "{e}"
        );
        let short = idx_bytes(8, &[2, 2], &[0; 3]);
        let e = IdxTensor::parse("s", &short).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 4,
                    actual: 3,
                    ..
                }
            ),
            "{e}"
        );
        let long = idx_bytes(8, &[2, 2], &[0; 5]);
        assert!(matches!(
            IdxTensor::parse("l", &long).unwrap_err(),
            DataError::Format { .. }
        ));
    }

    #[test]
    fn label_file_problems() {
        let dir = tempfile::tempdir().unwrap();
        let img = write(dir.path(), "img", &idx_bytes(8, &[2, 2], &[0; 4]));
        let three = write(dir.path(), "three", &idx_bytes(8, &[3], &[0, 1, 0]));
        let e = load_idx(&img, &three, 10, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("3 labels for 2 images"), "{e}");
        let out = write(dir.path(), "out", &idx_bytes(8, &[2], &[0, 10]));
        let e = load_idx(&img, &out, 10, &Limits::default()).unwrap_err();
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
        assert!(e.to_string().contains("out"));
        let two_d = write(dir.path(), "two_d", &idx_bytes(8, &[2, 1], &[0, 1]));
        assert!(load_idx(&img, &two_d, 10, &Limits::default()).is_err());
    }

    #[test]
    fn nan_pixels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        for v in [0.0f32, f32::NAN] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        let img = write(dir.path(), "nan.idx", &idx_bytes(0x0D, &[2, 1], &data));
        let lab = write(dir.path(), "lab", &idx_bytes(8, &[2], &[0, 1]));
        let e = load_idx(&img, &lab, 2, &Limits::default()).unwrap_err();
        assert!(matches!(e, DataError::NonFinite { sample: 1, .. }), "{e}");
        assert!(e.to_string().contains("nan.idx"));
    }

    #[test]
    fn too_many_samples_for_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let img = write(dir.path(), "img", &idx_bytes(8, &[4, 1], &[0; 4]));
        let lab = write(dir.path(), "lab", &idx_bytes(8, &[4], &[0; 4]));
        let limits = Limits {
            max_samples: 3,
            ..Limits::default()
        };
        let e = load_idx(&img, &lab, 2, &limits).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn mnist_dir_finds_gz_names_or_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_mnist_dir(dir.path(), MnistPart::Test, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("t10k images"), "{e}");
        let img = idx_bytes(8, &[1, 2, 2], &[1, 2, 3, 4]);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &img).unwrap();
        write(
            dir.path(),
            "t10k-images-idx3-ubyte.gz",
            &enc.finish().unwrap(),
        );
        write(
            dir.path(),
            "t10k-labels-idx1-ubyte",
            &idx_bytes(8, &[1], &[7]),
        );
        let ds = load_mnist_dir(dir.path(), MnistPart::Test, &Limits::default()).unwrap();
        assert_eq!(ds.labels(), &[7]);
        assert_eq!(ds.num_classes(), 10);
    }
}
