//! One-time `tracing-subscriber` setup, plus an optional layer that captures
//! events so a worker can forward them to the master's centralized log.

use std::fmt::Write as _;
use std::sync::OnceLock;

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::protocol::LogRecord;

static INIT: OnceLock<()> = OnceLock::new();

/// Installs the global subscriber: human-readable lines on stderr (coloured
/// only when stderr is a terminal), filtered by
/// `RUST_LOG` when set, else by `level`. Calling it again does nothing.
///
/// When `forward` is given, every event at `info` or above is also captured as
/// a [`LogRecord`] (tagged with `node`) and sent on that channel without
/// blocking; records are dropped, never queued without bound, when the
/// channel is full.
pub fn init(level: &str, node: &str, forward: Option<mpsc::Sender<LogRecord>>) {
    INIT.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        // Colour only on a terminal: a log file (a deployed worker's
        // `worker.log`, a test's capture) gets plain text.
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let forwarder = forward.map(|tx| ForwardLayer {
            node: node.to_string(),
            tx,
        });
        // A second global subscriber (e.g. from a test harness) is not an error for us.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(forwarder)
            .try_init();
    });
}

/// Captures events as [`LogRecord`]s for the centralized log.
struct ForwardLayer {
    node: String,
    tx: mpsc::Sender<LogRecord>,
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::INFO {
            return;
        }
        // Events from the Kafka client itself would loop back through Kafka.
        if meta.target().starts_with("rdkafka") {
            return;
        }
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let record = LogRecord {
            timestamp_ms: crate::protocol::now_ms(),
            node: self.node.clone(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: visitor.finish(),
        };
        let _ = self.tx.try_send(record);
    }
}

/// Renders an event as `message key=value ...`.
#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl MessageVisitor {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else if self.message.is_empty() {
            self.fields.trim_start().to_string()
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}
