//! Link rates written as `tc` writes them.
//!
//! `kbit`, `mbit`, `gbit` (and plain `bit`) are bits per second with SI
//! prefixes (1 mbit = 1,000,000 bit/s). EdgeTB's `links.json` writes `kbps`
//! and `mbps`, which `tc` reads as **bytes** per second (1 mbps = 8 mbit);
//! those are accepted with that meaning and a warning that states the bit
//! rate, so an imported profile shapes exactly what EdgeTB shaped.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The slowest rate a link may be given (tc cannot shape to zero).
pub const MIN_RATE_BITS: u64 = 8_000;

/// A link rate in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate {
    bits_per_sec: u64,
}

/// A rate string that is not one.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("rate `{text}`: {why}")]
pub struct RateError {
    text: String,
    why: String,
}

impl Rate {
    /// A rate of `bits_per_sec`.
    pub fn from_bits(bits_per_sec: u64) -> Self {
        Self { bits_per_sec }
    }

    /// A rate of `mbit` megabits per second (trace values), at least [`MIN_RATE_BITS`].
    pub fn from_mbit(mbit: f64) -> Self {
        let bits = if mbit.is_finite() && mbit > 0.0 {
            (mbit * 1e6).round() as u64
        } else {
            0
        };
        Self::from_bits(bits.max(MIN_RATE_BITS))
    }

    /// Bits per second.
    pub fn bits_per_sec(self) -> u64 {
        self.bits_per_sec
    }

    /// Megabits per second.
    pub fn mbit(self) -> f64 {
        self.bits_per_sec as f64 / 1e6
    }

    /// The argument for `tc ... rate`.
    pub fn tc_arg(self) -> String {
        format!("{}bit", self.bits_per_sec)
    }

    /// Parses `20mbit`, `500kbit`, `1.5mbit`, `1gbit`, `64000bit`, or EdgeTB's
    /// byte rates `5mbps` / `300kbps`. Returns the rate and, for byte rates,
    /// a warning that says what bit rate it means.
    pub fn parse(text: &str) -> Result<(Rate, Option<String>), RateError> {
        let err = |why: &str| RateError {
            text: text.to_string(),
            why: why.to_string(),
        };
        let t = text.trim().to_ascii_lowercase();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("no unit (write e.g. `20mbit`, `500kbit`)"))?;
        let (number, unit) = t.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| err("not a number before the unit"))?;
        let (scale, bytes) = match unit.trim() {
            "bit" => (1.0, false),
            "kbit" => (1e3, false),
            "mbit" => (1e6, false),
            "gbit" => (1e9, false),
            "bps" => (1.0, true),
            "kbps" => (1e3, true),
            "mbps" => (1e6, true),
            "gbps" => (1e9, true),
            _ => return Err(err(
                "unknown unit (bit, kbit, mbit, gbit; or tc's byte rates bps, kbps, mbps, gbps)",
            )),
        };
        let bits = value * scale * if bytes { 8.0 } else { 1.0 };
        if !bits.is_finite() || bits < MIN_RATE_BITS as f64 {
            return Err(err("below the slowest rate tc shapes here (8kbit)"));
        }
        if bits > 100e9 {
            return Err(err("above 100gbit"));
        }
        let rate = Rate::from_bits(bits.round() as u64);
        let warning = bytes.then(|| {
            format!(
                "rate `{text}` is tc's bytes per second (as in EdgeTB): shaping to {rate} ({} Mbit/s); write `{}` to say so",
                rate.mbit(),
                rate
            )
        });
        Ok((rate, warning))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bits_per_sec;
        if b >= 1_000_000_000 && b.is_multiple_of(1_000_000_000) {
            write!(f, "{}gbit", b / 1_000_000_000)
        } else if b >= 1_000_000 && b.is_multiple_of(1_000_000) {
            write!(f, "{}mbit", b / 1_000_000)
        } else if b >= 1_000_000 {
            write!(f, "{}mbit", b as f64 / 1e6)
        } else if b.is_multiple_of(1000) {
            write!(f, "{}kbit", b / 1000)
        } else {
            write!(f, "{b}bit")
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let (rate, warning) = Rate::parse(&text).map_err(serde::de::Error::custom)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        Ok(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_rates_use_si_prefixes() {
        assert_eq!(Rate::parse("20mbit").unwrap().0.bits_per_sec(), 20_000_000);
        assert_eq!(Rate::parse("500kbit").unwrap().0.bits_per_sec(), 500_000);
        assert_eq!(Rate::parse("1.5mbit").unwrap().0.bits_per_sec(), 1_500_000);
        assert_eq!(
            Rate::parse("1gbit").unwrap().0.bits_per_sec(),
            1_000_000_000
        );
        assert_eq!(Rate::parse(" 64000bit ").unwrap().0.bits_per_sec(), 64_000);
        assert!(Rate::parse("20mbit").unwrap().1.is_none());
    }

    #[test]
    fn edgetb_byte_rates_mean_bytes_and_warn() {
        let (r, w) = Rate::parse("5mbps").unwrap();
        assert_eq!(r.bits_per_sec(), 40_000_000);
        let w = w.unwrap();
        assert!(w.contains("40mbit"), "{w}");
        assert_eq!(Rate::parse("300kbps").unwrap().0.bits_per_sec(), 2_400_000);
    }

    #[test]
    fn bad_rates_are_named() {
        for bad in [
            "", "20", "mbit", "20 mbits", "-1mbit", "0kbit", "1kbit", "1e3mbit", "200gbit",
        ] {
            let e = Rate::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["20mbit", "500kbit", "1gbit", "1.5mbit", "12345bit"] {
            let r = Rate::parse(s).unwrap().0;
            assert_eq!(r.to_string(), s);
            assert_eq!(Rate::parse(&r.to_string()).unwrap().0, r);
        }
        assert_eq!(Rate::from_mbit(0.0).bits_per_sec(), MIN_RATE_BITS);
        assert_eq!(Rate::from_mbit(2.5).tc_arg(), "2500000bit");
    }
}
