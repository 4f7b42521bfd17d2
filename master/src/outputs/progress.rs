//! The live progress line on the terminal: version, test accuracy, updates,
//! traffic, active workers and elapsed time. Hidden when stderr is not a
//! terminal, so logs piped to a file stay clean.

use std::io::Write;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// What the progress line shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProgressSnapshot {
    /// Current global version.
    pub version: u64,
    /// Test accuracy of that version, once evaluated.
    pub test_accuracy: Option<f64>,
    /// Updates applied so far.
    pub updates_accepted: u64,
    /// Updates rejected so far.
    pub updates_rejected: u64,
    /// Bytes received by the master.
    pub bytes_up: u64,
    /// Bytes sent by the master.
    pub bytes_down: u64,
    /// Workers currently active.
    pub active_workers: usize,
}

/// The progress display of one run.
pub struct RunProgress {
    bar: ProgressBar,
}

impl RunProgress {
    /// A bar up to `max_versions` when set, else a spinner; drawn on stderr
    /// when it is a terminal.
    pub fn new(max_versions: Option<u64>) -> Self {
        let bar = match max_versions {
            Some(max) => ProgressBar::new(max),
            None => ProgressBar::new_spinner(),
        };
        Self::with_bar(bar, max_versions.is_some())
    }

    /// A progress display that never draws (tests, `--quiet`).
    pub fn hidden() -> Self {
        Self::with_bar(ProgressBar::hidden(), false)
    }

    fn with_bar(bar: ProgressBar, bounded: bool) -> Self {
        let template = if bounded {
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {msg}"
        };
        // The templates are fixed strings; a bad one would show as the default style.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Self { bar }
    }

    /// Shows `snapshot`.
    pub fn update(&self, snapshot: &ProgressSnapshot) {
        self.bar.set_position(snapshot.version);
        self.bar.set_message(render_message(snapshot));
    }

    /// The message currently shown.
    pub fn message(&self) -> String {
        self.bar.message()
    }

    /// Prints a line above the progress line without garbling it.
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    /// Runs `f` (e.g. printing the summary) with the progress line cleared.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// A writer factory for a log subscriber (any `Fn() -> impl Write` is a
    /// tracing-subscriber `MakeWriter`): each write clears the progress line,
    /// writes to stderr and redraws it.
    pub fn log_writer(&self) -> impl Fn() -> SuspendedStderr + Send + Sync + 'static {
        let bar = self.bar.clone();
        move || SuspendedStderr { bar: bar.clone() }
    }

    /// Leaves the last state on screen with `message` appended.
    pub fn finish(&self, message: &str) {
        let last = self.bar.message();
        self.bar.finish_with_message(format!("{last} — {message}"));
    }
}

/// Writes to stderr with the progress line out of the way.
pub struct SuspendedStderr {
    bar: ProgressBar,
}

impl Write for SuspendedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bar.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `v12 acc 87.36% | updates 40 ok / 2 rejected | up 1.2 MiB down 3.4 MiB | 3 workers`
pub fn render_message(s: &ProgressSnapshot) -> String {
    let accuracy = s
        .test_accuracy
        .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0));
    format!(
        "v{} acc {accuracy} | updates {} ok / {} rejected | up {} down {} | {} worker{}",
        s.version,
        s.updates_accepted,
        s.updates_rejected,
        HumanBytes(s.bytes_up),
        HumanBytes(s.bytes_down),
        s.active_workers,
        if s.active_workers == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> ProgressSnapshot {
        ProgressSnapshot {
            version: 12,
            test_accuracy: Some(0.8736),
            updates_accepted: 40,
            updates_rejected: 2,
            bytes_up: 1_258_291,
            bytes_down: 3 * 1024 * 1024,
            active_workers: 3,
        }
    }

    #[test]
    fn message_shows_every_figure() {
        assert_eq!(
            render_message(&snapshot()),
            "v12 acc 87.36% | updates 40 ok / 2 rejected | up 1.20 MiB down 3.00 MiB | 3 workers"
        );
        let first = ProgressSnapshot {
            active_workers: 1,
            ..ProgressSnapshot::default()
        };
        assert_eq!(
            render_message(&first),
            "v0 acc - | updates 0 ok / 0 rejected | up 0 B down 0 B | 1 worker"
        );
    }

    #[test]
    fn updates_reach_the_bar() {
        let p = RunProgress::hidden();
        p.update(&snapshot());
        assert_eq!(p.message(), render_message(&snapshot()));
        p.finish("target reached");
        assert!(p.message().ends_with(" — target reached"));
        let mut w = p.log_writer()();
        w.write_all(b"").unwrap();
    }
}
