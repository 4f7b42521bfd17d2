//! Splitting payloads too large for one Kafka record into chunks, and putting
//! them back together with bounded memory.
//!
//! # Chunk layout
//!
//! A chunk travels as the payload of an envelope of kind
//! [`MessageKind::Chunk`]. Hand-rolled, little-endian, length-checked:
//!
//! | field        | size         |
//! |--------------|--------------|
//! | transfer id  | 16           |
//! | index        | 4 (u32)      |
//! | count        | 4 (u32)      |
//! | total length | 8 (u64)      |
//! | digest       | 32 (BLAKE3 of this chunk's data) |
//! | inner kind   | 1 (u8)       |
//! | data         | 4 (u32) + n  |
//!
//! # Chunk geometry
//!
//! A transfer of `total_len` bytes in `count` chunks uses chunks of
//! `ceil(total_len / count)` bytes, the last one taking the rest (at least one
//! byte). [`split`] balances chunks this way so that the receiver can derive
//! every chunk's exact size and offset from the header alone, check each chunk
//! against it, and write it straight into place. An empty payload is one empty
//! chunk.
//!
//! # Reassembly
//!
//! [`Reassembler`] keys transfers by (sender, transfer id). A transfer's buffer
//! is allocated once, when its first chunk arrives, and only after the declared
//! size has been checked against [`ChunkLimits`]. Redelivered chunks (Kafka
//! delivers at least once) are ignored, also for recently completed transfers.
//! A transfer that fails (inconsistent header, wrong chunk size, digest
//! mismatch) is dropped and its memory freed, and its later chunks are
//! ignored; one that stops receiving chunks is freed by [`Reassembler::expire`].
//!
//! # Why a digest per chunk
//!
//! Each chunk carries the BLAKE3 hash of its own data, checked on arrival. Every
//! byte of the payload is covered, each chunk's place is fixed by (index,
//! count, total length), and hashing overlaps with the network on both ends:
//! a whole-payload digest would have to be computed before the first chunk
//! leaves and again after the last one lands, adding two full passes over a
//! large model to every transfer's latency. BLAKE3 rather than SHA-256: it is
//! a cryptographic hash too, and about twice as fast here (SIMD), which the
//! transport benchmark shows in end-to-end throughput. Authenticity comes
//! from the envelope's HMAC, not from this digest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::envelope::MessageKind;

/// Bytes of an encoded chunk before its data.
pub const CHUNK_HEADER_BYTES: usize = 16 + 4 + 4 + 8 + 32 + 1 + 4;

// The envelope's tag covers exactly a chunk's header (its digest included).
const _: () = assert!(CHUNK_HEADER_BYTES == crate::envelope::CHUNK_SIGNED_BYTES);

/// Completed transfer ids remembered to ignore late redeliveries.
const COMPLETED_MEMORY: usize = 4096;

/// One piece of a larger payload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Random id shared by all chunks of one payload (UUID v4 bytes).
    pub transfer_id: [u8; 16],
    /// Position of this chunk, `0..count`.
    pub index: u32,
    /// Number of chunks in the transfer.
    pub count: u32,
    /// Length of the whole payload in bytes.
    pub total_len: u64,
    /// BLAKE3 hash of this chunk's data.
    pub digest: [u8; 32],
    /// Kind of the reassembled payload.
    pub inner_kind: MessageKind,
    /// This chunk's bytes.
    pub data: Vec<u8>,
}

/// A chunk whose data borrows from a larger buffer (sending side, no copy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkRef<'a> {
    /// See [`Chunk::transfer_id`].
    pub transfer_id: [u8; 16],
    /// See [`Chunk::index`].
    pub index: u32,
    /// See [`Chunk::count`].
    pub count: u32,
    /// See [`Chunk::total_len`].
    pub total_len: u64,
    /// See [`Chunk::digest`].
    pub digest: [u8; 32],
    /// See [`Chunk::inner_kind`].
    pub inner_kind: MessageKind,
    /// This chunk's bytes.
    pub data: &'a [u8],
}

impl Chunk {
    /// Encodes the chunk (header then data) into one exactly-sized buffer.
    pub fn encode(&self) -> Vec<u8> {
        self.as_ref().encode()
    }

    /// Decodes and checks one chunk: exact length, known inner kind, and the
    /// header's sizes against `limits` (see [`ChunkRef::check_limits`]).
    pub fn decode(bytes: &[u8], limits: &ChunkLimits) -> Result<Chunk, ChunkError> {
        ChunkRef::decode(bytes, limits).map(|c| c.to_owned_chunk())
    }

    /// A borrowed view of this chunk.
    pub fn as_ref(&self) -> ChunkRef<'_> {
        ChunkRef {
            transfer_id: self.transfer_id,
            index: self.index,
            count: self.count,
            total_len: self.total_len,
            digest: self.digest,
            inner_kind: self.inner_kind,
            data: &self.data,
        }
    }
}

impl<'a> ChunkRef<'a> {
    /// The encoded header; the encoded chunk is this followed by `data`.
    ///
    /// # Panics
    ///
    /// If `data` is 4 GiB or longer (never the case for chunks made by [`split`]).
    pub fn header_bytes(&self) -> [u8; CHUNK_HEADER_BYTES] {
        let data_len = u32::try_from(self.data.len())
            .unwrap_or_else(|_| panic!("chunk data of {} bytes does not fit u32", self.data.len()));
        let mut h = [0u8; CHUNK_HEADER_BYTES];
        h[0..16].copy_from_slice(&self.transfer_id);
        h[16..20].copy_from_slice(&self.index.to_le_bytes());
        h[20..24].copy_from_slice(&self.count.to_le_bytes());
        h[24..32].copy_from_slice(&self.total_len.to_le_bytes());
        h[32..64].copy_from_slice(&self.digest);
        h[64] = self.inner_kind.code();
        h[65..69].copy_from_slice(&data_len.to_le_bytes());
        h
    }

    /// Encodes the chunk into one exactly-sized buffer. To avoid even this copy,
    /// pass `[&header_bytes(), data]` to
    /// [`EnvelopeCodec::encode_parts`](crate::envelope::EnvelopeCodec::encode_parts).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHUNK_HEADER_BYTES + self.data.len());
        out.extend_from_slice(&self.header_bytes());
        out.extend_from_slice(self.data);
        out
    }

    /// Decodes one chunk without copying its data; checks as [`Chunk::decode`].
    pub fn decode(bytes: &'a [u8], limits: &ChunkLimits) -> Result<ChunkRef<'a>, ChunkError> {
        if bytes.len() < CHUNK_HEADER_BYTES {
            return Err(ChunkError::Malformed(format!(
                "chunk of {} bytes is shorter than its {CHUNK_HEADER_BYTES}-byte header",
                bytes.len()
            )));
        }
        let (h, data) = bytes.split_at(CHUNK_HEADER_BYTES);
        let le_u32 = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let mut transfer_id = [0u8; 16];
        transfer_id.copy_from_slice(&h[0..16]);
        let mut total_len = [0u8; 8];
        total_len.copy_from_slice(&h[24..32]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&h[32..64]);
        let inner_kind = MessageKind::from_code(h[64])
            .ok_or_else(|| ChunkError::Malformed(format!("unknown inner kind {}", h[64])))?;
        let data_len = le_u32(65) as usize;
        if data_len != data.len() {
            return Err(ChunkError::Malformed(format!(
                "chunk declares {data_len} data bytes but carries {}",
                data.len()
            )));
        }
        let chunk = ChunkRef {
            transfer_id,
            index: le_u32(16),
            count: le_u32(20),
            total_len: u64::from_le_bytes(total_len),
            digest,
            inner_kind,
            data,
        };
        chunk.check_limits(limits)?;
        Ok(chunk)
    }

    /// Checks the header against `limits` and against itself: count in
    /// `1..=max_chunks`, index below count, declared size within
    /// `max_transfer_bytes`, a consistent geometry with chunk size within
    /// `max_chunk_data_bytes`, and this chunk's data length as the geometry says.
    pub fn check_limits(&self, limits: &ChunkLimits) -> Result<(), ChunkError> {
        if self.total_len > limits.max_transfer_bytes {
            return Err(ChunkError::DeclaredSizeTooLarge {
                size: self.total_len,
                limit: limits.max_transfer_bytes,
            });
        }
        if self.count > limits.max_chunks {
            return Err(ChunkError::TooManyChunks {
                count: self.count,
                limit: limits.max_chunks,
            });
        }
        if self.index >= self.count {
            return Err(ChunkError::IndexOutOfRange {
                index: self.index,
                count: self.count,
            });
        }
        let geometry = Geometry::new(self.count, self.total_len)?;
        if geometry.chunk_len > limits.max_chunk_data_bytes as u64 {
            return Err(ChunkError::ChunkDataTooLarge {
                size: geometry.chunk_len,
                limit: limits.max_chunk_data_bytes,
            });
        }
        let expected = geometry.len_of(self.index);
        if self.data.len() as u64 != expected {
            return Err(ChunkError::ChunkSizeMismatch {
                index: self.index,
                expected,
                found: self.data.len() as u64,
            });
        }
        Ok(())
    }

    /// Copies the data into an owned [`Chunk`].
    pub fn to_owned_chunk(&self) -> Chunk {
        Chunk {
            transfer_id: self.transfer_id,
            index: self.index,
            count: self.count,
            total_len: self.total_len,
            digest: self.digest,
            inner_kind: self.inner_kind,
            data: self.data.to_vec(),
        }
    }
}

/// Sizes and offsets of the chunks of one transfer (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    count: u32,
    total_len: u64,
    /// Length of every chunk but the last.
    chunk_len: u64,
}

impl Geometry {
    /// The geometry for a header, or an error if no split produces it.
    fn new(count: u32, total_len: u64) -> Result<Self, ChunkError> {
        let bad = || ChunkError::Malformed(format!("{count} chunks cannot hold {total_len} bytes"));
        if count == 0 {
            return Err(bad());
        }
        if total_len == 0 {
            return if count == 1 {
                Ok(Self {
                    count,
                    total_len,
                    chunk_len: 0,
                })
            } else {
                Err(bad())
            };
        }
        let chunk_len = total_len.div_ceil(u64::from(count));
        // The last chunk must hold at least one byte.
        if u64::from(count - 1) * chunk_len >= total_len {
            return Err(bad());
        }
        Ok(Self {
            count,
            total_len,
            chunk_len,
        })
    }

    fn offset_of(&self, index: u32) -> u64 {
        u64::from(index) * self.chunk_len
    }

    fn len_of(&self, index: u32) -> u64 {
        if index + 1 == self.count {
            self.total_len - self.offset_of(index)
        } else {
            self.chunk_len
        }
    }
}

/// Iterator over the chunks of one payload, borrowing the payload.
#[derive(Clone, Debug)]
pub struct Chunks<'a> {
    payload: &'a [u8],
    transfer_id: [u8; 16],
    inner_kind: MessageKind,
    geometry: Geometry,
    next: u32,
}

impl<'a> Chunks<'a> {
    /// The transfer id all chunks share.
    pub fn transfer_id(&self) -> [u8; 16] {
        self.transfer_id
    }

    /// Number of chunks in the transfer.
    pub fn count(&self) -> u32 {
        self.geometry.count
    }

    /// The next chunk as a borrowed view (no data copy).
    pub fn next_ref(&mut self) -> Option<ChunkRef<'a>> {
        if self.next >= self.geometry.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        // Offsets fit usize: they are within `payload`.
        let start = self.geometry.offset_of(index) as usize;
        let end = start + self.geometry.len_of(index) as usize;
        let data = &self.payload[start..end];
        Some(ChunkRef {
            transfer_id: self.transfer_id,
            index,
            count: self.geometry.count,
            total_len: self.geometry.total_len,
            digest: *blake3::hash(data).as_bytes(),
            inner_kind: self.inner_kind,
            data,
        })
    }
}

impl Iterator for Chunks<'_> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        self.next_ref().map(|c| c.to_owned_chunk())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.geometry.count - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Chunks<'_> {}

/// Chunks of at most `chunk_data_bytes` bytes each for `payload`, lazily, with
/// a fresh random transfer id. Use [`Chunks::next_ref`] to avoid copying data.
///
/// # Panics
///
/// If `chunk_data_bytes` is 0 or the payload needs more than `u32::MAX` chunks.
pub fn chunks(payload: &[u8], chunk_data_bytes: usize, inner_kind: MessageKind) -> Chunks<'_> {
    assert!(chunk_data_bytes > 0, "chunk_data_bytes must be positive");
    let total_len = payload.len() as u64;
    let count = u32::try_from(total_len.div_ceil(chunk_data_bytes as u64).max(1))
        .unwrap_or_else(|_| panic!("a payload of {total_len} bytes needs too many chunks"));
    let geometry = match Geometry::new(count, total_len) {
        Ok(g) => g,
        Err(e) => unreachable!("split produced an invalid geometry: {e}"),
    };
    Chunks {
        payload,
        transfer_id: *uuid::Uuid::new_v4().as_bytes(),
        inner_kind,
        geometry,
        next: 0,
    }
}

/// All chunks of `payload` at once; see [`chunks`] for the lazy version.
///
/// # Panics
///
/// As [`chunks`].
pub fn split(payload: &[u8], chunk_data_bytes: usize, inner_kind: MessageKind) -> Vec<Chunk> {
    chunks(payload, chunk_data_bytes, inner_kind).collect()
}

/// Bounds on what a [`Reassembler`] accepts and holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest payload one transfer may declare.
    pub max_transfer_bytes: u64,
    /// Most bytes held by all unfinished transfers together.
    pub max_buffered_bytes: u64,
    /// Largest data of one chunk.
    pub max_chunk_data_bytes: usize,
    /// Most chunks one transfer may declare.
    pub max_chunks: u32,
    /// Transfers that receive nothing for longer than this are dropped by
    /// [`Reassembler::expire`].
    pub timeout: Duration,
    /// Most unfinished transfers held at once.
    pub max_pending_transfers: usize,
}

impl Default for ChunkLimits {
    /// 256 MiB per transfer, 512 MiB buffered, 1 MiB per chunk, 2^20 chunks,
    /// 60 s idle timeout, 1024 unfinished transfers.
    fn default() -> Self {
        Self {
            max_transfer_bytes: 256 << 20,
            max_buffered_bytes: 512 << 20,
            max_chunk_data_bytes: 1 << 20,
            max_chunks: 1 << 20,
            timeout: Duration::from_secs(60),
            max_pending_transfers: 1024,
        }
    }
}

/// Why a chunk was rejected.
#[derive(Error, Debug)]
pub enum ChunkError {
    /// Structurally invalid (named in the message).
    #[error("malformed chunk: {0}")]
    Malformed(String),
    /// The transfer declares more bytes than allowed.
    #[error("transfer declares {size} bytes, over the limit of {limit}")]
    DeclaredSizeTooLarge {
        /// Declared total length.
        size: u64,
        /// `max_transfer_bytes`.
        limit: u64,
    },
    /// The transfer declares more chunks than allowed.
    #[error("transfer declares {count} chunks, over the limit of {limit}")]
    TooManyChunks {
        /// Declared count.
        count: u32,
        /// `max_chunks`.
        limit: u32,
    },
    /// The chunk index is not below the count.
    #[error("chunk index {index} out of range for {count} chunks")]
    IndexOutOfRange {
        /// The chunk's index.
        index: u32,
        /// Declared count.
        count: u32,
    },
    /// The chunk's header disagrees with the first chunk of its transfer.
    #[error("chunk header disagrees with its transfer on {field}")]
    InconsistentHeader {
        /// `"count"`, `"total_len"`, `"digest"` or `"inner_kind"`.
        field: &'static str,
    },
    /// The chunk's data length is not what the transfer's geometry requires.
    #[error("chunk {index} has {found} data bytes, expected {expected}")]
    ChunkSizeMismatch {
        /// The chunk's index.
        index: u32,
        /// Length the geometry requires.
        expected: u64,
        /// Length received.
        found: u64,
    },
    /// The transfer's chunks are larger than allowed.
    #[error("chunks of {size} bytes exceed the limit of {limit}")]
    ChunkDataTooLarge {
        /// Chunk size implied by the header.
        size: u64,
        /// `max_chunk_data_bytes`.
        limit: usize,
    },
    /// Accepting the transfer would exceed `max_buffered_bytes`.
    #[error("no room for a {needed}-byte transfer: {buffered} of {limit} bytes buffered")]
    BufferFull {
        /// The new transfer's size.
        needed: u64,
        /// Bytes already held.
        buffered: u64,
        /// `max_buffered_bytes`.
        limit: u64,
    },
    /// Accepting the transfer would exceed `max_pending_transfers`.
    #[error("too many unfinished transfers (limit {limit})")]
    TooManyTransfers {
        /// `max_pending_transfers`.
        limit: usize,
    },
    /// A chunk's data does not hash to its declared digest.
    #[error("transfer {transfer_id} from {sender}: chunk data does not match its digest")]
    DigestMismatch {
        /// Who sent the transfer.
        sender: String,
        /// The transfer id, hex.
        transfer_id: String,
    },
}

impl ChunkError {
    /// Whether the chunk's transfer is no longer pending after this error.
    ///
    /// True for every error but a digest mismatch: a transfer is either
    /// never started (limits, buffer full) or dropped with its memory (bad
    /// chunk, inconsistent header). A chunk whose data does not match its
    /// digest is refused alone; its transfer waits for a good copy or
    /// expires. Callers that track per-transfer state of their own can
    /// forget it when this returns true.
    pub fn ends_transfer(&self) -> bool {
        match self {
            ChunkError::Malformed(_)
            | ChunkError::DeclaredSizeTooLarge { .. }
            | ChunkError::TooManyChunks { .. }
            | ChunkError::IndexOutOfRange { .. }
            | ChunkError::InconsistentHeader { .. }
            | ChunkError::ChunkSizeMismatch { .. }
            | ChunkError::ChunkDataTooLarge { .. }
            | ChunkError::BufferFull { .. }
            | ChunkError::TooManyTransfers { .. } => true,
            ChunkError::DigestMismatch { .. } => false,
        }
    }

    /// A short `snake_case` label for metrics counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkError::Malformed(_) => "chunk_malformed",
            ChunkError::DeclaredSizeTooLarge { .. } => "chunk_declared_size_too_large",
            ChunkError::TooManyChunks { .. } => "chunk_too_many_chunks",
            ChunkError::IndexOutOfRange { .. } => "chunk_index_out_of_range",
            ChunkError::InconsistentHeader { .. } => "chunk_inconsistent_header",
            ChunkError::ChunkSizeMismatch { .. } => "chunk_size_mismatch",
            ChunkError::ChunkDataTooLarge { .. } => "chunk_data_too_large",
            ChunkError::BufferFull { .. } => "chunk_buffer_full",
            ChunkError::TooManyTransfers { .. } => "chunk_too_many_transfers",
            ChunkError::DigestMismatch { .. } => "chunk_digest_mismatch",
        }
    }
}

/// A transfer dropped by [`Reassembler::expire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredTransfer {
    /// Who sent it.
    pub sender: String,
    /// Its id.
    pub transfer_id: [u8; 16],
    /// Chunks that had arrived.
    pub received_chunks: u32,
    /// Chunks it declared.
    pub expected_chunks: u32,
    /// Buffer memory released.
    pub bytes_freed: u64,
}

type TransferKey = (String, [u8; 16]);

/// An unfinished transfer.
struct Transfer {
    geometry: Geometry,
    inner_kind: MessageKind,
    buf: Vec<u8>,
    received: Vec<u64>,
    received_count: u32,
    last_activity: Instant,
}

impl Transfer {
    fn has(&self, index: u32) -> bool {
        self.received[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    fn mark(&mut self, index: u32) {
        self.received[(index / 64) as usize] |= 1 << (index % 64);
        self.received_count += 1;
    }

    fn check_header(&self, chunk: &ChunkRef<'_>) -> Result<(), ChunkError> {
        let field = if chunk.count != self.geometry.count {
            "count"
        } else if chunk.total_len != self.geometry.total_len {
            "total_len"
        } else if chunk.inner_kind != self.inner_kind {
            "inner_kind"
        } else {
            return Ok(());
        };
        Err(ChunkError::InconsistentHeader { field })
    }
}

/// Puts chunked payloads back together; see the module docs.
pub struct Reassembler {
    limits: ChunkLimits,
    transfers: HashMap<TransferKey, Transfer>,
    buffered: u64,
    /// Recently completed transfers, oldest first, to ignore redeliveries.
    completed_order: VecDeque<(TransferKey, Instant)>,
    completed: HashSet<TransferKey>,
    duplicates: u64,
}

impl Reassembler {
    /// An empty reassembler enforcing `limits`.
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            transfers: HashMap::new(),
            buffered: 0,
            completed_order: VecDeque::new(),
            completed: HashSet::new(),
            duplicates: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ChunkLimits {
        &self.limits
    }

    /// Adds one chunk from `sender`. Returns `Some((inner_kind, payload))` when
    /// this chunk completes its transfer and the digest verifies.
    ///
    /// Duplicates (of a pending or recently completed transfer) return
    /// `Ok(None)` and are counted in [`Reassembler::duplicates_ignored`].
    /// On an error about an existing transfer, that transfer is dropped.
    pub fn push(
        &mut self,
        sender: &str,
        chunk: Chunk,
        now: Instant,
    ) -> Result<Option<(MessageKind, Vec<u8>)>, ChunkError> {
        let key = (sender.to_string(), chunk.transfer_id);
        if chunk.count == 1 && !self.transfers.contains_key(&key) {
            // Single-chunk transfer: checks and digest, and no buffer copy.
            if self.completed.contains(&key) {
                self.duplicates += 1;
                return Ok(None);
            }
            chunk.as_ref().check_limits(&self.limits)?;
            verify_digest(sender, &chunk.transfer_id, &chunk.digest, &chunk.data)?;
            self.remember_completed(key, now);
            return Ok(Some((chunk.inner_kind, chunk.data)));
        }
        self.push_ref(sender, chunk.as_ref(), now)
    }

    /// [`Reassembler::push`] for a borrowed chunk (e.g. straight out of a
    /// decoded envelope), so the data is copied only into the transfer buffer.
    pub fn push_ref(
        &mut self,
        sender: &str,
        chunk: ChunkRef<'_>,
        now: Instant,
    ) -> Result<Option<(MessageKind, Vec<u8>)>, ChunkError> {
        let key: TransferKey = (sender.to_string(), chunk.transfer_id);
        if self.completed.contains(&key) {
            self.duplicates += 1;
            return Ok(None);
        }
        if let Err(e) = chunk.check_limits(&self.limits) {
            // A bad chunk for a known transfer means the transfer is corrupt.
            self.fail_transfer(key, now);
            return Err(e);
        }
        // Data that does not match its digest is refused before anything
        // else: it starts no transfer and costs a pending one nothing. The
        // envelope's tag covers the header (and so the digest) but not the
        // data, so bad data under a genuine header is corruption or a
        // forgery; the transfer completes if a good copy comes, else expires.
        verify_digest(sender, &key.1, &chunk.digest, chunk.data)?;
        if !self.transfers.contains_key(&key) {
            if let Err(e) = self.start_transfer(&key, &chunk, now) {
                self.fail_transfer(key, now);
                return Err(e);
            }
        }
        let transfer = self
            .transfers
            .get_mut(&key)
            .unwrap_or_else(|| unreachable!("transfer was just inserted"));
        if let Err(e) = transfer.check_header(&chunk) {
            self.fail_transfer(key, now);
            return Err(e);
        }
        transfer.last_activity = now;
        if transfer.has(chunk.index) {
            self.duplicates += 1;
            return Ok(None);
        }
        let start = transfer.geometry.offset_of(chunk.index) as usize;
        transfer.buf[start..start + chunk.data.len()].copy_from_slice(chunk.data);
        transfer.mark(chunk.index);
        if transfer.received_count < transfer.geometry.count {
            return Ok(None);
        }

        let transfer = self
            .transfers
            .remove(&key)
            .unwrap_or_else(|| unreachable!("transfer is present"));
        self.buffered -= transfer.geometry.total_len;
        self.remember_completed(key, now);
        Ok(Some((transfer.inner_kind, transfer.buf)))
    }

    /// Frees transfers idle longer than the timeout (and forgets completed
    /// transfers older than it); returns what was dropped, for logging.
    pub fn expire(&mut self, now: Instant) -> Vec<ExpiredTransfer> {
        let timeout = self.limits.timeout;
        let idle = |t: Instant| now.saturating_duration_since(t) > timeout;
        let stale: Vec<TransferKey> = self
            .transfers
            .iter()
            .filter(|(_, t)| idle(t.last_activity))
            .map(|(k, _)| k.clone())
            .collect();
        let mut expired = Vec::with_capacity(stale.len());
        for key in stale {
            if let Some(t) = self.transfers.remove(&key) {
                self.buffered -= t.geometry.total_len;
                expired.push(ExpiredTransfer {
                    sender: key.0,
                    transfer_id: key.1,
                    received_chunks: t.received_count,
                    expected_chunks: t.geometry.count,
                    bytes_freed: t.geometry.total_len,
                });
            }
        }
        while let Some((_, done_at)) = self.completed_order.front() {
            if !idle(*done_at) {
                break;
            }
            if let Some((key, _)) = self.completed_order.pop_front() {
                self.completed.remove(&key);
            }
        }
        expired
    }

    /// Bytes held by unfinished transfers.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered
    }

    /// Number of unfinished transfers.
    pub fn pending_transfers(&self) -> usize {
        self.transfers.len()
    }

    /// Redelivered chunks ignored so far.
    pub fn duplicates_ignored(&self) -> u64 {
        self.duplicates
    }

    fn start_transfer(
        &mut self,
        key: &TransferKey,
        chunk: &ChunkRef<'_>,
        now: Instant,
    ) -> Result<(), ChunkError> {
        let size = chunk.total_len;
        if self.buffered.saturating_add(size) > self.limits.max_buffered_bytes {
            return Err(ChunkError::BufferFull {
                needed: size,
                buffered: self.buffered,
                limit: self.limits.max_buffered_bytes,
            });
        }
        if self.transfers.len() >= self.limits.max_pending_transfers {
            return Err(ChunkError::TooManyTransfers {
                limit: self.limits.max_pending_transfers,
            });
        }
        let size_usize = usize::try_from(size).map_err(|_| ChunkError::DeclaredSizeTooLarge {
            size,
            limit: usize::MAX as u64,
        })?;
        let geometry = Geometry::new(chunk.count, size)?;
        self.transfers.insert(
            key.clone(),
            Transfer {
                geometry,
                inner_kind: chunk.inner_kind,
                // Zeroed allocation: the OS maps pages lazily as chunks land.
                buf: vec![0u8; size_usize],
                received: vec![0u64; chunk.count.div_ceil(64) as usize],
                received_count: 0,
                last_activity: now,
            },
        );
        self.buffered += size;
        Ok(())
    }

    /// Drops a failed transfer, frees its memory, and remembers it so its
    /// remaining chunks are ignored instead of starting a new transfer.
    fn fail_transfer(&mut self, key: TransferKey, now: Instant) {
        if let Some(t) = self.transfers.remove(&key) {
            self.buffered -= t.geometry.total_len;
        }
        self.remember_completed(key, now);
    }

    fn remember_completed(&mut self, key: TransferKey, now: Instant) {
        if self.completed_order.len() >= COMPLETED_MEMORY {
            if let Some((old, _)) = self.completed_order.pop_front() {
                self.completed.remove(&old);
            }
        }
        self.completed.insert(key.clone());
        self.completed_order.push_back((key, now));
    }
}

fn verify_digest(
    sender: &str,
    transfer_id: &[u8; 16],
    digest: &[u8; 32],
    data: &[u8],
) -> Result<(), ChunkError> {
    let actual: [u8; 32] = *blake3::hash(data).as_bytes();
    // Not a secret comparison: the digest is public; authenticity comes from
    // the envelope's HMAC.
    if &actual != digest {
        return Err(ChunkError::DigestMismatch {
            sender: sender.to_string(),
            transfer_id: hex::encode(transfer_id),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn payload(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        v
    }

    fn limits() -> ChunkLimits {
        ChunkLimits::default()
    }

    /// Pushes every chunk (through encode/decode) and returns what completed.
    fn reassemble(
        r: &mut Reassembler,
        chunks: &[Chunk],
        now: Instant,
    ) -> Vec<(MessageKind, Vec<u8>)> {
        let mut done = Vec::new();
        for c in chunks {
            let decoded = Chunk::decode(&c.encode(), r.limits()).expect("decode");
            if let Some(out) = r.push("w1", decoded, now).expect("push") {
                done.push(out);
            }
        }
        done
    }

    #[test]
    fn geometry_balances_chunks_and_covers_the_payload() {
        for len in [0usize, 1, 2, 9, 10, 11, 99, 100, 101, 1000] {
            for cs in [1usize, 3, 4, 10, 64, 5000] {
                let p = payload(len, len as u64);
                let chunks = split(&p, cs, MessageKind::Model);
                let expected_count = len.div_ceil(cs).max(1);
                assert_eq!(chunks.len(), expected_count, "len {len} cs {cs}");
                assert!(chunks.iter().all(|c| c.data.len() <= cs));
                let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
                assert_eq!(joined, p);
                for c in &chunks {
                    c.as_ref()
                        .check_limits(&limits())
                        .expect("own chunks are valid");
                }
            }
        }
    }

    #[test]
    fn geometry_rejects_impossible_headers() {
        assert!(Geometry::new(0, 10).is_err());
        assert!(Geometry::new(2, 0).is_err());
        assert!(Geometry::new(4, 5).is_err()); // 2+2+2 already covers 5
        assert!(Geometry::new(11, 10).is_err());
        assert_eq!(Geometry::new(3, 11).expect("ok").chunk_len, 4);
    }

    #[test]
    fn chunk_encode_decode_round_trip() {
        let p = payload(1000, 1);
        for c in split(&p, 300, MessageKind::Shard) {
            let bytes = c.encode();
            assert_eq!(bytes.len(), CHUNK_HEADER_BYTES + c.data.len());
            assert_eq!(Chunk::decode(&bytes, &limits()).expect("decode"), c);
        }
    }

    #[test]
    fn truncated_or_padded_chunks_are_malformed() {
        let c = split(&payload(100, 2), 40, MessageKind::Model).remove(0);
        let bytes = c.encode();
        for cut in 0..bytes.len() {
            let err = Chunk::decode(&bytes[..cut], &limits()).expect_err("truncated");
            assert_eq!(err.reason(), "chunk_malformed", "cut {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(
            Chunk::decode(&padded, &limits())
                .expect_err("padded")
                .reason(),
            "chunk_malformed"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let mut r = Reassembler::new(limits());
        let now = Instant::now();
        for _ in 0..20_000 {
            let len = rng.random_range(0..200);
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            if let Ok(c) = Chunk::decode(&bytes, &limits()) {
                let _ = r.push("fuzz", c, now);
            }
        }
        // Mutated valid chunks go deeper into the checks.
        let chunks = split(&payload(500, 3), 100, MessageKind::Model);
        for _ in 0..20_000 {
            let mut bytes = chunks[rng.random_range(0..chunks.len())].encode();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..CHUNK_HEADER_BYTES);
                bytes[i] = rng.random();
            }
            if let Ok(c) = Chunk::decode(&bytes, &limits()) {
                let _ = r.push("fuzz", c, now);
            }
        }
        assert!(r.buffered_bytes() <= limits().max_buffered_bytes);
        r.expire(now + Duration::from_secs(61));
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.pending_transfers(), 0);
    }

    #[test]
    fn declared_size_over_the_limit_is_rejected_before_allocating() {
        let small = ChunkLimits {
            max_transfer_bytes: 1000,
            ..limits()
        };
        let mut c = split(&payload(100, 4), 10, MessageKind::Model).remove(0);
        c.total_len = 1 << 40;
        let err = Chunk::decode(&c.encode(), &small).expect_err("too large");
        assert!(matches!(
            err,
            ChunkError::DeclaredSizeTooLarge { size, limit: 1000 } if size == 1 << 40
        ));
        assert_eq!(err.reason(), "chunk_declared_size_too_large");
        let mut r = Reassembler::new(small);
        assert!(r.push("w1", c, Instant::now()).is_err());
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn too_many_chunks_and_oversized_chunks_are_rejected() {
        let l = ChunkLimits {
            max_chunks: 5,
            max_chunk_data_bytes: 20,
            ..limits()
        };
        let c = split(&payload(100, 5), 10, MessageKind::Model).remove(0);
        assert_eq!(
            Chunk::decode(&c.encode(), &l).expect_err("count").reason(),
            "chunk_too_many_chunks"
        );
        let c = split(&payload(100, 5), 50, MessageKind::Model).remove(0);
        assert_eq!(
            Chunk::decode(&c.encode(), &l).expect_err("size").reason(),
            "chunk_data_too_large"
        );
    }

    #[test]
    fn index_out_of_range_and_wrong_chunk_size_are_rejected() {
        let mut c = split(&payload(100, 6), 10, MessageKind::Model).remove(3);
        c.index = 10;
        assert_eq!(
            Chunk::decode(&c.encode(), &limits())
                .expect_err("index")
                .reason(),
            "chunk_index_out_of_range"
        );
        c.index = 3;
        c.data.pop();
        let err = Chunk::decode(&c.encode(), &limits()).expect_err("size");
        assert!(matches!(
            err,
            ChunkError::ChunkSizeMismatch {
                index: 3,
                expected: 10,
                found: 9
            }
        ));
    }

    #[test]
    fn unknown_inner_kind_is_malformed() {
        let c = split(&payload(10, 7), 10, MessageKind::Model).remove(0);
        let mut bytes = c.encode();
        bytes[64] = 0;
        assert_eq!(
            Chunk::decode(&bytes, &limits()).expect_err("kind").reason(),
            "chunk_malformed"
        );
    }

    #[test]
    fn out_of_order_chunks_reassemble() {
        let p = payload(10_007, 8);
        let mut chunks = split(&p, 100, MessageKind::Update);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for i in (1..chunks.len()).rev() {
            chunks.swap(i, rng.random_range(0..=i));
        }
        let mut r = Reassembler::new(limits());
        let done = reassemble(&mut r, &chunks, Instant::now());
        assert_eq!(done, vec![(MessageKind::Update, p)]);
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.pending_transfers(), 0);
    }

    #[test]
    fn duplicates_are_ignored_including_after_completion() {
        let p = payload(1000, 9);
        let chunks = split(&p, 300, MessageKind::Model);
        let mut r = Reassembler::new(limits());
        let now = Instant::now();
        assert!(r
            .push("w1", chunks[0].clone(), now)
            .expect("first")
            .is_none());
        assert!(r.push("w1", chunks[0].clone(), now).expect("dup").is_none());
        assert!(r
            .push("w1", chunks[1].clone(), now)
            .expect("second")
            .is_none());
        assert!(r
            .push("w1", chunks[2].clone(), now)
            .expect("third")
            .is_none());
        let (_, out) = r
            .push("w1", chunks[3].clone(), now)
            .expect("last")
            .expect("complete");
        assert_eq!(out, p);
        // A late redelivery does not start a new transfer that would time out.
        assert!(r
            .push("w1", chunks[1].clone(), now)
            .expect("late")
            .is_none());
        assert_eq!(r.pending_transfers(), 0);
        assert_eq!(r.duplicates_ignored(), 2);
    }

    #[test]
    fn same_transfer_id_from_two_senders_are_separate() {
        let p = payload(200, 10);
        let chunks = split(&p, 100, MessageKind::Model);
        let mut r = Reassembler::new(limits());
        let now = Instant::now();
        assert!(r.push("a", chunks[0].clone(), now).expect("a0").is_none());
        assert!(r.push("b", chunks[1].clone(), now).expect("b1").is_none());
        assert_eq!(r.pending_transfers(), 2);
        assert!(r.push("a", chunks[1].clone(), now).expect("a1").is_some());
        assert!(r.push("b", chunks[0].clone(), now).expect("b0").is_some());
    }

    #[test]
    fn missing_chunk_times_out_and_frees_memory() {
        let p = payload(10_000, 11);
        let chunks = split(&p, 1000, MessageKind::Model);
        let mut r = Reassembler::new(limits());
        let t0 = Instant::now();
        assert!(reassemble(&mut r, &chunks[..9], t0).is_empty());
        assert_eq!(r.buffered_bytes(), 10_000);
        assert_eq!(r.pending_transfers(), 1);

        assert!(r.expire(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(r.buffered_bytes(), 10_000);
        let expired = r.expire(t0 + Duration::from_secs(61));
        assert_eq!(
            expired,
            vec![ExpiredTransfer {
                sender: "w1".into(),
                transfer_id: chunks[0].transfer_id,
                received_chunks: 9,
                expected_chunks: 10,
                bytes_freed: 10_000,
            }]
        );
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.pending_transfers(), 0);
    }

    #[test]
    fn activity_postpones_expiry() {
        let chunks = split(&payload(300, 12), 100, MessageKind::Model);
        let mut r = Reassembler::new(limits());
        let t0 = Instant::now();
        r.push("w1", chunks[0].clone(), t0).expect("0");
        r.push("w1", chunks[1].clone(), t0 + Duration::from_secs(50))
            .expect("1");
        assert!(r.expire(t0 + Duration::from_secs(100)).is_empty());
        assert_eq!(r.expire(t0 + Duration::from_secs(111)).len(), 1);
    }

    #[test]
    fn a_chunk_with_bad_data_is_refused_and_its_transfer_waits_for_a_good_copy() {
        let p = payload(1000, 13);
        let chunks = split(&p, 250, MessageKind::Model);
        let mut bad = chunks[2].clone();
        bad.data[7] ^= 1;
        let mut r = Reassembler::new(limits());
        let now = Instant::now();
        for c in &chunks[..2] {
            assert!(r.push("w1", c.clone(), now).expect("partial").is_none());
        }
        // Detected on arrival of the corrupt chunk, not at the end.
        let err = r.push("w1", bad, now).expect_err("digest");
        assert!(matches!(err, ChunkError::DigestMismatch { .. }));
        assert_eq!(err.reason(), "chunk_digest_mismatch");
        assert!(!err.ends_transfer());
        assert_eq!(r.pending_transfers(), 1, "the good chunks are kept");
        assert!(r.push("w1", chunks[3].clone(), now).expect("3").is_none());
        let (_, whole) = r
            .push("w1", chunks[2].clone(), now)
            .expect("good copy")
            .expect("complete");
        assert_eq!(whole, p);
        assert_eq!(r.pending_transfers(), 0);

        // Single-chunk transfers are verified too.
        let mut one = split(b"hello", 100, MessageKind::Log).remove(0);
        one.data[0] = b'j';
        assert!(matches!(
            r.push("w1", one, now),
            Err(ChunkError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn inconsistent_headers_drop_the_transfer() {
        let p = payload(1000, 14);
        let chunks = split(&p, 250, MessageKind::Model);
        let now = Instant::now();
        type Mutation = (&'static str, fn(&mut Chunk));
        let cases: [Mutation; 3] = [
            ("count", |c| {
                // Another valid geometry: 1000 bytes in 5 chunks of 200.
                c.count = 5;
                c.data.truncate(200);
            }),
            ("total_len", |c| {
                // 999 bytes in 4 chunks is still 250-byte chunks (750 < 999).
                c.total_len = 999;
                if c.index == 3 {
                    c.data.pop();
                }
            }),
            ("inner_kind", |c| c.inner_kind = MessageKind::Shard),
        ];
        for (field, mutate) in cases {
            let mut r = Reassembler::new(limits());
            r.push("w1", chunks[0].clone(), now).expect("first");
            let mut bad = chunks[1].clone();
            mutate(&mut bad);
            // A sender's own inconsistency: its digest matches its data.
            bad.digest = *blake3::hash(&bad.data).as_bytes();
            let err = r.push("w1", bad, now).expect_err(field);
            assert!(
                matches!(err, ChunkError::InconsistentHeader { field: f } if f == field),
                "{field}: {err:?}"
            );
            assert_eq!(err.reason(), "chunk_inconsistent_header");
            assert_eq!(r.buffered_bytes(), 0, "{field}");
            assert_eq!(r.pending_transfers(), 0, "{field}");
        }
    }

    #[test]
    fn buffer_limit_and_transfer_limit_are_enforced() {
        let l = ChunkLimits {
            max_buffered_bytes: 1500,
            max_pending_transfers: 2,
            ..limits()
        };
        let mut r = Reassembler::new(l);
        let now = Instant::now();
        let a = split(&payload(1000, 15), 100, MessageKind::Model);
        let b = split(&payload(1000, 16), 100, MessageKind::Model);
        r.push("w1", a[0].clone(), now).expect("a");
        let err = r.push("w1", b[0].clone(), now).expect_err("full");
        assert!(matches!(
            err,
            ChunkError::BufferFull {
                needed: 1000,
                buffered: 1000,
                limit: 1500
            }
        ));
        assert_eq!(r.buffered_bytes(), 1000);

        let c = split(&payload(100, 17), 10, MessageKind::Model);
        let d = split(&payload(100, 18), 10, MessageKind::Model);
        r.push("w1", c[0].clone(), now).expect("c");
        assert_eq!(
            r.push("w1", d[0].clone(), now).expect_err("count").reason(),
            "chunk_too_many_transfers"
        );
    }

    #[test]
    fn empty_payload_is_one_empty_chunk() {
        let chunks = split(&[], 100, MessageKind::Control);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].total_len, 0);
        let mut r = Reassembler::new(limits());
        let done = reassemble(&mut r, &chunks, Instant::now());
        assert_eq!(done, vec![(MessageKind::Control, Vec::new())]);
    }

    #[test]
    fn chunks_iterator_matches_split_and_borrows() {
        let p = payload(1000, 19);
        let mut it = chunks(&p, 300, MessageKind::Model);
        assert_eq!(it.len(), 4);
        let first = it.next_ref().expect("first");
        assert_eq!(first.data.as_ptr(), p.as_ptr());
        let rest: Vec<Chunk> = it.collect();
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].index, 1);
        assert!(rest.iter().all(|c| c.transfer_id == first.transfer_id));
    }

    #[test]
    fn transfer_ids_are_random() {
        let a = split(b"x", 1, MessageKind::Model);
        let b = split(b"x", 1, MessageKind::Model);
        assert_ne!(a[0].transfer_id, b[0].transfer_id);
    }

    #[test]
    fn fifty_megabytes_round_trip_through_envelopes() {
        use crate::envelope::EnvelopeCodec;
        let codec = EnvelopeCodec::new(
            "run-big",
            Some(crate::auth::HmacKey::from_bytes(&[3u8; 32]).expect("key")),
            1 << 20,
        );
        let p = payload(50 * 1000 * 1000, 20);
        let chunk_bytes = 512 * 1024 - codec.overhead("master") - CHUNK_HEADER_BYTES;
        let mut it = chunks(&p, chunk_bytes, MessageKind::Model);
        let mut records = Vec::with_capacity(it.len());
        let mut seq = 0;
        while let Some(c) = it.next_ref() {
            let record = codec.encode_parts(
                MessageKind::Chunk,
                "master",
                seq,
                &[&c.header_bytes(), c.data],
            );
            assert!(record.len() <= 512 * 1024);
            records.push(record);
            seq += 1;
        }
        records.reverse();
        let mut r = Reassembler::new(limits());
        let now = Instant::now();
        let mut done = None;
        for record in &records {
            let env = codec.decode_ref(record).expect("envelope");
            assert_eq!(env.kind, MessageKind::Chunk);
            let chunk = ChunkRef::decode(env.payload, r.limits()).expect("chunk");
            if let Some(out) = r.push_ref(env.sender, chunk, now).expect("push") {
                assert!(done.is_none());
                done = Some(out);
            }
        }
        let (kind, out) = done.expect("complete");
        assert_eq!(kind, MessageKind::Model);
        assert!(out == p, "50 MB payload differs after reassembly");
        assert_eq!(r.buffered_bytes(), 0);
    }
}
