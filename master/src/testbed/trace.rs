//! Bandwidth traces for the testbed's shaped links, after ROG (MICRO 2022,
//! `scripts/replay_bandwidth.py`): a trace is a list of `<seconds> <Mbit/s>`
//! samples; each worker's link replays it from its own offset, scaled, and
//! wrapping around at the end.
//!
//! * [`format`](mod@format) — [`Trace`]: parse, load, write the file format.
//! * [`schedule`] — [`ReplaySchedule`]: offset, scale, floor, wrap or hold;
//!   the rate at a time and the change points.
//! * [`replay`](mod@replay) — [`replay()`]: applies the changes of many links
//!   at their planned times from a thread; [`AppliedRateCsv`] logs them.
//! * [`synth`] — a seeded synthetic wireless link model (Gilbert–Elliott +
//!   AR(1)) with `outdoor` and `indoor` presets. The shipped traces under
//!   `conf/testbed/traces/` are **synthetic**, made by this model.
//! * [`record`] — recording a trace from an interface's byte counters.
//! * [`cli`] — `synth` and `record` as clap arguments and run functions.

#![warn(missing_docs)]

pub mod cli;
pub mod format;
pub mod record;
pub mod replay;
pub mod schedule;
pub mod synth;

pub use cli::{run_record, run_synth, RecordArgs, SynthArgs, SHIPPED_TRACES};
pub use format::{Sample, Trace, TraceError, MAX_TRACE_BYTES};
pub use record::{record_trace, Direction, InterfaceCounter, RecordClock, RecordError};
pub use replay::{replay, AppliedRate, AppliedRateCsv, ReplayStats};
pub use schedule::{ChangePoint, ChangePoints, ReplaySchedule, ScheduleError};
pub use synth::{synthesize, Preset, SynthError, WirelessModel};
