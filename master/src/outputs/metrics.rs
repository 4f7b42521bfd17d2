//! `metrics.csv`: one row per new global version, flushed as it is written so
//! the file stays consistent if the master is killed.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// File name of the metrics table inside a run folder.
pub const METRICS_FILE: &str = "metrics.csv";

/// Column names, in order.
pub const HEADER: [&str; 10] = [
    "elapsed_secs",
    "wall_clock",
    "version",
    "test_loss",
    "test_accuracy",
    "bytes_up",
    "bytes_down",
    "updates_accepted",
    "updates_rejected",
    "worker",
];

/// The state of the run when a new global version was evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    /// Seconds since the run started (written with millisecond precision).
    pub elapsed_secs: f64,
    /// Wall clock (Unix ms), written as RFC 3339 UTC.
    pub wall_clock_ms: u64,
    /// The new global version.
    pub version: u64,
    /// Test loss of that version.
    pub test_loss: f64,
    /// Test accuracy of that version, 0..=1.
    pub test_accuracy: f64,
    /// Bytes received by the master so far (workers → master).
    pub bytes_up: u64,
    /// Bytes sent by the master so far (master → workers).
    pub bytes_down: u64,
    /// Updates applied so far.
    pub updates_accepted: u64,
    /// Updates rejected so far (all reasons).
    pub updates_rejected: u64,
    /// The worker whose update made this version; `None` for an aggregate of
    /// several (BSP) or the initial model. Written as an empty cell.
    pub worker: Option<String>,
}

impl MetricsRow {
    /// The row as CSV cells, in [`HEADER`] order. Floats use the shortest text
    /// that reads back to the same value, so summary.json can be compared exactly.
    fn cells(&self) -> [String; 10] {
        [
            format!("{:.3}", self.elapsed_secs),
            super::rfc3339_utc(self.wall_clock_ms),
            self.version.to_string(),
            self.test_loss.to_string(),
            self.test_accuracy.to_string(),
            self.bytes_up.to_string(),
            self.bytes_down.to_string(),
            self.updates_accepted.to_string(),
            self.updates_rejected.to_string(),
            self.worker.clone().unwrap_or_default(),
        ]
    }

    /// Parses one record written by [`MetricsWriter`]; `line` numbers errors.
    fn parse(record: &csv::StringRecord, line: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            record.len() == HEADER.len(),
            "line {line}: {} cells, expected {}",
            record.len(),
            HEADER.len()
        );
        let cell = |i: usize| record.get(i).unwrap_or_default();
        let num = |i: usize| -> anyhow::Result<u64> {
            cell(i)
                .parse()
                .with_context(|| format!("line {line}: {} {:?} is not a count", HEADER[i], cell(i)))
        };
        let float = |i: usize| -> anyhow::Result<f64> {
            cell(i).parse().with_context(|| {
                format!("line {line}: {} {:?} is not a number", HEADER[i], cell(i))
            })
        };
        let worker = cell(9);
        Ok(Self {
            elapsed_secs: float(0)?,
            wall_clock_ms: super::parse_rfc3339_ms(cell(1))
                .with_context(|| format!("line {line}: wall_clock"))?,
            version: num(2)?,
            test_loss: float(3)?,
            test_accuracy: float(4)?,
            bytes_up: num(5)?,
            bytes_down: num(6)?,
            updates_accepted: num(7)?,
            updates_rejected: num(8)?,
            worker: (!worker.is_empty()).then(|| worker.to_string()),
        })
    }
}

/// Appends [`MetricsRow`]s to `<run dir>/metrics.csv` and keeps them in
/// memory for the summary and the plot.
pub struct MetricsWriter {
    path: PathBuf,
    out: csv::Writer<File>,
    rows: Vec<MetricsRow>,
}

impl MetricsWriter {
    /// Creates (or truncates) `<run_dir>/metrics.csv`, creating the folder,
    /// and writes the header.
    pub fn create(run_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("{}: cannot create run folder", run_dir.display()))?;
        let path = run_dir.join(METRICS_FILE);
        let file =
            File::create(&path).with_context(|| format!("{}: cannot create", path.display()))?;
        let mut writer = Self {
            path,
            out: csv::Writer::from_writer(file),
            rows: Vec::new(),
        };
        writer.write_record(HEADER)?;
        Ok(writer)
    }

    /// Opens an existing `<run_dir>/metrics.csv` for appending (a resumed
    /// run): its rows are read back, nothing is truncated.
    pub fn open_append(run_dir: &Path) -> anyhow::Result<Self> {
        let path = run_dir.join(METRICS_FILE);
        let rows = read_metrics(&path)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open for appending", path.display()))?;
        Ok(Self {
            path,
            out: csv::Writer::from_writer(file),
            rows,
        })
    }

    /// Appends one row and flushes it to the file.
    pub fn append(&mut self, row: MetricsRow) -> anyhow::Result<()> {
        self.write_record(row.cells())?;
        self.rows.push(row);
        Ok(())
    }

    /// Every row written so far, oldest first.
    pub fn rows(&self) -> &[MetricsRow] {
        &self.rows
    }

    /// The most recent row.
    pub fn last(&self) -> Option<&MetricsRow> {
        self.rows.last()
    }

    /// Where the table is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_record<I, T>(&mut self, cells: I) -> anyhow::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.out
            .write_record(cells)
            .and_then(|()| self.out.flush().map_err(csv::Error::from))
            .with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

/// Reads a metrics.csv written by [`MetricsWriter`]; checks the header.
pub fn read_metrics(path: &Path) -> anyhow::Result<Vec<MetricsRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: cannot read header", path.display()))?
        .clone();
    anyhow::ensure!(
        header.iter().eq(HEADER.iter().copied()),
        "{}: header {:?} is not {:?}",
        path.display(),
        header.iter().collect::<Vec<_>>(),
        HEADER
    );
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let record = record.with_context(|| format!("{}: line {line}", path.display()))?;
        rows.push(MetricsRow::parse(&record, line).with_context(|| path.display().to_string())?);
    }
    Ok(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plausible row for version `v`.
    pub(crate) fn row(v: u64) -> MetricsRow {
        MetricsRow {
            elapsed_secs: v as f64 * 1.5,
            wall_clock_ms: 1_795_996_741_000 + v * 1500,
            version: v,
            test_loss: 2.3 / (v as f64 + 1.0),
            test_accuracy: 0.1 + 0.8 * (1.0 - 1.0 / (v as f64 + 1.0)),
            bytes_up: 1000 * v,
            bytes_down: 5000 + 2000 * v,
            updates_accepted: v,
            updates_rejected: v / 3,
            worker: (v > 0).then(|| format!("w{}", v % 3)),
        }
    }

    #[test]
    fn header_then_one_flushed_row_per_append() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs/r1");
        let mut w = MetricsWriter::create(&run).unwrap();
        let text = std::fs::read_to_string(run.join(METRICS_FILE)).unwrap();
        assert_eq!(
            text,
            "elapsed_secs,wall_clock,version,test_loss,test_accuracy,bytes_up,bytes_down,\
             updates_accepted,updates_rejected,worker\n"
        );
        w.append(row(0)).unwrap();
        w.append(row(1)).unwrap();
        // Read while the writer is still open: rows must already be on disk.
        let text = std::fs::read_to_string(w.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "0.000,2026-11-29T23:59:01.000Z,0,2.3,0.1,0,5000,0,0,"
        );
        assert_eq!(
            lines[2],
            "1.500,2026-11-29T23:59:02.500Z,1,1.15,0.5,1000,7000,1,0,w1"
        );
        assert_eq!(w.rows(), &[row(0), row(1)]);
        assert_eq!(w.last(), Some(&row(1)));
    }

    #[test]
    fn rows_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        let mut odd = row(7);
        odd.worker = Some("w,\"quoted\"".into());
        for r in [row(0), row(1), row(2), odd] {
            w.append(r).unwrap();
        }
        assert_eq!(read_metrics(w.path()).unwrap(), w.rows());
    }

    #[test]
    fn create_truncates_an_old_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        w.append(row(1)).unwrap();
        drop(w);
        let w = MetricsWriter::create(dir.path()).unwrap();
        assert!(read_metrics(w.path()).unwrap().is_empty());
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        let e = format!("{:#}", read_metrics(&path).unwrap_err());
        assert!(e.contains("header"), "{e}");
        let mut text = HEADER.join(",");
        text.push_str("\n0.0,2026-11-29T23:59:01.000Z,x,1,1,0,0,0,0,\n");
        std::fs::write(&path, text).unwrap();
        let e = format!("{:#}", read_metrics(&path).unwrap_err());
        assert!(e.contains("line 2: version \"x\""), "{e}");
    }
}
