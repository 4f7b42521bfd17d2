//! The trace file format: one sample a line, `<seconds> <Mbit/s>`.
//!
//! ```text
//! # comments start with '#', anywhere on a line; blank lines are ignored
//! 0.0   34.2
//! 0.5   31.9    # a trailing comment
//! 1.0   2.25
//! ```
//!
//! Times are finite, at least 0 and strictly increasing; rates are finite and
//! at least 0. A trace holds at least [`MIN_SAMPLES`] samples, and a file is at
//! most [`MAX_TRACE_BYTES`] long. Every bad line is an error that names the
//! file and the line; nothing is skipped silently.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Largest trace file [`Trace::load`] reads: 16 MiB (about a million samples).
pub const MAX_TRACE_BYTES: u64 = 16 * 1024 * 1024;

/// Fewest samples a trace holds: two, so the last sampling interval is known.
pub const MIN_SAMPLES: usize = 2;

/// One sample of a trace: from `time_s` on, the link carries `rate_mbit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the start of the recording.
    pub time_s: f64,
    /// Bandwidth in Mbit/s (10^6 bit/s).
    pub rate_mbit: f64,
}

/// Which of the two fields of a line was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The first field, seconds.
    Time,
    /// The second field, Mbit/s.
    Rate,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Time => "time (seconds)",
            Field::Rate => "rate (Mbit/s)",
        })
    }
}

/// Why a trace could not be read or built.
///
/// `origin` is the file name given to [`Trace::parse`] (the path for
/// [`Trace::load`]); `line` counts from 1.
#[derive(Error, Debug)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("cannot read trace file {}: {source}", path.display())]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file is longer than [`MAX_TRACE_BYTES`].
    #[error("{origin}: trace file is larger than the limit of {max} bytes")]
    TooLarge {
        /// The file.
        origin: String,
        /// The limit, [`MAX_TRACE_BYTES`].
        max: u64,
    },
    /// The file is not UTF-8 text.
    #[error("{origin}:{line}: not UTF-8 text")]
    NotText {
        /// The file.
        origin: String,
        /// The line holding the first invalid byte.
        line: usize,
    },
    /// A line does not hold exactly two fields.
    #[error("{origin}:{line}: expected two fields `<seconds> <Mbit/s>`, found {found}: {text:?}")]
    FieldCount {
        /// The file.
        origin: String,
        /// The line.
        line: usize,
        /// How many whitespace-separated fields it holds.
        found: usize,
        /// The line, comment removed.
        text: String,
    },
    /// A field is not a number.
    #[error("{origin}:{line}: {field} is not a number: {text:?}")]
    NotANumber {
        /// The file.
        origin: String,
        /// The line.
        line: usize,
        /// Which field.
        field: Field,
        /// The field's text.
        text: String,
    },
    /// A field is infinite or NaN.
    #[error("{origin}:{line}: {field} must be finite, found {text:?}")]
    NotFinite {
        /// The file.
        origin: String,
        /// The line.
        line: usize,
        /// Which field.
        field: Field,
        /// The field's text.
        text: String,
    },
    /// A field is below zero.
    #[error("{origin}:{line}: {field} must be at least 0, found {value}")]
    Negative {
        /// The file.
        origin: String,
        /// The line.
        line: usize,
        /// Which field.
        field: Field,
        /// The value.
        value: f64,
    },
    /// A time is not after the one on the previous sample line.
    #[error(
        "{origin}:{line}: times must be strictly increasing, but {time} s follows {previous} s (line {previous_line})"
    )]
    NotIncreasing {
        /// The file.
        origin: String,
        /// The line.
        line: usize,
        /// Its time.
        time: f64,
        /// The previous sample's time.
        previous: f64,
        /// The previous sample's line.
        previous_line: usize,
    },
    /// Fewer than [`MIN_SAMPLES`] samples.
    #[error("{origin}: a trace needs at least {min} samples, found {found}")]
    TooFewSamples {
        /// The file.
        origin: String,
        /// How many samples it holds.
        found: usize,
        /// The minimum, [`MIN_SAMPLES`].
        min: usize,
    },
}

/// A bandwidth trace: samples of (seconds, Mbit/s), times strictly increasing.
///
/// The rate of a sample holds from its time until the next sample's time.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    samples: Vec<Sample>,
}

impl Trace {
    /// A trace from samples built in memory; they obey the same rules as a
    /// file's (`origin` names them in errors; "line" is the 1-based index).
    pub fn from_samples(samples: Vec<Sample>, origin: &str) -> Result<Self, TraceError> {
        let mut previous: Option<(f64, usize)> = None;
        for (i, s) in samples.iter().enumerate() {
            let line = i + 1;
            check_value(s.time_s, Field::Time, origin, line)?;
            check_value(s.rate_mbit, Field::Rate, origin, line)?;
            check_order(s.time_s, previous, origin, line)?;
            previous = Some((s.time_s, line));
        }
        check_count(samples.len(), origin)?;
        Ok(Self { samples })
    }

    /// Parses trace text; `origin_name` (a file name) appears in every error.
    pub fn parse(text: &str, origin_name: &str) -> Result<Self, TraceError> {
        let mut samples = Vec::new();
        let mut previous: Option<(f64, usize)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split_once('#').map_or(raw, |(before, _)| before);
            let fields: Vec<&str> = content.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let [time_text, rate_text] = fields[..] else {
                return Err(TraceError::FieldCount {
                    origin: origin_name.to_string(),
                    line,
                    found: fields.len(),
                    text: content.trim().to_string(),
                });
            };
            let time_s = parse_field(time_text, Field::Time, origin_name, line)?;
            let rate_mbit = parse_field(rate_text, Field::Rate, origin_name, line)?;
            check_order(time_s, previous, origin_name, line)?;
            previous = Some((time_s, line));
            samples.push(Sample { time_s, rate_mbit });
        }
        check_count(samples.len(), origin_name)?;
        Ok(Self { samples })
    }

    /// Reads and parses a trace file of at most [`MAX_TRACE_BYTES`].
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let origin = path.display().to_string();
        let read_error = |source| TraceError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_TRACE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_TRACE_BYTES {
            return Err(TraceError::TooLarge {
                origin,
                max: MAX_TRACE_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            TraceError::NotText {
                origin: origin.clone(),
                line,
            }
        })?;
        Self::parse(&text, &origin)
    }

    /// Writes the trace in the file format: each line of `header` as a `# `
    /// comment, then one `<seconds> <Mbit/s>` line per sample (numbers in the
    /// shortest form that reads back to the same value).
    pub fn write(&self, w: &mut dyn Write, header: Option<&str>) -> io::Result<()> {
        if let Some(header) = header {
            for line in header.lines() {
                if line.is_empty() {
                    writeln!(w, "#")?;
                } else {
                    writeln!(w, "# {line}")?;
                }
            }
        }
        for s in &self.samples {
            writeln!(w, "{} {}", s.time_s, s.rate_mbit)?;
        }
        Ok(())
    }

    /// The samples, times strictly increasing; at least [`MIN_SAMPLES`].
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Time of the first sample, seconds.
    pub fn first_time(&self) -> f64 {
        self.samples.first().map_or(0.0, |s| s.time_s)
    }

    /// Time of the last sample, seconds.
    pub fn last_time(&self) -> f64 {
        self.samples.last().map_or(0.0, |s| s.time_s)
    }

    /// The interval between the last two samples, seconds (> 0).
    pub fn last_interval(&self) -> f64 {
        match self.samples[..] {
            [.., a, b] => b.time_s - a.time_s,
            _ => 0.0,
        }
    }

    /// How long one pass of the trace lasts when it repeats: last time −
    /// first time + the last sampling interval (the last sample is held for
    /// one interval).
    pub fn period(&self) -> f64 {
        self.last_time() - self.first_time() + self.last_interval()
    }
}

fn parse_field(text: &str, field: Field, origin: &str, line: usize) -> Result<f64, TraceError> {
    let value: f64 = text.parse().map_err(|_| TraceError::NotANumber {
        origin: origin.to_string(),
        line,
        field,
        text: text.to_string(),
    })?;
    if !value.is_finite() {
        return Err(TraceError::NotFinite {
            origin: origin.to_string(),
            line,
            field,
            text: text.to_string(),
        });
    }
    check_value(value, field, origin, line)?;
    // "-0" reads as 0, so it writes back as "0".
    Ok(if value == 0.0 { 0.0 } else { value })
}

fn check_value(value: f64, field: Field, origin: &str, line: usize) -> Result<(), TraceError> {
    if !value.is_finite() {
        return Err(TraceError::NotFinite {
            origin: origin.to_string(),
            line,
            field,
            text: value.to_string(),
        });
    }
    if value < 0.0 {
        return Err(TraceError::Negative {
            origin: origin.to_string(),
            line,
            field,
            value,
        });
    }
    Ok(())
}

fn check_order(
    time: f64,
    previous: Option<(f64, usize)>,
    origin: &str,
    line: usize,
) -> Result<(), TraceError> {
    match previous {
        Some((previous, previous_line)) if time <= previous => Err(TraceError::NotIncreasing {
            origin: origin.to_string(),
            line,
            time,
            previous,
            previous_line,
        }),
        _ => Ok(()),
    }
}

fn check_count(found: usize, origin: &str) -> Result<(), TraceError> {
    if found < MIN_SAMPLES {
        return Err(TraceError::TooFewSamples {
            origin: origin.to_string(),
            found,
            min: MIN_SAMPLES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Trace::parse(text, "t.txt") {
            Ok(t) => panic!("expected an error, parsed {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_comments_blank_lines_and_whitespace() {
        let text = "# header\n\n0 10\n  0.5\t12.5  # trailing\n\n1.0 0\n#end\n";
        let t = Trace::parse(text, "t.txt").expect("valid");
        assert_eq!(
            t.samples(),
            &[
                Sample {
                    time_s: 0.0,
                    rate_mbit: 10.0
                },
                Sample {
                    time_s: 0.5,
                    rate_mbit: 12.5
                },
                Sample {
                    time_s: 1.0,
                    rate_mbit: 0.0
                },
            ]
        );
        assert_eq!(t.first_time(), 0.0);
        assert_eq!(t.last_time(), 1.0);
        assert_eq!(t.last_interval(), 0.5);
        assert_eq!(t.period(), 1.5);
    }

    #[test]
    fn period_counts_from_the_first_sample() {
        let t = Trace::parse("10 1\n12 2\n13 3\n", "t").expect("valid");
        assert_eq!(t.period(), 4.0);
    }

    #[test]
    fn each_bad_line_names_file_and_line() {
        let cases = [
            ("0 1\n\n0.5\n", "t.txt:3: expected two fields"),
            (
                "0 1\n0.5 2 3\n",
                "t.txt:2: expected two fields `<seconds> <Mbit/s>`, found 3",
            ),
            (
                "0 1\nabc 2\n",
                "t.txt:2: time (seconds) is not a number: \"abc\"",
            ),
            (
                "0 1\n1 fast\n",
                "t.txt:2: rate (Mbit/s) is not a number: \"fast\"",
            ),
            ("0 1\ninf 2\n", "t.txt:2: time (seconds) must be finite"),
            ("0 1\n1 NaN\n", "t.txt:2: rate (Mbit/s) must be finite"),
            (
                "-1 1\n1 2\n",
                "t.txt:1: time (seconds) must be at least 0, found -1",
            ),
            (
                "0 1\n1 -2\n",
                "t.txt:2: rate (Mbit/s) must be at least 0, found -2",
            ),
            (
                "# c\n0 1\n1 2\n1 3\n",
                "t.txt:4: times must be strictly increasing, but 1 s follows 1 s (line 3)",
            ),
            (
                "0 1\n2 2\n1 3\n",
                "t.txt:3: times must be strictly increasing",
            ),
            (
                "# only\n0 1\n",
                "t.txt: a trace needs at least 2 samples, found 1",
            ),
            ("", "t.txt: a trace needs at least 2 samples, found 0"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.starts_with(want),
                "for {text:?}: got {got:?}, want prefix {want:?}"
            );
        }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let t = Trace::parse("0 0.1\n0.5 33.333\n1.25 250\n", "t").expect("valid");
        let mut out = Vec::new();
        t.write(&mut out, Some("synthetic\n\nsecond line"))
            .expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("# synthetic\n#\n# second line\n0 0.1\n0.5 33.333\n1.25 250\n"));
        assert_eq!(Trace::parse(&text, "t").expect("reparse"), t);
        let mut bare = Vec::new();
        t.write(&mut bare, None).expect("write");
        assert_eq!(
            String::from_utf8(bare).expect("utf8"),
            "0 0.1\n0.5 33.333\n1.25 250\n"
        );
    }

    #[test]
    fn load_names_the_path_and_enforces_the_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.txt");
        std::fs::write(&good, "0 1\n1 2\n").expect("write");
        assert_eq!(Trace::load(&good).expect("load").samples().len(), 2);

        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "0 1\n1 x\n").expect("write");
        let msg = Trace::load(&bad).expect_err("bad").to_string();
        assert!(msg.starts_with(&format!("{}:2:", bad.display())), "{msg}");

        let binary = dir.path().join("bin.txt");
        std::fs::write(&binary, b"0 1\n1 2\n\xff\xfe\n").expect("write");
        let msg = Trace::load(&binary).expect_err("binary").to_string();
        assert!(msg.ends_with(":3: not UTF-8 text"), "{msg}");

        let missing = dir.path().join("missing.txt");
        let msg = Trace::load(&missing).expect_err("missing").to_string();
        assert!(msg.contains("missing.txt"), "{msg}");

        let big = dir.path().join("big.txt");
        let file = std::fs::File::create(&big).expect("create");
        file.set_len(MAX_TRACE_BYTES + 1).expect("set_len");
        let msg = Trace::load(&big).expect_err("big").to_string();
        assert!(msg.contains("larger than the limit"), "{msg}");
    }

    #[test]
    fn from_samples_checks_like_parse() {
        let ok = vec![
            Sample {
                time_s: 0.0,
                rate_mbit: 1.0,
            },
            Sample {
                time_s: 1.0,
                rate_mbit: 2.0,
            },
        ];
        assert!(Trace::from_samples(ok, "mem").is_ok());
        let bad = vec![
            Sample {
                time_s: 0.0,
                rate_mbit: 1.0,
            },
            Sample {
                time_s: 1.0,
                rate_mbit: f64::NAN,
            },
        ];
        let msg = Trace::from_samples(bad, "mem")
            .expect_err("nan")
            .to_string();
        assert!(
            msg.starts_with("mem:2: rate (Mbit/s) must be finite"),
            "{msg}"
        );
    }
}
