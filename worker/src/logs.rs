//! Forwarding this worker's log events to the master's centralized log:
//! records captured by `common::logging` arrive on a bounded channel, are
//! batched (by count or age) and sent as a `LogBatch` on the logs topic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::envelope::MessageKind;
use common::protocol::{LogBatch, LogRecord};
use common::transport::Transport;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Records held before a batch is sent regardless of age.
pub const MAX_RECORDS: usize = 100;
/// Oldest a pending record may get before its batch is sent.
pub const MAX_AGE: Duration = Duration::from_millis(250);
/// Capacity of the channel from the tracing layer (records beyond it are dropped).
pub const CHANNEL_CAPACITY: usize = 4096;

/// Groups records into batches of at most `max_records`, none older than `max_age`.
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    max_age: Duration,
    pending: Vec<LogRecord>,
    oldest: Option<Instant>,
}

impl Batcher {
    /// An empty batcher.
    pub fn new(max_records: usize, max_age: Duration) -> Self {
        Self {
            max_records: max_records.max(1),
            max_age,
            pending: Vec::new(),
            oldest: None,
        }
    }

    /// Adds a record; returns a full batch when this record completes one.
    pub fn push(&mut self, record: LogRecord, now: Instant) -> Option<LogBatch> {
        self.oldest.get_or_insert(now);
        self.pending.push(record);
        if self.pending.len() >= self.max_records {
            return self.take();
        }
        None
    }

    /// The pending batch when its oldest record is at least `max_age` old.
    pub fn due(&mut self, now: Instant) -> Option<LogBatch> {
        match self.oldest {
            Some(t) if now.duration_since(t) >= self.max_age => self.take(),
            _ => None,
        }
    }

    /// Whatever is pending (None when nothing is).
    pub fn take(&mut self) -> Option<LogBatch> {
        self.oldest = None;
        if self.pending.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.pending))
        }
    }
}

/// The tracing layer's records, shared by the runs an agent serves one
/// after another (each run's forwarder holds it while the run lasts).
pub type SharedLogs = Arc<tokio::sync::Mutex<mpsc::Receiver<LogRecord>>>;

/// The running forwarder task.
pub struct LogForwarder {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl LogForwarder {
    /// Starts forwarding the records of `rx` on the logs topic, keyed by `node`.
    pub fn spawn(transport: Arc<Transport>, rx: SharedLogs, node: String) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(forward(transport, rx, node, stopped));
        Self { stop, task }
    }

    /// Sends what is still queued and ends the task (waiting at most `timeout`).
    pub async fn finish(self, timeout: Duration) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(timeout, self.task).await;
    }
}

async fn forward(
    transport: Arc<Transport>,
    rx: SharedLogs,
    node: String,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut rx = rx.lock().await;
    let topic = transport.topics().logs();
    let mut batcher = Batcher::new(MAX_RECORDS, MAX_AGE);
    let mut tick = tokio::time::interval(MAX_AGE / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            record = rx.recv() => match record {
                Some(r) => batcher.push(r, Instant::now()),
                None => break,
            },
            _ = tick.tick() => batcher.due(Instant::now()),
            _ = &mut stopped => break,
        };
        if let Some(batch) = batch {
            send(&transport, &topic, &node, &batch).await;
        }
    }
    while let Ok(r) = rx.try_recv() {
        if let Some(batch) = batcher.push(r, Instant::now()) {
            send(&transport, &topic, &node, &batch).await;
        }
    }
    if let Some(batch) = batcher.take() {
        send(&transport, &topic, &node, &batch).await;
    }
}

async fn send(transport: &Transport, topic: &str, node: &str, batch: &LogBatch) {
    if let Err(e) = transport.send(topic, node, MessageKind::Log, batch).await {
        // Straight to stderr: a broken logs topic must not feed itself.
        eprintln!("worker: could not forward {} log records: {e}", batch.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> LogRecord {
        LogRecord {
            timestamp_ms: i as u64,
            node: "w".into(),
            level: "INFO".into(),
            target: "worker".into(),
            message: format!("line {i}"),
        }
    }

    #[test]
    fn full_batches_are_cut_at_max_records() {
        let t0 = Instant::now();
        let mut b = Batcher::new(3, Duration::from_secs(10));
        assert_eq!(b.push(record(0), t0), None);
        assert_eq!(b.push(record(1), t0), None);
        let batch = b.push(record(2), t0).expect("full");
        assert_eq!(batch, vec![record(0), record(1), record(2)]);
        assert_eq!(b.take(), None, "nothing left");
    }

    #[test]
    fn a_batch_is_due_when_its_oldest_record_is_old_enough() {
        let t0 = Instant::now();
        let age = Duration::from_millis(250);
        let mut b = Batcher::new(100, age);
        assert_eq!(b.due(t0 + age * 10), None, "empty is never due");
        b.push(record(0), t0);
        b.push(record(1), t0 + Duration::from_millis(200));
        assert_eq!(b.due(t0 + Duration::from_millis(249)), None);
        assert_eq!(b.due(t0 + age).expect("due"), vec![record(0), record(1)]);
        // The age restarts with the next record.
        b.push(record(2), t0 + Duration::from_millis(300));
        assert_eq!(b.due(t0 + Duration::from_millis(400)), None);
        assert_eq!(b.take().expect("pending"), vec![record(2)]);
    }
}
