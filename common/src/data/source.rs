//! Reading a whole data file into memory, gzip-aware and size-bounded.
//!
//! Gzip is recognised by its magic bytes (`1f 8b`), not by the file name, so
//! `train-images-idx3-ubyte` and `train-images-idx3-ubyte.gz` both work. The
//! decompressed size is capped by [`Limits::max_bytes`]: a gzip bomb or a file
//! that is far larger than expected stops with [`DataError::TooLarge`] after
//! at most `max_bytes + 1` bytes were buffered.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::error::{DataError, Result};

/// Caps that protect against lying headers and oversized inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed input accepted, in bytes (default 2 GiB).
    pub max_bytes: u64,
    /// Largest number of samples accepted (default 10 million).
    pub max_samples: usize,
    /// Largest number of features per sample accepted (default 16 Mi).
    pub max_features: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 2 << 30,
            max_samples: 10_000_000,
            max_features: 16 << 20,
        }
    }
}

impl Limits {
    /// Checks a declared sample count and per-sample feature count against
    /// the limits, and that `samples * features` f32 values stay within
    /// `max_bytes`. Called before anything of that size is allocated.
    pub fn check_dims(&self, origin: &str, samples: usize, features: usize) -> Result<()> {
        if samples > self.max_samples {
            return Err(DataError::TooLarge {
                origin: origin.to_string(),
                what: "number of samples".into(),
                size: samples as u64,
                limit: self.max_samples as u64,
            });
        }
        if features > self.max_features {
            return Err(DataError::TooLarge {
                origin: origin.to_string(),
                what: "number of features per sample".into(),
                size: features as u64,
                limit: self.max_features as u64,
            });
        }
        let bytes = (samples as u64)
            .checked_mul(features as u64)
            .and_then(|v| v.checked_mul(4))
            .unwrap_or(u64::MAX);
        if bytes > self.max_bytes {
            return Err(DataError::TooLarge {
                origin: origin.to_string(),
                what: "feature buffer in bytes".into(),
                size: bytes,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// Reads `path` completely, transparently gunzipping it, refusing anything
/// whose (decompressed) size exceeds `limits.max_bytes`.
pub fn read_bounded(path: &Path, limits: &Limits) -> Result<Vec<u8>> {
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io_err)?);
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = file.read(&mut magic[got..]).map_err(io_err)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(file);
    let is_gzip = got == 2 && magic == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if is_gzip {
        Box::new(MultiGzDecoder::new(chained))
    } else {
        Box::new(chained)
    };
    let mut out = Vec::new();
    reader
        .take(limits.max_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io_err)?;
    if out.len() as u64 > limits.max_bytes {
        return Err(DataError::TooLarge {
            origin: path.display().to_string(),
            what: if is_gzip {
                "decompressed size in bytes (at least)".into()
            } else {
                "file size in bytes (at least)".into()
            },
            size: out.len() as u64,
            limit: limits.max_bytes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    #[test]
    fn plain_and_gzip_read_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let plain = dir.path().join("a.bin");
        std::fs::write(&plain, &payload).unwrap();
        let gz = dir.path().join("a.bin.gz");
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&payload).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let limits = Limits::default();
        assert_eq!(read_bounded(&plain, &limits).unwrap(), payload);
        assert_eq!(read_bounded(&gz, &limits).unwrap(), payload);
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("bomb.gz");
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&vec![0u8; 1 << 20]).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let limits = Limits {
            max_bytes: 4096,
            ..Limits::default()
        };
        let err = read_bounded(&gz, &limits).unwrap_err();
        assert!(
            matches!(err, DataError::TooLarge { limit: 4096, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bomb.gz"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_bounded(Path::new("/nonexistent/x.idx"), &Limits::default()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/x.idx"), "{err}");
    }

    #[test]
    fn corrupt_gzip_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("bad.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let err = read_bounded(&gz, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("bad.gz"), "{err}");
    }

    #[test]
    fn dims_over_the_limits_are_refused() {
        let limits = Limits::default();
        assert!(limits.check_dims("x", 60_000, 784).is_ok());
        assert!(limits.check_dims("x", usize::MAX, 784).is_err());
        assert!(limits.check_dims("x", 1, usize::MAX).is_err());
        assert!(limits.check_dims("x", 9_000_000, 16_000).is_err());
    }
}
