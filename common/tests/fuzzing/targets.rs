//! The fuzz targets: every decoder of untrusted bytes in `common`, each with
//! a seed corpus of real encodings and a dictionary of tokens.
//!
//! | target              | feeds                                                      |
//! |---------------------|------------------------------------------------------------|
//! | `envelope`          | `EnvelopeCodec::decode_ref`/`decode`, plain and keyed        |
//! | `chunk_reassembly`  | framed sequences of chunk records into a `Reassembler`     |
//! | `protocol_status`   | `protocol::decode::<StatusMessage>`                         |
//! | `protocol_update`   | `protocol::decode::<UpdateDelta>`                           |
//! | `protocol_logs`     | `protocol::decode::<LogBatch>`                              |
//! | `protocol_control`  | `protocol::decode::<ControlMessage>`                        |
//! | `protocol_model`    | `protocol::decode::<GlobalModel>`                           |
//! | `protocol_assignment` | `protocol::decode::<Assignment>`                          |
//! | `agents_control`    | `protocol::decode::<AgentControl>` (run offers)             |
//! | `agents_status`     | `protocol::decode::<AgentStatus>` (agent announcements)     |
//! | `shard_wire`        | `Dataset::from_bytes`                                       |
//! | `manifest`          | `Manifest::parse`                                           |
//! | `config`            | `config::load_str_with_env` of a worker/master-like config |
//!
//! Besides "no panic, bounded memory", each target checks a property of what
//! it accepts: binary decoders re-encode to the same bytes (or an equal
//! value), the reassembler's output equals the chunks it accepted and its
//! memory accounting returns to zero.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::agents::{AgentAnnounce, AgentControl, AgentStatus, RunOpen};
use common::auth::HmacKey;
use common::chunking::{self, Chunk, ChunkError, ChunkLimits, ChunkRef, Reassembler};
use common::config::{self, ConfigError, KafkaConfig, LoggingConfig};
use common::data::{DataError, Dataset, Limits, Shard};
use common::engine::{EngineConfig, EngineError, Manifest, OptimizerConfig};
use common::envelope::{validate_id, EnvelopeCodec, MessageKind, MAX_ID_BYTES};
use common::protocol::{
    self, ArtifactFile, Assignment, ControlMessage, GlobalModel, LogBatch, LogRecord, ModelPackage,
    ProtocolError, Registration, RoundReport, RoundTiming, ShardAssignment, StatusMessage,
    TrainingPlan, UpdateDelta,
};
use common::stats::gate::GateConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{interesting_json, json_paths, mutate_json_text, Target};

/// Every target, in table order.
pub fn all() -> Vec<Target> {
    vec![
        ENVELOPE,
        CHUNK_REASSEMBLY,
        PROTOCOL_STATUS,
        PROTOCOL_UPDATE,
        PROTOCOL_LOGS,
        PROTOCOL_CONTROL,
        PROTOCOL_MODEL,
        PROTOCOL_ASSIGNMENT,
        AGENTS_CONTROL,
        AGENTS_STATUS,
        SHARD_WIRE,
        MANIFEST,
        CONFIG,
    ]
}

/// The target called `name`, if there is one.
pub fn by_name(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------
// envelope
// ---------------------------------------------------------------------------

const RUN: &str = "run-fuzz";
/// Small, so that the payload limit is reachable.
const ENVELOPE_LIMIT: usize = 1024;

fn codecs() -> &'static [EnvelopeCodec; 2] {
    static CODECS: OnceLock<[EnvelopeCodec; 2]> = OnceLock::new();
    CODECS.get_or_init(|| {
        let key = HmacKey::from_bytes(&[0x5A; 32]).expect("a 32-byte key is valid");
        [
            EnvelopeCodec::new(RUN, None, ENVELOPE_LIMIT),
            EnvelopeCodec::new(RUN, Some(key), ENVELOPE_LIMIT),
        ]
    })
}

/// Decodes with the plain and the keyed codec; what decodes must re-encode
/// to exactly the input, and the owned and borrowed decoders must agree.
fn run_envelope(input: &[u8]) -> &'static str {
    let mut labels = ["", ""];
    for (codec, label) in codecs().iter().zip(labels.iter_mut()) {
        match codec.decode_ref(input) {
            Ok(env) => {
                let again = codec
                    .try_encode_parts(env.kind, env.sender, env.sequence, &[env.payload])
                    .expect("a decoded record re-encodes");
                assert!(again == input, "decoded record re-encodes differently");
                let owned = codec.decode(input).expect("decode agrees with decode_ref");
                assert!(owned == env.to_owned_envelope(), "decode != decode_ref");
                assert!(env.sender.len() <= MAX_ID_BYTES && env.payload.len() <= ENVELOPE_LIMIT);
                *label = "ok";
            }
            Err(e) => {
                let _ = e.to_string();
                assert!(
                    codec.decode(input).is_err(),
                    "decode accepts what decode_ref rejects"
                );
                *label = e.reason();
            }
        }
    }
    match labels {
        ["ok", _] => "ok_plain",
        [_, "ok"] => "ok_keyed",
        // A tagged record gets past every structural check of the plain
        // codec; the keyed codec's verdict says more.
        ["unexpected_tag", keyed] => keyed,
        [plain, _] => plain,
    }
}

fn envelope_seeds() -> Vec<Vec<u8>> {
    let chunk = fixed_chunks(&[7u8; 300], 128, 9, MessageKind::Model).remove(0);
    let status = protocol::encode(&sample_status()[0]).expect("encodes");
    let long_id = "s".repeat(MAX_ID_BYTES);
    let payloads: [&[u8]; 6] = [
        b"",
        b"x",
        &status,
        &chunk,
        &[0xAB; 500],
        &[0xCD; ENVELOPE_LIMIT],
    ];
    let mut seeds = Vec::new();
    for codec in codecs() {
        for (i, kind) in MessageKind::ALL.into_iter().enumerate() {
            let payload = payloads[i % payloads.len()];
            let sender = ["worker-1", "m", "wörker-ü", long_id.as_str()][i % 4];
            seeds.push(codec.encode(kind, sender, i as u64 * 1_000_003, payload));
        }
        for payload in payloads {
            seeds.push(codec.encode(MessageKind::Chunk, "w", u64::MAX, payload));
        }
    }
    seeds
}

const ENVELOPE_DICT: &[&[u8]] = &[
    b"HRMS",
    &[1, 0],
    &[2, 0],
    &[2],
    &[8, 0],
    b"run-fuzz",
    &[8, 0, b'r', b'u', b'n', b'-', b'f', b'u', b'z', b'z'],
    &[0xFF, 0],
    &[0, 4, 0, 0],
    &[1, 4, 0, 0],
    &[7, 1],
    &[7, 0],
];

/// Envelope decoding.
pub const ENVELOPE: Target = Target {
    name: "envelope",
    about: "EnvelopeCodec::decode_ref and decode, plain and keyed codecs",
    seeds: envelope_seeds,
    dictionary: ENVELOPE_DICT,
    max_len: 4096,
    alloc_fixed: 64 << 10,
    alloc_per_byte: 4,
    structured: None,
    run: run_envelope,
};

// ---------------------------------------------------------------------------
// chunk reassembly
// ---------------------------------------------------------------------------

/// Small limits, so that every bound is reachable with small inputs.
fn chunk_limits() -> ChunkLimits {
    ChunkLimits {
        max_transfer_bytes: 4096,
        max_buffered_bytes: 6144,
        max_chunk_data_bytes: 512,
        max_chunks: 64,
        timeout: Duration::from_secs(3),
        max_pending_transfers: 3,
    }
}

const SENDERS: [&str; 4] = ["w0", "w1", "w2", "master"];

/// Control byte of a frame: bits 0–1 pick the sender, bit 2 pushes an owned
/// chunk (`push`) instead of a borrowed one (`push_ref`), bit 3 advances the
/// clock by one second first, bits 4 and 5 both set run `expire` first.
const CTL_OWNED: u8 = 0x04;
const CTL_TICK: u8 = 0x08;
const CTL_EXPIRE: u8 = 0x30;

/// A frame: control byte, u16 length, then an encoded chunk.
fn frame(ctl: u8, chunk: &[u8]) -> Vec<u8> {
    let mut out = vec![ctl];
    out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
    out.extend_from_slice(chunk);
    out
}

type Key = (String, [u8; 16]);

/// Feeds every frame of `input` to a reassembler and checks it against a
/// model of the chunks it accepted.
fn run_chunk_reassembly(input: &[u8]) -> &'static str {
    let limits = chunk_limits();
    let mut r = Reassembler::new(limits.clone());
    let mut now = Instant::now();
    // Chunks accepted (not duplicates) of each pending transfer.
    let mut model: HashMap<Key, BTreeMap<u32, Vec<u8>>> = HashMap::new();
    let mut label = "empty";
    let mut completed = false;
    let mut rest = input;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = match tail {
            [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
            _ => tail.len(),
        };
        let body = tail.get(2..).unwrap_or_default();
        let (bytes, next) = body.split_at(len.min(body.len()));
        rest = next;
        if ctl & CTL_TICK != 0 {
            now += Duration::from_secs(1);
        }
        if ctl & CTL_EXPIRE == CTL_EXPIRE {
            for e in r.expire(now) {
                assert!(
                    e.received_chunks < e.expected_chunks,
                    "expired a complete transfer"
                );
                model.remove(&(e.sender, e.transfer_id));
            }
        }
        let sender = SENDERS[usize::from(ctl & 3)];
        let chunk = match ChunkRef::decode(bytes, &limits) {
            Ok(c) => c,
            Err(e) => {
                let _ = e.to_string();
                label = e.reason();
                continue;
            }
        };
        let key: Key = (sender.to_string(), chunk.transfer_id);
        let duplicates = r.duplicates_ignored();
        let result = if ctl & CTL_OWNED != 0 {
            let owned = Chunk::decode(bytes, &limits).expect("Chunk::decode agrees with ChunkRef");
            r.push(sender, owned, now)
        } else {
            r.push_ref(sender, chunk, now)
        };
        match result {
            Ok(Some((kind, payload))) => {
                let mut parts = model.remove(&key).unwrap_or_default();
                assert!(
                    parts.insert(chunk.index, chunk.data.to_vec()).is_none(),
                    "completing chunk was already accepted"
                );
                assert_eq!(kind, chunk.inner_kind, "completed with another kind");
                assert_eq!(
                    parts.len() as u64,
                    u64::from(chunk.count),
                    "completed early"
                );
                assert_eq!(
                    payload.len() as u64,
                    chunk.total_len,
                    "wrong payload length"
                );
                let joined: Vec<u8> = parts.into_values().flatten().collect();
                assert!(
                    joined == payload,
                    "payload differs from the accepted chunks"
                );
                completed = true;
                label = "completed";
            }
            Ok(None) if r.duplicates_ignored() > duplicates => label = "duplicate",
            Ok(None) => {
                let parts = model.entry(key).or_default();
                assert!(
                    parts.insert(chunk.index, chunk.data.to_vec()).is_none(),
                    "accepted the same chunk twice"
                );
                label = "accepted";
            }
            Err(e) => {
                let _ = e.to_string();
                if e.ends_transfer() {
                    model.remove(&key);
                } else {
                    assert!(matches!(e, ChunkError::DigestMismatch { .. }), "{e}");
                }
                label = match e {
                    ChunkError::DigestMismatch { .. } => "chunk_digest_mismatch",
                    e => e.reason(),
                };
            }
        }
        assert!(
            r.buffered_bytes() <= limits.max_buffered_bytes,
            "buffer limit exceeded"
        );
        assert!(
            r.pending_transfers() <= limits.max_pending_transfers,
            "transfer limit exceeded"
        );
        assert_eq!(
            r.pending_transfers(),
            model.len(),
            "pending transfers differ from the model"
        );
    }
    for e in r.expire(now + limits.timeout + Duration::from_secs(1)) {
        model.remove(&(e.sender, e.transfer_id));
    }
    assert_eq!(r.buffered_bytes(), 0, "memory still accounted after expiry");
    assert_eq!(r.pending_transfers(), 0, "transfers left after expiry");
    assert!(
        model.is_empty(),
        "the model has transfers the reassembler forgot"
    );
    if completed {
        "completed"
    } else {
        label
    }
}

/// Chunks of `payload` with a fixed transfer id (seeds must be deterministic).
fn fixed_chunks(payload: &[u8], chunk_bytes: usize, id: u8, kind: MessageKind) -> Vec<Vec<u8>> {
    chunking::split(payload, chunk_bytes, kind)
        .into_iter()
        .map(|mut c| {
            c.transfer_id = [id; 16];
            c.encode()
        })
        .collect()
}

fn chunk_seeds() -> Vec<Vec<u8>> {
    let payload: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut seeds = Vec::new();
    let mut id = 0u8;
    for (len, cs) in [
        (0, 64),
        (1, 64),
        (63, 64),
        (65, 64),
        (500, 100),
        (2000, 512),
        (4096, 512),
        (4096, 64),
    ] {
        id += 1;
        let chunks = fixed_chunks(&payload[..len], cs, id, MessageKind::Model);
        // In order, one sender, borrowed.
        seeds.push(chunks.iter().flat_map(|c| frame(0, c)).collect());
        // Reversed, owned, every chunk twice, from another sender.
        seeds.push(
            chunks
                .iter()
                .rev()
                .flat_map(|c| [frame(1 | CTL_OWNED, c), frame(1, c)].concat())
                .collect(),
        );
    }
    // Two transfers interleaved, the same transfer id from two senders.
    let a = fixed_chunks(&payload[..700], 100, 40, MessageKind::Update);
    let b = fixed_chunks(&payload[1000..1500], 100, 40, MessageKind::Shard);
    let mut interleaved = Vec::new();
    for i in 0..a.len().max(b.len()) {
        if let Some(c) = a.get(i) {
            interleaved.extend(frame(0, c));
        }
        if let Some(c) = b.get(i) {
            interleaved.extend(frame(2 | CTL_OWNED, c));
        }
    }
    seeds.push(interleaved);
    // A transfer that stalls past the timeout, is expired, then redelivered.
    let c = fixed_chunks(&payload[..300], 100, 41, MessageKind::Model);
    let mut stalled = frame(3, &c[0]);
    for _ in 0..4 {
        stalled.extend(frame(3 | CTL_TICK | CTL_EXPIRE, &[]));
    }
    for chunk in &c {
        stalled.extend(frame(3, chunk));
    }
    seeds.push(stalled);
    // More transfers than the limit allows, and one too large to buffer.
    let mut crowded = Vec::new();
    for i in 0..5u8 {
        let c = fixed_chunks(&payload[..1500], 500, 50 + i, MessageKind::Log);
        crowded.extend(frame(i & 3, &c[0]));
    }
    // ...and a single-chunk transfer, which needs no buffer, completing.
    crowded.extend(frame(
        3 | CTL_OWNED,
        &fixed_chunks(&payload[..10], 64, 60, MessageKind::Status)[0],
    ));
    seeds.push(crowded);
    seeds
}

const CHUNK_DICT: &[&[u8]] = &[
    &[0x45, 0x00],
    &[0x00, 0x02, 0x00, 0x00],
    &[0x40, 0x00, 0x00, 0x00],
    &[0x41, 0x00, 0x00, 0x00],
    &[0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[0x01, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
    &[CTL_TICK | CTL_EXPIRE, 0, 0],
    &[CTL_OWNED],
    &[2],
    &[8],
];

/// Chunk decoding and reassembly.
pub const CHUNK_REASSEMBLY: Target = Target {
    name: "chunk_reassembly",
    about: "framed chunk records (4 senders, push/push_ref, clock, expire) into a Reassembler",
    seeds: chunk_seeds,
    dictionary: CHUNK_DICT,
    max_len: 24 << 10,
    alloc_fixed: 256 << 10,
    alloc_per_byte: 16,
    structured: None,
    run: run_chunk_reassembly,
};

// ---------------------------------------------------------------------------
// protocol messages
// ---------------------------------------------------------------------------

/// Decode limit of the protocol targets; inputs may be a little longer.
const PROTOCOL_LIMIT: u64 = 16 << 10;

/// Decodes `T`; what decodes must re-encode to exactly the input (the
/// encoding is canonical: fixed-width integers, no trailing bytes).
fn run_protocol<T: Serialize + DeserializeOwned>(input: &[u8]) -> &'static str {
    match protocol::decode::<T>(input, PROTOCOL_LIMIT) {
        Ok(msg) => {
            let again = protocol::encode(&msg).expect("a decoded message re-encodes");
            assert!(again == input, "decoded message re-encodes differently");
            "ok"
        }
        Err(e) => {
            let _ = e.to_string();
            protocol_label(&e)
        }
    }
}

fn protocol_label(e: &ProtocolError) -> &'static str {
    use bincode::ErrorKind;
    match e {
        ProtocolError::Encode { .. } => "encode",
        ProtocolError::Decode { source, .. } => match **source {
            ErrorKind::Io(_) => "eof",
            ErrorKind::InvalidUtf8Encoding(_) => "invalid_utf8",
            ErrorKind::InvalidBoolEncoding(_) => "invalid_bool",
            ErrorKind::InvalidCharEncoding => "invalid_char",
            ErrorKind::InvalidTagEncoding(_) => "invalid_tag",
            ErrorKind::DeserializeAnyNotSupported => "deserialize_any",
            ErrorKind::SizeLimit => "size_limit",
            ErrorKind::SequenceMustHaveLength => "sequence_length",
            ErrorKind::Custom(_) => "custom",
        },
    }
}

fn enc<T: Serialize>(msgs: &[T]) -> Vec<Vec<u8>> {
    msgs.iter()
        .map(|m| protocol::encode(m).expect("seed encodes"))
        .collect()
}

fn sample_status() -> Vec<StatusMessage> {
    vec![
        StatusMessage::Register(Registration {
            worker_id: "worker-1".into(),
            incarnation: 0x1234_5678_9ABC,
            hostname: "pi-4".into(),
            arch: "aarch64".into(),
            cores: 4,
            slowdown: 2.5,
            emulation: "testbed t: netns, 1 mbit".into(),
            sample_cache_bytes: 256 << 20,
        }),
        StatusMessage::CacheMiss {
            worker_id: "w".into(),
            incarnation: 7,
            shard_id: 12,
            missing: 300,
        },
        StatusMessage::Heartbeat {
            worker_id: "w".into(),
            incarnation: 7,
            model_version: 42,
            rejected: vec![("bad_tag".to_string(), 3), ("malformed".to_string(), 1)],
        },
        StatusMessage::RoundReport(RoundReport {
            worker_id: "worker-2".into(),
            incarnation: 9,
            round: 3,
            shard_id: 11,
            samples: 640,
            epochs: 1,
            compute_secs: 0.25,
            emulated_idle_secs: 0.5,
            round_secs: 0.8,
            validation_loss: 1.75,
            validation_accuracy: 0.5,
            major: true,
            statistic: Some(-2.25),
            threshold: -1.3,
            base_version: 2,
            update_bytes: 4096,
            timing: RoundTiming {
                queued_secs: 0.01,
                prepare_secs: 0.002,
                compute_secs: 0.25,
                idle_secs: 0.5,
            },
            upload_secs: 0.004,
        }),
        StatusMessage::RoundReport(RoundReport {
            worker_id: String::new(),
            incarnation: 0,
            round: 1,
            shard_id: 0,
            samples: 0,
            epochs: 0,
            compute_secs: f64::NAN,
            emulated_idle_secs: -0.0,
            round_secs: f64::INFINITY,
            validation_loss: f64::MIN_POSITIVE,
            validation_accuracy: 1.0,
            major: false,
            statistic: None,
            threshold: 0.0,
            base_version: u64::MAX,
            update_bytes: 0,
            timing: RoundTiming {
                queued_secs: f64::NAN,
                ..RoundTiming::default()
            },
            upload_secs: -1.0,
        }),
        StatusMessage::Goodbye {
            worker_id: "wörker-ü".into(),
            reason: "stopped by the operator".into(),
        },
    ]
}

fn status_seeds() -> Vec<Vec<u8>> {
    enc(&sample_status())
}

fn update_seeds() -> Vec<Vec<u8>> {
    let delta = |n: usize| {
        (0..n)
            .map(|i| (i as f32 - 10.0) * 1e-3)
            .collect::<Vec<f32>>()
    };
    enc(&[
        UpdateDelta {
            worker_id: "worker-1".into(),
            incarnation: 1,
            round: 5,
            base_version: 4,
            samples: 640,
            validation_loss: 0.9,
            timing: RoundTiming::default(),
            delta: delta(0),
        },
        UpdateDelta {
            worker_id: "w".into(),
            incarnation: 2,
            round: 1,
            base_version: 0,
            samples: 1,
            validation_loss: 2.0,
            timing: RoundTiming {
                compute_secs: 0.1,
                ..RoundTiming::default()
            },
            delta: delta(3),
        },
        UpdateDelta {
            worker_id: "worker-3".into(),
            incarnation: 3,
            round: 2,
            base_version: 1,
            samples: 10,
            validation_loss: f64::NAN,
            timing: RoundTiming {
                idle_secs: f64::INFINITY,
                ..RoundTiming::default()
            },
            delta: [delta(500), vec![f32::NAN, f32::INFINITY, -0.0]].concat(),
        },
    ])
}

fn log_record(i: u64) -> LogRecord {
    LogRecord {
        timestamp_ms: 1_700_000_000_000 + i,
        node: format!("worker-{i}"),
        level: ["INFO", "WARN", "ERROR"][i as usize % 3].into(),
        target: "worker::session".into(),
        message: format!("round {i} done: loss=0.{i} accuracy=0.9"),
    }
}

fn logs_seeds() -> Vec<Vec<u8>> {
    let batches: Vec<LogBatch> = vec![
        vec![],
        vec![log_record(1)],
        (0..5).map(log_record).collect(),
    ];
    enc(&batches)
}

fn control_seeds() -> Vec<Vec<u8>> {
    enc(&[
        ControlMessage::Welcome {
            worker_id: "worker-1".into(),
            incarnation: 77,
        },
        ControlMessage::Stop {
            reason: "target accuracy reached".into(),
        },
        ControlMessage::Stop { reason: "".into() },
        ControlMessage::Unknown {
            worker_id: "worker-1".into(),
        },
        ControlMessage::Alive { version: 42 },
    ])
}

fn agents_control_seeds() -> Vec<Vec<u8>> {
    enc(&[
        AgentControl::RunOpen(RunOpen {
            run_id: "exp-1".into(),
            master_incarnation: 99,
            invite: vec![],
            overrides_json: "{}".into(),
            per_agent_json: vec![],
            policy: "hermes".into(),
        }),
        AgentControl::RunOpen(RunOpen {
            run_id: "exp-2".into(),
            master_incarnation: u64::MAX,
            invite: vec!["pi-1".into(), "pi-2".into()],
            overrides_json: r#"{"slowdown": 2.0, "logging": {"level": "debug"}}"#.into(),
            per_agent_json: vec![("pi-1".into(), r#"{"heartbeat_secs": 1}"#.into())],
            policy: "bsp".into(),
        }),
        AgentControl::RunClosed {
            run_id: "exp-1".into(),
            master_incarnation: 99,
        },
    ])
}

fn agents_status_seeds() -> Vec<Vec<u8>> {
    let announce = |serving: Option<&str>, declined: Option<(&str, &str)>| {
        AgentStatus::Announce(AgentAnnounce {
            agent_id: "pi-1".into(),
            incarnation: 7,
            hostname: "raspberrypi".into(),
            arch: "aarch64".into(),
            cores: 4,
            version: "0.1.0".into(),
            serving: serving.map(str::to_string),
            declined: declined.map(|(r, why)| (r.to_string(), why.to_string())),
        })
    };
    enc(&[
        announce(None, None),
        announce(Some("exp-1"), None),
        announce(None, Some(("exp-2", "the offer's overrides set `kafka`"))),
    ])
}

fn model_seeds() -> Vec<Vec<u8>> {
    enc(&[
        GlobalModel {
            version: 0,
            parameters: vec![],
        },
        GlobalModel {
            version: 3,
            parameters: vec![0.5, -0.25, 1e-7],
        },
        GlobalModel {
            version: 12,
            parameters: (0..1000).map(|i| i as f32 / 1000.0).collect(),
        },
    ])
}

/// A small dataset: 8 samples of shape [2, 3], 3 classes, byte-valued.
fn sample_dataset(scale: f32) -> Dataset {
    let features: Vec<f32> = (0..48).map(|v| (v * 5 % 256) as f32 / scale).collect();
    let labels = vec![0, 1, 2, 1, 0, 2, 2, 1];
    Dataset::new("seed", features, labels, vec![2, 3], 3).expect("valid dataset")
}

fn sample_plan() -> TrainingPlan {
    TrainingPlan {
        epochs: 2,
        batch_size: 32,
        optimizer_json: serde_json::to_string(&OptimizerConfig::default()).expect("encodes"),
        gate: GateConfig::default(),
        gate_updates: true,
        seed: 42,
    }
}

fn assignment_seeds() -> Vec<Vec<u8>> {
    let ds = sample_dataset(255.0);
    enc(&[
        Assignment::Package(ModelPackage {
            model: "mlp".into(),
            files: vec![
                ArtifactFile {
                    name: "manifest.json".into(),
                    bytes: br#"{"format_version": 1}"#.to_vec(),
                },
                ArtifactFile {
                    name: "initial_parameters.bin".into(),
                    bytes: vec![0, 0, 128, 63, 0, 0, 0, 64],
                },
            ],
            global: GlobalModel {
                version: 1,
                parameters: vec![1.0, 2.0],
            },
            plan: sample_plan(),
            validation: ds.to_bytes(),
        }),
        Assignment::Package(ModelPackage {
            model: String::new(),
            files: vec![],
            global: GlobalModel {
                version: 0,
                parameters: vec![],
            },
            plan: TrainingPlan {
                gate_updates: false,
                ..sample_plan()
            },
            validation: vec![],
        }),
        Assignment::Shard(ShardAssignment {
            shard_id: 3,
            round: 4,
            data: ds
                .shard_to_bytes(&Shard::new(vec![5, 1, 2]))
                .expect("valid shard"),
            ..Default::default()
        }),
        Assignment::Shard(ShardAssignment {
            shard_id: 4,
            round: 5,
            data: ds
                .shard_to_bytes(&Shard::new(vec![2]))
                .expect("valid shard"),
            samples: vec![5, 2, 1],
            fresh: vec![2],
            keep: true,
            min_version: 3,
        }),
        Assignment::Global(GlobalModel {
            version: 9,
            parameters: vec![0.5, -1.0, 3e-8],
        }),
    ])
}

const PROTOCOL_DICT: &[&[u8]] = &[
    &[0, 0, 0, 0],
    &[1, 0, 0, 0],
    &[2, 0, 0, 0],
    &[3, 0, 0, 0],
    &[4, 0, 0, 0],
    &[0, 0, 0, 0, 0, 0, 0, 0],
    &[1, 0, 0, 0, 0, 0, 0, 0],
    &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    &[0, 0, 0, 0, 0, 0, 0xF8, 0x7F],
    &[0, 0, 0xC0, 0x7F],
    &[0xC3, 0x28],
    &[0xF0, 0x9F, 0x98, 0x80],
    &[0xED, 0xA0, 0x80],
];

macro_rules! protocol_target {
    ($const:ident, $name:literal, $ty:ty, $seeds:ident) => {
        #[doc = concat!("`protocol::decode::<", stringify!($ty), ">`.")]
        pub const $const: Target = Target {
            name: $name,
            about: concat!("protocol::decode::<", stringify!($ty), "> (16 KiB limit)"),
            seeds: $seeds,
            dictionary: PROTOCOL_DICT,
            max_len: 20 << 10,
            alloc_fixed: 4 << 20,
            alloc_per_byte: 16,
            structured: None,
            run: run_protocol::<$ty>,
        };
    };
}

protocol_target!(
    PROTOCOL_STATUS,
    "protocol_status",
    StatusMessage,
    status_seeds
);
protocol_target!(
    PROTOCOL_UPDATE,
    "protocol_update",
    UpdateDelta,
    update_seeds
);
protocol_target!(PROTOCOL_LOGS, "protocol_logs", LogBatch, logs_seeds);
protocol_target!(
    PROTOCOL_CONTROL,
    "protocol_control",
    ControlMessage,
    control_seeds
);
protocol_target!(PROTOCOL_MODEL, "protocol_model", GlobalModel, model_seeds);
protocol_target!(
    AGENTS_CONTROL,
    "agents_control",
    AgentControl,
    agents_control_seeds
);
protocol_target!(
    AGENTS_STATUS,
    "agents_status",
    AgentStatus,
    agents_status_seeds
);
protocol_target!(
    PROTOCOL_ASSIGNMENT,
    "protocol_assignment",
    Assignment,
    assignment_seeds
);

// ---------------------------------------------------------------------------
// shard wire format
// ---------------------------------------------------------------------------

fn wire_limits() -> Limits {
    Limits {
        max_bytes: 1 << 20,
        max_samples: 4096,
        max_features: 4096,
    }
}

/// Decodes a dataset; what decodes must encode and decode again to the same
/// labels, shape and feature bits.
fn run_shard_wire(input: &[u8]) -> &'static str {
    match Dataset::from_bytes("fuzz shard", input, &wire_limits()) {
        Ok(ds) => {
            let bytes = ds.to_bytes();
            let back = Dataset::from_bytes("re-encoded", &bytes, &wire_limits())
                .expect("a decoded dataset re-encodes");
            assert_eq!(back.labels(), ds.labels(), "labels changed");
            assert_eq!(back.sample_shape(), ds.sample_shape(), "shape changed");
            assert_eq!(back.num_classes(), ds.num_classes(), "classes changed");
            assert!(
                back.features()
                    .iter()
                    .zip(ds.features())
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "feature bits changed in a round trip"
            );
            "ok"
        }
        Err(e) => {
            let _ = e.to_string();
            data_label(&e)
        }
    }
}

fn data_label(e: &DataError) -> &'static str {
    match e {
        DataError::Io { .. } => "io",
        DataError::TooLarge { .. } => "too_large",
        DataError::Truncated { .. } => "truncated",
        DataError::BadMagic { .. } => "bad_magic",
        DataError::Format { .. } => "format",
        DataError::CsvCell { .. } => "csv_cell",
        DataError::CsvRowLength { .. } => "csv_row_length",
        DataError::LabelOutOfRange { .. } => "label_out_of_range",
        DataError::NonFinite { .. } => "non_finite",
        DataError::IndexOutOfRange { .. } => "index_out_of_range",
        DataError::InvalidArgument(_) => "invalid_argument",
    }
}

fn wire_seeds() -> Vec<Vec<u8>> {
    let bytes = sample_dataset(1.0);
    let unit = sample_dataset(255.0);
    let floats = Dataset::new(
        "seed",
        vec![0.1, -3.5, 1e-9, 7.25, -0.0, 1e30],
        vec![1, 0, 1],
        vec![2],
        2,
    )
    .expect("valid");
    let deep = Dataset::new("seed", vec![0.5; 24], vec![0, 3], vec![1, 2, 3, 2], 4).expect("valid");
    // Byte values but for one, so f32-encoded; a signed zero among them.
    let almost_bytes = Dataset::new(
        "seed",
        vec![-0.0, 0.5, 2.0, 255.0, 7.0, 1.0],
        vec![0, 1, 1],
        vec![2],
        2,
    )
    .expect("valid");
    let empty = Dataset::new("seed", vec![], vec![], vec![4], 2).expect("valid");
    vec![
        bytes.to_bytes(),
        unit.to_bytes(),
        unit.shard_to_bytes(&Shard::new(vec![7, 0, 3]))
            .expect("shard"),
        floats.to_bytes(),
        deep.to_bytes(),
        almost_bytes.to_bytes(),
        empty.to_bytes(),
    ]
}

const WIRE_DICT: &[&[u8]] = &[
    b"HDS1",
    &[1, 0, 1, 0],
    &[1, 1, 2, 0],
    &[0, 0, 0x80, 0x3F],
    &[0, 0, 0x7F, 0x43],
    &[0, 0, 0xC0, 0x7F],
    &[0, 0, 0x80, 0x7F],
    &[0, 0, 0, 0x80],
    &[0x00, 0x10, 0, 0],
    &[0x01, 0x10, 0, 0],
];

/// The shard wire format.
pub const SHARD_WIRE: Target = Target {
    name: "shard_wire",
    about: "Dataset::from_bytes (limits 1 MiB, 4096 samples, 4096 features)",
    seeds: wire_seeds,
    dictionary: WIRE_DICT,
    max_len: 16 << 10,
    alloc_fixed: 64 << 10,
    alloc_per_byte: 32,
    structured: None,
    run: run_shard_wire,
};

// ---------------------------------------------------------------------------
// artifact manifest
// ---------------------------------------------------------------------------

/// Parses a manifest; what parses must give the engine's derived figures
/// without overflow and survive a JSON round trip.
fn run_manifest(input: &[u8]) -> &'static str {
    match Manifest::parse(input, Path::new("manifest.json")) {
        Ok(m) => {
            let total = m.parameter_count();
            let mut end = 0usize;
            for p in &m.parameters {
                let range = p.range();
                assert_eq!(range.start, end, "parameters are not contiguous");
                end = range.end;
                assert_eq!(p.dims().len(), p.shape.len());
                assert!(m.parameter(&p.name).is_some());
            }
            assert_eq!(end, total, "parameter_count differs from the ranges");
            for input in m.inputs.iter().chain([&m.label]) {
                let _ = input.per_sample_len();
                let _ = input.batch_shape(64);
            }
            let json = serde_json::to_vec(&m).expect("a manifest serializes");
            let back = Manifest::parse(&json, Path::new("again.json")).expect("round trip parses");
            assert!(back == m, "manifest changed in a JSON round trip");
            "ok"
        }
        Err(EngineError::ManifestInvalid { reason, .. }) => manifest_label(&reason),
        Err(e) => panic!("Manifest::parse returned a non-manifest error: {e}"),
    }
}

fn manifest_label(reason: &str) -> &'static str {
    const CHECKS: [&str; 14] = [
        "more elements than fit",
        "format_version",
        "num_classes",
        "no data inputs",
        "dtype",
        "must be [-1",
        "empty sample shape",
        "label `",
        "no parameters",
        "used twice",
        "negative dimension",
        "numel",
        "offset",
        "gradient",
    ];
    /// serde_json's data errors, then its syntax errors.
    const JSON: [(&str, &str); 5] = [
        ("missing field", "json_missing_field"),
        ("invalid type", "json_invalid_type"),
        ("unknown variant", "json_unknown_variant"),
        ("invalid value", "json_invalid_value"),
        ("at line", "json_syntax"),
    ];
    CHECKS
        .into_iter()
        .find(|c| reason.contains(c))
        .or_else(|| {
            JSON.into_iter()
                .find(|(needle, _)| reason.contains(needle))
                .map(|(_, label)| label)
        })
        .unwrap_or("other")
}

/// A valid manifest (an MLP on MNIST) as JSON.
pub fn manifest_value() -> serde_json::Value {
    serde_json::json!({
        "format_version": 1,
        "model": "mlp",
        "training_graph": "training_lowered.onnx",
        "eval_graph": "eval_lowered.onnx",
        "initial_parameters": "initial_parameters.bin",
        "inputs": [{"name": "input", "shape": [-1, 1, 28, 28], "dtype": "float32"}],
        "label": {"name": "labels", "shape": [-1], "dtype": "int64"},
        "num_classes": 10,
        "parameters": [
            {"name": "fc1.weight", "shape": [128, 784], "offset": 0, "numel": 100352},
            {"name": "fc1.bias", "shape": [128], "offset": 100352, "numel": 128},
            {"name": "fc2.weight", "shape": [10, 128], "offset": 100480, "numel": 1280},
            {"name": "fc2.bias", "shape": [10], "offset": 101760, "numel": 10}
        ],
        "train_outputs": {"loss": "loss", "gradients": [
            {"parameter": "fc1.weight", "output": "fc1.weight_grad"},
            {"parameter": "fc1.bias", "output": "fc1.bias_grad"},
            {"parameter": "fc2.weight", "output": "fc2.weight_grad"},
            {"parameter": "fc2.bias", "output": "fc2.bias_grad"}
        ]},
        "eval_outputs": {"loss": "loss", "logits": "logits"},
        "generator": {"tool": "artifact_tool", "opset": 17, "lowered": ["ReluGrad"]}
    })
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    let full = manifest_value();
    let mut small = full.clone();
    small["inputs"] = serde_json::json!([{"name": "x", "shape": [-1, 4], "dtype": "float32"}]);
    small["parameters"] = serde_json::json!([
        {"name": "w", "shape": [3, 4], "offset": 0, "numel": 12},
        {"name": "b", "shape": [3], "offset": 12, "numel": 3}
    ]);
    small["train_outputs"]["gradients"] = serde_json::json!([
        {"parameter": "w", "output": "w_grad"}, {"parameter": "b", "output": "b_grad"}
    ]);
    small["num_classes"] = 3.into();
    small.as_object_mut().expect("object").remove("generator");
    let mut seeds = vec![
        serde_json::to_vec_pretty(&full).expect("json"),
        serde_json::to_vec(&full).expect("json"),
        serde_json::to_vec(&small).expect("json"),
    ];
    // The artifact folders built by examples/build_artifacts.sh, when present.
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/artifacts");
    if let Ok(dirs) = std::fs::read_dir(&artifacts) {
        let mut found: Vec<PathBuf> = dirs
            .filter_map(|d| d.ok())
            .map(|d| d.path().join("manifest.json"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        seeds.extend(found.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    seeds
}

const MANIFEST_DICT: &[&[u8]] = &[
    b"\"format_version\": 1",
    b"\"parameters\"",
    b"\"offset\"",
    b"\"numel\"",
    b"\"shape\"",
    b"[-1, 4]",
    b"[-1]",
    b"\"float32\"",
    b"\"int64\"",
    b"18446744073709551615",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"4294967296",
    b"1e999",
    b"-1",
    b"null",
    b"true",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b"[[[[[[[[[[",
    b"{\"a\":",
    b", ",
    b"}",
    b"]",
];

/// Field names and values of a manifest, for the JSON mutator.
const MANIFEST_KEYS: &[&str] = &[
    "format_version",
    "model",
    "training_graph",
    "eval_graph",
    "initial_parameters",
    "inputs",
    "label",
    "num_classes",
    "parameters",
    "train_outputs",
    "eval_outputs",
    "generator",
    "name",
    "shape",
    "dtype",
    "offset",
    "numel",
    "loss",
    "gradients",
    "parameter",
    "output",
    "logits",
    "float32",
    "int64",
    "int32",
    "w",
    "b",
    "input",
    "labels",
];

fn mutate_manifest(rng: &mut ChaCha8Rng, input: &[u8]) -> Option<Vec<u8>> {
    mutate_json_text(rng, input, MANIFEST_KEYS)
}

/// The artifact manifest.
pub const MANIFEST: Target = Target {
    name: "manifest",
    about: "Manifest::parse (JSON, then the self-consistency checks)",
    seeds: manifest_seeds,
    dictionary: MANIFEST_DICT,
    max_len: 8 << 10,
    alloc_fixed: 256 << 10,
    alloc_per_byte: 64,
    structured: Some(mutate_manifest),
    run: run_manifest,
};

// ---------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------

/// A config built from every section `common` defines, shaped like the
/// worker's and the master's (which live in their own crates).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct NodeConfig {
    worker_id: String,
    run_id: Option<String>,
    heartbeat_secs: u64,
    register_retry_secs: u64,
    master_wait_secs: u64,
    master_timeout_secs: u64,
    log_forwarding: bool,
    sample_cache_mb: u64,
    slowdown: f64,
    emulation: Option<String>,
    work_dir: Option<PathBuf>,
    kafka: KafkaConfig,
    logging: LoggingConfig,
    engine: EngineConfig,
    gate: GateConfig,
    dataset: Option<common::data::DatasetSource>,
}

/// JSON text, then optionally a NUL byte and `NAME=value` lines taken as
/// the environment; loads a [`NodeConfig`] and validates what loaded.
fn run_config(input: &[u8]) -> &'static str {
    let (text, env) = match input.iter().position(|&b| b == 0) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        // `load` reads the file with `read_to_string`, which refuses it too.
        return "not_utf8";
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match config::load_str_with_env::<NodeConfig, _>(text, Path::new("fuzz.json"), env) {
        Ok(cfg) => {
            if validate_id("worker id", &cfg.worker_id).is_err()
                || EnvelopeCodec::try_new(
                    cfg.run_id.clone().unwrap_or_else(|| "demo".into()),
                    None,
                    cfg.kafka.chunk_bytes,
                )
                .is_err()
            {
                return "ok_bad_id";
            }
            if cfg.gate.validate().is_err() {
                return "ok_bad_gate";
            }
            if cfg.engine.optimizer.validate().is_err() {
                return "ok_bad_optimizer";
            }
            let _ = Reassembler::new(ChunkLimits {
                max_transfer_bytes: cfg.kafka.max_payload_bytes,
                max_buffered_bytes: cfg.kafka.max_buffered_bytes,
                max_chunk_data_bytes: cfg.kafka.chunk_bytes,
                timeout: Duration::from_secs(cfg.kafka.reassembly_timeout_secs),
                ..ChunkLimits::default()
            });
            "ok"
        }
        Err(e) => {
            let _ = e.to_string();
            match e {
                ConfigError::Read { .. } => "read",
                ConfigError::Json { .. } => "json",
                ConfigError::Field { .. } => "field",
                ConfigError::Layering { .. } => "layering",
            }
        }
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    let default = serde_json::to_vec_pretty(&NodeConfig::default()).expect("json");
    let worker =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conf/worker.json"))
            .unwrap_or_default();
    let mut seeds = vec![
        default.clone(),
        b"{}".to_vec(),
        br#"{"worker_id": "worker-7", "run_id": "demo", "slowdown": 2.5,
  "kafka": {"brokers": "10.0.0.2:9092", "chunk_bytes": 65536, "extra": {"socket.keepalive.enable": "true"},
            "security": {"protocol": "sasl_ssl", "sasl_mechanism": "PLAIN", "sasl_password_env": "PW"}},
  "engine": {"optimizer": {"kind": "adamw", "lr": 0.001}, "seed": 7, "intra_op_threads": 1},
  "gate": {"kind": "welch", "window": 12, "min_history": 4},
  "dataset": {"format": "csv", "path": "mnist/mnist_5k.csv.gz", "label_column": {"index": 0}, "num_classes": 10},
  "logging": {"level": "common=debug,info"}}"#
            .to_vec(),
        br#"{"dataset": {"format": "idx", "images": "i.gz", "labels": "l.gz"}, "engine": {"optimizer": {"kind": "sgd", "lr": 0.1, "momentum": 0.9}}}"#
            .to_vec(),
        br#"{"dataset": {"format": "mnist_dir", "dir": "mnist", "part": "test"}, "gate": {"alpha": -2.0, "beta": 0.5, "lambda": 3}}"#
            .to_vec(),
        [
            &br#"{"kafka": {"brokers": "a:1"}}"#[..],
            b"\0HERMES_WORKER_ID=w9\nHERMES_KAFKA__BROKERS=b:2\nHERMES_KAFKA__CHUNK_BYTES=4096\nHERMES_HMAC_KEY=x\nHERMES_GATE__WINDOW=5\nHERMES_SLOWDOWN=1.5",
        ]
        .concat(),
        [&default[..], b"\0HERMES_ENGINE__SEED=9\nHERMES_LOGGING__LEVEL=debug"].concat(),
    ];
    if !worker.is_empty() {
        seeds.push(worker);
    }
    seeds
}

const CONFIG_DICT: &[&[u8]] = &[
    b"\"worker_id\": ",
    b"\"kafka\": {",
    b"\"chunk_bytes\": ",
    b"\"extra\": {\"a.b\": \"c\"}",
    b"\"engine\": {\"optimizer\": {\"kind\": \"sgd\"}}",
    b"\"gate\": {",
    b"\"dataset\": {\"format\": \"csv\", \"path\": \"x\"}",
    b"\"window\": 0",
    b"18446744073709551616",
    b"-1",
    b"1e400",
    b"null",
    b"\0",
    b"\nHERMES_KAFKA__",
    b"\nHERMES_WORKER_ID=",
    b"\nHERMES_GATE__ALPHA=nan",
    b"\nHERMES_KAFKA__EXTRA__X=1",
    b"\nHERMES_ENGINE__OPTIMIZER__KIND=adamw",
    b"____",
    b"=",
    b"[0]",
];

/// Field names of the config sections, for the JSON mutator.
const CONFIG_KEYS: &[&str] = &[
    "worker_id",
    "run_id",
    "heartbeat_secs",
    "slowdown",
    "emulation",
    "work_dir",
    "kafka",
    "brokers",
    "topic_prefix",
    "chunk_bytes",
    "compression",
    "update_partitions",
    "replication_factor",
    "max_payload_bytes",
    "max_buffered_bytes",
    "reassembly_timeout_secs",
    "connect_timeout_secs",
    "hmac_key_file",
    "hmac_previous_key_file",
    "insecure",
    "security",
    "protocol",
    "extra",
    "logging",
    "level",
    "engine",
    "ort_library",
    "intra_op_threads",
    "seed",
    "optimizer",
    "kind",
    "sgd",
    "adamw",
    "lr",
    "momentum",
    "nesterov",
    "beta1",
    "mode",
    "gate",
    "window",
    "alpha",
    "beta",
    "lambda",
    "welch",
    "z_score",
    "min_history",
    "dataset",
    "format",
    "csv",
    "idx",
    "mnist_dir",
    "path",
    "label_column",
    "index",
    "num_classes",
    "sample_shape",
];

/// Mutates the JSON part as a tree, or appends an environment override of
/// one of its fields (by path) with an interesting value.
fn mutate_config(rng: &mut ChaCha8Rng, input: &[u8]) -> Option<Vec<u8>> {
    let nul = input.iter().position(|&b| b == 0).unwrap_or(input.len());
    let (text, env) = input.split_at(nul);
    if rng.random_bool(0.3) {
        let doc: serde_json::Value = serde_json::from_slice(text).ok()?;
        let mut paths = Vec::new();
        json_paths(&doc, &mut Vec::new(), &mut paths);
        let path = &paths[rng.random_range(0..paths.len())];
        let value = match interesting_json(rng, CONFIG_KEYS) {
            serde_json::Value::String(s) => s,
            v => v.to_string(),
        };
        let name = format!("HERMES_{}", path.join("__").to_uppercase());
        let sep: &[u8] = if env.is_empty() { b"\0" } else { b"\n" };
        return Some([text, env, sep, name.as_bytes(), b"=", value.as_bytes()].concat());
    }
    let mut out = mutate_json_text(rng, text, CONFIG_KEYS)?;
    out.extend_from_slice(env);
    Some(out)
}

/// Config loading.
pub const CONFIG: Target = Target {
    name: "config",
    about: "config::load_str_with_env of a worker/master-like config, env overrides included",
    seeds: config_seeds,
    dictionary: CONFIG_DICT,
    max_len: 8 << 10,
    alloc_fixed: 1 << 20,
    alloc_per_byte: 256,
    structured: Some(mutate_config),
    run: run_config,
};
