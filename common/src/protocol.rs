//! The typed messages master and workers exchange, and their bincode codec.
//!
//! Each message travels as the payload of an [`crate::envelope::Envelope`];
//! the envelope's kind says which enum to decode. Decoding is size-limited so
//! a lying length prefix cannot make us allocate without bound.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Default upper bound for one decoded message (bytes).
pub const DEFAULT_DECODE_LIMIT: u64 = 512 * 1024 * 1024;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// bincode rejected the bytes (truncated, wrong variant, over the limit...).
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// The type that was expected.
        what: &'static str,
        /// The decoder's error.
        source: bincode::Error,
    },
    /// The value could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// The type being encoded.
        what: &'static str,
        /// The encoder's error.
        source: bincode::Error,
    },
}

impl ProtocolError {
    /// Short label used as a rejection counter key.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::Decode { .. } => "bad_payload",
            ProtocolError::Encode { .. } => "encode_failed",
        }
    }
}

fn options(limit: u64) -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_limit(limit)
        .with_little_endian()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Encodes a message with bincode.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtocolError> {
    options(u64::MAX)
        .serialize(msg)
        .map_err(|source| ProtocolError::Encode {
            what: std::any::type_name::<T>(),
            source,
        })
}

/// Decodes a message, refusing payloads over `limit` bytes and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, ProtocolError> {
    options(limit)
        .deserialize(bytes)
        .map_err(|source| ProtocolError::Decode {
            what: std::any::type_name::<T>(),
            source,
        })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Worker → master on the logs stream: tracing events, batched.
pub type LogBatch = Vec<LogRecord>;

/// One tracing event from a node, for the centralized log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it happened (ms since the epoch).
    pub timestamp_ms: u64,
    /// The node that logged it (worker id or `master`).
    pub node: String,
    /// `ERROR`, `WARN`, `INFO`...
    pub level: String,
    /// The tracing target (module path).
    pub target: String,
    /// The rendered message with its fields.
    pub message: String,
}

/// What a worker tells the master about itself when it joins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The worker's id (unique in the run).
    pub worker_id: String,
    /// Random per process start: tells a restarted worker from the old one.
    pub incarnation: u64,
    /// Host name of the device.
    pub hostname: String,
    /// CPU architecture (`x86_64`, `aarch64`...).
    pub arch: String,
    /// Logical CPU cores.
    pub cores: u32,
    /// Emulated slowdown factor (1.0 = none); stated in every report.
    pub slowdown: f64,
    /// How the device is emulated (testbed namespace, links, caps); empty =
    /// a real device. Stated in the run summary.
    pub emulation: String,
    /// Bytes of decoded samples the worker keeps between shards (0: no
    /// cache; every shard comes whole). The master never asks it to hold more.
    pub sample_cache_bytes: u64,
}

/// Worker → master messages on the status stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StatusMessage {
    /// A worker joins (or rejoins after a restart).
    Register(Registration),
    /// Periodic sign of life.
    Heartbeat {
        /// The worker's id.
        worker_id: String,
        /// The worker process's incarnation.
        incarnation: u64,
        /// The global version the worker trains from.
        model_version: u64,
        /// Records this worker process rejected so far: (reason, count)
        /// pairs (what its transport and its own checks refused). A list,
        /// not a map, so that every encoding decodes to itself.
        rejected: Vec<(String, u64)>,
    },
    /// What a finished round did.
    RoundReport(RoundReport),
    /// A by-reference shard named samples the worker does not hold (it
    /// lost a shard, or restarted its cache): the master forgets what it
    /// believed the worker holds and sends the shard whole.
    CacheMiss {
        /// The worker's id.
        worker_id: String,
        /// The worker process's incarnation.
        incarnation: u64,
        /// The shard it could not assemble.
        shard_id: u64,
        /// How many of its samples were missing.
        missing: u64,
    },
    /// A worker leaves on purpose.
    Goodbye {
        /// The worker's id.
        worker_id: String,
        /// Why it leaves.
        reason: String,
    },
}

/// Worker → master: what one local round did. Sent after every round, major
/// or minor (a few hundred bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// The worker's id.
    pub worker_id: String,
    /// The worker process's incarnation.
    pub incarnation: u64,
    /// The worker's round counter (1, 2, ...).
    pub round: u64,
    /// The shard trained on.
    pub shard_id: u64,
    /// Samples in the shard.
    pub samples: u64,
    /// Local epochs over the shard.
    pub epochs: u32,
    /// Measured compute time of the round (training and validation), seconds.
    pub compute_secs: f64,
    /// Time spent idling to emulate a slower device (`(slowdown − 1) × compute`).
    pub emulated_idle_secs: f64,
    /// Wall time of the whole round, seconds.
    pub round_secs: f64,
    /// Loss on the worker's fixed validation split after the round.
    pub validation_loss: f64,
    /// Accuracy on that split.
    pub validation_accuracy: f64,
    /// Whether the gate judged the round significant (an update was sent).
    pub major: bool,
    /// The gate's statistic (z-score or t), when it computed one.
    pub statistic: Option<f64>,
    /// The gate's threshold at this round.
    pub threshold: f64,
    /// The global version the round started from.
    pub base_version: u64,
    /// Bytes of the update sent this round (0 on a minor round).
    pub update_bytes: u64,
    /// Where the round's time went besides compute and idle.
    pub timing: RoundTiming,
    /// Sending the update (until the broker acknowledged it), seconds.
    pub upload_secs: f64,
}

/// Where a worker's round went, seconds: the worker's part of the
/// round-phase profile (the master measures the rest, see
/// `master::phases`). Untrusted on arrival like everything else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundTiming {
    /// From the shard's arrival to the round's start (the worker was busy
    /// with an earlier round or a package).
    pub queued_secs: f64,
    /// Decoding the shard and adopting the global model.
    pub prepare_secs: f64,
    /// Training and validation.
    pub compute_secs: f64,
    /// Emulated idle after the compute (a slower device).
    pub idle_secs: f64,
}

/// Worker → master on the updates stream: the weight delta of a major round
/// against the global version it started from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateDelta {
    /// The worker's id.
    pub worker_id: String,
    /// The worker process's incarnation.
    pub incarnation: u64,
    /// The round that produced it.
    pub round: u64,
    /// The global version the delta is relative to.
    pub base_version: u64,
    /// Training samples behind it.
    pub samples: u64,
    /// Validation loss after the round.
    pub validation_loss: f64,
    /// Where the round's time went (for the master's round-phase profile).
    pub timing: RoundTiming,
    /// local parameters − base parameters, flat, in manifest order.
    pub delta: Vec<f32>,
}

/// Master → workers on the model stream: a new global version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalModel {
    /// The version (0 = initial parameters).
    pub version: u64,
    /// All parameters, flat, in manifest order.
    pub parameters: Vec<f32>,
}

/// One file of the training artifacts shipped to a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactFile {
    /// Plain file name (no directories); receivers must check it.
    pub name: String,
    /// The file's bytes.
    #[serde(with = "byte_buf")]
    pub bytes: Vec<u8>,
}

/// How workers train, decided by the master (one source of truth).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingPlan {
    /// Local epochs per round.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// The optimizer as JSON (`common::engine::OptimizerConfig`; its tagged
    /// form does not fit bincode).
    pub optimizer_json: String,
    /// The loss gate's parameters.
    pub gate: crate::stats::GateConfig,
    /// Whether workers gate their updates (Hermes) or send one every round
    /// (the BSP/ASP/SSP baselines).
    pub gate_updates: bool,
    /// Seed for shuffling.
    pub seed: u64,
}

/// Everything a worker needs to start training, sent once per registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPackage {
    /// Model name (the artifact folder's name).
    pub model: String,
    /// The artifact files (lowered graphs, manifest, initial parameters).
    pub files: Vec<ArtifactFile>,
    /// The current global model.
    pub global: GlobalModel,
    /// How to train.
    pub plan: TrainingPlan,
    /// The worker's fixed validation split (`common::data::wire` bytes).
    #[serde(with = "byte_buf")]
    pub validation: Vec<u8>,
}

/// A shard of training data for one round.
///
/// Either *whole* (`samples` empty: `data` is the shard, in training order)
/// or *by reference* to the worker's sample cache: `samples` lists the
/// shard's samples (positions in the master's training set) in training
/// order, `data` carries only those the worker does not hold (`fresh`, in
/// `data`'s order), and `keep` tells it to cache them. A worker that misses
/// a referenced sample answers [`StatusMessage::CacheMiss`] and the master
/// sends the shard whole again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardAssignment {
    /// The master's shard id (reported back in the round report).
    pub shard_id: u64,
    /// The worker round this shard is for.
    pub round: u64,
    /// Samples and labels (`common::data::wire` bytes): the whole shard, or
    /// the `fresh` samples.
    #[serde(with = "byte_buf")]
    pub data: Vec<u8>,
    /// The shard's samples in training order (empty: `data` is the shard).
    pub samples: Vec<u32>,
    /// The samples in `data`, in its order (by-reference shards only).
    pub fresh: Vec<u32>,
    /// Whether the worker caches the `fresh` samples for later shards.
    pub keep: bool,
    /// The global version to train from, at least: a worker that has an
    /// older one waits for it (with `model_delivery: broadcast` the shard
    /// can arrive before the version it belongs to). 0: any.
    pub min_version: u64,
}

impl ShardAssignment {
    /// A whole shard: `data` holds every sample, in training order.
    pub fn whole(shard_id: u64, round: u64, data: Vec<u8>) -> Self {
        Self {
            shard_id,
            round,
            data,
            ..Self::default()
        }
    }

    /// Whether the shard refers to the worker's sample cache.
    pub fn by_reference(&self) -> bool {
        !self.samples.is_empty()
    }
}

/// Master → one worker, on that worker's `shard.<worker>` stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Assignment {
    /// Artifacts, global weights, plan and validation data.
    Package(ModelPackage),
    /// The next shard.
    Shard(ShardAssignment),
    /// The newest global model, sent just before a shard when the worker
    /// has an older one (`model_delivery: targeted`): a worker downloads
    /// only the version it will train from, never one a newer version
    /// superseded while it was busy.
    Global(GlobalModel),
}

/// Master → workers messages on the control stream (broadcast; each says whom it is for).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// The master accepted a registration.
    Welcome {
        /// The worker being welcomed.
        worker_id: String,
        /// The incarnation that registered.
        incarnation: u64,
    },
    /// Stop working and exit.
    Stop {
        /// Why the run ends.
        reason: String,
    },
    /// The master does not know this worker's incarnation (it was declared
    /// gone, or the master restarted): register again, keeping the id.
    Unknown {
        /// The worker addressed.
        worker_id: String,
    },
    /// The master is alive (sent every `alive_secs`, so that a waiting
    /// worker can tell a quiet master from a dead one).
    Alive {
        /// The current global version.
        version: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_fields_keep_the_plain_encoding_and_refuse_lies() {
        #[derive(Serialize)]
        struct Plain {
            shard_id: u64,
            round: u64,
            data: Vec<u8>,
            samples: Vec<u32>,
            fresh: Vec<u32>,
            keep: bool,
            min_version: u64,
        }
        let data: Vec<u8> = (0..=255).cycle().take(5000).collect();
        let fast = encode(&ShardAssignment {
            shard_id: 3,
            round: 4,
            data: data.clone(),
            samples: vec![7, 9],
            fresh: vec![9],
            keep: true,
            min_version: 12,
        })
        .unwrap();
        let plain = encode(&Plain {
            shard_id: 3,
            round: 4,
            data,
            samples: vec![7, 9],
            fresh: vec![9],
            keep: true,
            min_version: 12,
        })
        .unwrap();
        assert_eq!(fast, plain, "the wire format did not change");
        let back: ShardAssignment = decode(&fast, 1 << 20).unwrap();
        assert_eq!(back.data.len(), 5000);
        // A length beyond the bytes there is refused (before any allocation).
        let mut lying = fast.clone();
        lying[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<ShardAssignment>(&lying, 1 << 20).is_err());
        assert!(
            decode::<ShardAssignment>(&fast[..100], 1 << 20).is_err(),
            "truncated"
        );
    }

    #[test]
    fn round_trip() {
        let msg = StatusMessage::Register(Registration {
            worker_id: "w1".into(),
            incarnation: 7,
            hostname: "pi".into(),
            arch: "aarch64".into(),
            cores: 4,
            slowdown: 2.5,
            emulation: "testbed t: netns".into(),
            sample_cache_bytes: 1 << 20,
        });
        let bytes = encode(&msg).expect("encodes");
        let back: StatusMessage = decode(&bytes, 1024).expect("decodes");
        assert_eq!(back, msg);
    }

    #[test]
    fn truncated_and_trailing_bytes_are_rejected() {
        let bytes = encode(&ControlMessage::Stop { reason: "x".into() }).expect("encodes");
        assert!(decode::<ControlMessage>(&bytes[..bytes.len() - 1], 1024).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<ControlMessage>(&longer, 1024).is_err());
    }

    #[test]
    fn lying_length_prefix_is_bounded() {
        // Variant 1 (Stop) with a string length of 2^62: must fail fast, not allocate.
        let mut bytes = vec![1, 0, 0, 0];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        let err = decode::<ControlMessage>(&bytes, 1 << 20).expect_err("rejected");
        assert_eq!(err.reason(), "bad_payload");
    }
}

/// Byte vectors as one byte string rather than a sequence of `u8`s: the
/// same bincode bytes (a length, then the bytes), copied in one go instead
/// of a call per byte (a shard of MNIST is a megabyte).
pub(crate) mod byte_buf {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
