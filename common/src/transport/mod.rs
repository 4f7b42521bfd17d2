//! Kafka transport: typed `send`/`recv` over tokio, so the master and the
//! workers never touch rdkafka directly.
//!
//! * [`client`] builds every librdkafka client from [`KafkaConfig`] in one place.
//! * [`topics`] names a run's topics and creates them.
//! * [`Transport`] produces envelopes, chunking payloads larger than
//!   `kafka.chunk_bytes`.
//! * [`Receiver`] consumes, verifies, reassembles and hands out complete
//!   messages; bad records are counted by reason and skipped.

pub mod client;
pub mod metrics;
mod receiver;
pub mod replay;
pub mod topics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::auth::HmacKey;
use crate::chunking::{self, ChunkLimits};
use crate::config::KafkaConfig;
use crate::envelope::{EnvelopeCodec, MessageKind};
use crate::protocol;

pub use metrics::{MetricsSnapshot, TransportMetrics};
pub use receiver::{Delivery, Receiver, StartAt};
pub use topics::{TopicSpec, Topics};

/// Envelope overhead allowance per record (header, ids, tag).
const RECORD_OVERHEAD: usize = 1024;

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A Kafka client operation failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What we were doing.
        context: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The broker could not be reached within the connect timeout.
    #[error("kafka broker(s) `{brokers}` unreachable after {waited_secs} s: {last_error}")]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// How long we retried.
        waited_secs: u64,
        /// The last error seen.
        last_error: String,
    },
    /// A topic could not be created or deleted.
    #[error("topic `{topic}`: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        message: String,
    },
    /// Invalid transport configuration.
    #[error("config: {0}")]
    Config(String),
    /// The HMAC key could not be loaded.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// No usable run key (see [`crate::runkey`]).
    #[error(transparent)]
    RunKey(#[from] crate::runkey::RunKeyError),
    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
}

/// What one `send` put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendReport {
    /// The message's sequence number.
    pub sequence: u64,
    /// Kafka records produced (more than one when chunked).
    pub records: usize,
    /// Bytes produced, envelopes included.
    pub bytes: usize,
}

/// A connection to the Kafka cluster for one node of one run.
pub struct Transport {
    cfg: KafkaConfig,
    producer: FutureProducer<client::ErrorContext>,
    admin: AdminClient<DefaultClientContext>,
    codec: Arc<EnvelopeCodec>,
    topics: Topics,
    sender_id: String,
    sequence: AtomicU64,
    metrics: Arc<TransportMetrics>,
}

impl Transport {
    /// Connects to the brokers of `cfg` as `sender_id` in run `run_id`,
    /// retrying with exponential backoff until `kafka.connect_timeout_secs`.
    pub async fn connect(
        cfg: &KafkaConfig,
        run_id: &str,
        sender_id: &str,
    ) -> Result<Self, TransportError> {
        let keys = crate::runkey::resolve(
            cfg,
            std::path::Path::new(crate::runkey::DEFAULT_KEY_FILE),
            crate::runkey::WhenMissing::Fail,
        )?;
        Self::connect_with_keys(cfg, run_id, sender_id, keys).await
    }

    /// Like [`Transport::connect`] with an explicit HMAC key (or none).
    pub async fn connect_with_key(
        cfg: &KafkaConfig,
        run_id: &str,
        sender_id: &str,
        key: Option<HmacKey>,
    ) -> Result<Self, TransportError> {
        let keys = crate::runkey::RunKeys {
            current: key,
            ..Default::default()
        };
        Self::connect_with_keys(cfg, run_id, sender_id, keys).await
    }

    /// Like [`Transport::connect`] with keys resolved by the caller
    /// ([`crate::runkey::resolve`]).
    pub async fn connect_with_keys(
        cfg: &KafkaConfig,
        run_id: &str,
        sender_id: &str,
        keys: crate::runkey::RunKeys,
    ) -> Result<Self, TransportError> {
        if cfg.chunk_bytes < 1024 || cfg.chunk_bytes > 900 * 1024 {
            return Err(TransportError::Config(format!(
                "kafka.chunk_bytes = {} must be between 1024 and {} (below the broker's 1 MiB message.max.bytes)",
                cfg.chunk_bytes,
                900 * 1024
            )));
        }
        let errors = client::ErrorContext::default();
        let producer: FutureProducer<client::ErrorContext> =
            client::producer_config(cfg, sender_id)?
                .create_with_context(errors.clone())
                .map_err(|e| TransportError::Kafka {
                    context: "create producer".into(),
                    source: e,
                })?;
        let admin: AdminClient<DefaultClientContext> = client::admin_config(cfg, sender_id)?
            .create()
            .map_err(|e| TransportError::Kafka {
                context: "create admin client".into(),
                source: e,
            })?;
        wait_for_broker(&producer, &errors, cfg).await?;
        let codec = Arc::new(
            EnvelopeCodec::new(run_id, keys.current, envelope_limit(cfg))
                .with_previous_key(keys.previous),
        );
        tracing::info!(
            brokers = %cfg.brokers,
            run = run_id,
            node = sender_id,
            chunk_bytes = cfg.chunk_bytes,
            compression = %cfg.compression,
            authenticated = codec.is_authenticated(),
            "connected to kafka (idempotent producer, acks=all)"
        );
        Ok(Self {
            cfg: cfg.clone(),
            producer,
            admin,
            codec,
            topics: Topics::new(&cfg.topic_prefix, run_id),
            sender_id: sender_id.to_string(),
            sequence: AtomicU64::new(initial_sequence()),
            metrics: Arc::new(TransportMetrics::default()),
        })
    }

    /// A handle that asks whether a broker answers (for liveness decisions
    /// that must not blame workers for the master's own outage).
    pub fn probe(&self) -> BrokerProbe {
        BrokerProbe {
            producer: self.producer.clone(),
            topic: self.topics.status(),
        }
    }

    /// This run's topic names.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// This node's id, the sender of every envelope it produces.
    pub fn sender_id(&self) -> &str {
        &self.sender_id
    }

    /// The counters of this transport and its receivers.
    pub fn metrics(&self) -> &Arc<TransportMetrics> {
        &self.metrics
    }

    /// The Kafka settings this transport was built from.
    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// A topic spec with this config's defaults.
    pub fn topic_spec(&self, name: String, partitions: i32) -> TopicSpec {
        TopicSpec {
            name,
            partitions,
            replication: self.cfg.replication_factor,
            max_message_bytes: self.cfg.chunk_bytes + RECORD_OVERHEAD * 2,
        }
    }

    /// Creates the run-wide topics (idempotent).
    pub async fn create_run_topics(&self) -> Result<(), TransportError> {
        let t = &self.topics;
        let specs = vec![
            self.topic_spec(t.control(), 1),
            self.topic_spec(t.model(), 1),
            self.topic_spec(t.updates(), self.cfg.update_partitions.max(1)),
            self.topic_spec(t.status(), 1),
            self.topic_spec(t.logs(), 1),
        ];
        let brokers = self.create_topics_counted(&specs).await?;
        let replication = self.cfg.replication_factor.resolve(brokers);
        tracing::info!(
            brokers,
            replication_factor = %self.cfg.replication_factor,
            "run topics ready: {replication} replica(s) per partition, min.insync.replicas {}",
            topics::min_insync_replicas(replication)
        );
        Ok(())
    }

    /// Creates topics (idempotent) and returns once every partition has a
    /// leader whose log answers an offsets request.
    ///
    /// Producing into a partition whose log the leader has not created yet
    /// was seen to lose the first record batches of an idempotent producer
    /// on a fresh broker while reporting them delivered (the log started at
    /// producer sequence 2), so nothing is sent before the topic is ready.
    ///
    /// `auto` replication resolves to min(3, brokers in the cluster's
    /// metadata now); see [`topics::create_topics`].
    pub async fn create_topics(&self, specs: &[TopicSpec]) -> Result<(), TransportError> {
        self.create_topics_counted(specs).await.map(|_| ())
    }

    /// [`Transport::create_topics`], returning the broker count it saw.
    async fn create_topics_counted(&self, specs: &[TopicSpec]) -> Result<usize, TransportError> {
        if specs.is_empty() {
            return Ok(0);
        }
        let producer = self.producer.clone();
        let brokers = tokio::task::spawn_blocking(move || topics::broker_count(producer.client()))
            .await
            .map_err(|e| TransportError::Config(format!("broker count check panicked: {e}")))??;
        topics::create_topics(&self.admin, specs, brokers).await?;
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || topics::wait_until_ready(producer.client(), &names))
            .await
            .map_err(|e| {
                TransportError::Config(format!("topic readiness check panicked: {e}"))
            })??;
        Ok(brokers)
    }

    /// Deletes topics (used to start a run with a clean slate).
    pub async fn delete_topics(&self, names: &[String]) -> Result<(), TransportError> {
        topics::delete_topics(&self.admin, names).await
    }

    /// Serializes `msg` with bincode and sends it (see [`Transport::send_payload`]).
    pub async fn send<T: Serialize>(
        &self,
        topic: &str,
        key: &str,
        kind: MessageKind,
        msg: &T,
    ) -> Result<SendReport, TransportError> {
        let payload = protocol::encode(msg)?;
        self.send_payload(topic, key, kind, &payload).await
    }

    /// Sends `payload` to `topic` with record key `key` (records with the same
    /// key keep their order). Payloads above `kafka.chunk_bytes` are split
    /// into chunks that the [`Receiver`] reassembles. Returns once every
    /// record is acknowledged by the broker.
    pub async fn send_payload(
        &self,
        topic: &str,
        key: &str,
        kind: MessageKind,
        payload: &[u8],
    ) -> Result<SendReport, TransportError> {
        let mut reports = self.send_payloads(topic, key, kind, &[payload]).await?;
        reports
            .pop()
            .ok_or_else(|| TransportError::Config(format!("nothing was sent to `{topic}`")))
    }

    /// Sends several payloads to `topic` in order (same key: the idempotent
    /// producer keeps them in order on the partition), pipelined: every
    /// record is queued before any acknowledgement is awaited, so a second
    /// message does not wait a broker round trip for the first. Returns once
    /// all are acknowledged, with one report per payload.
    pub async fn send_payloads(
        &self,
        topic: &str,
        key: &str,
        kind: MessageKind,
        payloads: &[&[u8]],
    ) -> Result<Vec<SendReport>, TransportError> {
        let mut deliveries = Vec::new();
        let mut reports = Vec::with_capacity(payloads.len());
        // Chunks are encoded one at a time into one reused buffer and handed
        // to librdkafka (which copies them into its queue), then all delivery
        // reports are awaited together: the transfer streams at the
        // producer's pace, with no second copy of the payload held by us.
        let mut record = Vec::new();
        for payload in payloads {
            let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
            let before = deliveries.len();
            let mut bytes = 0;
            if payload.len() <= self.cfg.chunk_bytes {
                self.codec
                    .try_encode_parts_into(&mut record, kind, &self.sender_id, sequence, &[payload])
                    .map_err(|e| TransportError::Config(format!("cannot encode record: {e}")))?;
                bytes += record.len();
                deliveries.push(self.enqueue(topic, key, &record).await?);
                self.metrics.sent(record.len());
            } else {
                let mut chunks = chunking::chunks(payload, self.cfg.chunk_bytes, kind);
                while let Some(chunk) = chunks.next_ref() {
                    let header = chunk.header_bytes();
                    self.codec
                        .try_encode_parts_into(
                            &mut record,
                            MessageKind::Chunk,
                            &self.sender_id,
                            sequence,
                            &[&header, chunk.data],
                        )
                        .map_err(|e| {
                            TransportError::Config(format!("cannot encode record: {e}"))
                        })?;
                    bytes += record.len();
                    deliveries.push(self.enqueue(topic, key, &record).await?);
                    self.metrics.sent(record.len());
                }
            }
            reports.push(SendReport {
                sequence,
                records: deliveries.len() - before,
                bytes,
            });
        }
        for delivery in futures::future::join_all(deliveries).await {
            match delivery {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(TransportError::Kafka {
                        context: format!("produce to `{topic}`"),
                        source: e,
                    })
                }
                Err(_) => {
                    return Err(TransportError::Config(format!(
                        "producer for `{topic}` shut down before delivery"
                    )))
                }
            }
        }
        Ok(reports)
    }

    /// Puts one record in librdkafka's queue (waiting while the queue is
    /// full, up to a minute) and returns its delivery report future.
    async fn enqueue(
        &self,
        topic: &str,
        key: &str,
        record: &[u8],
    ) -> Result<DeliveryFuture, TransportError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self
                .producer
                .send_result(FutureRecord::to(topic).key(key).payload(record))
            {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(TransportError::Kafka {
                        context: format!("enqueue to `{topic}`"),
                        source: e,
                    })
                }
            }
        }
    }

    /// Waits until every produced record is acknowledged (call before exit).
    pub fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        self.producer
            .flush(Timeout::After(timeout))
            .map_err(|e| TransportError::Kafka {
                context: "flush producer".into(),
                source: e,
            })
    }

    /// A receiver on `topics` (all partitions, assigned manually), storing
    /// committed offsets under `group`.
    pub async fn receiver(
        &self,
        topics: &[String],
        group: &str,
        start: StartAt,
    ) -> Result<Receiver, TransportError> {
        let each: Vec<(String, StartAt)> = topics.iter().map(|t| (t.clone(), start)).collect();
        self.receiver_from(&each, group).await
    }

    /// A receiver on several topics, each starting where its [`StartAt`]
    /// says (e.g. updates from the committed offsets, status from now).
    pub async fn receiver_from(
        &self,
        topics: &[(String, StartAt)],
        group: &str,
    ) -> Result<Receiver, TransportError> {
        Receiver::new(
            &self.cfg,
            &format!("{}-rx", self.sender_id),
            group,
            topics,
            Arc::clone(&self.codec),
            chunk_limits(&self.cfg),
            Arc::clone(&self.metrics),
        )
        .await
    }
}

/// Largest envelope payload a single record may carry.
fn envelope_limit(cfg: &KafkaConfig) -> usize {
    cfg.chunk_bytes + RECORD_OVERHEAD
}

/// Reassembly limits from config.
fn chunk_limits(cfg: &KafkaConfig) -> ChunkLimits {
    ChunkLimits {
        max_transfer_bytes: cfg.max_payload_bytes,
        max_buffered_bytes: cfg.max_buffered_bytes,
        max_chunk_data_bytes: cfg.chunk_bytes,
        timeout: Duration::from_secs(cfg.reassembly_timeout_secs),
        ..ChunkLimits::default()
    }
}

/// Sequence numbers start from the wall clock (µs), so a restarted node's
/// sequences never repeat its earlier ones and the master's at-most-once
/// ledger stays correct across restarts.
fn initial_sequence() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Retries a metadata request with exponential backoff until it succeeds or
/// `connect_timeout_secs` pass.
/// Asks the cluster for one topic's metadata; see [`Transport::probe`].
#[derive(Clone)]
pub struct BrokerProbe {
    producer: FutureProducer<client::ErrorContext>,
    topic: String,
}

impl BrokerProbe {
    /// Whether a broker answered a metadata request within `timeout`.
    pub async fn reachable(&self, timeout: Duration) -> bool {
        let client = self.producer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

async fn wait_for_broker(
    producer: &FutureProducer<client::ErrorContext>,
    errors: &client::ErrorContext,
    cfg: &KafkaConfig,
) -> Result<(), TransportError> {
    let started = Instant::now();
    let deadline = Duration::from_secs(cfg.connect_timeout_secs);
    let mut backoff = Duration::from_millis(250);
    loop {
        let client = producer.clone();
        let attempt = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_secs(5)))
                .map(|_| ())
        })
        .await;
        let mut err = match attempt {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        // The metadata error says only "broker transport failure"; the
        // client's own last error says why (TLS, authentication, refused).
        if let Some(why) = errors.last_error() {
            err = format!("{err}; {why}");
        }
        if started.elapsed() >= deadline {
            return Err(TransportError::Unreachable {
                brokers: cfg.brokers.clone(),
                waited_secs: started.elapsed().as_secs(),
                last_error: err,
            });
        }
        tracing::warn!(
            brokers = %cfg.brokers,
            retry_in_ms = backoff.as_millis() as u64,
            "kafka broker not reachable yet: {err}"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
