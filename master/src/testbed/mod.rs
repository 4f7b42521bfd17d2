//! `master testbed`: an emulated edge cluster on one machine (EdgeTB + ROG).
//!
//! * [`cgroup`] — CPU and memory caps per node (cgroup v1 or v2).
//! * [`trace`] — bandwidth traces: parsing, a seeded synthetic wireless model, replay schedule, recording.

pub mod cgroup;
pub mod trace;
