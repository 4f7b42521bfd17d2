//! The librdkafka client settings, built in one visible place from config.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

use crate::config::KafkaConfig;

use super::TransportError;

/// The producer's client context: librdkafka's errors (a failed TLS
/// handshake, refused credentials, an unreachable broker) go to the log and
/// the last one is kept, so that "cannot connect" can say why.
#[derive(Clone, Default)]
pub struct ErrorContext {
    last_error: Arc<Mutex<Option<String>>>,
}

impl ErrorContext {
    /// The last error librdkafka reported, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

impl ClientContext for ErrorContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::debug!(facility = fac, "librdkafka: {log_message}")
            }
            _ => tracing::trace!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("librdkafka error: {error}: {reason}");
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(reason.to_string());
        }
    }
}

/// Settings shared by every client: brokers, security and pass-through properties.
fn base(cfg: &KafkaConfig, client_id: &str) -> Result<ClientConfig, TransportError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", client_id)
        // Broker-side limit (~1 MiB by default); our chunks stay below it.
        .set(
            "message.max.bytes",
            (cfg.chunk_bytes + 64 * 1024).max(1_000_000).to_string(),
        )
        .set("socket.keepalive.enable", "true")
        // Small records (registrations, reports, control) go out at once:
        // with Nagle on, a small write can wait for the previous one's ACK
        // (up to the peer's delayed-ACK timer, ~40 ms).
        .set("socket.nagle.disable", "true")
        // librdkafka backs off reconnects up to 10 s by default, so a node
        // could stay deaf for 10 s after a broker returns — longer than a
        // worker's heartbeats may pause. 1 s at most.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000");
    let sec = &cfg.security;
    if let Some(p) = &sec.protocol {
        c.set("security.protocol", p);
    }
    if let Some(m) = &sec.sasl_mechanism {
        c.set("sasl.mechanisms", m);
    }
    if let Some(u) = &sec.sasl_username {
        c.set("sasl.username", u);
    }
    if let Some(var) = &sec.sasl_password_env {
        let pw = std::env::var(var).map_err(|_| {
            TransportError::Config(format!(
            "kafka.security.sasl_password_env names `{var}`, which is not set in the environment"
        ))
        })?;
        c.set("sasl.password", pw);
    }
    if let Some(p) = &sec.ssl_ca_location {
        c.set("ssl.ca.location", p.to_string_lossy());
    }
    if let Some(p) = &sec.ssl_certificate_location {
        c.set("ssl.certificate.location", p.to_string_lossy());
    }
    if let Some(p) = &sec.ssl_key_location {
        c.set("ssl.key.location", p.to_string_lossy());
    }
    for (k, v) in &cfg.extra {
        c.set(k, v);
    }
    Ok(c)
}

/// The producer: idempotent (no duplicates or reordering on retry), acks from
/// all in-sync replicas, configurable compression.
pub fn producer_config(cfg: &KafkaConfig, client_id: &str) -> Result<ClientConfig, TransportError> {
    let compression = match cfg.compression.as_str() {
        c @ ("none" | "gzip" | "snappy" | "lz4" | "zstd") => c,
        other => {
            return Err(TransportError::Config(format!(
                "kafka.compression `{other}` is not one of none, gzip, snappy, lz4, zstd"
            )))
        }
    };
    let mut c = base(cfg, client_id)?;
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.codec", compression)
        // Latency first: a record goes out at once. Our records are either
        // small (control, status: 5 ms of lingering would be all of their
        // latency, on every hop of a round) or chunks of `chunk_bytes` that
        // fill a batch on their own, so waiting to batch buys nothing.
        .set("linger.ms", "0")
        // One record batch must fit the topics' `max.message.bytes`
        // (chunk size + 2 KiB, see `Transport::topic_spec`): with the default
        // (1 MB) two poorly compressible chunks share a batch and the broker
        // refuses it with MessageSizeTooLarge.
        .set("batch.size", (cfg.chunk_bytes + 2048).to_string())
        .set("message.timeout.ms", "120000");
    for (k, v) in &cfg.extra {
        c.set(k, v);
    }
    Ok(c)
}

/// A consumer. Partitions are assigned manually (no group rebalances, so a
/// worker busy training never gets thrown out of a group); the group id is
/// used only to store committed offsets, which the application commits
/// explicitly after it has processed a record.
pub fn consumer_config(
    cfg: &KafkaConfig,
    client_id: &str,
    group_id: &str,
) -> Result<ClientConfig, TransportError> {
    let mut c = base(cfg, client_id)?;
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("max.partition.fetch.bytes", (8 * 1024 * 1024).to_string())
        .set("fetch.max.bytes", (64 * 1024 * 1024).to_string());
    for (k, v) in &cfg.extra {
        c.set(k, v);
    }
    Ok(c)
}

/// An admin client (topic creation and deletion).
pub fn admin_config(cfg: &KafkaConfig, client_id: &str) -> Result<ClientConfig, TransportError> {
    base(cfg, client_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_is_idempotent_with_acks_all() {
        let c = producer_config(&KafkaConfig::default(), "t").expect("valid");
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
    }

    #[test]
    fn unknown_compression_is_rejected() {
        let cfg = KafkaConfig {
            compression: "brotli".into(),
            ..KafkaConfig::default()
        };
        let err = producer_config(&cfg, "t").expect_err("rejected");
        assert!(err.to_string().contains("brotli"));
    }

    #[test]
    fn consumer_never_auto_commits() {
        let c = consumer_config(&KafkaConfig::default(), "t", "g").expect("valid");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }
}
