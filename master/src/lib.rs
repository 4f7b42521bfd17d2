//! # master — the hermes-rs parameter server
//!
//! A map of the crate, one line per component:
//!
//! * [`config`] — `conf/master.json`: dataset, model, training plan, gate, allocation, policy, stop.
//! * [`coordinator`] — the master's decisions as a state machine (events in, actions out, no I/O).
//! * [`run`] — the I/O shell around it: deliveries → events, actions → Kafka, files, evaluation.
//! * [`agents`] — the run offered to long-lived workers (`worker --agent`) on the agents channel.
//! * [`registry`] — the workers: liveness, incarnations, per-worker statistics.
//! * [`workload`] — the dataset split, shard bytes, validation splits, test evaluation.
//! * [`allocation`] — dynamic dataset allocation (shard sizes from measured throughput).
//! * [`aggregation`] — aggregation weights, update admission, the at-most-once ledger.
//! * [`policy`] — the sync policy trait and one file per policy (Hermes, BSP, ASP, SSP).
//! * [`delivery`] — how globals and shards reach workers (targeted or broadcast), sent per worker in order, workers at once.
//! * [`phases`] — the round-phase profile: where each version's time went (`phases.csv`).
//! * [`checkpoint`] — the global model on disk after every version.
//! * [`outputs`] / [`run_outputs`] — metrics.csv, summary.json, plot, centralized log, status file, progress.
//! * [`deploy`] — `master deploy`: bootstrap remote workers over SSH.
//! * [`testbed`] — `master testbed`: namespaces, shaped links, CPU/memory caps, trace replay.
//! * [`bench`] — `master bench`: every policy on a testbed profile, compared.
//!
//! `master` never talks to Kafka except through `common::transport`.

pub mod agents;
pub mod aggregation;
pub mod allocation;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod coordinator;
pub mod delivery;
pub mod deploy;
pub mod outputs;
pub mod phases;
pub mod policy;
pub mod registry;
pub mod run;
pub mod run_outputs;
pub mod samples;
pub mod testbed;
pub mod workload;
