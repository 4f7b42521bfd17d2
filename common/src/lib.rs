//! # common — everything the master and the workers share
//!
//! A map of the crate, one line per component:
//!
//! * [`config`] — typed configuration (file, then `HERMES_*` environment), unknown fields rejected.
//! * [`logging`] — one-time `tracing-subscriber` setup.
//! * [`auth`] — the shared HMAC key, read from a file or env var (never from the JSON config).
//! * [`envelope`] — the wire envelope: magic, version, kind, run id, sender, sequence, payload, HMAC tag.
//! * [`chunking`] — splitting large payloads into records and reassembling them with bounded memory.
//! * [`protocol`] — the typed messages (registration, model, shards, updates, reports, logs).
//! * [`transport`] — Kafka topics, producer and consumer built from config; typed `send`/`recv`.
//! * [`engine`] — training with lowered ONNX Runtime training artifacts; optimizers in Rust.
//! * [`data`] — dataset loaders (MNIST IDX, CIFAR-10 binary, CSV), splits and batching.
//! * [`stats`] — the loss gate (z-score window, Welch t-test).

pub mod auth;
pub mod chunking;
pub mod config;
pub mod data;
pub mod engine;
pub mod envelope;
pub mod logging;
pub mod protocol;
pub mod stats;
pub mod transport;
