//! The wire envelope: one binary frame around every Kafka record.
//!
//! # Layout
//!
//! All integers are little-endian; every length is checked against the bytes
//! actually present before anything is read or allocated.
//!
//! | field       | size              | notes                                        |
//! |-------------|-------------------|----------------------------------------------|
//! | magic       | 4                 | `b"HRMS"`                                    |
//! | version     | 2 (u16)           | [`PROTOCOL_VERSION`]                         |
//! | kind        | 1 (u8)            | [`MessageKind`]                              |
//! | flags       | 1 (u8)            | bit 0: a tag follows; bit 1: a CRC follows;  |
//! |             |                   | exactly one of the two, other bits 0         |
//! | run id      | 2 (u16) + n       | UTF-8, n ≤ [`MAX_ID_BYTES`]                  |
//! | sender id   | 2 (u16) + n       | UTF-8, n ≤ [`MAX_ID_BYTES`]                  |
//! | sequence    | 8 (u64)           | per-sender sequence number                   |
//! | payload     | 4 (u32) + n       | n ≤ the codec's `max_payload_bytes`          |
//! | tag         | 32 if flag bit 0  | HMAC-SHA256 over every byte before the tag   |
//! |             |                   | (a chunk's data through its digest, below)   |
//! | checksum    | 4 if flag bit 1   | CRC-32 (IEEE) over the same bytes            |
//!
//! A [`MessageKind::Chunk`] record's tag (or CRC) covers everything but the
//! chunk's data: the chunk header it covers holds the BLAKE3 digest of that
//! data, which the reassembler checks before using a byte of it. The data is
//! authenticated through the digest, and a large transfer makes one pass over
//! its bytes on each side instead of two.
//!
//! # Integrity and authentication policy
//!
//! Every record carries an integrity check: the HMAC tag with a key, a CRC-32
//! without one (a run started with `kafka.insecure`). A record with neither, or
//! whose check fails, is rejected before any field is acted on. The CRC finds
//! corruption, not forgery: only the keyed tag stops a foreign client.
//!
//! With a key configured, every record must carry a valid tag: untagged records
//! are rejected ([`EnvelopeError::MissingTag`]) and tags are compared in
//! constant time. Without a key, *tagged* records are rejected too
//! ([`EnvelopeError::UnexpectedTag`]): a fleet where some processes have a key
//! and others do not is misconfigured, and failing loudly finds that at once
//! instead of silently accepting unauthenticated traffic on one side.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::auth::HmacKey;

/// First four bytes of every record.
pub const MAGIC: [u8; 4] = *b"HRMS";

/// Version of this layout. Records with any other version are rejected.
pub const PROTOCOL_VERSION: u16 = 3;

/// Longest run id or sender id, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// Length of the HMAC-SHA256 tag.
pub const TAG_BYTES: usize = 32;

/// Flag bit: a tag follows the payload.
const FLAG_TAGGED: u8 = 0b0000_0001;

/// Flag bit: a CRC-32 follows the payload (records without a key).
const FLAG_CHECKSUM: u8 = 0b0000_0010;

/// Length of the CRC-32 trailer.
pub const CHECKSUM_BYTES: usize = 4;

/// Bytes of a record besides the two ids, the payload and the tag:
/// magic, version, kind, flags, two id lengths, sequence, payload length.
const FIXED_BYTES: usize = 4 + 2 + 1 + 1 + 2 + 2 + 8 + 4;

type HmacSha256 = Hmac<Sha256>;

/// What a record carries; decides how its payload is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum MessageKind {
    /// Start/stop/configuration broadcast by the master.
    Control = 1,
    /// Global model weights.
    Model = 2,
    /// A data shard for one worker.
    Shard = 3,
    /// A worker's weight update.
    Update = 4,
    /// Registration, heartbeat and round reports.
    Status = 5,
    /// Forwarded log events.
    Log = 6,
    /// One piece of a larger payload (see [`crate::chunking`]).
    Chunk = 7,
}

impl MessageKind {
    /// Every kind, in wire-code order.
    pub const ALL: [MessageKind; 7] = [
        MessageKind::Control,
        MessageKind::Model,
        MessageKind::Shard,
        MessageKind::Update,
        MessageKind::Status,
        MessageKind::Log,
        MessageKind::Chunk,
    ];

    /// The byte that encodes this kind on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind for a wire byte, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl TryFrom<u8> for MessageKind {
    type Error = EnvelopeError;

    fn try_from(code: u8) -> Result<Self, Self::Error> {
        Self::from_code(code).ok_or(EnvelopeError::UnknownKind(code))
    }
}

/// A decoded record that owns its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// What the payload is.
    pub kind: MessageKind,
    /// The run this record belongs to (always the codec's run id after decoding).
    pub run_id: String,
    /// Who sent it (worker id or master id).
    pub sender: String,
    /// The sender's sequence number.
    pub sequence: u64,
    /// The message body (bincode or a chunk).
    pub payload: Vec<u8>,
}

/// A decoded record that borrows from the input bytes (no copies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeRef<'a> {
    /// What the payload is.
    pub kind: MessageKind,
    /// The run this record belongs to.
    pub run_id: &'a str,
    /// Who sent it.
    pub sender: &'a str,
    /// The sender's sequence number.
    pub sequence: u64,
    /// The message body.
    pub payload: &'a [u8],
}

impl EnvelopeRef<'_> {
    /// Copies the borrowed fields into an owned [`Envelope`].
    pub fn to_owned_envelope(&self) -> Envelope {
        Envelope {
            kind: self.kind,
            run_id: self.run_id.to_string(),
            sender: self.sender.to_string(),
            sequence: self.sequence,
            payload: self.payload.to_vec(),
        }
    }
}

/// Why a record was rejected.
#[derive(Error, Debug)]
pub enum EnvelopeError {
    /// The record ends before a field it declares.
    #[error("record too short: needs at least {needed} bytes, has {available}")]
    TooShort {
        /// Bytes needed to read the next field.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    #[error("bad magic: not a hermes record")]
    BadMagic,
    /// The protocol version is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// The kind byte is not a [`MessageKind`].
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The record belongs to another run.
    #[error("record for run {found:?}, expected run {expected:?}")]
    WrongRunId {
        /// This codec's run id.
        expected: String,
        /// The record's run id (lossily decoded).
        found: String,
    },
    /// A key is configured but the record has no tag.
    #[error("record has no HMAC tag but a key is configured")]
    MissingTag,
    /// The tag does not match the record's contents under our key.
    #[error("HMAC tag does not verify")]
    BadTag,
    /// No key is configured but the record is tagged (see the module docs).
    #[error("record has an HMAC tag but no key is configured")]
    UnexpectedTag,
    /// The record has neither a tag nor a checksum.
    #[error("record carries no integrity check (neither HMAC tag nor CRC)")]
    MissingIntegrity,
    /// The CRC-32 does not match: the record was corrupted.
    #[error("checksum does not match: the record is corrupted")]
    BadChecksum,
    /// The payload is larger than the codec allows.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Declared payload length.
        size: usize,
        /// The codec's `max_payload_bytes`.
        limit: usize,
    },
    /// A run id or sender id is longer than [`MAX_ID_BYTES`] (when encoding).
    #[error("{field} is {len} bytes long; at most {MAX_ID_BYTES} are allowed")]
    IdTooLong {
        /// `"run id"` or `"sender id"`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Anything else structurally wrong (named in the message).
    #[error("malformed record: {0}")]
    Malformed(String),
}

impl EnvelopeError {
    /// A short `snake_case` label for metrics counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::TooShort { .. } => "too_short",
            EnvelopeError::BadMagic => "bad_magic",
            EnvelopeError::UnsupportedVersion(_) => "unsupported_version",
            EnvelopeError::UnknownKind(_) => "unknown_kind",
            EnvelopeError::WrongRunId { .. } => "wrong_run_id",
            EnvelopeError::MissingTag => "missing_tag",
            EnvelopeError::BadTag => "bad_tag",
            EnvelopeError::UnexpectedTag => "unexpected_tag",
            EnvelopeError::MissingIntegrity => "missing_integrity",
            EnvelopeError::BadChecksum => "bad_checksum",
            EnvelopeError::PayloadTooLarge { .. } => "payload_too_large",
            EnvelopeError::IdTooLong { .. } => "id_too_long",
            EnvelopeError::Malformed(_) => "malformed",
        }
    }
}

/// An HMAC state keyed with `key` (HMAC accepts keys of any length).
fn keyed(key: &HmacKey) -> HmacSha256 {
    <HmacSha256 as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// Encodes and decodes records of one run, with an optional shared key.
///
/// Cheap to clone; `encode` and `decode` take `&self`, so one codec can be
/// shared by a producer task and a consumer task.
#[derive(Clone)]
pub struct EnvelopeCodec {
    run_id: String,
    /// HMAC state already keyed, cloned per record (saves re-keying).
    mac: Option<HmacSha256>,
    /// The key being rotated out: accepted when verifying, never used to sign.
    previous_mac: Option<HmacSha256>,
    max_payload_bytes: usize,
}

impl std::fmt::Debug for EnvelopeCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeCodec")
            .field("run_id", &self.run_id)
            .field("authenticated", &self.mac.is_some())
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish()
    }
}

impl EnvelopeCodec {
    /// A codec for `run_id`; records are tagged and verified when `key` is set;
    /// `decode` rejects payloads over `max_payload_bytes`.
    ///
    /// # Panics
    ///
    /// If `run_id` is longer than [`MAX_ID_BYTES`]; use [`EnvelopeCodec::try_new`]
    /// (or [`validate_id`] when loading config) to get an error instead.
    pub fn new(run_id: impl Into<String>, key: Option<HmacKey>, max_payload_bytes: usize) -> Self {
        match Self::try_new(run_id, key, max_payload_bytes) {
            Ok(codec) => codec,
            Err(e) => panic!("EnvelopeCodec::new: {e}"),
        }
    }

    /// Like [`EnvelopeCodec::new`], but a run id over [`MAX_ID_BYTES`] is an error.
    pub fn try_new(
        run_id: impl Into<String>,
        key: Option<HmacKey>,
        max_payload_bytes: usize,
    ) -> Result<Self, EnvelopeError> {
        let run_id = run_id.into();
        validate_id("run id", &run_id)?;
        Ok(Self {
            run_id,
            mac: key.as_ref().map(keyed),
            previous_mac: None,
            max_payload_bytes,
        })
    }

    /// Also accepts records tagged with `previous` (a key rotation: every
    /// node signs with the new key and still verifies the old one until all
    /// of them have the new key). Ignored on a codec without a key.
    pub fn with_previous_key(mut self, previous: Option<HmacKey>) -> Self {
        if self.mac.is_some() {
            self.previous_mac = previous.as_ref().map(keyed);
        }
        self
    }

    /// The run id every record of this codec carries.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether records are tagged and verified.
    pub fn is_authenticated(&self) -> bool {
        self.mac.is_some()
    }

    /// Largest payload `decode` accepts.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Bytes an encoded record adds around a payload for this `sender`
    /// (header plus tag). The transport uses it to size chunks.
    pub fn overhead(&self, sender: &str) -> usize {
        FIXED_BYTES
            + self.run_id.len()
            + sender.len()
            + if self.mac.is_some() {
                TAG_BYTES
            } else {
                CHECKSUM_BYTES
            }
    }

    /// Encodes one record: one allocation of the exact size, payload written once.
    ///
    /// # Panics
    ///
    /// If `sender` is longer than [`MAX_ID_BYTES`] or the payload is 4 GiB or
    /// more (use [`EnvelopeCodec::try_encode_parts`] to get an error instead).
    pub fn encode(
        &self,
        kind: MessageKind,
        sender: &str,
        sequence: u64,
        payload: &[u8],
    ) -> Vec<u8> {
        self.encode_parts(kind, sender, sequence, &[payload])
    }

    /// Encodes a record whose payload is the concatenation of `parts`, so that
    /// e.g. a chunk header and a borrowed slice of a large buffer go on the
    /// wire without being joined first.
    ///
    /// # Panics
    ///
    /// As [`EnvelopeCodec::encode`].
    pub fn encode_parts(
        &self,
        kind: MessageKind,
        sender: &str,
        sequence: u64,
        parts: &[&[u8]],
    ) -> Vec<u8> {
        match self.try_encode_parts(kind, sender, sequence, parts) {
            Ok(bytes) => bytes,
            Err(e) => panic!("EnvelopeCodec::encode: {e}"),
        }
    }

    /// [`EnvelopeCodec::encode_parts`] returning an error instead of panicking
    /// when the sender id or the payload cannot be represented.
    pub fn try_encode_parts(
        &self,
        kind: MessageKind,
        sender: &str,
        sequence: u64,
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::new();
        self.try_encode_parts_into(&mut out, kind, sender, sequence, parts)?;
        debug_assert_eq!(out.len(), out.capacity());
        Ok(out)
    }

    /// [`EnvelopeCodec::try_encode_parts`] into a caller's buffer (cleared
    /// first), so a sender streaming many records reuses one allocation.
    pub fn try_encode_parts_into(
        &self,
        out: &mut Vec<u8>,
        kind: MessageKind,
        sender: &str,
        sequence: u64,
        parts: &[&[u8]],
    ) -> Result<(), EnvelopeError> {
        validate_id("sender id", sender)?;
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let payload_len_u32 =
            u32::try_from(payload_len).map_err(|_| EnvelopeError::PayloadTooLarge {
                size: payload_len,
                limit: u32::MAX as usize,
            })?;

        out.clear();
        out.reserve_exact(self.overhead(sender) + payload_len);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out.push(kind.code());
        out.push(if self.mac.is_some() {
            FLAG_TAGGED
        } else {
            FLAG_CHECKSUM
        });
        // Lengths fit in u16: validate_id bounds them by MAX_ID_BYTES.
        out.extend_from_slice(&(self.run_id.len() as u16).to_le_bytes());
        out.extend_from_slice(self.run_id.as_bytes());
        out.extend_from_slice(&(sender.len() as u16).to_le_bytes());
        out.extend_from_slice(sender.as_bytes());
        out.extend_from_slice(&sequence.to_le_bytes());
        out.extend_from_slice(&payload_len_u32.to_le_bytes());
        let header_end = out.len();
        for part in parts {
            out.extend_from_slice(part);
        }
        let signed = &out[..signed_end(kind, header_end, payload_len)];
        if let Some(mac) = &self.mac {
            let mut mac = mac.clone();
            mac.update(signed);
            let tag = mac.finalize().into_bytes();
            out.extend_from_slice(&tag);
        } else {
            let crc = crc32fast::hash(signed);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        Ok(())
    }

    /// Decodes and checks one record, copying its strings and payload.
    pub fn decode(&self, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        self.decode_ref(bytes).map(|e| e.to_owned_envelope())
    }

    /// Decodes and checks one record without copying: the result borrows `bytes`.
    ///
    /// Checks, in order: magic, version, kind, flags, every length against the
    /// bytes present, the payload limit, the run id, the tag (presence and
    /// value, constant-time), UTF-8 of the sender, and that nothing trails.
    pub fn decode_ref<'a>(&self, bytes: &'a [u8]) -> Result<EnvelopeRef<'a>, EnvelopeError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let version = r.u16()?;
        if version != PROTOCOL_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let kind = MessageKind::try_from(r.u8()?)?;
        let flags = r.u8()?;
        let known = FLAG_TAGGED | FLAG_CHECKSUM;
        if flags & !known != 0 {
            return Err(EnvelopeError::Malformed(format!(
                "unknown flag bits {:#04x}",
                flags & !known
            )));
        }
        let tagged = flags & FLAG_TAGGED != 0;
        let checksummed = flags & FLAG_CHECKSUM != 0;
        match (tagged, checksummed) {
            (false, false) => return Err(EnvelopeError::MissingIntegrity),
            (true, true) => {
                return Err(EnvelopeError::Malformed(
                    "both the tag and the checksum flag are set".to_string(),
                ))
            }
            _ => {}
        }
        let run_id = r.id("run id")?;
        let sender = r.id("sender id")?;
        let sequence = r.u64()?;
        let payload_len = r.u32()? as usize;
        if payload_len > self.max_payload_bytes {
            return Err(EnvelopeError::PayloadTooLarge {
                size: payload_len,
                limit: self.max_payload_bytes,
            });
        }
        let payload_start = r.pos;
        let payload = r.take(payload_len)?;
        let signed_len = signed_end(kind, payload_start, payload_len);
        let tag = if tagged {
            Some(r.take(TAG_BYTES)?)
        } else {
            None
        };
        let checksum = if checksummed {
            Some(r.array::<CHECKSUM_BYTES>()?)
        } else {
            None
        };
        if r.pos != bytes.len() {
            return Err(EnvelopeError::Malformed(format!(
                "{} unexpected bytes after the record",
                bytes.len() - r.pos
            )));
        }

        if let Some(crc) = checksum {
            if u32::from_le_bytes(crc) != crc32fast::hash(&bytes[..signed_len]) {
                return Err(EnvelopeError::BadChecksum);
            }
        }
        if run_id != self.run_id.as_bytes() {
            return Err(EnvelopeError::WrongRunId {
                expected: self.run_id.clone(),
                found: String::from_utf8_lossy(run_id).into_owned(),
            });
        }
        match (&self.mac, tag) {
            (Some(_), None) => return Err(EnvelopeError::MissingTag),
            (None, Some(_)) => return Err(EnvelopeError::UnexpectedTag),
            (None, None) => {}
            (Some(mac), Some(tag)) => {
                let verifies = |mac: &HmacSha256| {
                    let mut mac = mac.clone();
                    mac.update(&bytes[..signed_len]);
                    mac.verify_slice(tag).is_ok()
                };
                if !verifies(mac) && !self.previous_mac.as_ref().is_some_and(verifies) {
                    return Err(EnvelopeError::BadTag);
                }
            }
        }
        // Equal to our own run id, hence valid UTF-8.
        let run_id = std::str::from_utf8(run_id)
            .map_err(|_| EnvelopeError::Malformed("run id is not valid UTF-8".to_string()))?;
        let sender = std::str::from_utf8(sender)
            .map_err(|_| EnvelopeError::Malformed("sender id is not valid UTF-8".to_string()))?;

        Ok(EnvelopeRef {
            kind,
            run_id,
            sender,
            sequence,
            payload,
        })
    }
}

/// Where the bytes a record's tag or checksum covers end: every byte before
/// it, except a chunk's data — a chunk's header carries the BLAKE3 digest of
/// its data, which the reassembler (`chunking`) checks before using any of it, so the
/// tag covers the data through the digest without a second full pass over
/// it (HMAC-SHA256 is the slowest step of a large transfer otherwise).
fn signed_end(kind: MessageKind, payload_start: usize, payload_len: usize) -> usize {
    match kind {
        MessageKind::Chunk => payload_start + payload_len.min(CHUNK_SIGNED_BYTES),
        _ => payload_start + payload_len,
    }
}

/// Bytes of a [`MessageKind::Chunk`] payload its tag covers: the chunk
/// header (`chunking::CHUNK_HEADER_BYTES`, which the compiler checks is
/// the same), with the digest of the data.
pub const CHUNK_SIGNED_BYTES: usize = 16 + 4 + 4 + 8 + 32 + 1 + 4;

/// Checks that an id (run id, worker id) fits the wire format: at most
/// [`MAX_ID_BYTES`] bytes. Config loading can call this to fail early.
pub fn validate_id(field: &'static str, id: &str) -> Result<(), EnvelopeError> {
    if id.len() > MAX_ID_BYTES {
        return Err(EnvelopeError::IdTooLong {
            field,
            len: id.len(),
        });
    }
    Ok(())
}

/// A cursor that refuses to read past the end of its input.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(EnvelopeError::TooShort {
                needed: self.pos.saturating_add(n),
                available: self.bytes.len(),
            })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, EnvelopeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u16-length-prefixed id, bounded by [`MAX_ID_BYTES`].
    fn id(&mut self, field: &str) -> Result<&'a [u8], EnvelopeError> {
        let len = self.u16()? as usize;
        if len > MAX_ID_BYTES {
            return Err(EnvelopeError::Malformed(format!(
                "{field} length {len} exceeds {MAX_ID_BYTES}"
            )));
        }
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const RUN: &str = "run-42";
    const LIMIT: usize = 1 << 20;

    fn key(byte: u8) -> HmacKey {
        HmacKey::from_bytes(&[byte; 32]).expect("valid key")
    }

    fn plain() -> EnvelopeCodec {
        EnvelopeCodec::new(RUN, None, LIMIT)
    }

    fn keyed() -> EnvelopeCodec {
        EnvelopeCodec::new(RUN, Some(key(1)), LIMIT)
    }

    fn sample(codec: &EnvelopeCodec) -> Vec<u8> {
        codec.encode(MessageKind::Update, "worker-7", 99, b"some payload bytes")
    }

    /// Offset of the version field, the kind and flags bytes.
    const VERSION_AT: usize = 4;
    const KIND_AT: usize = 6;
    const FLAGS_AT: usize = 7;

    #[test]
    fn round_trip_plain_and_keyed_for_every_kind() {
        for codec in [plain(), keyed()] {
            for kind in MessageKind::ALL {
                for payload in [&b""[..], b"x", &[0xAB; 5000][..]] {
                    let bytes = codec.encode(kind, "worker-ü", u64::MAX - 3, payload);
                    assert_eq!(bytes.len(), codec.overhead("worker-ü") + payload.len());
                    let env = codec.decode(&bytes).expect("round trip");
                    assert_eq!(
                        env,
                        Envelope {
                            kind,
                            run_id: RUN.into(),
                            sender: "worker-ü".into(),
                            sequence: u64::MAX - 3,
                            payload: payload.to_vec(),
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn encode_parts_equals_encode_of_the_concatenation() {
        let codec = keyed();
        let joined = codec.encode(MessageKind::Chunk, "m", 1, b"headerdata");
        let parts = codec.encode_parts(MessageKind::Chunk, "m", 1, &[b"header", b"data"]);
        assert_eq!(joined, parts);
    }

    #[test]
    fn a_chunks_tag_covers_its_header_and_leaves_its_data_to_the_digest() {
        use crate::chunking::{split, ChunkLimits, ChunkRef, Reassembler};
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let chunk = split(&payload, 4000, MessageKind::Model).remove(0);
        for (codec, trailer) in [(keyed(), TAG_BYTES), (plain(), CHECKSUM_BYTES)] {
            let record = codec.encode(MessageKind::Chunk, "m", 1, &chunk.encode());
            let data_at = record.len() - trailer - chunk.data.len();
            // A changed header byte (the digest) fails the tag or CRC.
            let mut header = record.clone();
            header[data_at - 20] ^= 1;
            assert!(codec.decode(&header).is_err());
            // A changed data byte passes the envelope, and the digest refuses it.
            let mut data = record.clone();
            data[data_at + 10] ^= 1;
            let env = codec.decode(&data).expect("the tag leaves the data out");
            let mut r = Reassembler::new(ChunkLimits::default());
            let chunk = ChunkRef::decode(&env.payload, r.limits()).expect("well formed");
            assert_eq!(
                r.push_ref("m", chunk, std::time::Instant::now())
                    .expect_err("digest")
                    .reason(),
                "chunk_digest_mismatch"
            );
        }
    }

    #[test]
    fn kind_codes_round_trip_and_unknown_codes_fail() {
        for kind in MessageKind::ALL {
            assert_eq!(MessageKind::try_from(kind.code()).expect("known"), kind);
        }
        for code in [0u8, 8, 200, 255] {
            assert!(matches!(
                MessageKind::try_from(code),
                Err(EnvelopeError::UnknownKind(c)) if c == code
            ));
        }
    }

    /// Recomputes the CRC of an untagged record changed on purpose.
    fn reseal(bytes: &mut [u8]) {
        let end = bytes.len() - CHECKSUM_BYTES;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn every_single_bit_flip_of_an_unkeyed_record_is_rejected() {
        let bytes = sample(&plain());
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                plain().decode(&flipped).is_err(),
                "bit {bit} flipped was accepted"
            );
        }
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - CHECKSUM_BYTES - 1;
        corrupt[last] ^= 0x10; // a payload byte
        assert_eq!(
            plain().decode(&corrupt).expect_err("crc").reason(),
            "bad_checksum"
        );
    }

    #[test]
    fn a_record_without_integrity_check_or_with_both_flags_is_refused() {
        let mut bytes = sample(&plain());
        bytes.truncate(bytes.len() - CHECKSUM_BYTES);
        bytes[FLAGS_AT] = 0;
        assert_eq!(
            plain().decode(&bytes).expect_err("none").reason(),
            "missing_integrity"
        );
        let mut both = sample(&plain());
        both[FLAGS_AT] = FLAG_TAGGED | FLAG_CHECKSUM;
        assert_eq!(
            plain().decode(&both).expect_err("both").reason(),
            "malformed"
        );
    }

    #[test]
    fn during_a_rotation_the_previous_key_still_verifies_but_never_signs() {
        let old = HmacKey::from_bytes(b"the old key, 32 bytes long......").expect("key");
        let new = HmacKey::from_bytes(b"the new key, 32 bytes long......").expect("key");
        let old_codec = EnvelopeCodec::new(RUN, Some(old.clone()), LIMIT);
        let rotating =
            EnvelopeCodec::new(RUN, Some(new.clone()), LIMIT).with_previous_key(Some(old));
        let new_only = EnvelopeCodec::new(RUN, Some(new), LIMIT);
        let from_old = sample(&old_codec);
        assert!(rotating.decode(&from_old).is_ok());
        assert_eq!(
            new_only.decode(&from_old).expect_err("old").reason(),
            "bad_tag"
        );
        // What the rotating node sends verifies under the new key alone.
        assert!(new_only.decode(&sample(&rotating)).is_ok());
        assert_eq!(
            old_codec
                .decode(&sample(&rotating))
                .expect_err("new")
                .reason(),
            "bad_tag"
        );
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut bytes = sample(&plain());
        bytes[0] = b'X';
        let err = plain().decode(&bytes).expect_err("bad magic");
        assert!(matches!(err, EnvelopeError::BadMagic));
        assert_eq!(err.reason(), "bad_magic");
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = sample(&plain());
        bytes[VERSION_AT..VERSION_AT + 2].copy_from_slice(&7u16.to_le_bytes());
        let err = plain().decode(&bytes).expect_err("version");
        assert!(matches!(err, EnvelopeError::UnsupportedVersion(7)));
        assert_eq!(err.reason(), "unsupported_version");
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut bytes = sample(&plain());
        bytes[KIND_AT] = 42;
        let err = plain().decode(&bytes).expect_err("kind");
        assert!(matches!(err, EnvelopeError::UnknownKind(42)));
        assert_eq!(err.reason(), "unknown_kind");
    }

    #[test]
    fn unknown_flag_bits_are_rejected() {
        let mut bytes = sample(&plain());
        bytes[FLAGS_AT] |= 0x80;
        let err = plain().decode(&bytes).expect_err("flags");
        assert_eq!(err.reason(), "malformed");
    }

    #[test]
    fn wrong_run_id_is_rejected_naming_both_runs() {
        let other = EnvelopeCodec::new("run-other", None, LIMIT);
        let err = plain().decode(&sample(&other)).expect_err("run id");
        match &err {
            EnvelopeError::WrongRunId { expected, found } => {
                assert_eq!(expected, RUN);
                assert_eq!(found, "run-other");
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(err.reason(), "wrong_run_id");
    }

    #[test]
    fn missing_tag_is_rejected_when_a_key_is_set() {
        let err = keyed().decode(&sample(&plain())).expect_err("untagged");
        assert!(matches!(err, EnvelopeError::MissingTag));
        assert_eq!(err.reason(), "missing_tag");
    }

    #[test]
    fn tag_under_another_key_is_rejected() {
        let other = EnvelopeCodec::new(RUN, Some(key(2)), LIMIT);
        let err = keyed().decode(&sample(&other)).expect_err("other key");
        assert!(matches!(err, EnvelopeError::BadTag));
        assert_eq!(err.reason(), "bad_tag");
    }

    #[test]
    fn any_flipped_bit_in_a_tagged_record_is_rejected() {
        let codec = keyed();
        let bytes = sample(&codec);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                assert!(
                    codec.decode(&tampered).is_err(),
                    "flip of bit {bit} at byte {i} accepted"
                );
            }
        }
    }

    #[test]
    fn tampered_payload_gives_bad_tag() {
        let codec = keyed();
        let mut bytes = sample(&codec);
        let payload_at = bytes.len() - TAG_BYTES - 1;
        bytes[payload_at] ^= 0xFF;
        assert!(matches!(codec.decode(&bytes), Err(EnvelopeError::BadTag)));
    }

    #[test]
    fn unexpected_tag_is_rejected_without_a_key() {
        let err = plain().decode(&sample(&keyed())).expect_err("tagged");
        assert!(matches!(err, EnvelopeError::UnexpectedTag));
        assert_eq!(err.reason(), "unexpected_tag");
    }

    #[test]
    fn payload_over_the_limit_is_rejected() {
        let small = EnvelopeCodec::new(RUN, None, 16);
        let bytes = plain().encode(MessageKind::Model, "m", 0, &[0u8; 17]);
        let err = small.decode(&bytes).expect_err("too large");
        assert!(matches!(
            err,
            EnvelopeError::PayloadTooLarge {
                size: 17,
                limit: 16
            }
        ));
        assert_eq!(err.reason(), "payload_too_large");
        assert!(small
            .decode(&plain().encode(MessageKind::Model, "m", 0, &[0u8; 16]))
            .is_ok());
    }

    #[test]
    fn huge_declared_payload_length_is_rejected_without_allocating() {
        let mut bytes = sample(&plain());
        let len_at = bytes.len() - CHECKSUM_BYTES - b"some payload bytes".len() - 4;
        bytes[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = plain().decode(&bytes).expect_err("huge");
        assert!(matches!(err, EnvelopeError::PayloadTooLarge { .. }));
    }

    #[test]
    fn truncation_at_every_offset_is_too_short() {
        for codec in [plain(), keyed()] {
            let bytes = sample(&codec);
            for cut in 0..bytes.len() {
                let err = codec.decode(&bytes[..cut]).expect_err("truncated");
                assert!(
                    matches!(err, EnvelopeError::TooShort { available, .. } if available == cut),
                    "cut at {cut}: {err:?}"
                );
                assert_eq!(err.reason(), "too_short");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = sample(&plain());
        bytes.push(0);
        assert_eq!(
            plain().decode(&bytes).expect_err("trailing").reason(),
            "malformed"
        );
    }

    #[test]
    fn non_utf8_sender_is_rejected() {
        let mut bytes = plain().encode(MessageKind::Log, "ab", 0, b"");
        let sender_at = 8 + 2 + RUN.len() + 2;
        bytes[sender_at] = 0xFF;
        reseal(&mut bytes);
        let err = plain().decode(&bytes).expect_err("utf8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn overlong_id_length_is_rejected() {
        let mut bytes = sample(&plain());
        bytes[8..10].copy_from_slice(&300u16.to_le_bytes());
        assert_eq!(
            plain().decode(&bytes).expect_err("long").reason(),
            "malformed"
        );
    }

    #[test]
    fn ids_longer_than_the_limit_cannot_be_encoded() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        assert!(matches!(
            EnvelopeCodec::try_new(long.clone(), None, LIMIT),
            Err(EnvelopeError::IdTooLong {
                field: "run id",
                len: 256
            })
        ));
        assert!(matches!(
            plain().try_encode_parts(MessageKind::Log, &long, 0, &[]),
            Err(EnvelopeError::IdTooLong {
                field: "sender id",
                ..
            })
        ));
        let max = "y".repeat(MAX_ID_BYTES);
        let codec = EnvelopeCodec::new(max.clone(), None, LIMIT);
        let env = codec
            .decode(&codec.encode(MessageKind::Log, &max, 1, b"p"))
            .expect("255-byte ids round trip");
        assert_eq!(env.sender, max);
    }

    #[test]
    fn random_bytes_never_panic_and_never_decode() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x4845_524D);
        for codec in [plain(), keyed()] {
            for _ in 0..20_000 {
                let len = rng.random_range(0..200);
                let mut bytes = vec![0u8; len];
                rng.fill_bytes(&mut bytes);
                // Half the inputs get a valid prefix so that parsing goes deeper.
                if rng.random_bool(0.5) && len >= 8 {
                    bytes[..4].copy_from_slice(&MAGIC);
                    bytes[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
                    bytes[6] = rng.random_range(1..=7);
                    bytes[7] = rng.random_range(0..=1);
                }
                assert!(codec.decode(&bytes).is_err());
            }
        }
    }

    #[test]
    fn random_mutations_of_valid_records_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let codec = plain();
        let base = sample(&codec);
        for _ in 0..20_000 {
            let mut bytes = base.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            if rng.random_bool(0.3) {
                bytes.truncate(rng.random_range(0..bytes.len()));
            }
            // Must not panic; a mutated plain record may still decode, but then
            // it must describe exactly the bytes it came from.
            if let Ok(env) = codec.decode(&bytes) {
                let again = codec.encode(env.kind, &env.sender, env.sequence, &env.payload);
                assert_eq!(again, bytes);
            }
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let shown = format!("{:?}", keyed());
        assert!(shown.contains("authenticated: true"), "{shown}");
        assert!(!shown.contains("1, 1, 1"), "{shown}");
    }
}
