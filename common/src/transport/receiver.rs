//! Consuming: verify each record, reassemble chunked payloads, hand out
//! complete messages; count and skip everything bad.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;

use crate::chunking::{ChunkLimits, ChunkRef, Reassembler};
use crate::config::KafkaConfig;
use crate::envelope::{EnvelopeCodec, MessageKind};
use crate::protocol;

use super::metrics::TransportMetrics;
use super::{client, TransportError};

/// Where a receiver starts reading when it has no committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// From the committed offset of the group, else the beginning.
    Committed,
    /// From the beginning of each partition.
    Beginning,
    /// Only records produced from now on.
    End,
}

/// One complete message, as handed to the application.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The message kind (for a chunked message: the kind of the whole payload).
    pub kind: MessageKind,
    /// The sending node.
    pub sender: String,
    /// The sender's sequence number of this message.
    pub sequence: u64,
    /// The complete payload.
    pub payload: Vec<u8>,
    /// Topic it came from.
    pub topic: String,
    /// Partition it came from.
    pub partition: i32,
    /// Offset of its last record.
    pub offset: i64,
}

impl Delivery {
    /// Decodes the payload as `T`, refusing more than `limit` bytes.
    pub fn decode<T: DeserializeOwned>(&self, limit: u64) -> Result<T, protocol::ProtocolError> {
        protocol::decode(&self.payload, limit)
    }
}

/// (topic, partition, sender, transfer id) of an unfinished chunked transfer.
type TransferKey = (String, i32, String, [u8; 16]);

/// Consumes records from assigned partitions and yields complete, verified messages.
pub struct Receiver {
    consumer: StreamConsumer,
    codec: Arc<EnvelopeCodec>,
    reassembler: Reassembler,
    limits: ChunkLimits,
    metrics: Arc<TransportMetrics>,
    /// First offset of each unfinished transfer, so commits never skip past it.
    pending_first_offset: HashMap<TransferKey, i64>,
    last_expiry: Instant,
    /// What was delivered, so that a copy of a record is refused.
    replay: super::replay::ReplayGuard,
}

impl Receiver {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn new(
        cfg: &KafkaConfig,
        client_id: &str,
        group: &str,
        topics: &[(String, StartAt)],
        codec: Arc<EnvelopeCodec>,
        limits: ChunkLimits,
        metrics: Arc<TransportMetrics>,
    ) -> Result<Self, TransportError> {
        let consumer: StreamConsumer = client::consumer_config(cfg, client_id, group)?
            .create()
            .map_err(|e| TransportError::Kafka {
                context: "create consumer".into(),
                source: e,
            })?;
        let assignment = assignment(&consumer, topics).await?;
        consumer
            .assign(&assignment)
            .map_err(|e| TransportError::Kafka {
                context: "assign partitions".into(),
                source: e,
            })?;
        Ok(Self {
            consumer,
            codec,
            reassembler: Reassembler::new(limits.clone()),
            limits,
            metrics,
            pending_first_offset: HashMap::new(),
            last_expiry: Instant::now(),
            replay: Default::default(),
        })
    }

    /// The next complete message. Bad records are counted and skipped.
    pub async fn recv(&mut self) -> Result<Delivery, TransportError> {
        loop {
            if let Some(d) = self.recv_timeout(Duration::from_secs(1)).await? {
                return Ok(d);
            }
        }
    }

    /// The next complete message, or `None` when none arrives within `wait`.
    pub async fn recv_timeout(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Delivery>, TransportError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.expire_stale();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            let tick = remaining.min(Duration::from_millis(500));
            let message = match tokio::time::timeout(tick, self.consumer.recv()).await {
                Err(_) => continue,
                Ok(Err(e)) => {
                    // Transient broker errors (leader change, topic not yet
                    // created) are logged; the consumer keeps going.
                    self.metrics.reject("kafka_error");
                    tracing::warn!("kafka consumer error: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            let topic = message.topic().to_string();
            let partition = message.partition();
            let offset = message.offset();
            let bytes = message.payload().unwrap_or_default();
            self.metrics.received(bytes.len());
            // Borrowed decoding: a chunk's data is copied once, into its
            // transfer buffer.
            let envelope = match self.codec.decode_ref(bytes) {
                Ok(env) => env,
                Err(e) => {
                    self.metrics.reject(e.reason());
                    tracing::warn!(
                        topic,
                        partition,
                        offset,
                        reason = e.reason(),
                        "rejected record: {e}"
                    );
                    continue;
                }
            };
            if envelope.kind != MessageKind::Chunk {
                if !self
                    .replay
                    .admit(&topic, envelope.sender, envelope.sequence)
                {
                    self.reject_replay(&topic, partition, offset, envelope.sender);
                    continue;
                }
                self.metrics.delivered();
                return Ok(Some(Delivery {
                    kind: envelope.kind,
                    sender: envelope.sender.to_string(),
                    sequence: envelope.sequence,
                    payload: envelope.payload.to_vec(),
                    topic,
                    partition,
                    offset,
                }));
            }
            let chunk = match ChunkRef::decode(envelope.payload, &self.limits) {
                Ok(c) => c,
                Err(e) => {
                    self.metrics.reject(e.reason());
                    tracing::warn!(
                        topic,
                        partition,
                        offset,
                        reason = e.reason(),
                        "rejected chunk: {e}"
                    );
                    continue;
                }
            };
            if self
                .replay
                .is_replay(&topic, envelope.sender, envelope.sequence)
            {
                self.reject_replay(&topic, partition, offset, envelope.sender);
                continue;
            }
            let key: TransferKey = (
                topic.clone(),
                partition,
                envelope.sender.to_string(),
                chunk.transfer_id,
            );
            self.pending_first_offset
                .entry(key.clone())
                .or_insert(offset);
            match self
                .reassembler
                .push_ref(envelope.sender, chunk, Instant::now())
            {
                Ok(None) => continue,
                Ok(Some((kind, payload))) => {
                    self.pending_first_offset.remove(&key);
                    if !self
                        .replay
                        .admit(&topic, envelope.sender, envelope.sequence)
                    {
                        self.reject_replay(&topic, partition, offset, envelope.sender);
                        continue;
                    }
                    self.metrics.delivered();
                    return Ok(Some(Delivery {
                        kind,
                        sender: envelope.sender.to_string(),
                        sequence: envelope.sequence,
                        payload,
                        topic,
                        partition,
                        offset,
                    }));
                }
                Err(e) => {
                    // The reassembler drops a transfer on any error about it.
                    self.pending_first_offset.remove(&key);
                    self.metrics.reject(e.reason());
                    tracing::warn!(topic, partition, offset, sender = %envelope.sender, reason = e.reason(), "rejected chunk: {e}");
                }
            }
        }
    }

    /// Counts and logs a record refused as a copy of one delivered before.
    fn reject_replay(&self, topic: &str, partition: i32, offset: i64, sender: &str) {
        self.metrics.reject("replayed");
        tracing::warn!(
            topic,
            partition,
            offset,
            sender,
            reason = "replayed",
            "rejected record: its sequence was delivered before (a copy)"
        );
    }

    /// Drops unfinished transfers older than the reassembly timeout.
    fn expire_stale(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_expiry) < Duration::from_millis(500) {
            return;
        }
        self.last_expiry = now;
        for gone in self.reassembler.expire(now) {
            self.metrics.reject("transfer_timeout");
            tracing::warn!(
                sender = %gone.sender,
                received = gone.received_chunks,
                expected = gone.expected_chunks,
                bytes_freed = gone.bytes_freed,
                "dropped incomplete chunked transfer after timeout"
            );
            self.pending_first_offset
                .retain(|(_, _, s, id), _| !(s == &gone.sender && id == &gone.transfer_id));
        }
    }

    /// Bytes held by unfinished chunked transfers.
    pub fn buffered_bytes(&self) -> u64 {
        self.reassembler.buffered_bytes()
    }

    /// Commits the position after `delivery` (synchronously), but never past
    /// the first record of a transfer on that partition that is still being
    /// reassembled, so a restart re-reads it rather than losing it.
    pub fn commit(&self, delivery: &Delivery) -> Result<(), TransportError> {
        let mut next = delivery.offset + 1;
        for ((topic, partition, _, _), first) in &self.pending_first_offset {
            if *topic == delivery.topic && *partition == delivery.partition {
                next = next.min(*first);
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&delivery.topic, delivery.partition, Offset::Offset(next))
            .map_err(|e| TransportError::Kafka {
                context: "build commit list".into(),
                source: e,
            })?;
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| TransportError::Kafka {
                context: format!("commit {}[{}]@{}", delivery.topic, delivery.partition, next),
                source: e,
            })
    }
}

/// Every partition of `topics`, each starting where its [`StartAt`] says,
/// waiting (bounded) for topics that do not exist yet.
async fn assignment(
    consumer: &StreamConsumer,
    topics: &[(String, StartAt)],
) -> Result<TopicPartitionList, TransportError> {
    let mut tpl = TopicPartitionList::new();
    let mut partitions_of: BTreeMap<String, i32> = BTreeMap::new();
    let start_of: BTreeMap<&str, StartAt> = topics.iter().map(|(t, s)| (t.as_str(), *s)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (topic, _) in topics {
        loop {
            let md = consumer
                .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(5)))
                .map_err(|e| TransportError::Kafka {
                    context: format!("metadata of `{topic}`"),
                    source: e,
                })?;
            let count = md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
                .unwrap_or(0);
            if count > 0 {
                partitions_of.insert(topic.clone(), count);
                break;
            }
            if Instant::now() >= deadline {
                return Err(TransportError::Topic {
                    topic: topic.clone(),
                    message: "does not exist (waited 60 s)".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let committed = if topics.iter().any(|(_, s)| *s == StartAt::Committed) {
        let mut probe = TopicPartitionList::new();
        for (topic, count) in &partitions_of {
            for p in 0..*count {
                probe.add_partition(topic, p);
            }
        }
        consumer
            .committed_offsets(probe, Timeout::After(Duration::from_secs(10)))
            .ok()
    } else {
        None
    };
    for (topic, count) in &partitions_of {
        let start = start_of
            .get(topic.as_str())
            .copied()
            .unwrap_or(StartAt::End);
        for p in 0..*count {
            let offset = match start {
                StartAt::Beginning => Offset::Beginning,
                // Resolved now, not lazily by the fetcher: a reply to a
                // message sent right after the receiver was created must not
                // land before the position is known (and be skipped).
                StartAt::End => consumer
                    .fetch_watermarks(topic, p, Timeout::After(Duration::from_secs(10)))
                    .map(|(_, high)| Offset::Offset(high))
                    .unwrap_or(Offset::End),
                StartAt::Committed => committed
                    .as_ref()
                    .and_then(|c| c.find_partition(topic, p))
                    .map(|e| e.offset())
                    .filter(|o| matches!(o, Offset::Offset(_)))
                    .unwrap_or(Offset::Beginning),
            };
            tpl.add_partition_offset(topic, p, offset)
                .map_err(|e| TransportError::Kafka {
                    context: "build assignment".into(),
                    source: e,
                })?;
        }
    }
    Ok(tpl)
}
