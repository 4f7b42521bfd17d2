//! Statistics used by the workers: the loss gate that decides between a major
//! round (publish a weight delta) and a minor round (publish a round report).

pub mod gate;

pub use gate::{GateConfig, GateDecision, GateError, GateKind, GateReason, LossGate};
