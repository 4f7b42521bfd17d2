//! # common — everything the master and the workers share
//!
//! A map of the crate, one line per component:
//!
//! * [`config`] — typed configuration (file, then `HERMES_*` environment), unknown fields rejected.
//! * [`logging`] — one-time `tracing-subscriber` setup.
//! * [`auth`] — the shared HMAC key, read from a file or env var (never from the JSON config).
//! * [`runkey`] — which keys a node uses: configured, the master-made run key, or none with `kafka.insecure`.
//! * [`envelope`] — the wire envelope: magic, version, kind, run id, sender, sequence, payload, HMAC tag.
//! * [`chunking`] — splitting large payloads into records and reassembling them with bounded memory.
//! * [`protocol`] — the typed messages (registration, model, shards, updates, reports, logs).
//! * [`agents`] — the agents channel: long-lived workers announce themselves, masters open runs to them.
//! * [`transport`] — Kafka topics, producer and consumer built from config; typed `send`/`recv`.
//! * [`engine`] — training with lowered ONNX Runtime training artifacts; optimizers in Rust.
//! * [`data`] — dataset loaders (MNIST IDX, CIFAR-10 binary, CSV), splits and batching.
//! * [`stats`] — the loss gate (z-score window, Welch t-test).
//! * [`collective`] — ring all-reduce of a flat model: chunks, steps, reduce and gather.
//! * [`compression`] — update compression (sign with error feedback, int8, top-k).
//! * [`rows`] — the model as ROG's rows (layout from the manifest, partial updates) and ROG's P(S).
//! * [`sampling`] — choosing a federated round's trainers (uniform, or ∝ 1/√time as EdgeTB).
//! * [`strategy`] — federated aggregation strategies: FedAvg, FedAdam, FedYogi, FedAdagrad, FedMedian, trimmed mean.
//!
//! # Fuzzing
//!
//! Every decoder of untrusted input is a fuzz target: the envelope, chunk
//! reassembly (sequences of chunk records from several senders, with expiry),
//! each protocol message the nodes receive, the shard wire format, the
//! artifact manifest, and config text with environment overrides. The fuzzer
//! (`tests/fuzzing/`) is a seeded mutation fuzzer that runs on stable Rust:
//! it starts from real encodings, stacks byte-level and JSON-tree mutations
//! on them, and counts as a crash any panic, any broken property (decode then
//! encode gives the input back; the reassembler returns exactly the chunks it
//! accepted and frees all it holds), and any input that grows the heap past
//! its target's budget. `cargo test -p common --test fuzz_corpus` runs 5,000
//! inputs per target from a fixed seed (part of CI); the long run is
//!
//! ```text
//! cargo bench -p common --bench fuzz -- --inputs 1000000
//! ```
//!
//! which prints target, inputs, seconds, inputs/s and crashes per target,
//! writes `data/bench/fuzz.json`, saves crashing inputs under
//! `data/bench/fuzz-crashes/` and exits 1 if anything crashed (`--target
//! NAME`, `--seed S`, `--time-limit SECS`, `--list`).

pub mod agents;
pub mod auth;
pub mod chunking;
pub mod collective;
pub mod compression;
pub mod config;
pub mod data;
pub mod engine;
pub mod envelope;
pub mod logging;
pub mod protocol;
pub mod rows;
pub mod runkey;
pub mod sampling;
pub mod stats;
pub mod strategy;
pub mod transport;
