//! Topic names of a run and their creation through the admin API.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use super::TransportError;
use crate::config::ReplicationFactor;

/// The streams of a run (DESIGN §2). Topic names are
/// `<prefix>.<run id>.<stream>`, with `shard.<worker>` per worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topic names for `run_id` under `prefix`. Characters Kafka does not
    /// allow in topic names are replaced by `_`.
    pub fn new(prefix: &str, run_id: &str) -> Self {
        Self {
            base: format!("{}.{}", sanitize(prefix), sanitize(run_id)),
        }
    }

    /// Master → workers: start/stop/config, broadcast.
    pub fn control(&self) -> String {
        format!("{}.control", self.base)
    }

    /// Master → workers: global weights, versioned, chunked.
    pub fn model(&self) -> String {
        format!("{}.model", self.base)
    }

    /// Master → one worker: its data shards.
    pub fn shard(&self, worker_id: &str) -> String {
        format!("{}.shard.{}", self.base, sanitize(worker_id))
    }

    /// Workers → master: weight deltas.
    pub fn updates(&self) -> String {
        format!("{}.updates", self.base)
    }

    /// Workers → master: registration, heartbeats, round reports.
    pub fn status(&self) -> String {
        format!("{}.status", self.base)
    }

    /// Workers → master: tracing events for the centralized log.
    pub fn logs(&self) -> String {
        format!("{}.logs", self.base)
    }

    /// The run-wide topics (everything but the per-worker shard topics).
    pub fn run_topics(&self) -> Vec<String> {
        vec![
            self.control(),
            self.model(),
            self.updates(),
            self.status(),
            self.logs(),
        ]
    }
}

/// Kafka topic names allow `[a-zA-Z0-9._-]`, at most 249 characters.
fn sanitize(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

/// A topic to create and its settings.
#[derive(Clone, Debug)]
pub struct TopicSpec {
    /// The topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor (`auto`: min(3, brokers), see [`ReplicationFactor`]).
    pub replication: ReplicationFactor,
    /// Largest record the broker accepts on this topic (`max.message.bytes`).
    pub max_message_bytes: usize,
}

/// `min.insync.replicas` of a topic with `replication` replicas: 2 from 3
/// replicas on (an acknowledged write survives the loss of any one broker, and
/// writes go on while one is down), 1 below (every replica may be needed).
pub fn min_insync_replicas(replication: i32) -> i32 {
    if replication >= 3 {
        2
    } else {
        1
    }
}

/// The number of brokers in the cluster's metadata (the live, registered ones).
pub fn broker_count<C: ClientContext>(client: &Client<C>) -> Result<usize, TransportError> {
    let md = client
        .fetch_metadata(None, Timeout::After(Duration::from_secs(10)))
        .map_err(|e| TransportError::Kafka {
            context: "read the cluster metadata (broker count for replication_factor auto)".into(),
            source: e,
        })?;
    Ok(md.brokers().len())
}

/// Creates the topics that do not exist yet; existing ones are left alone.
/// `brokers` is the cluster's broker count (resolves `auto` replication and
/// explains a factor the cluster cannot satisfy). Each topic gets
/// `min.insync.replicas` from [`min_insync_replicas`].
pub async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
    brokers: usize,
) -> Result<(), TransportError> {
    if specs.is_empty() {
        return Ok(());
    }
    let settings: Vec<(i32, String, String)> = specs
        .iter()
        .map(|s| {
            let replication = s.replication.resolve(brokers);
            (
                replication,
                s.max_message_bytes.to_string(),
                min_insync_replicas(replication).to_string(),
            )
        })
        .collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&settings)
        .map(|(s, (replication, size, min_isr))| {
            NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(*replication))
                .set("max.message.bytes", size)
                .set("min.insync.replicas", min_isr)
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results =
        admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(|e| TransportError::Kafka {
                context: "create topics".into(),
                source: e,
            })?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, RDKafkaErrorCode::InvalidReplicationFactor)) => {
                let spec = specs.iter().find(|s| s.name == topic);
                let (wanted, replication) = spec.map_or((String::new(), 0), |s| {
                    (s.replication.to_string(), s.replication.resolve(brokers))
                });
                return Err(TransportError::Topic {
                    topic,
                    message: format!(
                        "the broker refused {replication} replicas (kafka.replication_factor = {wanted}): \
                         the cluster has {brokers} broker(s) in its metadata; \
                         set kafka.replication_factor to \"auto\" or at most {brokers}"
                    ),
                });
            }
            Err((topic, code)) => {
                return Err(TransportError::Topic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Waits (up to 30 s) until every partition of `names` has a leader and
/// its log answers a watermark request.
pub fn wait_until_ready<C: ClientContext>(
    client: &Client<C>,
    names: &[String],
) -> Result<(), TransportError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let why = match partition_ready(client, name) {
                Ok(()) => break,
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(TransportError::Topic {
                    topic: name.clone(),
                    message: format!("not ready after 30 s: {why}"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Ok when every partition of `topic` has a leader and answers a watermark request.
fn partition_ready<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<(), String> {
    let timeout = Timeout::After(Duration::from_secs(5));
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| e.to_string())?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| "not in metadata".to_string())?;
    if let Some(e) = t.error() {
        return Err(format!("{e:?}"));
    }
    if t.partitions().is_empty() {
        return Err("no partitions yet".into());
    }
    for p in t.partitions() {
        if p.leader() < 0 || p.error().is_some() {
            return Err(format!("partition {} has no leader yet", p.id()));
        }
        client
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(|e| format!("partition {}: {e}", p.id()))?;
    }
    Ok(())
}

/// Deletes topics (missing ones are ignored).
pub async fn delete_topics(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
) -> Result<(), TransportError> {
    if names.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .delete_topics(&refs, &opts)
        .await
        .map_err(|e| TransportError::Kafka {
            context: "delete topics".into(),
            source: e,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(TransportError::Topic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_sanitized() {
        let t = Topics::new("hermes", "run 1/a");
        assert_eq!(t.control(), "hermes.run_1_a.control");
        assert_eq!(t.shard("w:1"), "hermes.run_1_a.shard.w_1");
        assert_eq!(t.run_topics().len(), 5);
    }

    #[test]
    fn three_replicas_need_two_in_sync() {
        assert_eq!(min_insync_replicas(1), 1);
        assert_eq!(min_insync_replicas(2), 1);
        assert_eq!(min_insync_replicas(3), 2);
        assert_eq!(min_insync_replicas(5), 2);
    }
}
