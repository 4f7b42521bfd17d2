//! Counters of what went over the wire and what was rejected, and why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Transport counters, shared between a transport's producer and receivers.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    records_sent: AtomicU64,
    bytes_sent: AtomicU64,
    records_received: AtomicU64,
    bytes_received: AtomicU64,
    messages_delivered: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

/// A point-in-time copy of [`TransportMetrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Kafka records produced (chunks count one each).
    pub records_sent: u64,
    /// Bytes produced (whole records, envelope included).
    pub bytes_sent: u64,
    /// Kafka records consumed.
    pub records_received: u64,
    /// Bytes consumed.
    pub bytes_received: u64,
    /// Complete messages handed to the application.
    pub messages_delivered: u64,
    /// Rejected records by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl TransportMetrics {
    pub(crate) fn sent(&self, bytes: usize) {
        self.records_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.records_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn delivered(&self) {
        self.messages_delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one rejected record under `reason`.
    pub fn reject(&self, reason: &'static str) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry(reason).or_insert(0) += 1;
        }
    }

    /// How many records were rejected for `reason`.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected
            .lock()
            .map(|m| m.get(reason).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// A copy of all counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_sent: self.records_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            records_received: self.records_received.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            messages_delivered: self.messages_delivered.load(Ordering::Relaxed),
            rejected: self
                .rejected
                .lock()
                .map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                .unwrap_or_default(),
        }
    }
}
