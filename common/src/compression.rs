//! Update compression (ROG's DEFSGDM and friends): what a sender puts on
//! the wire instead of a dense `f32` delta, and how a receiver reads it back.
//!
//! * `none` — the dense delta.
//! * `sign_ef` — one bit per value and one scale per tensor (the mean of
//!   the tensor's absolute values, so each tensor's L1 norm is kept).
//! * `int8` — one `i8` per value and one scale per row (`max |x| / 127`).
//! * `topk` — the largest-magnitude fraction of values, as positions and
//!   exact values.
//!
//! Every kind but `none` is lossy, so it is meant to run with *error
//! feedback*: what was not transmitted stays on the sender and is added to
//! the next update ([`ErrorFeedback`]), so nothing is lost, only delayed.
//! A worker gets the same for free by advancing its base by the
//! *transmitted* delta instead of the true one.
//!
//! An [`Encoded`] update describes its own segments, so a receiver decodes
//! it knowing only the model's length, and refuses anything inconsistent
//! with a [`CompressionError`] naming what was wrong.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::rows::RowLayout;

/// The top-k fraction when `topk` names none.
pub const DEFAULT_TOPK_FRACTION: f64 = 0.01;

/// Which compression a sender uses. In a config: `"none"`, `"sign_ef"`,
/// `"int8"`, `"topk"` (1 %) or `"topk:0.05"`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Compression {
    /// Dense `f32`.
    #[default]
    None,
    /// Sign bits and one scale per tensor.
    SignEf,
    /// `i8` values and one scale per row.
    Int8,
    /// The largest `fraction` of values (0 < fraction ≤ 1).
    TopK {
        /// Share of values kept.
        fraction: f64,
    },
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::SignEf => f.write_str("sign_ef"),
            Compression::Int8 => f.write_str("int8"),
            Compression::TopK { fraction } => write!(f, "topk:{fraction}"),
        }
    }
}

impl FromStr for Compression {
    type Err = CompressionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CompressionError::UnknownKind(s.to_string());
        match s {
            "none" => Ok(Compression::None),
            "sign_ef" => Ok(Compression::SignEf),
            "int8" => Ok(Compression::Int8),
            "topk" => Ok(Compression::TopK {
                fraction: DEFAULT_TOPK_FRACTION,
            }),
            _ => {
                let f = s.strip_prefix("topk:").ok_or_else(bad)?;
                let fraction: f64 = f.parse().map_err(|_| bad())?;
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(CompressionError::BadFraction(fraction));
                }
                Ok(Compression::TopK { fraction })
            }
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an encoded update cannot be read (or a kind not parsed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompressionError {
    /// A `compression` value that names no kind.
    #[error("unknown compression {0:?} (expected none, sign_ef, int8, topk or topk:<fraction>)")]
    UnknownKind(String),
    /// A top-k fraction outside (0, 1].
    #[error("top-k fraction {0} is not in (0, 1]")]
    BadFraction(f64),
    /// The segments do not cover the model.
    #[error("the encoded update covers {got} values, the model has {expected}")]
    Length {
        /// What the segments add up to.
        got: usize,
        /// The model's length.
        expected: usize,
    },
    /// A part of the encoding has the wrong size.
    #[error("{what}: {got} entries where {expected} were expected")]
    Size {
        /// Which part.
        what: &'static str,
        /// Its size.
        got: usize,
        /// The size it must have.
        expected: usize,
    },
    /// A scale or value that is NaN or infinite (or a negative scale).
    #[error("{what} {index}: {value} is not a finite (non-negative scale) value")]
    NotFinite {
        /// Which part.
        what: &'static str,
        /// Where.
        index: usize,
        /// What.
        value: f32,
    },
    /// A top-k position outside the model or not increasing.
    #[error("top-k position {position} at entry {index} is out of range or not increasing")]
    Position {
        /// Where in the list.
        index: usize,
        /// The position.
        position: u32,
    },
}

/// An update as it travels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Encoded {
    /// Every value.
    Dense(Vec<f32>),
    /// Sign bits (bit `i % 8` of byte `i / 8`, set = positive) and one
    /// scale per segment.
    Sign {
        /// Length of each segment (a tensor), in order.
        segments: Vec<u32>,
        /// One scale per segment.
        scales: Vec<f32>,
        /// One bit per value.
        #[serde(with = "crate::protocol::byte_buf")]
        bits: Vec<u8>,
    },
    /// `i8` values with one scale per segment (a row).
    Int8 {
        /// Length of each segment, in order.
        segments: Vec<u32>,
        /// One scale per segment.
        scales: Vec<f32>,
        /// One value per model value (as `u8` bit patterns of `i8`).
        #[serde(with = "crate::protocol::byte_buf")]
        values: Vec<u8>,
    },
    /// The kept values; all others are zero.
    Sparse {
        /// The model's length.
        len: u32,
        /// Increasing positions.
        positions: Vec<u32>,
        /// Their values.
        values: Vec<f32>,
    },
}

/// Encodes `x` with `kind`. `layout` gives the tensors (for `sign_ef`) and
/// rows (for `int8`); without one (or one of another length) the whole
/// model is one segment.
pub fn encode(kind: Compression, x: &[f32], layout: Option<&RowLayout>) -> Encoded {
    match kind {
        Compression::None => Encoded::Dense(x.to_vec()),
        Compression::SignEf => {
            let segments = segments(x.len(), layout, Granularity::Tensor);
            let mut scales = Vec::with_capacity(segments.len());
            let mut bits = vec![0u8; x.len().div_ceil(8)];
            for r in &segments {
                let part = &x[r.clone()];
                let l1: f64 = part.iter().map(|v| f64::from(v.abs())).sum();
                scales.push((l1 / part.len().max(1) as f64) as f32);
                for (i, v) in part.iter().enumerate() {
                    if *v > 0.0 {
                        let at = r.start + i;
                        bits[at / 8] |= 1 << (at % 8);
                    }
                }
            }
            Encoded::Sign {
                segments: lengths(&segments),
                scales,
                bits,
            }
        }
        Compression::Int8 => {
            let segments = segments(x.len(), layout, Granularity::Row);
            let mut scales = Vec::with_capacity(segments.len());
            let mut values = Vec::with_capacity(x.len());
            for r in &segments {
                let part = &x[r.clone()];
                let max = part.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = max / 127.0;
                scales.push(scale);
                for v in part {
                    let q = if scale > 0.0 {
                        (v / scale).round().clamp(-127.0, 127.0) as i8
                    } else {
                        0
                    };
                    values.push(q as u8);
                }
            }
            Encoded::Int8 {
                segments: lengths(&segments),
                scales,
                values,
            }
        }
        Compression::TopK { fraction } => {
            let k = ((x.len() as f64 * fraction).ceil() as usize).clamp(1, x.len().max(1));
            let mut order: Vec<u32> = (0..x.len() as u32).collect();
            if k < order.len() {
                order.select_nth_unstable_by(k - 1, |a, b| {
                    x[*b as usize].abs().total_cmp(&x[*a as usize].abs())
                });
                order.truncate(k);
            }
            order.sort_unstable();
            order.retain(|&p| x[p as usize] != 0.0);
            let values = order.iter().map(|&p| x[p as usize]).collect();
            Encoded::Sparse {
                len: x.len() as u32,
                positions: order,
                values,
            }
        }
    }
}

/// Reads an encoded update back into `expected` values.
pub fn decode(e: &Encoded, expected: usize) -> Result<Vec<f32>, CompressionError> {
    match e {
        Encoded::Dense(v) => {
            check_len(v.len(), expected)?;
            check_finite("value", v)?;
            Ok(v.clone())
        }
        Encoded::Sign {
            segments,
            scales,
            bits,
        } => {
            let ranges = scaled_ranges(segments, scales, expected)?;
            check_size("sign bytes", bits.len(), expected.div_ceil(8))?;
            let mut out = vec![0f32; expected];
            for (r, s) in ranges.iter().zip(scales) {
                for at in r.clone() {
                    let positive = bits[at / 8] & (1 << (at % 8)) != 0;
                    out[at] = if positive { *s } else { -*s };
                }
            }
            Ok(out)
        }
        Encoded::Int8 {
            segments,
            scales,
            values,
        } => {
            let ranges = scaled_ranges(segments, scales, expected)?;
            check_size("int8 values", values.len(), expected)?;
            let mut out = vec![0f32; expected];
            for (r, s) in ranges.iter().zip(scales) {
                for at in r.clone() {
                    out[at] = f32::from(values[at] as i8) * s;
                }
            }
            Ok(out)
        }
        Encoded::Sparse {
            len,
            positions,
            values,
        } => {
            check_len(*len as usize, expected)?;
            check_size("top-k values", values.len(), positions.len())?;
            check_finite("top-k value", values)?;
            let mut out = vec![0f32; expected];
            let mut next = 0usize;
            for (index, (&p, &v)) in positions.iter().zip(values).enumerate() {
                let at = p as usize;
                if at < next || at >= expected {
                    return Err(CompressionError::Position { index, position: p });
                }
                out[at] = v;
                next = at + 1;
            }
            Ok(out)
        }
    }
}

/// Error feedback on a sender: what was not transmitted is added to the
/// next update, so the sum of transmitted updates trails the sum of true
/// ones by exactly the (bounded) residual.
#[derive(Clone, Debug, Default)]
pub struct ErrorFeedback {
    residual: Vec<f32>,
}

impl ErrorFeedback {
    /// Encodes `update + residual` and keeps what the encoding lost.
    pub fn encode(
        &mut self,
        kind: Compression,
        update: &[f32],
        layout: Option<&RowLayout>,
    ) -> Encoded {
        if self.residual.len() != update.len() {
            self.residual = vec![0.0; update.len()];
        }
        let corrected: Vec<f32> = update
            .iter()
            .zip(&self.residual)
            .map(|(u, r)| u + r)
            .collect();
        let encoded = encode(kind, &corrected, layout);
        match decode(&encoded, corrected.len()) {
            Ok(sent) => {
                for ((r, c), s) in self.residual.iter_mut().zip(&corrected).zip(&sent) {
                    *r = c - s;
                }
            }
            // Only a non-finite input can fail here: nothing was sent of it.
            Err(_) => self.residual = corrected,
        }
        encoded
    }

    /// What has not been transmitted yet.
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }
}

#[derive(Clone, Copy)]
enum Granularity {
    Tensor,
    Row,
}

fn segments(len: usize, layout: Option<&RowLayout>, g: Granularity) -> Vec<Range<usize>> {
    let Some(layout) = layout.filter(|l| l.values() == len && !l.is_empty()) else {
        return std::iter::once(0..len).collect();
    };
    match g {
        Granularity::Row => layout.rows().iter().map(|r| r.range.clone()).collect(),
        Granularity::Tensor => {
            let mut out: Vec<(usize, Range<usize>)> = Vec::new();
            for r in layout.rows() {
                match out.last_mut() {
                    Some((t, range)) if *t == r.tensor => range.end = r.range.end,
                    _ => out.push((r.tensor, r.range.clone())),
                }
            }
            out.into_iter().map(|(_, r)| r).collect()
        }
    }
}

fn lengths(ranges: &[Range<usize>]) -> Vec<u32> {
    ranges.iter().map(|r| r.len() as u32).collect()
}

/// The ranges of `segments` (which must cover `expected` values), each with
/// its scale (one per segment, finite, non-negative).
fn scaled_ranges(
    segments: &[u32],
    scales: &[f32],
    expected: usize,
) -> Result<Vec<Range<usize>>, CompressionError> {
    let ranges = ranges_of(segments, expected)?;
    check_size("scales", scales.len(), ranges.len())?;
    check_scales(scales)?;
    Ok(ranges)
}

fn ranges_of(segments: &[u32], expected: usize) -> Result<Vec<Range<usize>>, CompressionError> {
    let mut out = Vec::with_capacity(segments.len());
    let mut at = 0usize;
    for &s in segments {
        let end = at.saturating_add(s as usize);
        out.push(at..end.min(expected));
        at = end;
    }
    check_len(at, expected)?;
    Ok(out)
}

fn check_len(got: usize, expected: usize) -> Result<(), CompressionError> {
    if got == expected {
        Ok(())
    } else {
        Err(CompressionError::Length { got, expected })
    }
}

fn check_size(what: &'static str, got: usize, expected: usize) -> Result<(), CompressionError> {
    if got == expected {
        Ok(())
    } else {
        Err(CompressionError::Size {
            what,
            got,
            expected,
        })
    }
}

fn check_finite(what: &'static str, v: &[f32]) -> Result<(), CompressionError> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(index) => Err(CompressionError::NotFinite {
            what,
            index,
            value: v[index],
        }),
    }
}

fn check_scales(scales: &[f32]) -> Result<(), CompressionError> {
    match scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
        None => Ok(()),
        Some(index) => Err(CompressionError::NotFinite {
            what: "scale",
            index,
            value: scales[index],
        }),
    }
}

#[cfg(test)]
mod tests;
