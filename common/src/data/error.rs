//! The one error type of `common::data`.
//!
//! Every variant names its *origin*: the file it came from (its path as
//! displayed), or a short description such as `"shard payload"` for bytes
//! received over the wire. Loaders never panic on bad input; they return one
//! of these.

use std::path::PathBuf;

/// Everything that can go wrong while loading, validating, splitting or
/// decoding a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The input (after decompression) or a declared size is larger than the
    /// configured limit; nothing that large is allocated.
    #[error("{origin}: {what} is {size}, over the limit of {limit}")]
    TooLarge {
        /// File or payload.
        origin: String,
        /// What was too large (e.g. "decompressed size in bytes").
        what: String,
        /// The size found or declared (a lower bound when the read was cut off).
        size: u64,
        /// The limit in force.
        limit: u64,
    },

    /// The input ends before the header says it should.
    #[error("{origin}: truncated: {what} needs {expected} bytes, found {actual}")]
    Truncated {
        /// File or payload.
        origin: String,
        /// Which part is short.
        what: String,
        /// Bytes the header promised.
        expected: u64,
        /// Bytes actually present.
        actual: u64,
    },

    /// The input does not start with the expected magic number.
    #[error("{origin}: bad magic number {found:#010x}, expected {expected}")]
    BadMagic {
        /// File or payload.
        origin: String,
        /// The magic found (first bytes, big-endian).
        found: u32,
        /// What was expected, in words.
        expected: String,
    },

    /// The input is well-formed but does not describe what the caller asked
    /// for, or its parts disagree (image and label counts, trailing bytes,
    /// a sample shape that does not match the feature count...).
    #[error("{origin}: {reason}")]
    Format {
        /// File or payload.
        origin: String,
        /// What is wrong.
        reason: String,
    },

    /// A CSV cell is not a number (or not a valid label).
    #[error("{origin}: line {line}, column {column}: {reason}: {value:?}")]
    CsvCell {
        /// File.
        origin: String,
        /// 1-based line number in the (decompressed) file.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// The offending cell text (truncated to 40 characters).
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A CSV row has a different number of columns than the first row.
    #[error("{origin}: line {line}: expected {expected} columns, found {found}")]
    CsvRowLength {
        /// File.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// Columns in the first data row.
        expected: usize,
        /// Columns in this row.
        found: usize,
    },

    /// A label is negative or not below the number of classes.
    #[error("{origin}: sample {sample}: label {label} out of range 0..{num_classes}")]
    LabelOutOfRange {
        /// File or payload.
        origin: String,
        /// 0-based sample index.
        sample: usize,
        /// The label found.
        label: i64,
        /// Number of classes.
        num_classes: usize,
    },

    /// A feature is NaN or infinite.
    #[error("{origin}: sample {sample}, feature {feature}: value {value} is not finite")]
    NonFinite {
        /// File or payload.
        origin: String,
        /// 0-based sample index.
        sample: usize,
        /// 0-based feature index within the sample.
        feature: usize,
        /// The value found.
        value: f32,
    },

    /// An index (in a shard or a split request) does not fit the dataset.
    #[error("index {index} out of range for a dataset of {len} samples")]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// Dataset length.
        len: usize,
    },

    /// A caller passed an argument that cannot work (batch size 0, split
    /// sizes larger than the dataset, a scale of zero...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// Shorthand for [`DataError::Format`].
    pub(crate) fn format(origin: &str, reason: impl Into<String>) -> Self {
        DataError::Format {
            origin: origin.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`DataError::Truncated`].
    pub(crate) fn truncated(origin: &str, what: &str, expected: u64, actual: u64) -> Self {
        DataError::Truncated {
            origin: origin.to_string(),
            what: what.to_string(),
            expected,
            actual,
        }
    }
}
