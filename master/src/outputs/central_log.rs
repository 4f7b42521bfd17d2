//! The centralized log: every node's log records as lines
//! `[<timestamp> - <node>] <LEVEL> <message>` appended to
//! `data/centralized-logs/distml-central.txt`, flushed per line so
//! `tail -f` shows them as they come.
//!
//! Worker records arrive over the network and are untrusted: every field is
//! cleaned so one record is always exactly one line of bounded length.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::protocol::LogRecord;
use tokio::sync::mpsc;

/// Path of the log under the data folder.
pub const CENTRAL_LOG_FILE: &str = "centralized-logs/distml-central.txt";

/// Longest line written, in bytes (newline excluded); longer messages are cut.
pub const MAX_LINE_BYTES: usize = 4096;

/// Longest node name kept, in characters.
pub const MAX_NODE_CHARS: usize = 64;

/// Longest level name kept, in characters.
const MAX_LEVEL_CHARS: usize = 8;

/// Appended to a message that was cut to fit [`MAX_LINE_BYTES`].
const CUT_MARK: &str = " …[truncated]";

/// The open log file.
pub struct CentralLog {
    path: PathBuf,
    file: File,
}

impl CentralLog {
    /// Opens `<data_dir>/centralized-logs/distml-central.txt` for appending,
    /// creating the folder and file.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open_at(&data_dir.join(CENTRAL_LOG_FILE))
    }

    /// Opens the log at `path` for appending, creating its folder.
    pub fn open_at(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot open for appending", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Where the log is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as it stands (use for the master's own records).
    pub fn append(&mut self, record: &LogRecord) -> anyhow::Result<()> {
        self.write_line(format_line(record))
    }

    /// Appends a batch received from the network. The node shown is
    /// `sender`, the authenticated sender of the message, not whatever the
    /// records claim, so a worker cannot write lines in another node's name.
    pub fn append_remote(&mut self, sender: &str, records: &[LogRecord]) -> anyhow::Result<()> {
        for record in records {
            let line = format_parts(record.timestamp_ms, sender, &record.level, &record.message);
            self.write_line(line)?;
        }
        Ok(())
    }

    fn write_line(&mut self, mut line: String) -> anyhow::Result<()> {
        line.push('\n');
        // One write per line: with O_APPEND lines from concurrent writers never interleave.
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .with_context(|| format!("{}: cannot append", self.path.display()))
    }
}

/// Runs the log writer on a blocking thread, appending every record received
/// on `records` (e.g. the master's own tracing events forwarded by
/// `common::logging::init`) until all senders are gone. A failed write is
/// reported once on stderr, and writing goes on with the next record.
pub fn spawn_writer(
    mut log: CentralLog,
    mut records: mpsc::Receiver<LogRecord>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let mut warned = false;
        while let Some(record) = records.blocking_recv() {
            if let Err(e) = log.append(&record) {
                if !warned {
                    // Not through tracing: that could feed this very channel.
                    eprintln!("master: centralized log: {e:#}");
                    warned = true;
                }
            }
        }
    })
}

/// One record as a log line (without the newline).
pub fn format_line(record: &LogRecord) -> String {
    format_parts(
        record.timestamp_ms,
        &record.node,
        &record.level,
        &record.message,
    )
}

fn format_parts(timestamp_ms: u64, node: &str, level: &str, message: &str) -> String {
    let node = clean_node(node);
    let level = clean_level(level);
    let mut line = format!("[{} - {node}] {level} ", timestamp(timestamp_ms));
    let room = MAX_LINE_BYTES.saturating_sub(line.len());
    line.push_str(&clean_message(message, room));
    line
}

/// `2026-11-29 23:59:01.123` (UTC).
pub fn timestamp(ms: u64) -> String {
    let t = i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default();
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// Characters that could break a record over lines or reorder what a
/// terminal shows: control characters, Unicode line/paragraph separators and
/// bidirectional overrides.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Node names: letters, digits and `-_.:@`, anything else becomes `_`; at
/// most [`MAX_NODE_CHARS`]; `?` when empty.
fn clean_node(node: &str) -> String {
    let cleaned: String = node
        .chars()
        .filter(|c| !is_unsafe(*c))
        .take(MAX_NODE_CHARS)
        .map(|c| {
            if c.is_alphanumeric() || "-_.:@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "?".to_string()
    } else {
        cleaned
    }
}

/// Levels: ASCII letters only, upper case, at most 8; `?` when nothing is left.
fn clean_level(level: &str) -> String {
    let cleaned: String = level
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(MAX_LEVEL_CHARS)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if cleaned.is_empty() {
        "?".to_string()
    } else {
        cleaned
    }
}

/// Messages: line breaks and tabs become spaces, other unsafe characters
/// are dropped; cut (on a character boundary, marked) to `room` bytes.
fn clean_message(message: &str, room: usize) -> String {
    let mut out = String::with_capacity(message.len().min(room));
    for c in message.trim_end().chars() {
        let c = match c {
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' => ' ',
            c if is_unsafe(c) => continue,
            c => c,
        };
        if out.len() + c.len_utf8() > room {
            // Make room for the mark, backing up to a character boundary.
            let mut keep = room.saturating_sub(CUT_MARK.len());
            while !out.is_char_boundary(keep) {
                keep -= 1;
            }
            out.truncate(keep);
            out.push_str(CUT_MARK);
            return out;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: &str, level: &str, message: &str) -> LogRecord {
        LogRecord {
            timestamp_ms: 1_795_996_741_123,
            node: node.into(),
            level: level.into(),
            target: "worker::round".into(),
            message: message.into(),
        }
    }

    #[test]
    fn line_format() {
        assert_eq!(
            format_line(&record("w1", "INFO", "round 3 done loss=0.25")),
            "[2026-11-29 23:59:01.123 - w1] INFO round 3 done loss=0.25"
        );
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
    }

    #[test]
    fn newlines_and_control_characters_cannot_break_a_line() {
        let line = format_line(&record(
            "w1\n[2026-01-01 00:00:00.000 - master] ERROR",
            "warn\n",
            "first\nsecond\r\nthird\u{1b}[31mred\u{0}\u{7}\u{202e}x\u{2028}y\tz\n",
        ));
        assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert_eq!(
            line,
            "[2026-11-29 23:59:01.123 - w1_2026-01-01_00:00:00.000_-_master__ERROR] WARN \
             first second  third[31mredx y z"
        );
    }

    #[test]
    fn long_fields_are_capped() {
        let long = "é".repeat(10_000);
        let line = format_line(&record(&"n".repeat(500), "INFORMATIONAL", &long));
        assert!(line.len() <= MAX_LINE_BYTES, "{}", line.len());
        assert!(line.ends_with(CUT_MARK));
        assert!(line.contains(&format!(" - {}] INFORMAT ", "n".repeat(MAX_NODE_CHARS))));
        let short = format_line(&record("", "", "ok"));
        assert_eq!(short, "[2026-11-29 23:59:01.123 - ?] ? ok");
    }

    #[test]
    fn appends_and_flushes_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CentralLog::open(dir.path()).unwrap();
        assert_eq!(log.path(), dir.path().join(CENTRAL_LOG_FILE));
        log.append(&record("master", "INFO", "run started"))
            .unwrap();
        // Readable before the log is closed.
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert_eq!(
            text,
            "[2026-11-29 23:59:01.123 - master] INFO run started\n"
        );
        log.append_remote(
            "w2",
            &[
                record("master", "ERROR", "pretending to be the master"),
                record("w2", "INFO", "two\nlines"),
            ],
        )
        .unwrap();
        drop(log);
        // Reopening appends, never truncates.
        let mut log = CentralLog::open(dir.path()).unwrap();
        log.append(&record("master", "INFO", "again")).unwrap();
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "[2026-11-29 23:59:01.123 - master] INFO run started",
                "[2026-11-29 23:59:01.123 - w2] ERROR pretending to be the master",
                "[2026-11-29 23:59:01.123 - w2] INFO two lines",
                "[2026-11-29 23:59:01.123 - master] INFO again",
            ]
        );
    }

    #[tokio::test]
    async fn writer_task_drains_the_channel() {
        let dir = tempfile::tempdir().unwrap();
        let log = CentralLog::open(dir.path()).unwrap();
        let path = log.path().to_path_buf();
        let (tx, rx) = mpsc::channel(16);
        let task = spawn_writer(log, rx);
        for i in 0..5 {
            tx.send(record("master", "INFO", &format!("event {i}")))
                .await
                .unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.ends_with("INFO event 4\n"));
    }
}
