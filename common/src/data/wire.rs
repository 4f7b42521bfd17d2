//! A compact, length-checked byte encoding of a dataset or a shard of one,
//! for shipping shards from the master to workers.
//!
//! Layout (little-endian):
//!
//! ```text
//! magic "HDS1" | version u8 = 1 | encoding u8 | ndim u8 | 0u8
//! num_classes u32 | n u32 | dims: ndim × u32 | divisor f32
//! labels: n × u32 | features: n × d × (f32, or u8 when encoding = 1)
//! ```
//!
//! Encoding 1 stores each feature as a byte `q` with value `q / divisor`;
//! it is chosen automatically when every value round-trips bit-exactly
//! (raw pixel bytes, or bytes scaled to `[0, 1]` by dividing by 255), which
//! makes an MNIST shard four times smaller. Otherwise features are raw f32.
//! [`Dataset::from_bytes`] checks the magic, version, every length (exactly)
//! and the limits before allocating, then validates the dataset (labels in
//! range, finite features).

use super::dataset::{shape_len, Dataset};
use super::error::{DataError, Result};
use super::source::Limits;
use super::split::Shard;

const MAGIC: &[u8; 4] = b"HDS1";
const VERSION: u8 = 1;
const ENC_F32: u8 = 0;
const ENC_U8: u8 = 1;
/// Divisors tried for the byte encoding, in order.
const DIVISORS: [f32; 2] = [1.0, 255.0];

impl Dataset {
    /// Encodes the whole dataset.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode(&Shard::all(self.len()))
    }

    /// Encodes the samples of `shard`, in its order, without materializing
    /// the subset first.
    pub fn shard_to_bytes(&self, shard: &Shard) -> Result<Vec<u8>> {
        self.check_shard(shard)?;
        if shard.len() > u32::MAX as usize {
            return Err(DataError::InvalidArgument(format!(
                "a shard of {} samples is too large to encode",
                shard.len()
            )));
        }
        Ok(self.encode(shard))
    }

    /// The byte form of every sample, when the whole dataset has one (pixels
    /// as loaded, or scaled by 1/255): computed once, it makes
    /// [`Dataset::shard_to_bytes_with`] a copy of rows instead of a
    /// re-quantisation of every value of every shard.
    pub fn byte_form(&self) -> Option<ByteForm> {
        DIVISORS.into_iter().find_map(|divisor| {
            let bytes: Option<Vec<u8>> = self
                .features()
                .iter()
                .map(|&v| byte_of(v, divisor))
                .collect();
            bytes.map(|bytes| ByteForm { divisor, bytes })
        })
    }

    /// [`Dataset::shard_to_bytes`] with the dataset's [`ByteForm`] (the
    /// same bytes, made faster); a form of another dataset is ignored.
    pub fn shard_to_bytes_with(&self, shard: &Shard, form: Option<&ByteForm>) -> Result<Vec<u8>> {
        let form = form.filter(|f| f.bytes.len() == self.features().len());
        match form {
            None => self.shard_to_bytes(shard),
            Some(form) => {
                self.check_shard(shard)?;
                if shard.len() > u32::MAX as usize {
                    return Err(DataError::InvalidArgument(format!(
                        "a shard of {} samples is too large to encode",
                        shard.len()
                    )));
                }
                let d = self.sample_len();
                let mut out = self.header(shard, Some(form.divisor), 1);
                for &i in shard.indices() {
                    out.extend_from_slice(&form.bytes[i * d..(i + 1) * d]);
                }
                Ok(out)
            }
        }
    }

    /// Decodes bytes made by [`Dataset::to_bytes`] or
    /// [`Dataset::shard_to_bytes`]; `origin` names them in errors.
    pub fn from_bytes(origin: &str, bytes: &[u8], limits: &Limits) -> Result<Dataset> {
        let mut r = Reader {
            origin,
            bytes,
            pos: 0,
        };
        let magic = r.take(4, "magic")?;
        if magic != MAGIC {
            return Err(DataError::BadMagic {
                origin: origin.to_string(),
                found: u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]),
                expected: "\"HDS1\" (hermes dataset)".into(),
            });
        }
        let head = r.take(4, "header")?;
        let (version, encoding, ndim) = (head[0], head[1], head[2] as usize);
        if version != VERSION {
            return Err(DataError::format(
                origin,
                format!("unsupported dataset encoding version {version}"),
            ));
        }
        if encoding != ENC_F32 && encoding != ENC_U8 {
            return Err(DataError::format(
                origin,
                format!("unknown feature encoding {encoding}"),
            ));
        }
        let num_classes = r.u32("number of classes")? as usize;
        let n = r.u32("sample count")? as usize;
        let mut shape = Vec::with_capacity(ndim);
        for _ in 0..ndim {
            shape.push(r.u32("sample shape")? as usize);
        }
        let d = shape_len(origin, &shape)?;
        limits.check_dims(origin, n, d)?;
        let divisor = f32::from_le_bytes(r.array("divisor")?);
        if encoding == ENC_U8 && !DIVISORS.contains(&divisor) {
            return Err(DataError::format(
                origin,
                format!("byte encoding with unsupported divisor {divisor}"),
            ));
        }
        let elem = if encoding == ENC_U8 { 1 } else { 4 };
        let expected = (n as u64) * 4 + (n as u64) * (d as u64) * elem;
        let rest = (bytes.len() - r.pos) as u64;
        if rest != expected {
            return Err(if rest < expected {
                DataError::truncated(origin, "labels and features", expected, rest)
            } else {
                DataError::format(
                    origin,
                    format!("{} bytes after the features", rest - expected),
                )
            });
        }
        let labels: Vec<i64> = r
            .take(n * 4, "labels")?
            .chunks_exact(4)
            .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        let raw = r.take(n * d * elem as usize, "features")?;
        let features: Vec<f32> = if encoding == ENC_U8 {
            raw.iter().map(|&q| f32::from(q) / divisor).collect()
        } else {
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        Dataset::new(origin, features, labels, shape, num_classes)
    }

    /// Writes the header, labels and features of `shard` (indices checked).
    fn encode(&self, shard: &Shard) -> Vec<u8> {
        let d = self.sample_len();
        let rows = || {
            shard
                .indices()
                .iter()
                .map(|&i| &self.features()[i * d..(i + 1) * d])
        };
        let divisor = DIVISORS
            .into_iter()
            .find(|&div| rows().flatten().all(|&v| byte_of(v, div).is_some()));
        let elem = if divisor.is_some() { 1 } else { 4 };
        let mut out = self.header(shard, divisor, elem);
        match divisor {
            Some(div) => out.extend(rows().flatten().map(|&v| byte_of(v, div).unwrap_or(0))),
            None => {
                for v in rows().flatten() {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        out
    }

    /// Everything before the features (magic, header, shape, divisor,
    /// labels), in a buffer with room for `elem`-byte features.
    fn header(&self, shard: &Shard, divisor: Option<f32>, elem: usize) -> Vec<u8> {
        let d = self.sample_len();
        let mut out =
            Vec::with_capacity(24 + 4 * self.sample_shape().len() + shard.len() * (4 + d * elem));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[
            VERSION,
            if divisor.is_some() { ENC_U8 } else { ENC_F32 },
            self.sample_shape().len() as u8,
            0,
        ]);
        out.extend_from_slice(&(self.num_classes() as u32).to_le_bytes());
        out.extend_from_slice(&(shard.len() as u32).to_le_bytes());
        for &dim in self.sample_shape() {
            out.extend_from_slice(&(dim as u32).to_le_bytes());
        }
        out.extend_from_slice(&divisor.unwrap_or(1.0).to_le_bytes());
        for &i in shard.indices() {
            out.extend_from_slice(&(self.labels()[i] as u32).to_le_bytes());
        }
        out
    }
}

/// Every feature of a dataset as a byte, with the divisor that gives the
/// value back (see [`Dataset::byte_form`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ByteForm {
    divisor: f32,
    bytes: Vec<u8>,
}

/// The byte `q` with `q / divisor == v` exactly, if there is one.
fn byte_of(v: f32, divisor: f32) -> Option<u8> {
    let q = (v * divisor).round();
    if !(0.0..=255.0).contains(&q) {
        return None;
    }
    let q = q as u8;
    // Checked on what the decoder computes from the byte: `-0.0` rounds to
    // a `q` of `-0.0`, which passes a check on `q` itself, but its byte
    // decodes as `+0.0`.
    ((f32::from(q) / divisor).to_bits() == v.to_bits()).then_some(q)
}

/// A bounds-checked cursor over the encoded bytes.
struct Reader<'a> {
    origin: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let available = self.bytes.len() - self.pos;
        if len > available {
            return Err(DataError::truncated(
                self.origin,
                what,
                len as u64,
                available as u64,
            ));
        }
        let s = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }

    fn array(&mut self, what: &str) -> Result<[u8; 4]> {
        let s = self.take(4, what)?;
        Ok([s[0], s[1], s[2], s[3]])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels() -> Dataset {
        let f: Vec<f32> = (0..24).map(|v| (v * 10) as f32).collect();
        Dataset::new("p", f, vec![0, 1, 2, 1], vec![1, 2, 3], 3).unwrap()
    }

    #[test]
    fn the_byte_form_encodes_shards_as_the_plain_path_does() {
        let shard = Shard::new(vec![3, 0, 2]);
        for scale in [None, Some(255.0)] {
            let mut ds = pixels();
            if let Some(s) = scale {
                ds.scale_to_unit(s).unwrap();
            }
            let form = ds.byte_form().expect("pixels have a byte form");
            let fast = ds.shard_to_bytes_with(&shard, Some(&form)).unwrap();
            assert_eq!(fast, ds.shard_to_bytes(&shard).unwrap());
            let back = Dataset::from_bytes("w", &fast, &Limits::default()).unwrap();
            assert_eq!(back, ds.subset(&shard).unwrap());
        }
        // Floats have none; another dataset's form is ignored.
        let floats = Dataset::new("f", vec![0.1, 0.2, 0.3, 0.4], vec![0, 1], vec![2], 2).unwrap();
        assert!(floats.byte_form().is_none());
        let form = pixels().byte_form().unwrap();
        let two = Shard::new(vec![1, 0]);
        assert_eq!(
            floats.shard_to_bytes_with(&two, Some(&form)).unwrap(),
            floats.shard_to_bytes(&two).unwrap()
        );
        // A bad shard is refused as before.
        assert!(pixels()
            .shard_to_bytes_with(&Shard::new(vec![9]), Some(&form))
            .is_err());
    }

    #[test]
    fn raw_bytes_round_trip_in_one_byte_per_value() {
        let ds = pixels();
        let bytes = ds.to_bytes();
        assert_eq!(bytes.len(), 4 + 4 + 8 + 12 + 4 + 16 + 24);
        assert_eq!(
            Dataset::from_bytes("w", &bytes, &Limits::default()).unwrap(),
            ds
        );
    }

    #[test]
    fn scaled_pixels_round_trip_bit_exactly() {
        let mut ds = pixels();
        ds.scale_to_unit(255.0).unwrap();
        let bytes = ds.to_bytes();
        assert_eq!(bytes[5], ENC_U8);
        let back = Dataset::from_bytes("w", &bytes, &Limits::default()).unwrap();
        assert_eq!(back, ds);
    }

    #[test]
    fn arbitrary_floats_use_f32() {
        let ds = Dataset::new("f", vec![0.1, -3.5, 1e-9, 7.25], vec![1, 0], vec![2], 2).unwrap();
        let bytes = ds.to_bytes();
        assert_eq!(bytes[5], ENC_F32);
        assert_eq!(
            Dataset::from_bytes("w", &bytes, &Limits::default()).unwrap(),
            ds
        );
    }

    #[test]
    fn shard_bytes_equal_subset_bytes() {
        let ds = pixels();
        let shard = Shard::new(vec![3, 1]);
        let bytes = ds.shard_to_bytes(&shard).unwrap();
        let back = Dataset::from_bytes("w", &bytes, &Limits::default()).unwrap();
        assert_eq!(back, ds.subset(&shard).unwrap());
        assert!(ds.shard_to_bytes(&Shard::new(vec![4])).is_err());
    }

    /// Found by the `shard_wire` fuzz target: a dataset of byte values with
    /// a `-0.0` among them was byte-encoded and came back with `+0.0`.
    #[test]
    fn negative_zero_round_trips_bit_exactly() {
        let ds = Dataset::new("z", vec![-0.0, 2.0, 0.0, 128.0], vec![0, 1], vec![2], 2).unwrap();
        let bytes = ds.to_bytes();
        assert_eq!(bytes[5], ENC_F32);
        let back = Dataset::from_bytes("z", &bytes, &Limits::default()).unwrap();
        let bits = |d: &Dataset| d.features().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&ds));
        // Positive zeros still take one byte per value.
        let ds = Dataset::new("z", vec![0.0, 2.0], vec![0], vec![2], 1).unwrap();
        assert_eq!(ds.to_bytes()[5], ENC_U8);
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        let bytes = pixels().to_bytes();
        for cut in 0..bytes.len() {
            let e = Dataset::from_bytes("cut", &bytes[..cut], &Limits::default()).unwrap_err();
            assert!(e.to_string().starts_with("cut: "), "{e}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Dataset::from_bytes("l", &long, &Limits::default()).is_err());
    }

    #[test]
    fn corrupted_fields_are_errors() {
        let good = pixels().to_bytes();
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(
            Dataset::from_bytes("m", &b, &Limits::default()),
            Err(DataError::BadMagic { .. })
        ));
        let mut b = good.clone();
        b[4] = 9;
        assert!(Dataset::from_bytes("v", &b, &Limits::default()).is_err());
        let mut b = good.clone();
        b[5] = 7;
        assert!(Dataset::from_bytes("e", &b, &Limits::default()).is_err());
        // A label of 5 with 3 classes.
        let mut b = good.clone();
        let label_at = 4 + 4 + 8 + 12 + 4;
        b[label_at] = 5;
        assert!(matches!(
            Dataset::from_bytes("l", &b, &Limits::default()),
            Err(DataError::LabelOutOfRange { label: 5, .. })
        ));
        // A huge declared sample count is refused before allocating.
        let mut b = good.clone();
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Dataset::from_bytes("n", &b, &Limits::default()),
            Err(DataError::TooLarge { .. })
        ));
        // NaN in the f32 encoding.
        let ds = Dataset::new("f", vec![0.5, 0.25], vec![0], vec![2], 1).unwrap();
        let mut b = ds.to_bytes();
        let len = b.len();
        b[len - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            Dataset::from_bytes("nan", &b, &Limits::default()),
            Err(DataError::NonFinite { .. })
        ));
    }
}
